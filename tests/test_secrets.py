"""The token never shows: every path of the CLI runs with a recognisable token, and every
line of output and every byte of every file it wrote is searched for it. Also: TLS."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import ssl
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from batch_engage import RunOptions, Secret
from batch_engage.cli import cli
from batch_engage.mock_server import Fault, MockConfig, serve_in_thread
from batch_engage.status import ExitStatus

from .conftest import SAMPLES, CliRun, read_csv, write_csv

TOKEN = "SECRET-T0KEN-5d41402abc4b2a76"
WRONG = "SECRET-WR0NG-7d793037a0760186"


def leaks(texts: list[str], folder: Path) -> list[str]:
    """Where either token shows up: in the texts, or in any file under ``folder``."""
    found = [f"output: ...{t[max(0, t.find(s) - 40):t.find(s) + 40]}..."
             for t in texts for s in (TOKEN, WRONG) if s in t]
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}" for s in (TOKEN, WRONG) if s.encode() in data]
    return found


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = "".join(f's{i}@example.com,"=HYPERLINK(""http://x"",""y"")"\n' for i in range(30))
    return write_csv(tmp_path / "in.csv", "email,content.note\n" + rows + "bad-email,x\n")


def run_cli(*args: str | Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Everything a user could see: both streams, and a traceback if -v let one out."""
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env)
    seen = [result.stdout, result.stderr]
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        seen.append("".join(traceback.format_exception(*result.exc_info)))
    return result.exit_code, seen


