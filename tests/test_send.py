"""Whole runs through the CLI against the real mock server: reports, exit codes, stops."""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import socket
from pathlib import Path

import pytest

from batch_engage import RunOptions, Secret, run
from batch_engage.mock_server import MockConfig, serve_in_thread
from batch_engage.progress import Progress, ProgressBar
from batch_engage.sender import Answer
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, SAMPLES, CliRun, read_csv, read_summary, token_env, write_csv

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def emails_csv(tmp_path: Path, n: int, extra: str = "") -> Path:
    rows = "".join(f"user{i}@example.com,Name {i}\n" for i in range(n))
    return write_csv(tmp_path / "in.csv", "email,content.name\n" + rows + extra)


def all_rows(out: Path) -> list[int]:
    rows = [int(r["row"]) for r in read_csv(out / "success.csv")]
    rows += [int(r["_row"]) for r in read_csv(out / "failed.csv")]
    return sorted(rows)


def test_exit_0_every_row_engaged_once(invoke: CliRun, tmp_path: Path) -> None:
    data = emails_csv(tmp_path, 30)
    out = tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        result = invoke("run", data, "-w", "12", "--rate", "0", "--out", out,
                        env=token_env(mock.url))
    assert result.exit_code == ExitStatus.SUCCESS, result.output
    assert mock.stats.accepted == {f"user{i}@example.com": 1 for i in range(30)}
    success = read_csv(out / "success.csv")
    assert list(success[0]) == ["row", "email", "attempts", "http_status", "error_text",
                                "completed_at"]
    # (in the order the answers came: with requests in flight at once, not always row order)
    assert sorted(int(r["row"]) for r in success) == list(range(2, 32))
    assert {(r["attempts"], r["http_status"], r["error_text"]) for r in success} == {
        ("1", "200", "Successful operation")}
    assert all(ISO_MS.fullmatch(r["completed_at"]) for r in success)
    assert read_csv(out / "failed.csv") == []
    summary = read_summary(out)
    assert summary["outcomes"] == {"ok": 30}
    assert summary["requests_sent"] == 30
    assert summary["retries"] == {}
    assert summary["stopped"] is None
    assert "succeeded:                    30" in result.stdout
    assert "Requests: 30 sent" in result.stdout
    assert "failed.csv" not in result.stdout
    for text in [result.stdout.encode(), result.stderr.encode(),
                 *(p.read_bytes() for p in out.iterdir())]:
        assert MOCK_TOKEN.encode() not in text


