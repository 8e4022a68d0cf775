"""The run's memory: which rows are done, which are on their way; what ``--resume`` reads.

A SQLite database in WAL mode in the run folder. A row is written as ``sending`` and
committed *before* its request leaves, and written with its result after the answer. Writes
are gathered into group commits: a row waits for the commit that carries its ``sending``
mark, and that same commit carries every result recorded before it. So after a kill, the
rows still marked ``sending`` are at most the requests that were in flight, and they are the
only rows whose fate is unknown.

Each commit is durable before anyone waiting on it goes on, against power loss too: SQLite
writes the commit to the WAL file (``synchronous=NORMAL``), then ``fdatasync`` puts that file
on disk, as ``synchronous=FULL`` would but without flushing the file's metadata each time.
While the run sends, both are the work of a writer process (``journal_writer``), fed each
batch through a pipe. In the event loop's thread they blocked the loop for 0.15 ms of every
commit; in a thread they cost 1-2 ms a mark, spent winning the interpreter lock from the busy
loop after each SQLite step; a process of its own needs neither (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import orjson

from . import journal_writer
from .errors import UsageError
from .journal_writer import ANSWER, ANSWER_BYTES, HEADER, READY

if TYPE_CHECKING:
    from .ledger import Ledger, Writes

JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = ".lock"
SCHEMA_VERSION = "1"

SENDING = "sending"
"""Committed before the request leaves: after a kill, the row's outcome is unknown."""
UNCERTAIN = "uncertain"
"""A ``sending`` row found by ``--resume``, or one whose request a second Ctrl-C cut off."""
DONE = frozenset({"ok", "api", "http", "network"})
"""Final outcomes; ``ok`` or the failure stage."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    row INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    identifier TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    error TEXT NOT NULL DEFAULT '',
    error_text TEXT NOT NULL DEFAULT '',
    completed_at TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True, slots=True)
class RowState:
    row: int
    state: str
    """``sending``, ``uncertain``, ``ok``, or a failure stage."""
    identifier: str
    attempts: int
    http_status: int | None
    error: str
    error_text: str
    completed_at: str


@dataclass(frozen=True)
class Fingerprint:
    """What makes an input the same input: its size and a SHA-256 of its bytes; for a file,
    its modification time too. ``sha256`` is ``None`` in a file's ``stat``, known at once."""

    size: int
    sha256: str | None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        found = cls.stat(path)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return cls(found.size, digest.hexdigest(), found.mtime_ns)

    @classmethod
    def stat(cls, path: Path) -> Fingerprint:
        found = path.stat()
        return cls(found.st_size, None, found.st_mtime_ns)


