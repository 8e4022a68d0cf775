"""Who was engaged in which scenario, across runs: the ``--ledger`` SQLite file.

A nightly import sends last night's rows again unless something remembers them. The ledger
holds one entry per (workflow id, kind of identifier, identifier as duplicates are judged):
``ok`` once the API engaged the profile, ``sending`` while a run's request may be on its
way. Several runs share one file, at once too: SQLite in WAL mode takes one writer at a time,
and each claim is a compare-and-set on what the run saw when it read the row, so two runs
never both send to one profile.

The run's journal is written first, the ledger second, in the same group commit, and a
request leaves only after both are written. So a ``sending`` entry always has its row in the
journal of the run named beside it, and a later run can ask that journal what became of it:
engaged, failed (send again), or unknown (a kill while the request was on its way). While a
run sends, both halves are the journal's writer process's (``journal_writer``); the run makes
each commit's writes ready (``Ledger.writes``) and judges the claims that met another run's
entry (``Ledger.written``).

The journal is what is made durable (fsync) at each commit; the ledger is not, as a second
fsync per commit cost a quarter of the sending rate. Instead a run is marked open in the
ledger, durably, before its first claim, and closed, durably, after its last write. Whoever
opens the ledger next replays every run left open (killed, or a power loss that took the
ledger's last commits with it) from that run's journal, which has every row the ledger can
have lost.
"""

from __future__ import annotations

import functools
import os
import select
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import orjson

from .errors import UsageError
from .journal import answered_error, is_running, journal_rows, maybe_engaged, write_all
from .journal_writer import write
from .ledger_looker import ANSWER, ENGAGED, ENTRY, EVERY_ENTRY, NONE, READY, REQUEST, look
from .mapper import Request, RowError, identity
from .options import Matching

OK = "ok"
SENDING = "sending"
UNCERTAIN = "uncertain"
# How long a run waits for another run's commit to the shared file before giving up.
BUSY_TIMEOUT_MS = 60_000
# Rows looked up in one query once a run is under way; the first ones go one by one, so the
# first request does not wait for a batch to fill. Small, so that the rows read and not yet
# handed out stay in the processor's cache (see ``ledger_looker``): at 512 rows a batch, a
# dry run's own work took 7% longer than at 128.
LOOKUP_BATCH = 128
# Batches on their way at once: the run maps the next batch while the looker searches.
LOOKUPS_AHEAD = 2
_LOOKER = str(Path(__file__).with_name("ledger_looker.py"))

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL UNIQUE,
    open INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entries (
    workflow_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    identifier TEXT NOT NULL,
    state TEXT NOT NULL,
    run INTEGER NOT NULL,
    row INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (workflow_id, kind, identifier)
) WITHOUT ROWID;
"""

T = TypeVar("T")


def now() -> float:
    """The clock that dates entries and ``--ledger-days`` (a test moves it on)."""
    return time.time()


def iso(at: float) -> str:
    return _iso_seconds(int(at))


@functools.lru_cache(maxsize=4096)  # a run's entries share their seconds: one text for each
def _iso_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class Entry(NamedTuple):  # a tuple: a nightly import finds one for most rows
    """What the ledger holds for one identifier."""

    state: str
    run: Path
    """The run folder that engaged the profile, or is (or was) sending to it."""
    row: int
    at: float
    """Seconds since the epoch: when it was engaged, or when the request was about to leave."""
    run_id: int
    counts: bool
    """Within ``--ledger-days``: an older entry does not stop a send (but is claimed over)."""


COUNTED = Entry(OK, Path(), 0, 0.0, -1, True)
"""A dry run's entry for a profile engaged within ``--ledger-days``, by some other run."""


def already_engaged(entry: Entry) -> str:
    """skipped.csv's ``_detail`` for a row the ledger holds: which run, and when."""
    if entry.state == OK:
        return f"engaged by the run in {entry.run} at {iso(entry.at)}"
    return (f"the run in {entry.run} was sending to this profile at the same time "
            f"(since {iso(entry.at)}); if it failed there, the next run sends it")


