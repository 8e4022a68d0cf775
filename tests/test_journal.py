"""The journal and the run lock, used directly: what a run leaves on disk for --resume."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from batch_engage import UsageError
from batch_engage import journal as journal_module
from batch_engage.journal import (
    JOURNAL_NAME,
    LOCK_NAME,
    SCHEMA_VERSION,
    Fingerprint,
    Journal,
    RowState,
    RunLock,
    WriterError,
    _writer_error,
    check_options,
    is_running,
    maybe_engaged,
    stored_options,
)
from batch_engage.ledger import Ledger

FIXED: dict[str, Any] = {"workflow_id": 7, "matching": "email", "phone_region": None,
                         "columns": {"Почта": "email"}, "allow_duplicates": False}


def on_disk(path: Path) -> list[tuple[Any, ...]]:
    """The journal's rows as another process would read them (after a kill, say)."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT * FROM rows ORDER BY row").fetchall()


@contextmanager
def journal_in(folder: Path) -> Iterator[Journal]:
    journal = Journal(folder / JOURNAL_NAME)
    try:
        yield journal
    finally:
        journal.close()


async def started(journal: Journal) -> None:
    """The journal's writer started and ready: commits are its own from now on."""
    await journal.start()
    while not journal._ready:
        await asyncio.sleep(0.005)


def begun(tmp_path: Path, data: bytes = b"email\na@example.com\n") -> tuple[Path, Fingerprint]:
    """A run folder whose journal was begun for an input file with ``data``."""
    (tmp_path / "in.csv").write_bytes(data)
    fingerprint = Fingerprint.of(tmp_path / "in.csv")
    with journal_in(tmp_path) as journal:
        journal.begin(fingerprint, FIXED, "2026-01-02T03:04:05+00:00")
    return tmp_path / JOURNAL_NAME, fingerprint


def ok(row: int, identifier: str) -> RowState:
    return RowState(row, "ok", identifier, 1, 200, "", "fine", "2026-01-02T03:04:06.000+00:00")


def test_fingerprint_is_the_files_size_sha256_and_modification_time(tmp_path: Path) -> None:
    # Larger than the 1 MiB the file is read in, so that every chunk counts.
    data = bytes(range(256)) * 10_000
    (tmp_path / "big.csv").write_bytes(data)
    os.utime(tmp_path / "big.csv", ns=(1, 1_700_000_000_123_456_789))
    assert Fingerprint.of(tmp_path / "big.csv") == Fingerprint(
        len(data), hashlib.sha256(data).hexdigest(), 1_700_000_000_123_456_789)
    assert Fingerprint.stat(tmp_path / "big.csv") == Fingerprint(
        len(data), None, 1_700_000_000_123_456_789)


def test_a_new_run_stores_what_it_reads_and_how_with_zero_totals(tmp_path: Path) -> None:
    path, fingerprint = begun(tmp_path)
    with journal_in(tmp_path) as journal:
        stored = {key: journal.meta(key) for key in (
            "version", "started_at", "input_size", "input_sha256", "input_mtime_ns", "options",
            "requests_sent", "retries", "retries_unanswered")}
    assert stored == {
        "version": SCHEMA_VERSION, "started_at": "2026-01-02T03:04:05+00:00",
        "input_size": fingerprint.size, "input_sha256": fingerprint.sha256,
        "input_mtime_ns": fingerprint.mtime_ns, "options": FIXED,
        "requests_sent": 0, "retries": {}, "retries_unanswered": 0,
    }
    assert stored_options(tmp_path) == FIXED
    # Stored as UTF-8 text, so someone looking into the journal with sqlite3 can read it.
    with closing(sqlite3.connect(path)) as db:
        (text,) = db.execute("SELECT value FROM meta WHERE key = 'options'").fetchone()
    assert '"Почта"' in text


def test_a_key_never_stored_reads_as_none(tmp_path: Path) -> None:
    with journal_in(tmp_path) as journal:
        assert journal.meta("version") is None


def test_each_pass_adds_its_requests_and_retries_to_the_runs_totals(tmp_path: Path) -> None:
    begun(tmp_path)
    with journal_in(tmp_path) as journal:
        journal.add_pass(5, Counter({"timeout": 2}), 2)
    with journal_in(tmp_path) as journal:  # the totals outlive the pass that wrote them
        journal.add_pass(3, Counter({"timeout": 1, "http_429": 4}), 1)
        assert journal.meta("requests_sent") == 8
        assert journal.meta("retries") == {"timeout": 3, "http_429": 4}
        assert journal.meta("retries_unanswered") == 3


