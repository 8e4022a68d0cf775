"""``--log-file``: what a run does, as JSON lines for ``jq`` and log shippers.

Every line is one JSON object with ``ts`` (UTC, ISO 8601, milliseconds), ``level``
(``info``, ``warning``, ``error``), ``event`` and ``run`` (the run folder, so that runs
sharing one file can be told apart). The events:

- ``start``, or ``resume`` for a ``--resume``: the run's options, as in summary.json;
- ``row``: a row's outcome, once for every data row of a run: ``outcome`` is summary.json's
  name for it (``ok``, ``valid`` in a dry run, failed.csv's ``_stage`` for a failed row,
  ``unsent``) or ``skipped``; ``reason`` is failed.csv's ``_error`` or skipped.csv's
  ``_reason``; with ``identifier``, ``attempts`` and ``http_status`` where the row has them.
  A resume logs the rows it decides, not again those an earlier pass finished (so each
  engagement is logged once): the last ``row`` line of a row is its outcome in the reports;
- ``retry``: a try that failed and will be made again, with ``attempt``, ``reason`` (e.g.
  ``http_503``, ``disconnected``), ``delay`` (seconds before the next try) and
  ``unanswered`` (no answer came, so the API may have acted on it);
- ``slow_down``: a 429 lowered the whole run's ``rate`` (requests a second);
- ``stop``: why the run stops before every row is sent (Ctrl-C, a refused token...);
- ``warning``: a warning of the run, as printed;
- ``finish``: the whole run's counts, as in summary.json;
- ``error``: the run ended on an error (``message``), instead of ``finish``.

No line holds the token; identifiers are masked (``***@example.com``, ``***4567``) and rows
carry error codes, never error texts, because those quote the row's cells: failed.csv has
them, on the same row number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import FileIO
from pathlib import Path
from typing import Any

from . import __version__
from .errors import BatchEngageError, UsageError
from .journal import RowState
from .mapper import Mapper, Request
from .options import Matching, RunOptions
from .reader import Record
from .reporter import Summary
from .sender import timestamp

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_INFO_OUTCOMES = frozenset({"ok", "valid", "skipped"})
MASK = "***"


def mask(identifier: str) -> str:
    """What a log line shows of an identifier: an email's domain, or the last letters and
    digits of anything else (a phone's last 4 digits, whatever its spacing), at most half
    of them."""
    _, at, domain = identifier.strip().rpartition("@")
    if at:
        return MASK + "@" + domain
    alnum = [c for c in identifier if c.isalnum()]
    keep = min(4, len(alnum) // 2)
    return MASK + "".join(alnum[len(alnum) - keep:])


def _outcome_level(outcome: str) -> str:
    if outcome in _INFO_OUTCOMES:
        return "info"
    # Not sent yet, for --resume to send: not a failure of the row.
    return "warning" if outcome == "unsent" else "error"


class RunLog:
    """Appends a run's events to the ``--log-file``, one ``write`` per line.

    The file is opened for appending, unbuffered: each line reaches the file whole, in one
    system call, as its event happens. So a kill never leaves half a line, ``tail -f`` and
    log shippers see events at once, and runs appending to one file never mix their lines.
    A write that fails (a full disk) turns the log off with one warning: the run, whose
    reports and journal are the record that counts, goes on.

    Written from one thread at a time: the run's own.
    """

    def __init__(self, file: FileIO, options: RunOptions, out: Path,
                 on_failure: Callable[[str], None]) -> None:
        self._file: FileIO | None = file
        self._path = options.log_file
        self._run = str(out)
        self._masked = options.matching is not Matching.CUSTOM_REQUEST
        self._on_failure = on_failure
        self._column: int | None = None

    @classmethod
    def begin(cls, options: RunOptions, out: Path, on_failure: Callable[[str], None]
              ) -> RunLog:
        """Open ``options.log_file`` and log the start (or resume) of the run in ``out``."""
        assert options.log_file is not None
        try:
            options.log_file.parent.mkdir(parents=True, exist_ok=True)
            file = FileIO(options.log_file, "a")
        except OSError as e:
            raise UsageError(
                f"cannot open --log-file {options.log_file} for writing: {e.strerror or e}; "
                "check that you may write there, or choose another path") from None
        log = cls(file, options, out, on_failure)
        log._line("info", "resume" if options.resume else "start",
                  {"version": __version__, "options": options.public()})
        return log

    def identify(self, mapper: Mapper) -> None:
        """Which cell of a row holds its identifier (valid or not): what ``row`` masks."""
        if self._masked:
            self._column = mapper.identifier_index

    def row(self, record: Record, outcome: str, reason: str = "", *, attempts: int = 0,
            http_status: int | None = None) -> None:
        line: dict[str, Any] = {
            "ts": timestamp(), "level": _outcome_level(outcome), "event": "row",
            "run": self._run, "row": record.number,
        }
        if self._column is not None:
            line["identifier"] = mask(record.cells[self._column])
        line["outcome"] = outcome
        if reason:
            line["reason"] = reason
        if attempts:
            line["attempts"] = attempts
        if http_status is not None:
            line["http_status"] = http_status
        self._write(line)

    def result(self, record: Record, state: RowState) -> None:
        """A row's outcome after its request (``ok`` or a failure stage)."""
        self.row(record, state.state, state.error, attempts=state.attempts,
                 http_status=state.http_status)

    def retry(self, request: Request, attempt: int, reason: str, delay: float,
              unanswered: bool) -> None:
        line: dict[str, Any] = {"row": request.row}
        if self._masked:
            line["identifier"] = mask(request.identifier)
        line.update(attempt=attempt, reason=reason, delay=round(delay, 3),
                    unanswered=unanswered)
        self._line("warning", "retry", line)

    def slow_down(self, rate: float) -> None:
        self._line("warning", "slow_down", {"reason": "http_429", "rate": round(rate, 2)})

    def stopped(self, reason: str) -> None:
        self._line("warning", "stop", {"message": reason})

    def warning(self, message: str) -> None:
        self._line("warning", "warning", {"message": message})

    def finish(self, summary: Summary) -> None:
        counts = summary.to_json()
        level = "warning" if summary.stopped is not None or summary.failed else "info"
        self._line(level, "finish", {key: counts[key] for key in (
            "rows", "blank", "outcomes", "skipped", "failed", "requests_sent",
            "requests_this_pass", "retries", "retries_unanswered", "stopped",
            "duration_seconds")})

    def error(self, error: BaseException) -> None:
        """The run ended on an exception; its message only when written for the user."""
        message = (str(error) if isinstance(error, BatchEngageError)
                   else f"unexpected error: {type(error).__name__}")
        self._line("error", "error", {"message": message})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _line(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self._write({"ts": timestamp(), "level": level, "event": event, "run": self._run,
                     **fields})

    def _write(self, line: dict[str, Any]) -> None:
        if self._file is None:
            return
        data = memoryview((_ENCODER.encode(line) + "\n").encode())
        try:
            while data:  # a file takes it all in one write, unless its disk is full
                written = self._file.write(data)
                if not written:
                    raise OSError("the file took no more bytes")
                data = data[written:]
        except OSError as e:
            self.close()
            self._on_failure(f"the --log-file {self._path} could not be written "
                             f"({e.strerror or e}); the run goes on without it")
