"""What the bench sections share: the data folder and measuring one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
# Run as a script in isolated mode (-I): it needs only the standard library.
SPAWN = Path(__file__).with_name("spawn.py")


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    """Wall time of the whole process, interpreter start included."""
    peak_bytes: int
    """Peak RSS of the process alone (ru_maxrss, as ``/usr/bin/time -v`` reports it)."""
    returncode: int
    timed_out: bool
    stdout: str
    stderr: str


def measure(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 0,
            capture: bool = False) -> Measured:
    """Run COMMAND through ``bench.spawn``, so that this process's memory is not counted in.

    With CAPTURE, its stdout and stderr are returned; otherwise stdout is dropped and
    stderr is this process's.
    """
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", str(SPAWN), str(write_end), f"{timeout:g}", *command],
            pass_fds=(write_end,), env={**os.environ, **(env or {})}, text=True,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture else None)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    with os.fdopen(read_end) as report:
        stdout, stderr = child.communicate()
        text = report.read()
    if child.returncode != 0 or not text:
        sys.exit(f"bench.spawn failed (exit {child.returncode}) running {' '.join(command)}")
    figures = json.loads(text)
    return Measured(seconds=figures["seconds"], peak_bytes=figures["peak_bytes"],
                    returncode=figures["returncode"], timed_out=figures["timed_out"],
                    stdout=stdout or "", stderr=stderr or "")


def run_cli(args: list[str], env: dict[str, str] | None = None,
            module: str = "batch_engage") -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one batch-engage process, as /usr/bin/time -v reports."""
    done = measure([sys.executable, "-m", module, *args], env=env)
    if done.returncode not in (0, 1):
        sys.exit(f"batch-engage {' '.join(args)} exited {done.returncode}")
    return done.seconds, done.peak_bytes


def id_config() -> Path:
    """A config that sends the column ``content.customer_id`` as ``field_value``."""
    path = DATA / "by-id.toml"
    path.write_text('[columns]\n"content.customer_id" = "field_value"\n', "utf-8")
    return path


def mock_process(token: str, latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_engage", "mock-server", "--port", "0", "--token", token,
         "--latency-ms", f"{latency_ms:g}"],
        stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    match = re.search(r"listening on (http://[0-9.:]+)", process.stderr.readline())
    if match is None:
        process.kill()
        sys.exit("the mock server did not start")
    return process, match.group(1)


def timed_run(data: Path, url: str, token: str, out: Path, *, concurrency: int,
              module: str = "batch_engage", extra: tuple[str, ...] = ()) -> float:
    """The run's own duration (read, map, send, report), from its summary.json."""
    rows = sum(1 for _ in data.open("rb")) - 1
    run_cli(["run", str(data), "-w", "1", "--rate", "0", "--concurrency", str(concurrency),
             "-q", "--api-url", url, "--out", str(out), *extra],
            env={"BATCH_ENGAGE_TOKEN": token}, module=module)
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    if summary["outcomes"] != {"ok": rows}:
        sys.exit(f"the run did not send every row: {summary['outcomes']}")
    seconds: float = summary["duration_seconds"]
    return seconds


def git_head() -> str:
    """The commit the measured sources are at (short hash), or ``unknown``."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=DATA.parent.parent,
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def put_section(path: Path, title: str, section: str, header: str) -> None:
    """Put SECTION (starting with its TITLE line) in the results file, replacing the one
    already there; a new file starts with HEADER (the machine's description)."""
    text = path.read_text("utf-8") if path.exists() else header
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", "utf-8")