def test_resuming_the_same_file_with_the_same_options_is_allowed(tmp_path: Path) -> None:
    _, fingerprint = begun(tmp_path)
    with journal_in(tmp_path) as journal:
        journal.check_resume(fingerprint, {**FIXED, "option_added_later": 1}, "in.csv")


@pytest.mark.parametrize(("data", "why"), [
    (b"email\nb@example.com\n", "content"),  # same size, other bytes
    (b"email\na@example.com\nb@example.com\n", "size"),
])
def test_resume_refuses_a_file_that_is_not_the_one_the_run_started_with(
    tmp_path: Path, data: bytes, why: str
) -> None:
    begun(tmp_path)
    (tmp_path / "in.csv").write_bytes(data)
    with journal_in(tmp_path) as journal, pytest.raises(UsageError) as refused:
        journal.check_resume(Fingerprint.of(tmp_path / "in.csv"), FIXED, "клиенты.csv")
    assert str(refused.value) == (
        "клиенты.csv is not the file this run started with (its size or content changed); "
        "resume with the original file, or start a new run with a new --out (rows already "
        "sent would then be sent again)"), why


def _begun_before_the_hash(tmp_path: Path) -> None:
    """A run folder as a kill leaves it before the input's hash was stored."""
    (tmp_path / "in.csv").write_bytes(b"email\na@example.com\n")
    with journal_in(tmp_path) as journal:
        journal.begin(Fingerprint.stat(tmp_path / "in.csv"), FIXED, "2026-01-02T03:04:05+00:00")
        assert journal.meta("input_sha256") is None


def test_the_hash_stored_later_is_what_a_resume_compares(tmp_path: Path) -> None:
    _begun_before_the_hash(tmp_path)
    with journal_in(tmp_path) as journal:
        journal.hashed(Fingerprint.of(tmp_path / "in.csv"))
    (tmp_path / "in.csv").write_bytes(b"email\nb@example.com\n")  # same size
    os.utime(tmp_path / "in.csv", ns=(1, 1))
    with journal_in(tmp_path) as journal, pytest.raises(UsageError, match="is not the file"):
        journal.check_resume(Fingerprint.of(tmp_path / "in.csv"), FIXED, "in.csv")


def test_a_run_killed_before_its_hash_resumes_on_the_same_size_and_modification_time(
    tmp_path: Path
) -> None:
    _begun_before_the_hash(tmp_path)
    with journal_in(tmp_path) as journal:
        journal.check_resume(Fingerprint.of(tmp_path / "in.csv"), FIXED, "in.csv")
    stored = os.stat(tmp_path / "in.csv").st_mtime_ns
    (tmp_path / "in.csv").write_bytes(b"email\nb@example.com\n")  # same size, other bytes
    os.utime(tmp_path / "in.csv", ns=(stored, stored + 1))
    with journal_in(tmp_path) as journal, pytest.raises(UsageError, match="is not the file"):
        journal.check_resume(Fingerprint.of(tmp_path / "in.csv"), FIXED, "in.csv")


def test_a_journal_with_neither_hash_nor_modification_time_is_refused(tmp_path: Path) -> None:
    """A DataFrame's run stores its hash before anything is sent; without either, refuse."""
    with journal_in(tmp_path) as journal:
        journal.begin(Fingerprint(10, None), FIXED, "2026-01-02T03:04:05+00:00")
        with pytest.raises(UsageError, match="is not the file"):
            journal.check_resume(Fingerprint(10, "0" * 64), FIXED, "in.csv")


@pytest.mark.parametrize("version", ["0", None])
def test_resume_refuses_a_journal_of_another_version(
    tmp_path: Path, version: str | None
) -> None:
    """Another version's journal, or one older than the version key itself."""
    with journal_in(tmp_path) as journal:
        if version is not None:
            journal.set_meta("version", version)
        with pytest.raises(UsageError) as refused:
            journal.check_resume(Fingerprint(1, "0" * 64), FIXED, "in.csv")
    assert str(refused.value) == (
        f"{tmp_path / JOURNAL_NAME} was written by another version of batch-engage; finish "
        "that run with the version that started it")


