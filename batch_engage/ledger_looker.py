"""The ledger's looker: a process of its own that looks a run's rows up in the ``--ledger``.

A dry run (``ledger.LookedUp``) sends each batch of identifiers over a pipe, a few batches
ahead of the rows it hands out, and reads the answers in the same order: a byte per
identifier (``NONE``, ``ENGAGED``, ``ENTRY``), then the entries marked ``ENTRY`` as one JSON
text. Its first answer, ``r``, says it is ready; until then the run looks its first rows up
itself with ``look``. An error is answered with ``e`` and a JSON object naming it, and ends
the looker. (A send looks its rows up itself: see ``Ledger.ask``.)

Why a process and not a thread of the run: SQLite lets go of the interpreter lock while it
searches, but a thread must win the lock back from the busy run after each search, and the
run kept waiting for the batch it needed (a 1,000,000-row dry run over a 10,000,000-entry
ledger took 1.17-1.28x its time without one; with this process, 1.05-1.06x). Fewer, larger
batches wait less often, but hold more rows read and not yet handed out: the run's later
work on rows that have left its processor's cache cost more than the waits (1.3x at 4,096
rows a batch). This process never waits for the run's lock, so the batches stay small.
Standard library only, run as ``python -I -S``: it starts in a few milliseconds.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import struct
import sys
import threading
from typing import BinaryIO

NONE, ENGAGED, ENTRY = 0, 1, 2
"""An identifier's answer: no entry that counts; engaged within ``--ledger-days`` (a dry run
needs no more); its entry follows in full."""
REQUEST = struct.Struct("<dI")
"""A batch's head: the time before which entries do not count (``--ledger-days``), and the
byte length of the identifiers' JSON array (``null`` for a row that has none)."""
ANSWER = struct.Struct("<II")
"""After ``k``: the byte lengths of the flags and of the entries' JSON text."""
READY = b"r"
BUSY_TIMEOUT_S = 60.0
"""As the run's own connections: a reader waits only while SQLite recovers a WAL."""
MAX_MESSAGE = 500
"""An error's message is cut to this many characters, as the journal's writer cuts its."""

# The identifiers go in as one JSON text and the entries come back as one: a single step
# of SQLite's, without an object per identifier or per entry on the way. ``at`` travels as
# text of 17 digits, which JSON's numbers (15 in SQLite) would round, and a claim compares
# it exactly. (As IN, the identifiers are searched in the primary key: a join was planned as
# a scan of the workflow.)
EVERY_ENTRY = (
    "SELECT json_group_array(json_array(identifier, state, run, row, printf('%!.17g', at))) "
    "FROM entries WHERE workflow_id = ? AND kind = ? "
    "AND identifier IN (SELECT value FROM json_each(?))")
"""An entry is ``[identifier, state, run, row, at]``."""
_COUNTING = (
    "SELECT json_group_array(identifier) FILTER (WHERE state = 'ok'), "
    "json_group_array(json_array(identifier, state, run, row, printf('%!.17g', at))) "
    "FILTER (WHERE state != 'ok') FROM entries WHERE workflow_id = ? AND kind = ? "
    "AND at >= ? AND identifier IN (SELECT value FROM json_each(?))")


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    db.execute("PRAGMA query_only = 1")
    return db


def look(db: sqlite3.Connection, workflow_id: int, kind: str,
         names: list[str | None], identifiers: str, *, counting: bool, cutoff: float
         ) -> tuple[bytes, str]:
    """The flags of ``names`` (``identifiers``: the same as a JSON array), and the entries
    marked ``ENTRY``.

    Counting (a dry run): an entry older than ``cutoff`` is ``NONE``, an engagement is
    ``ENGAGED``, and only the claims of runs that may still be sending come in full (their
    journals decide). Otherwise every entry comes in full, whatever its age.
    """
    if counting:
        engaged_text, found = db.execute(
            _COUNTING, (workflow_id, kind, cutoff, identifiers)).fetchone()
        engaged = set(json.loads(engaged_text))
    else:
        (found,) = db.execute(EVERY_ENTRY, (workflow_id, kind, identifiers)).fetchone()
        engaged = set()
    if found == "[]":  # most batches
        return bytes([name in engaged for name in names]), found
    full = {entry[0] for entry in json.loads(found)}
    return bytes([ENTRY if name in full else ENGAGED if name in engaged else NONE
                  for name in names]), found


def _read_requests(requests: BinaryIO, batches: queue.SimpleQueue[tuple[float, str] | None]
                   ) -> None:
    """Read every batch as it comes, whatever the answers wait for: a run blocked writing a
    batch of long identifiers while this process is blocked writing it a long answer would
    otherwise wait for ever."""
    while len(head := requests.read(REQUEST.size)) == REQUEST.size:
        cutoff, size = REQUEST.unpack(head)
        batches.put((cutoff, requests.read(size).decode()))
    batches.put(None)


def serve(path: str, workflow_id: int, kind: str, requests: int, answers: int) -> None:
    """Answer each batch read from ``requests`` on ``answers``, in order, until the run
    closes its end. The first error is answered, and ends the looker."""
    try:
        db = connect(path)
    except Exception as e:
        _answer(answers, _error(e))
        return
    batches: queue.SimpleQueue[tuple[float, str] | None] = queue.SimpleQueue()
    try:
        _answer(answers, READY)
        threading.Thread(target=_read_requests, args=(os.fdopen(requests, "rb"), batches),
                         daemon=True).start()
        while (batch := batches.get()) is not None:
            try:
                flags, found = look(db, workflow_id, kind, json.loads(batch[1]), batch[1],
                                    counting=True, cutoff=batch[0])
            except Exception as e:
                _answer(answers, _error(e))
                return
            entries = found.encode() if ENTRY in flags else b""
            _answer(answers, b"k" + ANSWER.pack(len(flags), len(entries)) + flags + entries)
    except BrokenPipeError:  # the run has ended: nobody is left to answer
        return
    finally:
        db.close()


def _error(error: Exception) -> bytes:
    return b"e" + json.dumps({"type": type(error).__name__,
                              "message": str(error)[:MAX_MESSAGE]}).encode()


def _answer(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> None:
    """``ledger_looker.py LEDGER WORKFLOW_ID KIND REQUESTS ANSWERS``"""
    serve(argv[0], int(argv[1]), argv[2], int(argv[3]), int(argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
