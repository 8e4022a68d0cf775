"""The ledger's looker process: a dry run's look-ups, answered in order, as the run's own."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from batch_engage import ledger as ledger_module
from batch_engage import ledger_looker
from batch_engage.ledger import COUNTED, Entry, Ledger, LookedUp, LookerError
from batch_engage.mapper import Request, RowError

from .test_journal import _alive, _this_package

NOW = 1_000_000.0
DAY = 86_400.0


def ledger_of(path: Path, entries: list[tuple[str, str, float]]) -> Path:
    """A ledger whose workflow 1 holds ``entries`` (identifier, state, time), all made by
    one run that is not running (its journal is gone)."""
    Ledger(path, workflow_id=1, kind="email", days=None, run=None).close()
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("INSERT INTO runs (id, folder) VALUES (7, '/gone/run')")
        db.executemany("INSERT INTO entries VALUES (1, 'email', ?, ?, 7, 2, ?)", entries)
    return path


def ready(ledger: Ledger) -> None:
    """The ledger's looker started and ready: every batch asked from now on is its."""
    ledger._looker = looker = ledger_module._Looker(ledger)
    deadline = time.monotonic() + 10
    while not looker._is_ready():
        assert time.monotonic() < deadline, "the looker did not start"
        time.sleep(0.005)


def rows(*keys: str | None) -> Iterator[tuple[int, Request | RowError]]:
    for row, key in enumerate(keys, 2):
        yield row, (Request(row, key, b"{}", key) if key is not None else
                    RowError(row, "email", "invalid_email", "not an email"))


def test_a_dry_run_s_look_ups_through_the_looker_are_the_run_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engaged within --ledger-days: counted; a claim of a run that may still be sending: in
    full, for its journal to decide; older than the window, or none: nothing. A row with
    no identifier (an invalid one) gets nothing."""
    monkeypatch.setattr(ledger_module, "now", lambda: NOW)
    path = ledger_of(tmp_path / "l.sqlite", [
        ("ok@example.com", "ok", NOW - DAY / 2),
        ("old@example.com", "ok", NOW - 3 * DAY),
        ("edge@example.com", "ok", NOW - DAY),
        ("claimed@example.com", "sending", NOW - 60),
        ("old-claim@example.com", "sending", NOW - 3 * DAY),
    ])
    keys = ["ok@example.com", None, "old@example.com", "none@example.com",
            "claimed@example.com", "edge@example.com", "old-claim@example.com"]
    in_run = Ledger(path, workflow_id=1, kind="email", days=1, run=None)
    try:
        with monkeypatch.context() as starting:  # the looker never ready: the run looks
            starting.setattr(ledger_module._Looker, "_is_ready", lambda self: False)
            expected = list(LookedUp(rows(*keys), in_run, counting=True))
    finally:
        in_run.close()
    found = through_the_looker(path, keys, monkeypatch, days=1)
    assert found == expected
    assert [entry for _, _, entry in found] == [
        COUNTED, None, None, None,
        Entry("sending", Path("/gone/run"), 2, NOW - 60, 7, True), COUNTED, None]


def through_the_looker(path: Path, keys: Sequence[str | None], monkeypatch: pytest.MonkeyPatch, *,
                       days: float | None) -> list[tuple[int, Request | RowError, Entry | None]]:
    """A dry run's rows of ``keys``, every batch looked up by a ready looker (a look-up in
    the run's own process fails the test)."""
    ledger = Ledger(path, workflow_id=1, kind="email", days=days, run=None)
    try:
        ready(ledger)
        monkeypatch.setattr(ledger_module, "look", _refused)
        return list(LookedUp(rows(*keys), ledger, counting=True))
    finally:
        ledger.close()


def _refused(*args: object, **kwargs: object) -> None:
    raise AssertionError("looked up in the run's process, not the looker's")