def test_resume_refuses_options_that_change_what_rows_become(tmp_path: Path) -> None:
    _, fingerprint = begun(tmp_path)
    with journal_in(tmp_path) as journal, pytest.raises(UsageError, match="--workflow-id was 7"):
        journal.check_resume(fingerprint, {**FIXED, "workflow_id": 8}, "in.csv")


def test_changed_options_are_named_as_the_cli_spells_them_with_both_values() -> None:
    stored = {"workflow_id": 7, "phone_region": "RU", "allow_duplicates": False, "sheet": None}
    fixed = {"workflow_id": 8, "phone_region": "RU", "allow_duplicates": True}
    with pytest.raises(UsageError) as refused:
        check_options(stored, fixed)
    assert str(refused.value) == (
        "--resume continues the run with its own options, and these differ: --workflow-id "
        "was 7, now 8; --allow-duplicates was False, now True. Leave them out to keep the "
        "run's values (only --rate, --concurrency, --max-attempts, --timeout and -q may "
        "change)")


def test_options_stored_by_the_run_are_accepted_unchanged() -> None:
    check_options(dict(FIXED), {**FIXED, "columns": {"Почта": "email"}})


@pytest.mark.parametrize("journal", [None, b"not a database, but a file of text" * 200, b""])
def test_there_is_no_run_to_resume_without_a_readable_journal(
    tmp_path: Path, journal: bytes | None
) -> None:
    if journal is not None:
        (tmp_path / JOURNAL_NAME).write_bytes(journal)
    with pytest.raises(UsageError) as refused:
        stored_options(tmp_path)
    assert str(refused.value) == (
        f"there is no run to resume in {tmp_path} (it has no readable journal.sqlite); "
        "check --out, or start a new run without --resume")


def test_states_are_every_known_row_in_row_order(tmp_path: Path) -> None:
    begun(tmp_path)
    uncertain = RowState(3, "uncertain", "c@example.com", 2, None, "uncertain", "cut off", "t")

    async def write() -> None:
        with journal_in(tmp_path) as journal:
            await started(journal)
            journal.record(ok(9, "z@example.com"))
            journal.record(uncertain)
            await journal.sending(5, "e@example.com")
            await journal.stop()

    asyncio.run(write())
    with journal_in(tmp_path) as journal:
        assert list(journal.states()) == [
            uncertain,
            RowState(5, "sending", "e@example.com", 0, None, "", "", ""),
            ok(9, "z@example.com"),
        ]


def test_a_row_is_on_disk_as_sending_when_sending_returns(tmp_path: Path) -> None:
    """What a kill right after leaves: the row on its way, with nothing known of it yet."""
    path, _ = begun(tmp_path)

    async def mark() -> None:
        with journal_in(tmp_path) as journal:
            await started(journal)
            await journal.sending(2, "a@example.com")
            assert on_disk(path) == [(2, "sending", "a@example.com", 0, None, "", "", "")]
            await journal.sending(3, "b@example.com")
            assert len(on_disk(path)) == 2
            await journal.stop()

    asyncio.run(mark())


def test_results_ride_along_with_the_next_commit_and_forget_removes_a_row(
    tmp_path: Path
) -> None:
    path, _ = begun(tmp_path)

    async def write() -> None:
        with journal_in(tmp_path) as journal:
            await started(journal)
            await journal.sending(2, "a@example.com")
            await journal.sending(3, "b@example.com")
            journal.record(ok(2, "a@example.com"))
            journal.forget(3)  # its request was known not to be acted on: to send again
            assert [r[:2] for r in on_disk(path)] == [(2, "sending"), (3, "sending")]
            await journal.sending(4, "c@example.com")
            assert on_disk(path) == [
                (2, "ok", "a@example.com", 1, 200, "", "fine", "2026-01-02T03:04:06.000+00:00"),
                (4, "sending", "c@example.com", 0, None, "", "", ""),
            ]
            journal.forget(4)
            await journal.stop()
            assert [r[:2] for r in on_disk(path)] == [(2, "ok")]

    asyncio.run(write())