def kind_of(matching: str, field_name: str | None) -> str:
    """Identifiers of another matching mode (or another custom field) are another kind."""
    return f"custom:{field_name}" if matching == "custom" else matching


def _connect(path: Path) -> sqlite3.Connection:
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # see the module's docstring
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(
                        f"it was written by another version of batch-engage ({version})")
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                db.close()
                raise
            return db
        except sqlite3.OperationalError as e:
            # Two runs that start at once on a new ledger: the second cannot switch it to WAL
            # while the first holds it, and SQLite does not wait for that by itself.
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise _not_a_ledger(path, e) from None
            time.sleep(0.05)
        except sqlite3.DatabaseError as e:
            raise _not_a_ledger(path, e) from None


Found = tuple[str, str, int, int, float]
"""An entry as read: identifier, state, run id, row, time."""
Looked = tuple[bytes, str]
"""A batch's flags and its entries in full (``ledger_looker.look``)."""


# A claim (``sending``) is written only where no entry is; an engagement (``ok``) only over
# this run's own entry, or where none is. ("WHERE true": SQLite's rule for an upsert from a
# SELECT.)
class Writes(NamedTuple):
    """One group commit's writes to the ledger (``Ledger.writes``)."""

    claims: list[tuple[int, str, Entry | None]]
    """Row, key, and what the ledger held for it at the look-up."""
    fresh: int
    """How many of the claims met no entry at their look-up: ``upserts`` makes them."""
    upserts: list[tuple[str, int, str]]
    """Key, row, state: the fresh claims, then the engagements."""
    dropped: list[str]
    """This run's claims that engaged nobody."""
    at: float

    def texts(self) -> tuple[bytes, bytes]:
        """``upserts`` and ``dropped`` as ``journal_writer.write`` takes them."""
        return (orjson.dumps(self.upserts) if self.upserts else b"",
                orjson.dumps(self.dropped) if self.dropped else b"")


def _fetch(db: sqlite3.Connection, workflow_id: int, kind: str, keys: list[str]
           ) -> list[Found]:
    (found,) = db.execute(EVERY_ENTRY, (workflow_id, kind, orjson.dumps(keys).decode())
                          ).fetchone()
    return _found(found)


def _found(text: str) -> list[Found]:
    """Entries from the JSON text of ``json_array(identifier, state, run, row, at)``s."""
    return [(identifier, state, run, row, float(at))
            for identifier, state, run, row, at in orjson.loads(text)]


class LookerError(Exception):
    """The ledger's looker process failed in a way SQLite did not name."""


class _Looker:
    """The ledger's looker process (``ledger_looker``) for one run, and its answers, which
    come in the order the batches were asked."""

    def __init__(self, ledger: Ledger) -> None:
        requests, self._requests = os.pipe()
        answers, answered = os.pipe()
        try:
            # A session of its own, as the journal's writer: a Ctrl-C at the terminal is the
            # run's to handle (the looker would print a traceback of its own).
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", _LOOKER, str(ledger.path),
                 str(ledger.workflow_id), ledger.kind, str(requests), str(answered)],
                stdin=subprocess.DEVNULL, pass_fds=(requests, answered),
                start_new_session=True)
        except BaseException:
            os.close(self._requests)
            os.close(answers)
            raise
        finally:
            os.close(requests)
            os.close(answered)
        self._answers = os.fdopen(answers, "rb")
        self._started = select.poll()
        self._started.register(answers, select.POLLIN)
        self._ready = False

    def ask(self, identifiers: bytes, cutoff: float) -> bool:
        """Hand a batch (a JSON array) to the looker, if it is ready: ``answer`` reads it."""
        if not self._ready and not self._is_ready():
            return False
        try:
            write_all(self._requests, REQUEST.pack(cutoff, len(identifiers)) + identifiers)
        except BrokenPipeError:  # it has ended: with its error, if it had one
            raise self._error(self._answers.read(1)) from None
        return True

    def _is_ready(self) -> bool:
        if not self._started.poll(0):
            return False
        if (first := self._answers.read(1)) != READY:
            raise self._error(first)
        self._ready = True
        return True

    def answer(self) -> Looked:
        """The answer to the oldest batch handed over and not answered yet."""
        if (kind := self._answers.read(1)) != b"k":
            raise self._error(kind)
        flags, entries = ANSWER.unpack(self._answers.read(ANSWER.size))
        return self._answers.read(flags), self._answers.read(entries).decode()

    def _error(self, first: bytes) -> Exception:
        return answered_error(first + self._answers.read(), LookerError,
                              "the --ledger's looker process",
                              "run the same command again (a run that was sending goes on "
                              "with --resume)")

    def close(self) -> None:
        """End the looker (only reads: nothing is lost), whatever it was doing."""
        os.close(self._requests)
        self._answers.close()
        self._process.kill()
        self._process.wait()