def test_exit_1_failed_rows_are_reported_and_the_rerun_command_works(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = emails_csv(tmp_path, 40, extra="not-an-email,Bad\n")
    out = tmp_path / "out"
    config = MockConfig(token=MOCK_TOKEN, unknown_rate=0.2, seed=5)
    with serve_in_thread(config) as mock:
        result = invoke("run", data, "-w", "12", "--rate", "0", "--out", out,
                        env=token_env(mock.url))
    assert result.exit_code == ExitStatus.ROWS_FAILED, result.output
    failed = read_csv(out / "failed.csv")
    unknown = [r for r in failed if r["_stage"] == "api"]
    assert unknown
    assert {r["_error"] for r in unknown} == {"api_440"}
    assert all("'Profile not found'" in r["_error_text"] for r in unknown)
    assert {r["_attempts"] for r in unknown} == {"1"}  # final answers are not retried
    assert [r["_stage"] for r in failed if r["email"] == "not-an-email"] == ["validation"]
    assert all_rows(out) == list(range(2, 43))
    assert sum(mock.stats.accepted.values()) == len(read_csv(out / "success.csv"))
    assert "refused by the API:" in result.stdout
    assert "api_440" in result.stdout

    # The printed command sends failed.csv as it is (here to a server that knows everyone).
    printed = result.stdout.split("then send them again:\n")[1].splitlines()[0]
    args = shlex.split(printed)
    assert args[:3] == ["batch-engage", "run", str(out / "failed.csv")]
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as fixed:
        args[args.index("--api-url") + 1] = fixed.url
        again = invoke(*args[1:], "--out", tmp_path / "again", env=token_env(fixed.url))
    assert again.exit_code == ExitStatus.ROWS_FAILED  # the invalid email is still invalid
    assert set(fixed.stats.accepted) == {r["email"] for r in unknown}
    assert [r["email"] for r in read_csv(tmp_path / "again" / "failed.csv")] == ["not-an-email"]


def test_exit_2_a_bad_file_sends_nothing(invoke: CliRun, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "mail,name\na@b.co,Ann\n")
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        result = invoke("run", data, "-w", "12", "--out", tmp_path / "out",
                        env=token_env(mock.url))
        no_token = invoke("run", emails_csv(tmp_path, 2), "-w", "12",
                          env={"BATCH_ENGAGE_API_URL": mock.url})
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "needs a column named 'email'" in result.stderr
    assert no_token.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "BATCH_ENGAGE_TOKEN" in no_token.stderr
    assert mock.stats.received == 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_exit_3_a_rejected_token_stops_the_run(
    invoke: CliRun, tmp_path: Path, concurrency: int
) -> None:
    data = emails_csv(tmp_path, 200)
    out = tmp_path / "out"
    wrong = "wrong-token-d41d8cd98f00b204"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=20)) as mock:
        result = invoke("run", data, "-w", "12", "--rate", "0", "--concurrency",
                        str(concurrency), "--out", out, env=token_env(mock.url, wrong))
    assert result.exit_code == ExitStatus.STOPPED
    assert 1 <= mock.stats.received <= concurrency
    assert mock.stats.answers == {"bad_token": mock.stats.received}
    assert "Stopped: the API rejected the token" in result.stderr
    assert "BATCH_ENGAGE_TOKEN" in result.stderr
    assert "200 rows were not sent" in result.stderr
    summary = read_summary(out)
    assert summary["outcomes"] == {"unsent": 200}
    assert summary["rows"] == 200
    assert read_csv(out / "success.csv") == read_csv(out / "failed.csv") == []
    for text in [result.stdout.encode(), result.stderr.encode(),
                 *(p.read_bytes() for p in out.iterdir())]:
        assert wrong.encode() not in text


@pytest.mark.parametrize(
    ("config", "attempts", "stage", "error", "unanswered"),
    [
        (MockConfig(token=MOCK_TOKEN, fail_rate=1.0), 2, "http", "http_503", 0),
        (MockConfig(token=MOCK_TOKEN, drop_rate=1.0), 3, "network", "disconnected", 12),
    ],
    ids=["server errors", "dropped connections"],
)
def test_server_errors_and_dropped_connections_end_in_their_stages(
    invoke: CliRun, tmp_path: Path, config: MockConfig, attempts: int, stage: str,
    error: str, unanswered: int,
) -> None:
    data = emails_csv(tmp_path, 6)
    with serve_in_thread(config) as mock:
        result = invoke("run", data, "-w", "12", "--rate", "0", "--max-attempts",
                        str(attempts), "--out", tmp_path / "out", env=token_env(mock.url))
    assert result.exit_code == ExitStatus.ROWS_FAILED
    failed = read_csv(tmp_path / "out" / "failed.csv")
    assert {(r["_stage"], r["_error"], r["_attempts"]) for r in failed} == {
        (stage, error, str(attempts))}
    assert f"gave up after {attempts} tries" in failed[0]["_error_text"]
    summary = read_summary(tmp_path / "out")
    assert summary["retries"] == {error: 6 * (attempts - 1)}
    assert summary["retries_unanswered"] == unanswered
    if unanswered:
        assert f"{unanswered} after no answer" in result.stdout
    assert mock.stats.accepted == {}


