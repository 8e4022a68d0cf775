"""The journal's writer: a process of its own that commits and syncs the run's batches.

A run started over a pipe (``Journal.start``) sends each group commit here as JSON texts
(the journal's, then the ``--ledger``'s) and waits for the answer: ``k`` and a count, the
batch is on disk; ``e`` and a JSON object naming the error, and the writer has ended. Its
first answer, ``r``, says it is ready for batches; the run commits itself until then.

In the run's own process a commit and its sync cost the sending loop either their time (in
the loop's thread) or the interpreter lock (in another thread, which must win it back from
the busy loop after every SQLite step: 1-2 ms a commit); a process of its own needs neither.
It runs as ``python -I -S`` with only the standard library, so it starts in a few
milliseconds, and it is the only writer of the journal while the run sends; before and
after, the run writes with ``commit`` itself, and the ledger with ``write``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import sys

UPSERT = ("INSERT OR REPLACE INTO rows SELECT "
          + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(8))
          + " FROM json_each(?)")
"""Rows in as one JSON text of their values, not a step per row (executemany binds each
row's values from Python)."""
_DELETE = "DELETE FROM rows WHERE row IN (SELECT value FROM json_each(?))"
_META = ("INSERT OR REPLACE INTO meta "
         "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)")

_CLAIM_OR_ENGAGE = (
    "INSERT INTO entries SELECT ?, ?, json_extract(value, '$[0]'), json_extract(value, '$[2]'), "
    "?, json_extract(value, '$[1]'), ? FROM json_each(?) WHERE true ON CONFLICT DO UPDATE "
    "SET state = 'ok', at = excluded.at "
    "WHERE excluded.state = 'ok' AND entries.run = excluded.run")
_DROP = ("DELETE FROM entries WHERE workflow_id = ? AND kind = ? AND run = ? "
         "AND state = 'sending' AND identifier IN (SELECT value FROM json_each(?))")

HEADER = struct.Struct("<IIIIId")
"""A batch's head: the byte lengths of its JSON texts (an empty one is none): the journal's
rows, deletions and meta values, the ledger's upserts and drops; and the ledger's time."""
READY = b"r"
"""The first answer: connected, batches welcome."""
ANSWER = struct.Struct("<q")
"""After ``k``: how many rows the ledger's upsert wrote."""
BUSY_TIMEOUT_S = 60.0
"""Another connection holding the journal's write lock: a test, or a reader's checkpoint."""
MAX_MESSAGE = 500
"""An error's message is cut to this many characters: escaped as JSON (6 bytes each at most)
the answer stays under PIPE_BUF (4,096 bytes on Linux), written and read whole at once."""
ANSWER_BYTES = 4096
"""The most one answer takes: what the run reads at once."""


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    # NORMAL: a commit is written to the WAL, and ``os.fdatasync`` of that file after it
    # makes it durable, as FULL would but without flushing the file's metadata each time.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def commit(db: sqlite3.Connection, rows: str, deletes: str, meta: str) -> None:
    """One batch, all or nothing: ``rows`` a JSON array of each row's values in column
    order, ``deletes`` one of row numbers, ``meta`` one of [key, JSON text] pairs."""
    # Text, not bytes: SQLite 3.45 and later read a BLOB as its binary JSON.
    if rows and not (deletes or meta):  # most commits: one statement, atomic itself
        db.execute(UPSERT, (rows,))
        return
    db.execute("BEGIN")
    try:
        for sql, values in ((UPSERT, rows), (_DELETE, deletes), (_META, meta)):
            if values:
                db.execute(sql, (values,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def write(db: sqlite3.Connection, scope: tuple[int, str, int], at: float, upserts: str,
          dropped: str) -> int:
    """The ledger's half of a group commit (``ledger.Writes``): ``upserts`` claims profiles
    nobody held and records this run's engagements; ``dropped`` frees this run's claims
    that engaged nobody. Returns how many rows the upsert wrote."""
    workflow_id, kind, run = scope
    count = 0
    if upserts:
        count = db.execute(_CLAIM_OR_ENGAGE, (workflow_id, kind, run, at, upserts)).rowcount
    if dropped:
        db.execute(_DROP, (workflow_id, kind, run, dropped))
    return count


def serve(path: str, requests: int, answers: int,
          ledger: tuple[str, tuple[int, str, int]] | None) -> None:
    """Commit and sync each batch read from ``requests`` until it ends, then write its
    ledger half (the journal first: a ledger entry's row is always in the journal); answer
    each one on ``answers``. The first error is answered, and ends the writer: the run
    stops."""
    db = connect(path)
    ledger_db = None if ledger is None else connect(ledger[0])
    wal = os.open(f"{path}-wal", os.O_RDONLY | os.O_CREAT, 0o644)
    os.write(answers, READY)
    try:
        with os.fdopen(requests, "rb") as batches:
            while len(head := batches.read(HEADER.size)) == HEADER.size:
                *sizes, at = HEADER.unpack(head)
                texts = [batches.read(size).decode() for size in sizes]
                try:
                    commit(db, *texts[:3])
                    os.fdatasync(wal)
                    count = 0
                    if ledger is not None and ledger_db is not None and (texts[3] or texts[4]):
                        count = write(ledger_db, ledger[1], at, texts[3], texts[4])
                except Exception as e:
                    os.write(answers, b"e" + json.dumps(
                        {"type": type(e).__name__, "message": str(e)[:MAX_MESSAGE]}).encode())
                    return
                os.write(answers, b"k" + ANSWER.pack(count))
    finally:
        os.close(wal)
        db.close()
        if ledger_db is not None:
            ledger_db.close()


def die_with(parent: int) -> None:
    """End when the run's process does, a kill too, as a thread of it would: a commit it
    made after the kill could only mark rows whose requests never left. Linux only; where
    the run ends otherwise, the writer reads the end of its batches and ends."""
    if sys.platform == "linux":
        import ctypes  # noqa: PLC0415 (only here: a few milliseconds of start-up)

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        sys.exit(1)


def main(argv: list[str]) -> None:
    """``journal_writer.py PARENT JOURNAL REQUESTS ANSWERS [LEDGER WORKFLOW_ID KIND RUN_ID]``"""
    die_with(int(argv[0]))
    ledger = None
    if len(argv) > 4:
        ledger = (argv[4], (int(argv[5]), argv[6], int(argv[7])))
    serve(argv[1], int(argv[2]), int(argv[3]), ledger)


if __name__ == "__main__":
    main(sys.argv[1:])
