"""Every command README.md shows, run against the mock API, so that the README cannot rot.

Which text is a command is decided by the fenced block it is in (inline code is prose):

- ```sh: every line (a trailing ``\\`` joins the next; ``#`` comments are dropped). ``export``
  and ``cd`` lines set up the block's later lines, as in a terminal; the other lines run in
  order, in one folder, each with ``bash -c``.
- ```console: each ``$ `` line is a command, as in ```sh; the lines after it are output it
  must print (a line that ends in ``…`` is the start of a line).
- ```crontab: ``NAME=value`` lines are cron's environment, the others five time fields and a
  command, which ``sh`` runs as cron would (from ``$HOME``, a bare ``PATH``).
- ```ini: systemd units (first line ``# /etc/systemd/system/NAME``). The service's
  ``ExecStart=`` runs as systemd would (``WorkingDirectory=``, a credentials folder for ``%d``,
  no shell); a timer of the same name must start it.
- ```toml: a config file, written where its first line (``# PATH``) says before anything runs,
  so the commands read the README's own config text.
- ```python: run as a script. Airflow is not installed: a stand-in package (``AIRFLOW``)
  gives ``@dag`` and ``@task`` that call the function as it is, an ``engage_api`` connection
  that points at the mock, and a ``PostgresHook`` whose ``get_df`` returns a frame with the
  columns the query names. So the DAG file runs its tasks in place of a scheduler.

Every sh and console command must have its exit code in ``EXPECTED``, be a long-running server
in ``SERVERS``, or be in ``SKIPPED`` with the reason it cannot run here: a command that is in
none of them fails ``test_every_readme_command_is_covered``. Placeholders become the test's
own: the install folder ``/srv/batch-engage`` is the test's folder, the API address
``https://your-account.example.com`` the mock's, and the mock server's default address
``127.0.0.1:8080`` the one a block's ``batch-engage mock-server`` got.

Slow: it runs the installed console script in subprocesses, which ``make mutate``'s mutants
never reach, and ``make mutate`` copies no README.md.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from batch_engage.mock_server import Fault, MockConfig, RunningMock, serve_in_thread

from .conftest import MOCK_TOKEN, REPO, SAMPLES, read_csv

pytestmark = pytest.mark.slow

README = REPO / "README.md"
INSTALL_DIR = "/srv/batch-engage"
API_PLACEHOLDER = "https://your-account.example.com"
MOCK_SERVER_DEFAULT = "127.0.0.1:8080"
# The nightly job the README's operator section describes: its config and the CRM's export.
NIGHTLY_CONFIG = "nightly.toml"
EXPORT = "exports/clients.csv"
# Run folders named in the README's commands, which the setups below create.
STOPPED_NIGHT = "runs/clients-20260102T023000Z"
FAILED_NIGHT = "runs/clients-20260103T023000Z"
UNCERTAIN_NIGHT = "runs/clients-20260104T023000Z"
REFUSED_TOKEN = "a-token-the-api-refuses"
COMMAND_TIMEOUT = 90

SKIPPED = {
    "make demo": "builds .venv in the checkout; the `batch-engage demo` it runs is "
                 "tests/test_wheel.py's, from an installed wheel",
    "make test": "runs the whole suite, this test included",
    "sudo useradd --system --create-home --home-dir /srv/batch-engage --shell /bin/bash "
    "batch-engage":
        "needs root; the test's folder stands for the user's home",
    "sudo -iu batch-engage": "needs root, and opens an interactive shell",
    "python3 -m venv .venv && .venv/bin/pip install batch-engage":
        "installs from the package index; the test runs the batch-engage under test",
    "$EDITOR engage-token": "interactive; the test writes the token file itself",
    "sudo systemctl daemon-reload": "needs systemd as init; the service's ExecStart= is run "
                                    "by test_the_systemd_service_runs_a_night",
    "sudo systemctl enable --now batch-engage-nightly.timer": "needs systemd as init",
    "systemctl list-timers batch-engage-nightly.timer": "needs systemd as init",
    "journalctl -u batch-engage-nightly.service -n 20": "needs systemd's journal",
}
# Started in the background with --port 0 for the rest of their block, then stopped with
# SIGINT (Ctrl-C), after which they must exit 0.
SERVERS = {
    ".venv/bin/batch-engage serve --api-url https://your-account.example.com "
    "--token-file ~/.engage-token",
    "batch-engage mock-server --fail-rate 0.1 --rate-limit 200 --unknown-rate 0.05 "
    "--drop-rate 0.02 --latency-ms 50",
}
# The exit code each command ends with; the samples hold invalid rows on purpose (exit 1).
EXPECTED = {
    "batch-engage run customers.csv -w 12 --dry-run": 1,
    "batch-engage run phones.xlsx -w 45 --matching phone --phone-region RU --dry-run": 1,
    "batch-engage run samples/clients_cp1251.csv --config samples/clients_cp1251.toml "
    "--dry-run": 1,
    "batch-engage run customers.csv -w 12 --rate 20 --concurrency 8": 1,
    "BATCH_ENGAGE_TOKEN=mock-token batch-engage run customers.csv -w 12 "
    "--api-url http://127.0.0.1:8080": 1,
    "batch-engage run customers.csv --out runs/customers-nightly --resume "
    "--token-file ~/.engage-token": 1,
    "mkdir -p exports logs": 0,
    "install -m 600 /dev/null engage-token": 0,
    "batch-engage run exports/clients.csv --config nightly.toml --dry-run": 0,
    "head -n 1 exports/clients.csv > exports/empty.csv": 0,
    "batch-engage run exports/empty.csv --config nightly.toml": 2,
    "batch-engage ledger engaged.sqlite": 0,
    "batch-engage ledger engaged.sqlite --forget -w 31": 0,
    "tail -n 1 logs/last-night.txt": 0,
    "batch-engage run exports/clients.csv --config nightly.toml "
    "--out runs/clients-20260102T023000Z --resume": 0,
    "batch-engage run runs/clients-20260103T023000Z/failed.csv --config nightly.toml "
    "--encoding utf-8-sig --delimiter , --min-rows 0": 0,
    "batch-engage run exports/clients.csv --config nightly.toml --dry-run | head -n 1": 0,
    "batch-engage run runs/clients-20260104T023000Z/failed.csv --config nightly.toml "
    "--encoding utf-8-sig --delimiter , --min-rows 0 --resend-uncertain": 0,
}

# --- the README's blocks -----------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
KNOWN_LANGUAGES = {"", "sh", "console", "crontab", "ini", "toml", "python"}
"""A block without a language shows output (the run log's lines), not commands."""


@dataclass(frozen=True)
class Block:
    language: str
    line: int
    """README line of the block's first line of text."""
    text: str

    @property
    def id(self) -> str:
        return f"README.md:{self.line}-{self.language}"


@dataclass(frozen=True)
class Command:
    text: str
    """As the README writes it, comments dropped: the key of EXPECTED, SKIPPED..."""
    output: tuple[str, ...] = ()
    """Console blocks: the lines shown after the command."""

    @property
    def sets_up_shell(self) -> bool:
        return re.match(r"(export|cd)\s", self.text) is not None


def readme_blocks(language: str | None = None) -> list[Block]:
    readme = README.read_text("utf-8")
    return [Block(m[1], readme.count("\n", 0, m.start(2)) + 1, m[2])
            for m in FENCE.finditer(readme) if language in (None, m[1])]


def without_comment(line: str) -> str:
    """The line up to a ``#`` that starts a shell comment (not one inside quotes)."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def logical_lines(text: str) -> Iterator[str]:
    """Lines with ``\\``-continuations joined."""
    pending = ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""


def commands(block: Block) -> list[Command]:
    if block.language == "sh":
        return [Command(text) for line in logical_lines(block.text)
                if (text := without_comment(line))]
    assert block.language == "console", block.id
    found: list[Command] = []
    for line in logical_lines(block.text):
        if line.startswith("$ "):
            found.append(Command(without_comment(line[2:])))
        else:
            assert found, f"{block.id}: output before the first `$ ` command"
            last = found.pop()
            found.append(Command(last.text, (*last.output, line.rstrip())))
    return found


def shell_commands() -> list[Command]:
    return [c for language in ("sh", "console") for b in readme_blocks(language)
            for c in commands(b)]


def config_files() -> dict[str, str]:
    """The README's config files by path, as their first line names them."""
    files = {}
    for block in readme_blocks("toml"):
        named = re.match(r"# (\S+\.toml)\n", block.text)
        assert named, f"{block.id}: a config block starts with `# PATH.toml`, its file's path"
        files[named[1]] = block.text
    return files


def unit_files() -> dict[str, dict[str, list[str]]]:
    """systemd units by file name: section -> key -> values, in order."""
    units: dict[str, dict[str, list[str]]] = {}
    for block in readme_blocks("ini"):
        named = re.match(r"# /etc/systemd/system/(\S+)\n", block.text)
        assert named, f"{block.id}: a unit starts with `# /etc/systemd/system/NAME`"
        unit = units.setdefault(named[1], {})
        section = ""
        for line in block.text.splitlines():
            if re.fullmatch(r"\[\w+\]", line):
                section = line[1:-1]
            elif line and not line.startswith("#"):
                key, _, value = line.partition("=")
                unit.setdefault(f"{section}.{key}", []).append(value)
    return units


# --- the folder the commands run in ------------------------------------------------------------

@dataclass
class Workspace:
    root: Path
    """``/srv/batch-engage``, where every command runs."""
    home: Path
    mock_url: str
    env: dict[str, str]
    replacements: dict[str, str] = field(default_factory=dict)

    def localize(self, text: str) -> str:
        for placeholder, value in self.replacements.items():
            text = text.replace(placeholder, value)
        return text

    def cli(self, *args: str, expect: int, env: dict[str, str] | None = None,
            output: Path | None = None) -> None:
        """The test's own batch-engage command, to set the scene for a README command."""
        done = subprocess.run(
            [batch_engage_script(), *args], cwd=self.root, env={**self.env, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
            timeout=COMMAND_TIMEOUT)
        if output is not None:
            output.write_text(done.stdout, "utf-8")
        assert done.returncode == expect, f"setup: batch-engage {shlex.join(args)}\n{done.stdout}"


def batch_engage_script() -> str:
    script = shutil.which("batch-engage", path=str(Path(sys.executable).parent))
    assert script, f"no batch-engage console script beside {sys.executable}: pip install -e ."
    return script


def write_secret(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text + "\n", "utf-8")
    path.chmod(mode)


def nightly_export(config: dict[str, Any], emails: list[str]) -> bytes:
    """A CSV shaped as the nightly config reads it: its [columns] headers, encoding and
    delimiter, a row for each email."""
    headers = list(config["columns"])
    assert config.get("matching", "email") == "email", "the export is written for emails"
    lines = [headers] + [
        [email if config["columns"][h] == "email" else f"Клиент {i}" for h in headers]
        for i, email in enumerate(emails)]
    delimiter = config.get("delimiter", ",")
    text = "".join(delimiter.join(line) + "\r\n" for line in lines)
    return text.encode(config.get("encoding", "utf-8"))


@pytest.fixture(scope="module")
def mock() -> Iterator[RunningMock]:
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as running:
        yield running


@pytest.fixture
def ws(tmp_path: Path, mock: RunningMock) -> Workspace:
    root, home, bin_dir = tmp_path / "srv", tmp_path / "home", tmp_path / "bin"
    for folder in (root / ".venv" / "bin", home, bin_dir):
        folder.mkdir(parents=True)
    for link in (root / ".venv" / "bin" / "batch-engage", bin_dir / "batch-engage"):
        link.symlink_to(batch_engage_script())
    shutil.copytree(SAMPLES, root / "samples")
    for sample in ("customers.csv", "phones.xlsx"):
        shutil.copy2(SAMPLES / sample, root / sample)
    write_secret(home / ".engage-token", MOCK_TOKEN)
    write_secret(root / "engage-token", MOCK_TOKEN)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BATCH_ENGAGE_") and k not in {"PYTHONPATH", "PYTHONHOME"}}
    env |= {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    workspace = Workspace(root, home, mock.url, env,
                          {INSTALL_DIR: str(root), API_PLACEHOLDER: mock.url})
    for path, text in config_files().items():
        target = Path(workspace.localize(path))
        target = target if target.is_absolute() else root / target
        assert target.is_relative_to(root), f"{path} is outside {INSTALL_DIR}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(workspace.localize(text), "utf-8")
    (root / "logs").mkdir()  # as the README's first steps leave the folder
    write_export(workspace)
    return workspace


def nightly_config(ws: Workspace) -> dict[str, Any]:
    return tomllib.loads((ws.root / NIGHTLY_CONFIG).read_text("utf-8"))


def write_export(ws: Workspace, *extra_emails: str) -> None:
    """Tonight's export: as many profiles as the config's min_rows asks for, and others."""
    config = nightly_config(ws)
    emails = [f"client{i}@example.com" for i in range(config.get("min_rows") or 10)]
    (ws.root / EXPORT).parent.mkdir(exist_ok=True)
    (ws.root / EXPORT).write_bytes(nightly_export(config, [*emails, *extra_emails]))


# --- scenes a README command continues from ----------------------------------------------------

def a_stopped_resume(ws: Workspace) -> None:
    """The run the README's --resume continues: stopped by a refused token."""
    ws.cli("run", "customers.csv", "-w", "12", "--out", "runs/customers-nightly",
           "--api-url", ws.mock_url, env={"BATCH_ENGAGE_TOKEN": REFUSED_TOKEN}, expect=3)


def a_night(ws: Workspace) -> None:
    ws.cli("run", EXPORT, "--config", NIGHTLY_CONFIG, "--rate", "0", expect=0)


def a_stopped_night(ws: Workspace) -> None:
    """The token was refused, the night stopped; then someone put the right token back."""
    write_secret(ws.root / "engage-token", REFUSED_TOKEN)
    ws.cli("run", EXPORT, "--config", NIGHTLY_CONFIG, "--out", STOPPED_NIGHT, expect=3,
           output=ws.root / "logs" / "last-night.txt")
    write_secret(ws.root / "engage-token", MOCK_TOKEN)


def a_failed_night(ws: Workspace) -> None:
    """A night with an invalid email, then fixed in failed.csv by hand."""
    write_export(ws, "sergey@rambler")
    ws.cli("run", EXPORT, "--config", NIGHTLY_CONFIG, "--out", FAILED_NIGHT, "--rate", "0",
           expect=1)
    failed = ws.root / FAILED_NIGHT / "failed.csv"
    fixed = failed.read_text("utf-8-sig").replace("sergey@rambler,", "sergey@rambler.ru,")
    failed.write_text(fixed, "utf-8-sig")


def a_night_after_a_kill(ws: Workspace) -> None:
    """A night killed while requests were on their way (the API answers slowly), then the
    next night, which lists those rows as uncertain in its failed.csv."""
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, slow_seconds=3),
                         script=lambda _n: Fault.SLOW) as slow:
        killed = subprocess.Popen(
            [batch_engage_script(), "run", EXPORT, "--config", NIGHTLY_CONFIG,
             "--api-url", slow.url, "--out", "runs/killed"],
            cwd=ws.root, env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        deadline = time.monotonic() + 30
        while not slow.stats.received and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        killed.kill()
        output, _ = killed.communicate()
        assert slow.stats.received, f"setup: the night to kill sent nothing:\n{output}"
    ws.cli("run", EXPORT, "--config", NIGHTLY_CONFIG, "--out", UNCERTAIN_NIGHT, "--rate", "0",
           expect=1)
    stages = {row["_stage"] for row in read_csv(ws.root / UNCERTAIN_NIGHT / "failed.csv")}
    assert stages == {"uncertain"}


SETUPS: dict[str, Callable[[Workspace], None]] = {
    "batch-engage run customers.csv --out runs/customers-nightly --resume "
    "--token-file ~/.engage-token": a_stopped_resume,
    "batch-engage ledger engaged.sqlite": a_night,
    "tail -n 1 logs/last-night.txt": a_stopped_night,
    "batch-engage run runs/clients-20260103T023000Z/failed.csv --config nightly.toml "
    "--encoding utf-8-sig --delimiter , --min-rows 0": a_failed_night,
    "batch-engage run runs/clients-20260104T023000Z/failed.csv --config nightly.toml "
    "--encoding utf-8-sig --delimiter , --min-rows 0 --resend-uncertain": a_night_after_a_kill,
}


# --- the tests ---------------------------------------------------------------------------------

def test_every_readme_command_is_covered() -> None:
    languages = {b.language for b in readme_blocks()}
    assert languages <= KNOWN_LANGUAGES, (
        f"README.md has ```{sorted(languages - KNOWN_LANGUAGES)} blocks: give them a rule here")
    shown = {c.text for c in shell_commands() if not c.sets_up_shell}
    listed = EXPECTED.keys() | SERVERS | SKIPPED.keys()
    assert not shown - listed, (
        "README commands with no expected exit code in tests/test_readme.py (EXPECTED, or "
        f"SERVERS, or SKIPPED with a reason): {sorted(shown - listed)}")
    assert not (listed | SETUPS.keys()) - shown, (
        f"listed in tests/test_readme.py but no longer in README.md: "
        f"{sorted((listed | SETUPS.keys()) - shown)}")
    assert not EXPECTED.keys() & SKIPPED.keys()
    assert config_files(), "the README's config blocks were not found"


@pytest.mark.parametrize(
    "block", [b for language in ("sh", "console") for b in readme_blocks(language)],
    ids=lambda b: b.id)
def test_shell_block(block: Block, ws: Workspace) -> None:
    shell: list[str] = ["set -e"]
    servers: list[subprocess.Popen[str]] = []
    try:
        for command in commands(block):
            text = ws.localize(command.text)
            if command.sets_up_shell:
                shell.append(text)
            elif command.text in SKIPPED:
                continue
            elif command.text in SERVERS:
                servers.append(start_server(ws, shell, text))
            else:
                if (setup := SETUPS.get(command.text)) is not None:
                    setup(ws)
                done = subprocess.run(
                    ["bash", "-c", "\n".join([*shell, text])], cwd=ws.root, env=ws.env,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                    timeout=COMMAND_TIMEOUT)
                expected = EXPECTED.get(command.text)
                assert done.returncode == expected, (
                    f"{block.id}: {command.text}\nexited {done.returncode}, " + (
                        f"README implies {expected}" if expected is not None else
                        "and has no expected exit code in EXPECTED") + f":\n{done.stdout}")
                for shown in command.output:
                    assert printed(ws.localize(shown), done.stdout), (
                        f"{block.id}: {command.text}\ndid not print {shown!r}:\n{done.stdout}")
    finally:
        stopped = [stop_server(server) for server in servers]
    for code, output in stopped:
        assert code == 0, f"{block.id}: a server ended with {code} on Ctrl-C:\n{output}"


def printed(shown: str, output: str) -> bool:
    if shown.endswith("…"):
        return any(line.startswith(shown[:-1].rstrip()) for line in output.splitlines())
    return shown in output.splitlines()


def start_server(ws: Workspace, shell: list[str], text: str) -> subprocess.Popen[str]:
    """Start a long-running command on a free port; wait until it answers."""
    server = subprocess.Popen(
        ["bash", "-c", "\n".join([*shell, f"exec {text} --port 0"])], cwd=ws.root, env=ws.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    printed_lines = ""
    while (address := re.search(r"http://(127\.0\.0\.1:\d+)(/\?key=\S+)?",
                                printed_lines)) is None:
        line = server.stdout.readline()
        if not line:
            server.wait()
            pytest.fail(f"{text}\nended before printing its address:\n{printed_lines}")
        printed_lines += line
    if address[2]:  # batch-engage serve: its page, through the access key it printed
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with browser.open(address[0], timeout=30) as page:
            assert 'name="file"' in page.read().decode("utf-8")
    else:  # batch-engage mock-server: later commands in the block send to it
        ws.replacements[MOCK_SERVER_DEFAULT] = address[1]
    return server


def stop_server(server: subprocess.Popen[str]) -> tuple[int, str]:
    server.send_signal(signal.SIGINT)
    output, _ = server.communicate(timeout=30)
    return server.returncode, output


def cron_job(ws: Workspace) -> tuple[dict[str, str], str]:
    """The README's crontab: cron's environment for its job, and the job's command."""
    [block] = readme_blocks("crontab")
    env = {"HOME": str(ws.home), "LOGNAME": "batch-engage", "SHELL": "/bin/sh",
           "PATH": "/usr/bin:/bin"}
    jobs = []
    for line in block.text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if setting := re.fullmatch(r"(\w+)=(.*)", line):
            env[setting[1]] = setting[2]
            continue
        fields = line.split(maxsplit=5)
        assert len(fields) == 6, f"{block.id}: not five time fields and a command: {line}"
        # To cron an unescaped % ends the command: what follows goes to its stdin.
        assert not re.search(r"(?<!\\)%", fields[5]), f"{block.id}: escape % as \\%"
        jobs.append(ws.localize(fields[5].replace("\\%", "%")))
    [job] = jobs
    return env, job


def run_cron_job(ws: Workspace) -> subprocess.CompletedProcess[str]:
    env, job = cron_job(ws)
    return subprocess.run(["/bin/sh", "-c", job], cwd=ws.home, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False,
                          timeout=COMMAND_TIMEOUT)


def test_the_cron_job_runs_a_night_and_mails_nothing(ws: Workspace) -> None:
    last_night = ws.root / "logs" / "last-night.txt"
    for engaged in ("succeeded:", "engaged before, skipped:"):  # the same export twice
        done = run_cron_job(ws)
        assert (done.returncode, done.stdout) == (0, ""), done.stdout
        assert f"  {engaged}" in last_night.read_text("utf-8"), last_night.read_text("utf-8")


def test_the_cron_job_mails_the_exit_code_of_a_refused_export(ws: Workspace) -> None:
    export = ws.root / EXPORT
    export.write_bytes(export.read_bytes().split(b"\r\n")[0] + b"\r\n")  # the header alone
    done = run_cron_job(ws)
    assert done.returncode == 0
    assert re.fullmatch(r"batch-engage exited 2: see \S+/logs/last-night.txt\n", done.stdout)
    assert "fewer than --min-rows" in (ws.root / "logs" / "last-night.txt").read_text()


def test_the_systemd_service_runs_a_night(ws: Workspace, tmp_path: Path) -> None:
    units = unit_files()
    [service] = [name for name in units if name.endswith(".service")]
    assert f"{service.removesuffix('.service')}.timer" in units, "no timer starts the service"
    unit = units[service]
    assert unit["Service.Type"] == ["oneshot"]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for credential in unit.get("Service.LoadCredential", []):
        write_secret(credentials / credential.partition(":")[0], MOCK_TOKEN, mode=0o400)
    [exec_start] = unit["Service.ExecStart"]

    def specifier(match: re.Match[str]) -> str:
        assert match[1] in "d%", f"ExecStart= uses %{match[1]}, which this test does not expand"
        return str(credentials) if match[1] == "d" else "%"

    argv = shlex.split(ws.localize(re.sub(r"%(.)", specifier, exec_start)))
    [working_directory] = unit["Service.WorkingDirectory"]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(ws.home), "CREDENTIALS_DIRECTORY": str(credentials)}
    done = subprocess.run(argv, cwd=ws.localize(working_directory), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stdout
    [summary] = (ws.root / "runs").glob("*/summary.json")
    assert json.loads(summary.read_text("utf-8"))["outcomes"] == {
        "ok": nightly_config(ws)["min_rows"]}


# A stand-in for the parts of Airflow the README's DAG uses (see the module's docstring).
AIRFLOW = {
    "airflow/__init__.py": "",
    "airflow/decorators.py": '''
import functools, json, os

def _note(entry):
    with open(os.environ["README_TEST_TASK_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\\n")

def task(function=None, **_options):
    def decorate(f):
        _note({"defined": f.__name__})
        @functools.wraps(f)
        def called(*args, **kwargs):
            returned = f(*args, **kwargs)
            _note({"called": f.__name__, "returned": returned})
            return returned
        return called
    return decorate(function) if function is not None else decorate

def dag(function=None, **_options):
    return function if function is not None else (lambda f: f)
''',
    "airflow/exceptions.py": "class AirflowFailException(Exception):\n    pass\n",
    "airflow/hooks/__init__.py": "",
    "airflow/hooks/base.py": '''
import os
from types import SimpleNamespace

class BaseHook:
    @staticmethod
    def get_connection(conn_id):
        assert conn_id == "engage_api", conn_id
        return SimpleNamespace(host=os.environ["README_TEST_API_URL"],
                               password=os.environ["README_TEST_TOKEN"])
''',
    "airflow/providers/__init__.py": "",
    "airflow/providers/postgres/__init__.py": "",
    "airflow/providers/postgres/hooks/__init__.py": "",
    "airflow/providers/postgres/hooks/postgres.py": '''
import re
import pandas as pd

class PostgresHook:
    def __init__(self, postgres_conn_id):
        self.conn_id = postgres_conn_id

    def get_df(self, sql, parameters=None, *, df_type="pandas"):
        assert df_type == "pandas"
        selected = re.match(r"\\s*SELECT\\s+(.*?)\\s+FROM\\s", sql, re.IGNORECASE | re.DOTALL)
        names = [re.split(r"\\s+AS\\s+", part.strip(), flags=re.IGNORECASE)[-1].strip('"')
                 for part in selected[1].split(",")]
        return pd.DataFrame({name: [f"signup{i}@example.com" if name == "email" else f"Name {i}"
                                    for i in range(5)] for name in names})
''',
}


@pytest.mark.parametrize("block", readme_blocks("python"), ids=lambda b: b.id)
def test_python_block(block: Block, ws: Workspace, tmp_path: Path) -> None:
    stubs, task_log = tmp_path / "stubs", tmp_path / "tasks.jsonl"
    for name, source in AIRFLOW.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(source, "utf-8")
    script = tmp_path / f"readme_{block.line}.py"
    script.write_text(ws.localize(block.text), "utf-8")
    env = {**ws.env, "PYTHONPATH": str(stubs), "README_TEST_TASK_LOG": str(task_log),
           "README_TEST_API_URL": ws.mock_url, "README_TEST_TOKEN": MOCK_TOKEN}
    done = subprocess.run([sys.executable, str(script)], cwd=ws.root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, f"{block.id}:\n{done.stdout}"
    notes = ([json.loads(line) for line in task_log.read_text("utf-8").splitlines()]
             if task_log.exists() else [])
    defined = [n["defined"] for n in notes if "defined" in n]
    called = [n for n in notes if "called" in n]
    assert sorted(defined) == sorted(n["called"] for n in called), "a task did not run"
    for note in called:
        summary = json.loads((Path(note["returned"]) / "summary.json").read_text("utf-8"))
        assert summary["failed"] == 0
        assert summary["outcomes"]["ok"] > 0, note
