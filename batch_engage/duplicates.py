"""Which row first held each identifier: the duplicate check, exact, in bounded memory.

A dictionary of every identifier costs about 140 bytes a row: 1.4 GB for a 10-million-row
file. Here the dictionary holds at most ``memory_keys`` identifiers. When it is full they go
to an SQLite file and the dictionary starts again. The write is one SQL statement that
reads them as one JSON text and inserts them sorted, so it runs in SQLite's C code, which
lets go of Python's interpreter lock: on a second core, while the rows go on being read.

A fixed-size bitmap with two bits per written identifier answers "never written" for almost
every new identifier, so the file is read only for a real repeat or a rare false alarm of
the bitmap. Every "repeats row N" comes from comparing the identifiers themselves, never
their hashes: a false duplicate cannot happen, only a file read that finds nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from itertools import islice
from pathlib import Path

import orjson

# About 50 MB of dictionary for emails of 30 characters, so that a 1,000,000-row CSV dry
# run stays under 150 MB, and a bigger file does not grow it (bench/RESULTS.md).
MEMORY_KEYS = 250_000
# 2**25 bits (4 MB) keep false alarms under 0.1% up to 1,000,000 identifiers written and
# about 20% at 10,000,000, where each costs one look-up in the file (some microseconds).
BITMAP_BITS = 2**25
# SQLite's page cache for the file, in KiB (negative: SQLite's unit for a size).
CACHE_KIB = 8192
SPILL_NAME = "duplicates.sqlite"
# Identifiers per statement of a write.
WRITE_PART = 50_000


class FirstRows:
    """``first(key, row)``: the first row given ``key``, which is ``row`` for a new key.

    Rows must come in increasing order. ``folder`` holds the file, made only when the
    dictionary first fills (None: a temporary file SQLite deletes by itself); ``close``
    deletes it.
    """

    def __init__(self, folder: Path | None, *, memory_keys: int | None = None,
                 bitmap_bits: int = BITMAP_BITS,
                 hash_of: Callable[[str], int] = hash) -> None:
        if bitmap_bits & (bitmap_bits - 1):
            raise ValueError("bitmap_bits must be a power of two")
        self._recent: dict[str, int] = {}
        self._writing: dict[str, int] = {}
        """Identifiers on their way to the file, until it has them."""
        self._memory_keys = memory_keys or MEMORY_KEYS
        self._path = folder / SPILL_NAME if folder is not None else None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        """The connection, used by one thread at a time."""
        self._writer: threading.Thread | None = None
        self._failure: sqlite3.Error | None = None
        self._bits = bytearray()
        self._mask = bitmap_bits - 1
        self._hash_of = hash_of
        self.file_reads = 0
        """Look-ups in the file: repeats of written identifiers, and the bitmap's false
        alarms (for the tests and the bench)."""

    def first(self, key: str, row: int) -> int:
        recent = self._recent
        first = recent.get(key)
        if first is not None:
            return first
        if self._db is not None:  # identifiers were written out
            first = self._writing.get(key)
            if first is not None:
                return first
            # Inline, not a method: this runs for every new row once the file exists.
            h, mask, bits = self._hash_of(key), self._mask, self._bits
            a, b = h & mask, (h >> 32) & mask
            if bits[a >> 3] >> (a & 7) & 1 and bits[b >> 3] >> (b & 7) & 1:
                first = self._read(key)
                if first is not None:
                    return first
        if len(recent) >= self._memory_keys:
            self._spill()
        self._recent[key] = row
        return row

    @property
    def in_memory(self) -> int:
        """Identifiers held in dictionaries now: never more than twice ``memory_keys``
        (the one filling, and the one being written)."""
        return len(self._recent) + len(self._writing)

    def _read(self, key: str) -> int | None:
        self.file_reads += 1
        with self._lock:  # waits for a write under way
            assert self._db is not None
            found = self._db.execute("SELECT row FROM seen WHERE key = ?", (key,)).fetchone()
        return None if found is None else int(found[0])

    def _spill(self) -> None:
        self._wait_for_writer()
        db = self._db or self._open()
        # Two bits per identifier, from its 64-bit hash's low and high half.
        bits, mask, hash_of = self._bits, self._mask, self._hash_of
        for key in self._recent:
            h = hash_of(key)
            a, b = h & mask, (h >> 32) & mask
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)
        self._writing, self._recent = self._recent, {}
        self._writer = threading.Thread(target=self._write, args=(db, self._writing),
                                         daemon=True, name="batch-engage duplicate check")
        self._writer.start()

    def _write(self, db: sqlite3.Connection, keys: dict[str, int]) -> None:
        pairs = iter(keys.items())
        try:
            with self._lock:
                db.execute("BEGIN")
                # In parts, each one JSON text: SQLite's parse of a whole dictionary's would
                # cost as much memory as the dictionary itself.
                while part := dict(islice(pairs, WRITE_PART)):
                    db.execute("INSERT INTO seen SELECT key, value FROM json_each(?) "
                               "ORDER BY key", (orjson.dumps(part).decode(),))
                db.execute("COMMIT")
        except sqlite3.Error as e:  # kept in memory then: the answers stay right
            self._failure = e
            return
        self._writing = {}

    def _wait_for_writer(self) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._failure is not None:
            raise self._cannot_write(self._failure)

    def _cannot_write(self, error: Exception) -> OSError:
        where = self._path.parent if self._path is not None else "the temporary folder"
        return OSError(
            f"the duplicate check could not write its file in {where} ({error}); free "
            "some disk space there, or pass --allow-duplicates if the file has no repeats")

    def _open(self) -> sqlite3.Connection:
        try:
            if self._path is not None:
                self._path.unlink(missing_ok=True)  # a killed run's: a resume rebuilds it
            db = sqlite3.connect(self._path or "", isolation_level=None,
                                 check_same_thread=False)
            # Nothing here needs to survive a crash: the file is rebuilt from the input.
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, row INTEGER NOT NULL) "
                       "WITHOUT ROWID")
        except (OSError, sqlite3.Error) as e:
            raise self._cannot_write(e) from None
        self._bits = bytearray((self._mask + 1) // 8)
        self._db = db
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.interrupt()  # a write under way is of no more use
            if self._writer is not None:
                self._writer.join()
            self._db.close()
        if self._path is not None:  # this run's, or one a killed run left (a resume)
            with suppress(OSError):
                self._path.unlink()
        self._db, self._writer, self._failure = None, None, None
        self._recent, self._writing, self._bits = {}, {}, bytearray()
