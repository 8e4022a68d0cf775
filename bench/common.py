"""What the bench sections share: the data folder and measuring one process."""

from __future__ import annotations

import json
import os
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