@pytest.mark.timeout(30, method="signal")  # a wait for ever fails the test instead
def test_long_identifiers_and_long_answers_block_neither_the_run_nor_the_looker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches and answers larger than a pipe holds, both ways at once: the run writes the
    next batch while the looker writes an answer, and neither waits for the other."""
    monkeypatch.setattr(ledger_module, "now", lambda: NOW)
    keys = [f"{i:05d}{'x' * 3000}@example.com" for i in range(600)]
    path = ledger_of(tmp_path / "l.sqlite", [(key, "sending", NOW) for key in keys])
    found = through_the_looker(path, keys, monkeypatch, days=None)
    assert len(found) == len(keys)
    assert all(entry is not None and entry.state == "sending" for _, _, entry in found)


def test_an_error_in_the_looker_comes_back_as_sqlite_s_own(tmp_path: Path) -> None:
    path = ledger_of(tmp_path / "l.sqlite", [])
    ledger = Ledger(path, workflow_id=1, kind="email", days=None, run=None)
    try:
        ready(ledger)
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("DROP TABLE entries")
        with pytest.raises(sqlite3.OperationalError, match=r"^no such table: entries$"):
            list(LookedUp(rows(*(f"k{i}@example.com" for i in range(5))), ledger,
                          counting=True))
    finally:
        ledger.close()


def test_a_looker_that_dies_stops_the_dry_run_with_how_to_go_on(tmp_path: Path) -> None:
    path = ledger_of(tmp_path / "l.sqlite", [])
    ledger = Ledger(path, workflow_id=1, kind="email", days=None, run=None)
    try:
        ready(ledger)
        assert ledger._looker is not None
        process = ledger._looker._process
        process.kill()
        process.wait()
        with pytest.raises(LookerError) as ended:
            list(LookedUp(rows("a@example.com", "b@example.com"), ledger, counting=True))
    finally:
        ledger.close()
    assert str(ended.value) == (
        "the --ledger's looker process ended unexpectedly; run the same command again (a "
        "run that was sending goes on with --resume)")


def test_a_looker_that_cannot_open_the_ledger_answers_why_instead_of_ready(
    tmp_path: Path
) -> None:
    """Its error, not a wait for ever nor a look-up in the run."""
    path = ledger_of(tmp_path / "l.sqlite", [])
    ledger = Ledger(path, workflow_id=1, kind="email", days=None, run=None)
    path.rename(tmp_path / "moved.sqlite")
    path.mkdir()  # where the looker opens the ledger
    try:
        with pytest.raises(sqlite3.OperationalError, match=r"^unable to open database file$"):
            ready(ledger)
    finally:
        ledger.close()


_HOLDS_A_LOOKER = """
import sys, time
from pathlib import Path
from batch_engage.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]), workflow_id=1, kind="email", days=None, run=None)
ledger.ask(["a@example.com"], counting=True)
looker = ledger._looker
while not looker._is_ready():
    time.sleep(0.005)
print(looker._process.pid, flush=True)
sys.stdin.readline()
"""
"""A dry run's process in a test: its looker ready, and waiting to be killed."""


def test_the_looker_is_in_a_session_of_its_own_and_ends_with_a_killed_run(
    tmp_path: Path
) -> None:
    """A Ctrl-C at the terminal is the run's (the looker would print its own traceback);
    a kill of the run ends the looker too: it reads the end of its batches."""
    path = ledger_of(tmp_path / "l.sqlite", [])
    with subprocess.Popen([sys.executable, "-c", _HOLDS_A_LOOKER, str(path)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=_this_package()) as run:
        assert run.stdout is not None
        looker = int(run.stdout.readline())
        assert os.getsid(looker) == looker != os.getsid(run.pid)
        os.kill(run.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(looker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(looker)


def test_closing_the_ledger_ends_its_looker(tmp_path: Path) -> None:
    ledger = Ledger(ledger_of(tmp_path / "l.sqlite", []), workflow_id=1, kind="email",
                    days=None, run=None)
    ready(ledger)
    assert ledger._looker is not None
    process = ledger._looker._process
    ledger.close()
    assert process.returncode is not None


def test_while_the_looker_starts_the_run_looks_its_first_batches_up_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file's dry run does not wait for the looker to start; once it has, the
    batches are its."""
    slow = tmp_path / "slow_looker.py"
    slow.write_text(
        "import runpy, sys, time\n"
        "time.sleep(1)\n"
        f"runpy.run_path({ledger_module._LOOKER!r}, run_name='__main__')\n", "utf-8")
    monkeypatch.setattr(ledger_module, "_LOOKER", str(slow))
    ledger = Ledger(ledger_of(tmp_path / "l.sqlite", [("a@example.com", "ok", NOW)]),
                    workflow_id=1, kind="email", days=None, run=None)
    try:
        assert ledger.ask(["a@example.com", None], counting=True) == (b"\x01\x00", "[]")
        looker = ledger._looker
        assert looker is not None
        while not looker._is_ready():
            time.sleep(0.005)
        assert ledger.ask(["a@example.com"], counting=True) is None
        assert ledger.answer()[0] == b"\x01"
    finally:
        ledger.close()


@pytest.mark.parametrize("flag", [ledger_looker.NONE, ledger_looker.ENTRY],
                         ids=["flags only", "with entries"])
def test_an_answer_with_fewer_flags_than_rows_stops_the_run_instead_of_dropping_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: int
) -> None:
    def one_short(db: object, workflow_id: int, kind: str, names: list[str | None],
                  *args: object, **kwargs: object) -> tuple[bytes, str]:
        """The first batch (one row) answered right, the next one flag short."""
        return bytes([flag] * max(1, len(names) - 1)), json.dumps(
            [[name, "sending", 7, 2, "1.0"] for name in names])

    ledger = Ledger(ledger_of(tmp_path / "l.sqlite", []), workflow_id=1, kind="email",
                    days=None, run=None)
    monkeypatch.setattr(ledger_module, "look", one_short)
    try:
        with pytest.raises(ValueError, match="zip"):
            list(LookedUp(rows("k0@example.com", "k1@example.com", "k2@example.com"), ledger))
    finally:
        ledger.close()