@pytest.mark.slow  # about 10 s: every path of the CLI, one after another
def test_no_path_of_the_cli_shows_the_token(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCH_ENGAGE_TOKEN", raising=False)
    texts: list[str] = []
    script_faults = {3: Fault.SERVER_ERROR, 4: Fault.DROP, 5: Fault.CUT_OFF, 6: Fault.HTML_OK}
    with serve_in_thread(MockConfig(token=TOKEN, unknown_rate=0.2, seed=1),
                         script=script_faults.get) as mock:
        env = {"BATCH_ENGAGE_API_URL": mock.url, "BATCH_ENGAGE_TOKEN": TOKEN}
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n", "utf-8")
        token_file.chmod(0o644)  # world-readable: a warning, never the value
        runs = [
            # Success and row failures of every stage, with and without -v.
            ("run", data, "-w", "1", "--out", tmp_path / "a", "-v"),
            ("run", data, "-w", "1", "--out", tmp_path / "b", "--token-file", token_file),
            ("run", data, "-w", "1", "--out", tmp_path / "c", "--dry-run", "-v"),
            ("run", data, "-w", "1", "--out", tmp_path / "a", "--resume", "-v"),
            ("run", tmp_path / "missing.csv", "-w", "1", "-v"),
            ("run", data, "--out", tmp_path / "d", "-v"),  # no -w
            ("run", data, "-w", "1", "--api-url", "not a url", "--out", tmp_path / "e"),
            ("demo", "--samples", SAMPLES, "--out", tmp_path / "demo"),
        ]
        codes = []
        for args in runs:
            code, seen = run_cli(*args, env=env)
            codes.append(code)
            texts += seen
        assert codes == [1, 1, 1, 1, 2, 2, 2, 1]  # -v adds a traceback, not another code
        # A rejected token: the wrong one must not show either.
        code, seen = run_cli("run", data, "-w", "1", "--out", tmp_path / "f", "-v",
                             env={**env, "BATCH_ENGAGE_TOKEN": WRONG})
        assert code == ExitStatus.STOPPED
        texts += seen
        code, seen = run_cli("run", data, "-w", "1", "--out", tmp_path / "f", "--resume",
                             env=env)
        assert code == ExitStatus.ROWS_FAILED
        texts += seen

        # An unexpected error, with and without -v: the traceback holds no token.
        def explode(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("simulated bug")

        monkeypatch.setattr("batch_engage.job.Sender.send_all", explode)
        code, seen = run_cli("run", data, "-w", "1", "--out", tmp_path / "g", env=env)
        assert code == ExitStatus.STOPPED
        assert "Run the same command with -v" in seen[1]
        texts += seen
        code, seen = run_cli("run", data, "-w", "1", "-v", "--out", tmp_path / "h", env=env)
        assert code == ExitStatus.STOPPED
        assert "Traceback (most recent call last)" in seen[1]
        assert "RuntimeError: simulated bug" in seen[1]
        texts += seen
    assert "can be read by every user of this machine; restrict it with: chmod 600" in "".join(
        texts)
    assert mock.stats.accepted, "the runs did reach the server"
    assert leaks(texts, tmp_path / "a") == []
    assert leaks(texts, tmp_path) == [str(token_file)]  # the one file the user wrote


def test_reports_are_excel_safe_and_send_the_original_values_again(
    invoke: CliRun, tmp_path: Path
) -> None:
    cells = ['=HYPERLINK("http://x","y")', "+79001234567", "-1", "@SUM(A1)", "\tTab", "'quoted"]
    rows = "".join(f"u{i}@example.com,\"{c.replace(chr(34), chr(34) * 2)}\"\n"
                   for i, c in enumerate(cells))
    data = write_csv(tmp_path / "in.csv", "email,content.note\n" + rows)
    bodies: list[dict[str, object]] = []
    with serve_in_thread(MockConfig(token=TOKEN), script=lambda _n: Fault.API_ERROR) as mock:
        env = {"BATCH_ENGAGE_API_URL": mock.url, "BATCH_ENGAGE_TOKEN": TOKEN}
        first = invoke("run", data, "-w", "1", "--out", tmp_path / "first", env=env)
    assert first.exit_code == ExitStatus.ROWS_FAILED
    raw = (tmp_path / "first" / "failed.csv").read_text("utf-8-sig")
    for cell in cells:
        assert not any(line.startswith(cell[:1]) for line in raw.splitlines()[1:])
    notes = [r["content.note"] for r in read_csv(tmp_path / "first" / "failed.csv")]
    assert notes == ["'" + c if c[0] in "=+-@\t'" else c for c in cells]

    with serve_in_thread(MockConfig(token=TOKEN)) as mock:
        mock.server.on_accept = bodies.append
        env = {"BATCH_ENGAGE_API_URL": mock.url, "BATCH_ENGAGE_TOKEN": TOKEN}
        again = invoke("run", tmp_path / "first" / "failed.csv", "-w", "1",
                       "--out", tmp_path / "again", env=env)
    assert again.exit_code == ExitStatus.SUCCESS, again.output
    sent = sorted(bodies, key=lambda b: str(b["email"]))
    assert [b["content"] for b in sent] == [{"note": c} for c in cells]
    success = read_csv(tmp_path / "again" / "success.csv")
    assert all(not r["email"].startswith(("=", "+", "-", "@")) for r in success)


def self_signed(folder: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture
def https_mock(tmp_path: Path) -> Iterator[str]:
    with serve_in_thread(MockConfig(token=TOKEN), tls=self_signed(tmp_path)) as mock:
        yield mock.url


def test_tls_certificates_are_checked(invoke: CliRun, tmp_path: Path, data: Path,
                                      https_mock: str) -> None:
    env = {"BATCH_ENGAGE_API_URL": https_mock, "BATCH_ENGAGE_TOKEN": TOKEN}
    result = invoke("run", data, "-w", "1", "--out", tmp_path / "out", env=env)
    assert result.exit_code == ExitStatus.STOPPED, result.output
    assert "the server's TLS certificate is not trusted" in result.stderr
    assert "--no-verify-tls" in result.stderr
    assert read_csv(tmp_path / "out" / "success.csv") == []


def test_turning_tls_checks_off_takes_a_flag_and_warns(
    invoke: CliRun, tmp_path: Path, data: Path, https_mock: str
) -> None:
    env = {"BATCH_ENGAGE_API_URL": https_mock, "BATCH_ENGAGE_TOKEN": TOKEN}
    result = invoke("run", data, "-w", "1", "--out", tmp_path / "out", "--no-verify-tls",
                    env=env)
    assert result.exit_code == ExitStatus.ROWS_FAILED  # the one invalid row
    assert "--no-verify-tls: the API's TLS certificate is not checked" in result.stderr
    assert len(read_csv(tmp_path / "out" / "success.csv")) == 30
    assert leaks([result.stdout, result.stderr], tmp_path) == []


def test_a_token_from_a_file_never_enters_the_environment(
    invoke: CliRun, tmp_path: Path, data: Path
) -> None:
    """Child processes (a hook, a shell a library user starts) inherit the environment: a
    token the user kept in a file must not be copied there. Looked at while the run sends,
    since the CLI's test runner puts the environment back afterwards."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, "utf-8")
    token_file.chmod(0o600)
    environments: list[dict[str, str]] = []
    with serve_in_thread(MockConfig(token=TOKEN)) as mock:
        mock.server.on_accept = lambda _body: environments.append(dict(os.environ))
        result = invoke("run", data, "-w", "1", "--out", tmp_path / "out", "--token-file",
                        token_file, "--rate", "0", env={"BATCH_ENGAGE_API_URL": mock.url})
    assert result.exit_code == ExitStatus.ROWS_FAILED  # the one invalid row
    assert len(environments) == 30
    assert [k for env in environments for k, v in env.items() if TOKEN in v] == []


def test_the_options_a_library_user_logs_never_show_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = RunOptions(input=tmp_path / "in.csv", workflow_id=1,
                         api_url="https://api.example.com", token=Secret(TOKEN))
    logging.getLogger("airflow.task").warning("running with %s (%r)", options, options)
    shown = [repr(options), str(options), f"{options!r}", repr(options.token),
             str(options.token), f"{options.token}", json.dumps(options.fixed()),
             caplog.text, repr([options]), repr({"options": options})]
    assert leaks(shown, tmp_path) == []
    assert "token=Secret('***')" in repr(options)
    assert options.token is not None
    assert options.token.reveal() == TOKEN