def _not_a_ledger(path: Path, error: Exception) -> UsageError:
    return UsageError(f"--ledger {path} cannot be used as a ledger ({error}); give the path "
                      "of a ledger file, or a new file name to start one")


class Ledger:
    """One run's view of the ledger: look up identifiers, claim them, record engagements."""

    def __init__(self, path: Path, *, workflow_id: int, kind: str, days: float | None,
                 run: Path | None) -> None:
        """``run`` is the folder of the run that writes; ``None`` only looks (a dry run)."""
        self.path = path
        self.workflow_id = workflow_id
        self.kind = kind
        self._days = days
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the folder of --ledger {path}: "
                             f"{e.strerror or e}") from None
        self._db = _connect(path)
        self._folders: dict[int, Path] = {}
        self.run = run.absolute() if run is not None else None
        self._run_id = -1
        self._healthy = True
        """Every commit of this run reached the ledger: only then may it be closed."""
        self._recover()
        if self.run is not None:
            self._run_id = self._mark_open(self.run)
        self._seen: dict[int, tuple[str, Entry | None]] = {}
        """Rows read and not yet finished: their key and what the ledger held for it then."""
        self._claimed: dict[int, str] = {}
        self._looker: _Looker | None = None
        """Looks rows up while the next ones are read and mapped."""
        self._commit_db: sqlite3.Connection | None = None
        """For the group commits written in this process, and the claims judged one by one
        (``written``); the journal's writer process has its own."""

    def close(self) -> None:
        try:
            if self._commit_db is not None:
                self._commit_db.close()
            if self._looker is not None:
                self._looker.close()
            if self.run is not None and self._healthy:
                self._durably("UPDATE runs SET open = 0 WHERE id = ?", (self._run_id,))
        finally:
            self._db.close()

    # --- runs, and the replay of those a kill left open ---------------------------------------

    def _durably(self, sql: str, parameters: tuple[Any, ...]) -> None:
        """One commit synced to disk, with every commit before it (they share the WAL)."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.execute(sql, parameters)
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _mark_open(self, folder: Path) -> int:
        self._db.execute("INSERT OR IGNORE INTO runs (folder) VALUES (?)", (str(folder),))
        self._durably("UPDATE runs SET open = 1 WHERE folder = ?", (str(folder),))
        found = self._db.execute("SELECT id FROM runs WHERE folder = ?", (str(folder),)
                                 ).fetchone()
        return int(found[0])

    def _recover(self) -> None:
        """Replay the runs left open from their journals (a resumed run, its own)."""
        for run_id, folder in self._db.execute(
                "SELECT id, folder FROM runs WHERE open = 1").fetchall():
            path = Path(folder)
            if path == self.run or not is_running(path):
                replay(self._db, run_id, path)
                self._durably("UPDATE runs SET open = 0 WHERE id = ?", (run_id,))

    # --- reading ------------------------------------------------------------------------------

    def _folder(self, run_id: int, db: sqlite3.Connection | None = None) -> Path:
        if run_id not in self._folders:
            found = (db or self._db).execute("SELECT folder FROM runs WHERE id = ?",
                                             (run_id,)).fetchone()
            self._folders[run_id] = Path(found[0]) if found else Path("?")
        return self._folders[run_id]

    def ask(self, identifiers: list[str | None], *, counting: bool) -> Looked | None:
        """Look a batch of identifiers up (``None``: a row without one). Returns the flags
        and entries (``ledger_looker.look``) now, or ``None``: ``answer`` returns them, in
        the order asked.

        A dry run's batches (``counting``) go to the ledger's looker process: reading and
        mapping take all of the run's processor, and the other one is free. Until the looker
        has started, the run looks them up itself, so a small file does not wait for it. A
        send looks its rows up itself: about 2 µs a row of the 150 µs its loop spends, and
        with a looker process it kept no more of its rate (84-92% of it without a ledger
        either way, with the mock server on the same two processors)."""
        text = orjson.dumps(identifiers)
        cutoff = self._cutoff()
        if counting:
            if self._looker is None:
                self._looker = _Looker(self)
            if self._looker.ask(text, cutoff):
                return None
        return look(self._db, self.workflow_id, self.kind, identifiers, text.decode(),
                    counting=counting, cutoff=cutoff)

    def answer(self) -> Looked:
        assert self._looker is not None
        return self._looker.answer()

    def _cutoff(self) -> float:
        return now() - self._days * 86_400 if self._days is not None else float("-inf")

    def entries(self, found: str) -> dict[str, Entry]:
        """Each identifier's entry, from the JSON text of a look-up's entries."""
        cutoff = self._cutoff()
        folder = self._folder
        return {identifier: Entry(state, folder(run_id), row, at, run_id, at >= cutoff)
                for identifier, state, run_id, row, at in _found(found)}

    def expect(self, row: int, key: str, seen: Entry | None) -> None:
        """Remember what the ledger held for a row about to be sent: its claim is made on
        that condition, so another run that claimed the identifier meanwhile wins."""
        self._seen[row] = (key, seen)

    # --- writing, inside the journal's group commit -------------------------------------------

    def writes(self, changes: Iterable[tuple[int, str | None, str]]) -> Writes | None:
        """One group commit's row changes, each a row, its state (``sending``, ``ok``,
        another final state, or ``None``: the request was not acted on) and error code, as
        the writes they make; ``None`` when they make none. ``write`` writes them, or the
        journal's writer process, then ``written`` finishes them."""
        claims: list[tuple[int, str, Entry | None]] = []
        engaged: list[tuple[int, str]] = []
        dropped: list[str] = []
        for row, state, error in changes:
            if state == SENDING:
                key, seen = self._seen[row]
                claims.append((row, key, seen))
            elif row in self._claimed:
                key = self._claimed.pop(row)
                self._seen.pop(row, None)
                if state == OK:
                    engaged.append((row, key))
                elif state != UNCERTAIN and not maybe_engaged(state, error):
                    # Failed, or not acted on: no engagement. (An uncertain one keeps its
                    # claim: a later run asks this run's journal what became of it.)
                    dropped.append(key)
                    if state is None:  # a retry will claim it again
                        self._seen[row] = (key, None)
        if not (claims or engaged or dropped):
            return None
        # The common case is one statement over a JSON text, a transaction of its own:
        # claims on profiles nobody held at their look-up, and this run's engagements. A
        # claim that meets an entry after all is left out, and the count of rows written
        # says so.
        fresh = [(key, row, SENDING) for row, key, seen in claims if seen is None]
        return Writes(claims, len(fresh), fresh + [(key, row, OK) for row, key in engaged],
                      dropped, now())

    @property
    def scope(self) -> tuple[int, str, int]:
        """Whose entries this run writes: workflow, kind of identifier, run."""
        return self.workflow_id, self.kind, self._run_id

    def commit(self, changes: Iterable[tuple[int, str | None, str]]) -> dict[int, str]:
        """``writes``, ``write`` and ``written`` in one, in this process.

        Returns the rows whose claim another run won, with skipped.csv's detail saying which
        run: they must not be sent.
        """
        writes = self.writes(changes)
        if writes is None:
            return {}
        db = self._commit_connection()
        try:
            count = write(db, self.scope, writes.at, *(text.decode() for text in writes.texts()))
        except BaseException:
            self.lost()
            raise
        return self.written(writes, count)

    def written(self, writes: Writes, count: int) -> dict[int, str]:
        """After ``write`` (``count``: the rows its upsert wrote), the claims it left out,
        each judged against what the ledger holds now. Returns the rows refused."""
        claims = writes.claims
        if not claims or (writes.fresh == len(claims) and count == len(writes.upserts)):
            self._claimed.update((row, key) for row, key, _ in claims)
            return {}
        db = self._commit_connection()
        try:
            # IMMEDIATE takes the write lock first: no other run's claim lands between the
            # look at what is held and the writes.
            db.execute("BEGIN IMMEDIATE")
            refused = self._claim(db, claims, writes.at)
            db.execute("COMMIT")
        except BaseException:
            self.lost()
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return refused

    def lost(self) -> None:
        """A commit's writes may not all have reached the ledger: the run stays open, for
        the next run that opens the ledger to replay from the journal."""
        self._healthy = False

    def _commit_connection(self) -> sqlite3.Connection:
        if self._commit_db is None:
            self._commit_db = sqlite3.connect(self.path, isolation_level=None,
                                              timeout=BUSY_TIMEOUT_MS / 1000)
            self._commit_db.execute("PRAGMA synchronous=NORMAL")  # see the module's docstring
        return self._commit_db

    def _claim(self, db: sqlite3.Connection, claims: list[tuple[int, str, Entry | None]],
               at: float) -> dict[int, str]:
        """Each claim judged against what the ledger holds now: one that another run made
        since the look-up is refused; returns the refused rows with skipped.csv's detail."""
        held = {k: (state, run, row, when) for k, state, run, row, when
                in _fetch(db, self.workflow_id, self.kind, [key for _, key, _ in claims])}
        refused: dict[int, str] = {}
        won: list[tuple[str, int]] = []
        for row, key, seen in claims:
            now_held = held.get(key)
            if now_held is not None and now_held[1] != self._run_id and (
                    seen is None or now_held != (seen.state, seen.run_id, seen.row, seen.at)):
                self._seen.pop(row, None)
                state, run_id, its_row, when = now_held
                refused[row] = already_engaged(Entry(
                    state, self._folder(run_id, db), its_row, when, run_id, True))
                continue
            self._claimed[row] = key
            if now_held is None or now_held[0] != OK or now_held[1] != self._run_id:
                # (a repeated row, --allow-duplicates, keeps its engagement)
                won.append((key, row))
                held[key] = (SENDING, self._run_id, row, at)
        if won:
            db.execute(
                "INSERT OR REPLACE INTO entries SELECT ?, ?, json_extract(value, '$[0]'), "
                "'sending', ?, json_extract(value, '$[1]'), ? FROM json_each(?)",
                (self.workflow_id, self.kind, self._run_id, at, orjson.dumps(won).decode()))
        return refused