class RunLock:
    """One process per run folder: a second run or resume on the same ``--out`` is refused
    while the first holds the lock. The OS drops the lock when the process dies, however."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> Self:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise UsageError(
                f"another batch-engage (process {holder or '?'}) is using the run folder "
                f"{self.path.parent} right now; wait for it to finish, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def is_running(out: Path) -> bool:
    """Whether a process holds the run folder's lock now: its run is live, not killed."""
    try:
        fd = os.open(out / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the shared lock, if it was taken
    return False


def _read_only(path: Path) -> sqlite3.Connection:
    # A URI, so that mode=ro applies; as_uri() escapes spaces, "?" and "#" in the path.
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


def check_options(stored: dict[str, Any], fixed: dict[str, Any]) -> None:
    """Refuse options that would change what the rows of a resumed run become."""
    # An option an earlier version stored and this one no longer has counts only if it
    # was used (``engaged_in``, now the ledger's work).
    changed = [k for k in stored if stored[k] != fixed.get(k) and (k in fixed or stored[k])]
    if changed:
        raise UsageError(
            "--resume continues the run with its own options, and these differ: "
            + "; ".join(f"--{k.replace('_', '-')} was {stored[k]!r}, now {fixed.get(k)!r}"
                        for k in changed)
            + ". Leave them out to keep the run's values (only --rate, --concurrency, "
            "--max-attempts, --timeout and -q may change)"
        )


def stored_options(out: Path) -> dict[str, Any]:
    """The options the run in ``out`` was started with (``RunOptions.fixed``)."""
    path = out / JOURNAL_NAME
    found = None
    if path.exists():
        reader = _read_only(path)
        try:
            found = reader.execute("SELECT value FROM meta WHERE key = 'options'").fetchone()
        except sqlite3.DatabaseError:
            found = None
        finally:
            reader.close()
    if found is None:
        raise UsageError(
            f"there is no run to resume in {out} (it has no readable {JOURNAL_NAME}); check "
            "--out, or start a new run without --resume"
        )
    return dict(json.loads(found[0]))


def maybe_engaged(state: str | None, error: str) -> bool:
    """Whether a row's final failure may have engaged the profile all the same: its request
    got no answer (but for a connection never made), or the answer broke off or was
    unreadable. Within a run such a row is retried or reported; a later run must not
    resend it unasked."""
    return (state == "network" and error != "connect_failed") or (
        state == "http" and error in ("answer_cut_off", "unreadable_answer"))


def state_of(out: Path, row: int) -> str | None:
    """What the run in ``out`` last wrote for ``row`` (``None``: nothing, or it was to be sent
    again); ``uncertain`` when that run's journal is gone, as nobody can know then, and for
    a failure that may have engaged the profile all the same."""
    path = out / JOURNAL_NAME
    if not path.is_file():
        return UNCERTAIN
    reader = _read_only(path)
    try:
        found = reader.execute("SELECT state, error FROM rows WHERE row = ?", (row,)
                               ).fetchone()
    except sqlite3.DatabaseError:
        return UNCERTAIN
    finally:
        reader.close()
    if found is None:
        return None
    return UNCERTAIN if maybe_engaged(*found) else str(found[0])


def journal_rows(out: Path
                 ) -> tuple[dict[str, Any], Iterator[tuple[int, str, str, str, str]]] | None:
    """A run's options, and its journal's rows (row, state, identifier, completed_at,
    error); ``None`` when it has no readable journal (it never began, or its folder is
    gone)."""
    try:
        options = stored_options(out)
    except UsageError:
        return None

    def rows() -> Iterator[tuple[int, str, str, str, str]]:
        reader = _read_only(out / JOURNAL_NAME)
        try:
            yield from reader.execute(
                "SELECT row, state, identifier, completed_at, error FROM rows ORDER BY row")
        finally:
            reader.close()

    return options, rows()


_WRITER = journal_writer.__file__


def _texts(pending: dict[int, tuple[Any, ...] | None], meta: dict[str, Any]
           ) -> tuple[bytes, bytes, bytes]:
    """A batch as the writer reads it (``journal_writer.commit``): rows, deletions, meta."""
    upserts = [state for state in pending.values() if state is not None]
    deletes = [row for row, state in pending.items() if state is None]
    return (orjson.dumps(upserts) if upserts else b"",
            orjson.dumps(deletes) if deletes else b"",
            orjson.dumps([[key, json.dumps(value, ensure_ascii=False)]
                          for key, value in meta.items()]) if meta else b"")


def _changes(pending: dict[int, tuple[Any, ...] | None]) -> Iterator[tuple[int, str | None, str]]:
    """A batch's rows as the ledger takes them: row, state (``None``: deleted), error."""
    return ((row, None, "") if state is None else (row, state[1], state[5])
            for row, state in pending.items())


_Batch = tuple["Writes | None", list[asyncio.Future[None]]]
"""A commit on its way: its ledger half, to finish when the writer answers, and who waits."""


def _settle(waiters: list[asyncio.Future[None]], failure: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():  # a row cancelled by a stop
            if failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)


class WriterError(Exception):
    """The journal's writer process failed in a way SQLite did not name."""


def answered_error(answer: bytes, error: type[Exception], process: str, then: str
                   ) -> Exception:
    """The exception a helper process (the journal's writer, the ledger's looker) answered
    with (``e`` and a JSON object), as its own type where SQLite has it
    (``sqlite3.IntegrityError``, ``OperationalError`` for a full disk): the run stops with
    the same message as when the work was done in its own process. Nothing answered: the
    process ended, and ``then`` says how to go on."""
    if not answer:
        return error(f"{process} ended unexpectedly; {then}")
    try:
        found = json.loads(answer[1:])
    except ValueError:  # not the process's answer: a bug, or another process writing
        return error(f"{process} answered {answer[:80]!r}")
    kind = getattr(sqlite3, found["type"], None)
    if isinstance(kind, type) and issubclass(kind, sqlite3.Error):
        return kind(found["message"])
    return error(f"{found['type']}: {found['message']}")


def _writer_error(answer: bytes) -> Exception:
    return answered_error(answer, WriterError, "the journal's writer process",
                          "the run stopped, and --resume continues it")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Journal:
    """The database, and the group committer that makes writes durable in batches."""

    def __init__(self, path: Path, ledger: Ledger | None = None) -> None:
        self.path = path
        self._ledger = ledger
        """Written in the same group commit, after the journal (see ``ledger``)."""
        self._refused: dict[int, str] = {}
        # Written before and after the run; while it sends, the writer process writes.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # the WAL is synced below, per commit
        self._db.executescript(_SCHEMA)
        self._wal = os.open(f"{path}-wal", os.O_RDONLY | os.O_CREAT, 0o644)
        self._pending: dict[int, tuple[Any, ...] | None] = {}
        self._pending_meta: dict[str, Any] = {}
        self._waiters: list[asyncio.Future[None]] = []
        """The ``sending`` marks (and ``stop``) waiting for the next batch's commit."""
        self._handing_over = False
        self._batch: _Batch | None = None
        """The batch the writer process holds."""
        self._writer: subprocess.Popen[bytes] | None = None
        self._ready = False
        """The writer has started: batches go to it."""
        self._requests = self._answers = -1
        self._loop: asyncio.AbstractEventLoop
        self._failure: Exception | None = None

    # --- set-up, before the run's loop starts writing ---------------------------------------

    def meta(self, key: str) -> Any:
        found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else json.loads(found[0])

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                         (key, json.dumps(value, ensure_ascii=False)))

    def begin(self, fingerprint: Fingerprint, fixed: dict[str, Any], started_at: str) -> None:
        """A new run: what it reads and how, for ``--resume`` to hold it to. A file's hash may
        come later (``hashed``): a large file's first requests do not wait for it."""
        self.set_meta("version", SCHEMA_VERSION)
        self.set_meta("started_at", started_at)
        self.set_meta("input_size", fingerprint.size)
        self.set_meta("input_mtime_ns", fingerprint.mtime_ns)
        if fingerprint.sha256 is not None:
            self.hashed(fingerprint)
        self.set_meta("options", fixed)
        self.set_meta("requests_sent", 0)
        self.set_meta("retries", {})
        self.set_meta("retries_unanswered", 0)

    def hashed(self, fingerprint: Fingerprint) -> None:
        """The input's hash, once read; durable with the next commit. During the run that
        commit is the writer process's, asked for now."""
        assert fingerprint.sha256 is not None
        if self._writer is None:
            self.set_meta("input_sha256", fingerprint.sha256)
            return
        self._pending_meta["input_sha256"] = fingerprint.sha256
        self._commit_soon()

    def check_resume(self, fingerprint: Fingerprint, fixed: dict[str, Any], input_name: str
                     ) -> None:
        """Refuse a resume that would not continue the same run. A run killed before its
        file was hashed (its first moments, on a large file) is held to the file's size and
        modification time instead."""
        if self.meta("version") != SCHEMA_VERSION:
            raise UsageError(f"{self.path} was written by another version of batch-engage; "
                             "finish that run with the version that started it")
        stored = self.meta("input_sha256")
        if stored is not None:
            same = stored == fingerprint.sha256
        else:
            mtime_ns = self.meta("input_mtime_ns")
            same = mtime_ns is not None and mtime_ns == fingerprint.mtime_ns
        if not same or self.meta("input_size") != fingerprint.size:
            raise UsageError(
                f"{input_name} is not the file this run started with (its size or content "
                "changed); resume with the original file, or start a new run with a new --out "
                "(rows already sent would then be sent again)"
            )
        check_options(self.meta("options"), fixed)

    def states(self) -> Generator[RowState, None, None]:
        """Every row the journal knows, in row order, as it was when the run started.

        A cursor on a connection of its own: memory stays flat however long the file, and
        the rows this run writes meanwhile do not move under it.
        """
        reader = _read_only(self.path)
        try:
            cursor = reader.execute(
                "SELECT row, state, identifier, attempts, http_status, error, error_text, "
                "completed_at FROM rows ORDER BY row")
            for found in cursor:
                yield RowState(*found)
        finally:
            reader.close()

    def add_pass(self, requests_sent: int, retries: Counter[str], unanswered: int) -> None:
        """Add one pass's sending figures to the run's totals."""
        self.set_meta("requests_sent", self.meta("requests_sent") + requests_sent)
        self.set_meta("retries", dict(Counter(self.meta("retries")) + retries))
        self.set_meta("retries_unanswered", self.meta("retries_unanswered") + unanswered)

    # --- during the run ---------------------------------------------------------------------
    # Writes wait in ``_pending``, the last one per row (each sets the row's whole state, or
    # deletes it). The first ``sending`` mark of a loop iteration hands a batch to the writer
    # process at the next one: every mark made meanwhile rides along, with every result
    # recorded so far. While the writer commits and syncs, the loop goes on sending, and the
    # marks made meanwhile form the next batch, handed over when the writer's answer comes.

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        requests, self._requests = os.pipe()
        self._answers, answers = os.pipe()
        try:
            # A session of its own: a Ctrl-C at the terminal is the run's to handle, and the
            # writer must go on committing what the run writes while it stops.
            ledger = [] if self._ledger is None else [
                str(self._ledger.path), *map(str, self._ledger.scope)]
            self._writer = subprocess.Popen(
                [sys.executable, "-I", "-S", _WRITER, str(os.getpid()), str(self.path),
                 str(requests), str(answers), *ledger],
                stdin=subprocess.DEVNULL, pass_fds=(requests, answers),
                start_new_session=True)
        finally:
            os.close(requests)
            os.close(answers)
        self._loop.add_reader(self._answers, self._answered)

    async def sending(self, row: int, identifier: str) -> str | None:
        """Mark the row as on its way; returns once that is on disk. Returns why the row
        must not be sent after all (another run sharing the ledger claimed its profile
        first), or ``None``."""
        if self._failure is not None:
            raise self._failure
        self._pending[row] = mark = (row, SENDING, identifier, 0, None, "", "", "")
        # A future of its own, so that a cancelled row (a stop) cancels no one else's wait.
        durable = self._loop.create_future()
        self._waiters.append(durable)
        self._commit_soon()
        try:
            await durable
        except BaseException:
            if self._pending.get(row) is mark:  # not handed over: its request never leaves
                del self._pending[row]
            raise
        return self._refused.pop(row, None)

    def record(self, result: RowState) -> None:
        """A row's result; on disk with the next commit (nobody waits for it)."""
        self._pending[result.row] = (
            result.row, result.state, result.identifier, result.attempts, result.http_status,
            result.error, result.error_text, result.completed_at)  # not astuple: it deep-copies

    def forget(self, row: int) -> None:
        """The row's last request is known not to have been acted on: it is to be sent."""
        self._pending[row] = None

    def _commit_soon(self) -> None:
        if not self._handing_over and self._batch is None:
            self._handing_over = True
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._handing_over = False
        if self._batch is not None or self._failure is not None:
            return
        waiters, self._waiters = self._waiters, []
        if not (self._pending or self._pending_meta):
            _settle(waiters, None)
            return
        pending, meta = self._pending, self._pending_meta
        self._pending, self._pending_meta = {}, {}
        if not self._ready:
            # The writer takes 20-25 ms to start; a run's first marks are committed here
            # meanwhile (0.2 ms each, in the loop's thread), so its first request need not
            # wait for it.
            self._landed(waiters, lambda: self._write(pending, meta))
            return
        ledger = None if self._ledger is None else self._ledger.writes(_changes(pending))
        texts = (*_texts(pending, meta), *((b"", b"") if ledger is None else ledger.texts()))
        self._batch = (ledger, waiters)
        head = HEADER.pack(*map(len, texts), 0.0 if ledger is None else ledger.at)
        with contextlib.suppress(OSError):  # the writer is gone: its answer (none) says so
            write_all(self._requests, head + b"".join(texts))

    def _answered(self) -> None:
        """The writer's answer: it is ready, or the batch is on disk, or it failed."""
        answer = os.read(self._answers, ANSWER_BYTES)
        if self._batch is None:  # starting: nothing was handed to it yet
            if answer == READY:
                self._ready = True
            else:
                self._fail(_writer_error(answer), [])
            return
        ledger, waiters = self._batch
        self._batch = None
        if self._landed(waiters, lambda: self._finish(ledger, answer)) and (
                self._waiters or self._pending_meta):
            self._hand_over()

    def _landed(self, waiters: list[asyncio.Future[None]],
                land: Callable[[], dict[int, str]]) -> bool:
        """Finish a commit (``land`` returns the rows whose ledger claim another run won)
        and let its marks go on; or fail them, and every later one."""
        try:
            self._refused.update(land())
        except Exception as e:
            self._fail(e, waiters)
            return False
        _settle(waiters, None)
        return True

    def _fail(self, failure: Exception, waiters: list[asyncio.Future[None]]) -> None:
        """No later commit will come: every mark waiting fails, and every later one."""
        self._failure = failure
        if self._writer is not None:
            self._loop.remove_reader(self._answers)
        _settle(waiters + self._waiters, failure)
        self._waiters = []

    def _finish(self, ledger: Writes | None, answer: bytes) -> dict[int, str]:
        """Raises the writer's failure; else finishes the ledger's half of the commit
        (claims the writer left out are judged here) and returns the rows refused."""
        if answer[:1] != b"k":
            if self._ledger is not None:
                self._ledger.lost()
            raise _writer_error(answer)
        if ledger is None or self._ledger is None:
            return {}
        return self._ledger.written(ledger, *ANSWER.unpack(answer[1:]))

    def _write(self, pending: dict[int, tuple[Any, ...] | None], meta: dict[str, Any]
               ) -> dict[int, str]:
        """In this process, while the writer starts or after it ends: as the writer would,
        the journal first, the ledger second (a ledger entry's row is always in the
        journal). Returns the rows whose ledger claim another run won."""
        journal_writer.commit(self._db, *(text.decode() for text in _texts(pending, meta)))
        os.fdatasync(self._wal)
        if self._ledger is None:
            return {}
        return self._ledger.commit(_changes(pending))

    async def stop(self) -> None:
        """Commit what is pending, and end the writer process."""
        if self._writer is None:
            return
        try:
            while self._failure is None and (
                    self._batch is not None or self._pending or self._pending_meta
                    or self._waiters):
                done = self._loop.create_future()
                self._waiters.append(done)
                if self._batch is None:
                    self._hand_over()
                await done
        finally:
            self._end_writer()
        if self._failure is not None:
            raise self._failure

    def _end_writer(self) -> None:
        if self._writer is None:
            return
        if self._failure is None and not self._loop.is_closed():
            self._loop.remove_reader(self._answers)
        os.close(self._requests)  # the writer reads its end, and ends
        self._writer.wait()  # at most the commit it is making
        self._writer = None
        try:
            if self._batch is not None and self._failure is None:
                # The loop ended (cancelled) before the writer's answer came: it is in the
                # pipe, and the ledger's half of that commit is still to finish.
                ledger, _ = self._batch
                self._batch = None
                answer = os.read(self._answers, ANSWER_BYTES)
                if answer[:1] == b"k":
                    self._finish(ledger, answer)
                elif self._ledger is not None:  # nobody waits for it: the next run replays
                    self._ledger.lost()
        finally:
            os.close(self._answers)

    def close(self) -> None:
        self._end_writer()  # a run that failed before ``stop``
        if self._pending or self._pending_meta:
            pending, self._pending = self._pending, {}
            meta, self._pending_meta = self._pending_meta, {}
            self._write(pending, meta)
        os.close(self._wal)
        self._db.close()