async def two_marks_behind_a_lock(journal: Journal, holder: sqlite3.Connection
                                  ) -> tuple[asyncio.Task[str | None], asyncio.Task[str | None]]:
    """The writer started, then ``holder`` takes the journal's write lock: row 2's mark is
    handed over and waits for it, and row 3's is made while it does."""
    await started(journal)
    holder.execute("BEGIN IMMEDIATE")
    first = asyncio.create_task(journal.sending(2, "a@example.com"))
    await asyncio.sleep(0.2)  # the loop runs on while the first commit waits
    second = asyncio.create_task(journal.sending(3, "b@example.com"))
    await asyncio.sleep(0.2)
    return first, second


def test_the_loop_goes_on_while_a_commit_waits_and_later_marks_form_the_next(
    tmp_path: Path
) -> None:
    """The commit is the writer process's: a slow disk (here a write lock another
    connection holds) does not stop the run's loop, and the marks made meanwhile wait for a
    commit of their own."""
    path, _ = begun(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)

    async def mark() -> None:
        with journal_in(tmp_path) as journal:
            first, second = await two_marks_behind_a_lock(journal, holder)
            assert not first.done()
            assert not second.done()
            holder.execute("COMMIT")
            await asyncio.wait_for(asyncio.gather(first, second), 5)
            assert [r[0] for r in on_disk(path)] == [2, 3]
            await journal.stop()

    asyncio.run(mark())
    holder.close()


def test_marks_made_while_the_writer_starts_are_committed_by_the_run_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's first request does not wait for the writer process to start."""
    path, _ = begun(tmp_path)
    slow = tmp_path / "slow_writer.py"
    slow.write_text("import runpy, time\ntime.sleep(0.5)\n"
                    f"runpy.run_path({journal_module._WRITER!r}, run_name='__main__')\n")
    monkeypatch.setattr(journal_module, "_WRITER", str(slow))

    async def mark() -> None:
        with journal_in(tmp_path) as journal:
            await journal.start()
            await asyncio.wait_for(journal.sending(2, "a@example.com"), 0.4)
            assert not journal._ready
            assert [r[:2] for r in on_disk(path)] == [(2, "sending")]
            journal.record(ok(2, "a@example.com"))
            while not journal._ready:
                await asyncio.sleep(0.01)
            await journal.sending(3, "b@example.com")
            await journal.stop()

    asyncio.run(mark())
    assert [r[:2] for r in on_disk(path)] == [(2, "ok"), (3, "sending")]


def test_a_row_cancelled_before_its_mark_is_handed_over_is_never_written(
    tmp_path: Path
) -> None:
    """A stop while the writer holds the commit before: the row's request never leaves,
    so it is not marked as on its way either (a resume sends it, not calls it uncertain)."""
    path, _ = begun(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)

    async def mark() -> None:
        with journal_in(tmp_path) as journal:
            first, second = await two_marks_behind_a_lock(journal, holder)
            second.cancel()
            holder.execute("COMMIT")
            await asyncio.wait_for(first, 5)
            await journal.stop()

    asyncio.run(mark())
    holder.close()
    assert [r[:2] for r in on_disk(path)] == [(2, "sending")]


def test_the_writer_is_a_process_of_its_own_that_ends_with_the_run(tmp_path: Path) -> None:
    path, _ = begun(tmp_path)

    async def mark() -> tuple[int, subprocess.Popen[bytes]]:
        with journal_in(tmp_path) as journal:
            await started(journal)
            await journal.sending(2, "a@example.com")
            writer = journal._writer
            assert writer is not None
            assert writer.poll() is None
            await journal.stop()
            return writer.pid, writer

    pid, writer = asyncio.run(mark())
    assert pid != os.getpid()
    assert writer.returncode == 0
    assert [r[:2] for r in on_disk(path)] == [(2, "sending")]


def _this_package() -> dict[str, str]:
    """The environment for a child process that imports the batch_engage these tests
    import (under ``make mutate``, the mutated copy)."""
    return {**os.environ, "PYTHONPATH": str(Path(journal_module.__file__).parents[1])}


_CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from batch_engage.journal import Journal

async def started_and_marked():
    journal = Journal(Path(sys.argv[1]))
    await journal.start()
    while not journal._ready:
        await asyncio.sleep(0.005)
    await journal.sending(2, "a@example.com")
    return journal