def test_phones_are_sent_and_reported_in_e164(invoke: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        result = invoke("run", SAMPLES / "phones.xlsx", "--config", SAMPLES / "phones.toml",
                        "--rate", "0", "--out", out, env=token_env(mock.url))
    assert result.exit_code == ExitStatus.ROWS_FAILED  # the sample's two invalid rows
    success = read_csv(out / "success.csv")
    # A cell starting with + is written with the formula guard, as in every report. (The
    # rows are in the order the answers came.)
    assert sorted(r["phone"] for r in success) == [
        "'+79001234567", "'+79037654321", "'+79161234567", "'+79261112233"]
    assert set(mock.stats.accepted) == {r["phone"][1:] for r in success}


def test_the_demo_sends_the_samples_to_its_own_mock_server(
    invoke: CliRun, tmp_path: Path
) -> None:
    result = invoke("demo", "--samples", SAMPLES, "--out", tmp_path)
    assert result.exit_code == ExitStatus.ROWS_FAILED  # the samples' invalid rows
    assert "Mock API server (in this process): http://127.0.0.1:" in result.stdout
    assert "The mock server engaged 13 profiles" in result.stdout
    for stem in ("attachments", "clients_cp1251", "customers", "phones"):
        summary = read_summary(tmp_path / stem)
        assert summary["outcomes"]["ok"] >= 2
        assert summary["rows"] == summary["outcomes"]["ok"] + summary["failed"]


def test_a_crash_keeps_the_rows_that_had_finished(tmp_path: Path) -> None:
    calls = 0

    async def breaks(_body: bytes) -> Answer:
        nonlocal calls
        calls += 1
        if calls == 30:
            raise RuntimeError("simulated bug")
        return Answer(200, b'{"data": null, "error": 0, "error_text": "ok"}')

    options = RunOptions(input=emails_csv(tmp_path, 100), workflow_id=1,
                         api_url="http://unused.invalid", token=Secret("t"),
                         rate_per_second=0, max_in_flight=1, out=tmp_path / "out")
    with pytest.raises(RuntimeError, match="simulated bug"):
        run(options, transport=breaks)
    assert len(read_csv(tmp_path / "out" / "success.csv")) == 29


def test_the_library_runs_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A notebook has a loop running already: run() must still work there."""
    async def ok(_body: bytes) -> Answer:
        return Answer(200, b'{"error": 0, "error_text": "ok"}')

    options = RunOptions(input=emails_csv(tmp_path, 5), workflow_id=1,
                         api_url="http://unused.invalid", token=Secret("t"),
                         out=tmp_path / "out", rate_per_second=0)

    async def notebook_cell() -> int:
        return run(options, transport=ok).outcomes["ok"]

    assert asyncio.run(notebook_cell()) == 5


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_counts_on_a_terminal_only() -> None:
    terminal = FakeTerminal()
    assert ProgressBar.wanted(quiet=False, stream=terminal)
    assert not ProgressBar.wanted(quiet=True, stream=terminal)
    assert not ProgressBar.wanted(quiet=False, stream=io.StringIO())
    progress = Progress(10, [ProgressBar(terminal)])
    for i in range(10):
        progress.row_done(ok=i % 3 != 0)
    progress.close(finished=True)
    shown = terminal.getvalue()
    assert "10/10" in shown
    assert "ok=6 failed=4" in shown
    assert "row/s" in shown


def test_a_wrong_api_url_stops_at_once_and_the_rows_stay_to_send(
    invoke: CliRun, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("run", emails_csv(tmp_path, 500), "-w", "1", "--out", tmp_path / "out",
                    env=token_env(f"http://127.0.0.1:{port}"))
    assert result.exit_code == ExitStatus.STOPPED
    assert "no request has reached the API yet: check --api-url" in result.stderr
    assert "To send the rest:" in result.stderr
    assert read_summary(tmp_path / "out")["outcomes"] == {"unsent": 500}
