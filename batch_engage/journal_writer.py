"""The journal's writer: a process of its own that commits and syncs the run's batches.

A run started over a pipe (``Journal.start``) sends each group commit here as three JSON
texts and waits for one byte back: ``k``, the batch is on disk; ``e`` and a JSON object
naming the error, and the writer has ended. In the run's own process a commit and its sync
cost the sending loop either their time (in the loop's thread) or the interpreter lock (in
another thread, which must win it back from the busy loop after every SQLite step, 1-2 ms
a commit); a process of its own needs neither. It is run as ``python -I -S`` with only the
standard library, so it starts in a few milliseconds, and it is the only writer of the
journal while the run sends; before and after, the run writes with ``commit`` itself.
"""

from __future__ import annotations

import json
import os
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

HEADER = struct.Struct("<III")
"""A batch's head: the byte lengths of its rows, deletions and meta values (JSON texts; an
empty one is none)."""
BUSY_TIMEOUT_S = 60.0
"""Another connection holding the journal's write lock: a test, or a reader's checkpoint."""
MAX_MESSAGE = 2000
"""An error's message is cut to this: an answer under PIPE_BUF arrives in one read."""


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                         check_same_thread=False)
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


def serve(path: str, requests: int, answers: int) -> None:
    """Commit and sync each batch read from ``requests`` until it ends; answer each one on
    ``answers``. The first error is answered, and ends the writer: the run stops."""
    db = connect(path)
    wal = os.open(f"{path}-wal", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        with os.fdopen(requests, "rb") as batches:
            while len(head := batches.read(HEADER.size)) == HEADER.size:
                texts = [batches.read(size).decode() for size in HEADER.unpack(head)]
                try:
                    commit(db, *texts)
                    os.fdatasync(wal)
                except Exception as e:
                    os.write(answers, b"e" + json.dumps(
                        {"type": type(e).__name__, "message": str(e)[:MAX_MESSAGE]}).encode())
                    return
                os.write(answers, b"k")
    finally:
        os.close(wal)
        db.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