"""
"""A run's process in a test: its journal's writer ready, and row 2 marked."""

_HOLDS_A_WRITER = _CHILD + """
async def main():
    journal = await started_and_marked()
    print(journal._writer.pid, flush=True)
    sys.stdin.readline()
    marking = asyncio.create_task(journal.sending(3, "b@example.com"))
    await asyncio.sleep(0.1)
    print("handed over", flush=True)
    await marking

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the parent's death signal is Linux's")
def test_a_kill_of_the_run_ends_its_writer_too(tmp_path: Path) -> None:
    """As a thread would: a commit the writer waits to make does not land after the kill."""
    path, _ = begun(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    with subprocess.Popen([sys.executable, "-c", _HOLDS_A_WRITER, str(path)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=_this_package()) as run:
        assert run.stdin is not None
        assert run.stdout is not None
        writer = int(run.stdout.readline())
        holder.execute("BEGIN IMMEDIATE")  # the next commit waits for this lock
        run.stdin.write("go\n")
        run.stdin.flush()
        assert run.stdout.readline() == "handed over\n"
        os.kill(run.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(writer) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(writer)
    holder.execute("COMMIT")
    holder.close()
    assert [r[:2] for r in on_disk(path)] == [(2, "sending")]


_CTRL_C = _CHILD + """
async def main():
    journal = await started_and_marked()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run handles its Ctrl-C: a stop
    os.killpg(os.getpgid(0), signal.SIGINT)  # what the terminal sends
    await asyncio.sleep(0.2)
    await journal.sending(3, "b@example.com")
    await journal.stop()
    journal.close()

asyncio.run(main())
"""


def test_a_ctrl_c_at_the_terminal_is_the_runs_and_leaves_its_writer_writing(
    tmp_path: Path
) -> None:
    """The terminal sends SIGINT to its whole foreground group: the writer, in a session
    of its own, is not in it, and commits what the stopping run still writes."""
    path, _ = begun(tmp_path)
    done = subprocess.run([sys.executable, "-c", _CTRL_C, str(path)], capture_output=True,
                          text=True, timeout=30, start_new_session=True, check=False,
                          env=_this_package())
    assert done.returncode == 0, done.stderr
    assert [r[:2] for r in on_disk(path)] == [(2, "sending"), (3, "sending")]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: gone, or a zombie nobody reaped (its parent is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_writer_that_dies_stops_the_run_at_its_next_mark_with_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = begun(tmp_path)

    async def mark() -> None:
        with journal_in(tmp_path) as journal:
            await started(journal)
            await journal.sending(2, "a@example.com")
            assert journal._writer is not None
            journal._writer.kill()
            journal._writer.wait()
            with pytest.raises(WriterError) as ended:
                await asyncio.wait_for(journal.sending(3, "b@example.com"), 5)
            assert str(ended.value) == (
                "the journal's writer process ended unexpectedly; the run stopped, and "
                "--resume continues it")
            answers = len(heard)
            await asyncio.sleep(0.1)  # the writer's end is read once, not over and over
            assert len(heard) == answers
            with pytest.raises(WriterError):
                await journal.sending(4, "c@example.com")
            with pytest.raises(WriterError):
                await journal.stop()

    heard: list[None] = []
    answered = Journal._answered

    def counting(journal: Journal) -> None:
        heard.append(None)
        answered(journal)

    monkeypatch.setattr(Journal, "_answered", counting)
    asyncio.run(mark())
    assert [r[:2] for r in on_disk(path)] == [(2, "sending")]


def test_a_run_ended_before_the_writers_answer_still_writes_that_commits_ledger_half(
    tmp_path: Path
) -> None:
    """A run whose loop is cancelled while a commit is on its way (a library caller's
    Ctrl-C): the journal's rows landed, so the ledger's claims on them must land too."""
    path, _ = begun(tmp_path)
    ledger = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=None,
                    run=tmp_path)
    ledger.expect(2, "a@example.com", None)
    journal = Journal(path, ledger)

    async def mark() -> None:
        await started(journal)
        marking = asyncio.create_task(journal.sending(2, "a@example.com"))
        while journal._batch is None:  # handed to the writer, its answer not yet read
            await asyncio.sleep(0)
        marking.cancel()

    asyncio.run(mark())
    journal.close()
    ledger.close()
    assert [r[:2] for r in on_disk(path)] == [(2, "sending")]
    with closing(sqlite3.connect(tmp_path / "l.sqlite")) as db:
        assert db.execute("SELECT identifier, state FROM entries").fetchall() == [
            ("a@example.com", "sending")]
        # Its half was finished, not lost: the run closed, with nothing left to replay.
        assert db.execute("SELECT open FROM runs").fetchall() == [(0,)]


def ledger_entries(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT identifier, state, row FROM entries ORDER BY row").fetchall()


def test_through_the_writer_claims_and_engagements_reach_the_ledger_after_the_journal(
    tmp_path: Path
) -> None:
    path, _ = begun(tmp_path)
    other = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=None,
                   run=tmp_path / "other")
    other.expect(9, "c@example.com", None)
    assert other.commit([(9, "sending", "")]) == {}  # after this run's look-up of it
    ledger = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=None,
                    run=tmp_path)

    async def mark() -> None:
        with closing(Journal(path, ledger)) as journal:
            await started(journal)
            ledger.expect(2, "a@example.com", None)
            ledger.expect(3, "b@example.com", None)
            ledger.expect(4, "c@example.com", None)
            assert await journal.sending(2, "a@example.com") is None
            assert await journal.sending(3, "b@example.com") is None
            assert ledger_entries(tmp_path / "l.sqlite") == [
                ("a@example.com", "sending", 2), ("b@example.com", "sending", 3),
                ("c@example.com", "sending", 9)]
            refused = await journal.sending(4, "c@example.com")
            assert refused is not None
            assert refused.startswith(f"the run in {tmp_path / 'other'} was sending")
            journal.record(ok(2, "a@example.com"))
            journal.forget(3)  # not acted on: its claim is dropped
            await journal.stop()

    asyncio.run(mark())
    ledger.close()
    other.close()
    assert ledger_entries(tmp_path / "l.sqlite") == [
        ("a@example.com", "ok", 2), ("c@example.com", "sending", 9)]


def test_an_error_sqlite_does_not_name_comes_back_as_the_writers(tmp_path: Path) -> None:
    assert str(_writer_error(b'e{"type": "MemoryError", "message": "out"}')) == (
        "MemoryError: out")
    assert str(_writer_error(b"zz")) == "the journal's writer process answered b'zz'"
    assert str(_writer_error(b"z" * 200)) == (
        f"the journal's writer process answered {b'z' * 80!r}")
    failure = _writer_error(b'e{"type": "OperationalError", "message": "disk is full"}')
    assert isinstance(failure, sqlite3.OperationalError)
    assert str(failure) == "disk is full"


def test_a_row_cancelled_while_it_waits_for_the_commit_cancels_no_other(
    tmp_path: Path
) -> None:
    """A stop cancels the rows that wait; the others in the same commit go on."""
    path, _ = begun(tmp_path)

    async def mark() -> None:
        with journal_in(tmp_path) as journal:
            await started(journal)
            cancelled = asyncio.create_task(journal.sending(2, "a@example.com"))
            kept = asyncio.create_task(journal.sending(3, "b@example.com"))
            await asyncio.sleep(0)  # both marks are made, in one batch
            cancelled.cancel()
            assert await asyncio.wait_for(kept, 5) is None
            await journal.stop()

    asyncio.run(mark())
    assert [r[:2] for r in on_disk(path)] == [(2, "sending"), (3, "sending")]


def test_closing_the_journal_commits_what_is_still_pending(tmp_path: Path) -> None:
    path, _ = begun(tmp_path)
    with journal_in(tmp_path) as journal:
        journal.record(ok(6, "f@example.com"))
    assert on_disk(path) == [
        (6, "ok", "f@example.com", 1, 200, "", "fine", "2026-01-02T03:04:06.000+00:00")]


def unwritable(row: int) -> RowState:
    """A result the database refuses (a row has an identifier): a commit that fails."""
    return RowState(row, "ok", None, 1, 200, "", "", "")  # type: ignore[arg-type]


def test_a_failed_commit_fails_every_row_waiting_on_it_and_every_later_one(
    tmp_path: Path
) -> None:
    path, _ = begun(tmp_path)

    async def write() -> None:
        with closing(Journal(path)) as journal:
            await started(journal)
            journal.record(unwritable(2))
            with pytest.raises(sqlite3.IntegrityError):
                await asyncio.wait_for(journal.sending(3, "c@example.com"), 5)
            with pytest.raises(sqlite3.IntegrityError):
                await asyncio.wait_for(journal.sending(4, "d@example.com"), 5)
            with pytest.raises(sqlite3.IntegrityError):
                await journal.stop()

    asyncio.run(write())
    assert on_disk(path) == []  # the commit was all or nothing: row 3 is not marked either


def test_stopping_reports_a_failed_commit_of_results_alone(tmp_path: Path) -> None:
    path, _ = begun(tmp_path)

    async def write() -> None:
        with closing(Journal(path)) as journal:
            await started(journal)
            journal.record(ok(2, "a@example.com"))
            journal.record(unwritable(3))
            with pytest.raises(sqlite3.IntegrityError):
                await journal.stop()

    asyncio.run(write())
    assert on_disk(path) == []


def test_a_journal_sqlite_cannot_keep_in_wal_mode_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where SQLite cannot use WAL (some network filesystems; an in-memory database here)
    it makes no -wal file: the journal creates one to sync, as an ordinary file."""
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        journal = Journal(Path(":memory:"))
    finally:
        os.umask(old)
    with closing(journal):
        journal.record(ok(2, "a@example.com"))

        async def stop() -> None:
            await journal.stop()

        asyncio.run(stop())
    assert stat.S_IMODE((tmp_path / ":memory:-wal").stat().st_mode) == 0o644


def hold(folder: Path, content: bytes) -> int:
    """Take the folder's lock as another process would, having written ``content``."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, content)
    return fd


def refusal(folder: Path, holder: str) -> str:
    return (f"another batch-engage (process {holder}) is using the run folder {folder} right "
            "now; wait for it to finish, or use another --out")


def test_a_second_lock_on_a_folder_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(UsageError) as refused, RunLock(tmp_path):
            pass
        assert str(refused.value) == refusal(tmp_path, str(os.getpid()))
    with RunLock(tmp_path):  # released on the way out, and free to take again
        assert (tmp_path / LOCK_NAME).read_text("ascii") == str(os.getpid())


@pytest.mark.parametrize(("content", "holder"), [
    (b"", "?"),  # killed before it wrote its pid
    (b"  4242\n", "4242"),
    (b"12\xff3", "12\ufffd3"),
    (b"9" * 40, "9" * 32),  # not a pid: shown cut short
])
def test_the_refusal_shows_what_the_holder_wrote_in_the_lock(
    tmp_path: Path, content: bytes, holder: str
) -> None:
    fd = hold(tmp_path, content)
    try:
        with pytest.raises(UsageError) as refused, RunLock(tmp_path):
            pass
    finally:
        os.close(fd)
    assert str(refused.value) == refusal(tmp_path, holder)


def test_the_lock_holds_only_this_process_id_left_readable_to_all(tmp_path: Path) -> None:
    # A lock file a process left behind, with a longer id than ours.
    (tmp_path / LOCK_NAME).write_text("9" * 30, "ascii")
    (tmp_path / "fresh").mkdir()
    old = os.umask(0o022)
    try:
        with RunLock(tmp_path), RunLock(tmp_path / "fresh"):
            assert (tmp_path / LOCK_NAME).read_text("ascii") == str(os.getpid())
            mode = (tmp_path / "fresh" / LOCK_NAME).stat().st_mode
    finally:
        os.umask(old)
    assert stat.S_IMODE(mode) == 0o644


def test_leaving_a_lock_never_taken_or_twice_does_nothing(tmp_path: Path) -> None:
    RunLock(tmp_path).__exit__(None, None, None)
    lock = RunLock(tmp_path)
    with lock:
        pass
    lock.__exit__(None, None, None)
    with RunLock(tmp_path):
        pass


def test_a_run_is_running_while_a_process_holds_its_folder_and_not_after(
    tmp_path: Path
) -> None:
    assert not is_running(tmp_path / "never")  # no folder, no lock file
    with RunLock(tmp_path):
        assert is_running(tmp_path)
    assert (tmp_path / LOCK_NAME).exists()
    assert not is_running(tmp_path)  # the file stays; nobody holds it


@pytest.mark.parametrize(("state", "error", "maybe"), [
    ("network", "timeout", True), ("network", "disconnected", True),
    ("network", "connect_failed", False),  # the connection was never made
    ("http", "answer_cut_off", True), ("http", "unreadable_answer", True),
    ("http", "http_404", False), ("api", "api_404", False), ("api", "answer_cut_off", False),
    ("ok", "", False), (None, "", False),
])
def test_failures_that_may_have_engaged_are_those_without_a_whole_answer(
    state: str | None, error: str, maybe: bool
) -> None:
    assert maybe_engaged(state, error) is maybe