class LookedUp(Generic[T]):
    """The rows, each valid one with what the ledger holds for it, in order.

    Rows are looked up a batch at a time (``Ledger.ask``), ``LOOKUPS_AHEAD`` batches ahead of
    the rows handed out: a dry run's looker process searches while the next ones are read
    and mapped. The batch grows from one row, so the first request does not wait for a
    batch to fill. Counting (a dry run, which counts the engaged rows without listing them),
    an engaged row's entry is ``COUNTED``, which names no run. Without a ledger, rows pass
    one by one.
    """

    def __init__(self, items: Iterator[tuple[T, Request | RowError]], ledger: Ledger | None,
                 *, counting: bool = False) -> None:
        self._items = items
        self._ledger = ledger
        self._counting = counting
        self._looking: deque[tuple[list[tuple[T, Request | RowError]], Looked | None]] = deque()
        """Batches asked for: their answer, or ``None`` while the looker has it."""
        self._handing: Iterator[tuple[T, Request | RowError, Entry | None]] = iter(())

    def __iter__(self) -> Iterator[tuple[T, Request | RowError, Entry | None]]:
        if self._ledger is None:
            return ((item, result, None) for item, result in self._items)
        return self._looked_up(self._ledger)

    def _looked_up(self, ledger: Ledger) -> Iterator[tuple[T, Request | RowError, Entry | None]]:
        size = 1
        while True:
            while len(self._looking) < LOOKUPS_AHEAD:
                batch = list(islice(self._items, size))
                if not batch:
                    break
                size = min(LOOKUP_BATCH, size * 2)
                self._looking.append((batch, ledger.ask(
                    [r.key if isinstance(r, Request) else None for _, r in batch],
                    counting=self._counting)))
            if not self._looking:
                return
            batch, looked = self._looking[0]
            flags, found = ledger.answer() if looked is None else looked
            self._looking.popleft()
            self._handing = iter(self._entries(ledger, batch, flags, found))
            yield from self._handing

    def _entries(self, ledger: Ledger, batch: list[tuple[T, Request | RowError]], flags: bytes,
                 found: str) -> list[tuple[T, Request | RowError, Entry | None]]:
        if ENTRY not in flags:  # most batches: a row's flag says it all
            said = (None, COUNTED)
            return [(item, result, said[flag])
                    for (item, result), flag in zip(batch, flags, strict=True)]
        entries = ledger.entries(found)
        return [(item, result, None if flag == NONE else COUNTED if flag == ENGAGED
                 else entries[result.key] if isinstance(result, Request) else None)
                for (item, result), flag in zip(batch, flags, strict=True)]

    def ahead(self) -> list[T]:
        """Rows read for a batch and not handed out: unsent, when the run stops early."""
        return [item for item, _, _ in self._handing] + [
            item for batch, _ in self._looking for item, _ in batch]


def replay(db: sqlite3.Connection, run_id: int, folder: Path) -> None:
    """Put what a run's journal knows into the ledger: its engagements, and its rows that
    were on their way (their outcome unknown). A run whose journal is gone keeps what the
    ledger has of it: its ``sending`` entries stay unknown, as nobody can tell now."""
    rows = journal_rows(folder)
    if rows is None:
        return
    options, states = rows
    matching = Matching(options["matching"])
    workflow_id, kind = options["workflow_id"], kind_of(matching.value, options["field_name"])
    db.execute("BEGIN IMMEDIATE")
    try:
        for row, state, identifier, completed_at, error in states:
            key = (workflow_id, kind, identity(matching, identifier))
            if state == OK:
                at = datetime.fromisoformat(completed_at).timestamp() if completed_at else now()
                db.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, 'ok', ?, ?, ?) ON CONFLICT DO UPDATE "
                    "SET state = 'ok', run = excluded.run, row = excluded.row, at = excluded.at "
                    "WHERE entries.state != 'ok'", (*key, run_id, row, at))
            elif state in (SENDING, UNCERTAIN) or maybe_engaged(state, error):
                db.execute("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, 'sending', ?, ?, ?)",
                           (*key, run_id, row, now()))
            # A row that failed there may keep a stale claim: whoever finds it asks this
            # journal, which says the row failed, and sends it.
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@dataclass(frozen=True, slots=True)
class WorkflowCounts:
    workflow_id: int
    kind: str
    engaged: int
    uncertain: int
    latest_run: Path
    latest_at: float


def describe(path: Path) -> list[WorkflowCounts]:
    """What a ledger holds, per workflow and kind of identifier (``batch-engage ledger``)."""
    db = _open_existing(path)
    try:
        rows = db.execute(
            "SELECT workflow_id, kind, SUM(state = 'ok'), SUM(state = 'sending'), "
            "(SELECT folder FROM runs WHERE id = e.run), MAX(at) "
            "FROM entries AS e GROUP BY workflow_id, kind ORDER BY workflow_id, kind").fetchall()
    finally:
        db.close()
    return [WorkflowCounts(w, k, ok, sending, Path(folder), at)
            for w, k, ok, sending, folder, at in rows]


def forget(path: Path, workflow_id: int) -> int:
    """Delete a workflow's entries (its profiles may be engaged again); returns how many."""
    db = _open_existing(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        deleted = db.execute("DELETE FROM entries WHERE workflow_id = ?",
                             (workflow_id,)).rowcount
        db.execute("COMMIT")
    finally:
        db.close()
    return int(deleted)


def _open_existing(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise UsageError(f"there is no ledger at {path}; check the path (a run creates it "
                         "with --ledger)")
    return _connect(path)
