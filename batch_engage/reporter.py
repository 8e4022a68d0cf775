"""The run folder's reports: success.csv, failed.csv, requests.jsonl and summary.json."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .limiter import WINDOW_SECONDS
from .reader import FORMULA_GUARD, REPORT_COLUMNS, SKIPPED_COLUMNS, Record

# Cells starting with these run as formulas in Excel (OWASP CSV injection); the guard
# character itself is included so that reading a report back can always strip exactly one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", FORMULA_GUARD)


def guard(cell: str) -> str:
    """Make a cell inert in a spreadsheet; ``reader`` undoes it for files we wrote."""
    return FORMULA_GUARD + cell if cell.startswith(_FORMULA_START) else cell


class _CsvReport:
    def __init__(self, path: Path, header: list[str]) -> None:
        # UTF-8 with a BOM, so that Excel shows Cyrillic and other non-Latin text right.
        # Buffered, not a write per row: what a kill must not lose is in the journal, and
        # --resume writes the reports again from it. A run flushes them every few seconds.
        self._file = path.open("w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow([guard(h) for h in header])

    def _write(self, cells: list[str]) -> None:
        self._writer.writerow([guard(c) for c in cells])

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FailedReport(_CsvReport):
    """Every input column as read, then why the row failed; fix it and run the file again."""

    def __init__(self, path: Path, headers: list[str]) -> None:
        # A failed.csv that is run again brings its own _-columns: replace, don't repeat them.
        own = {c.casefold() for c in REPORT_COLUMNS + SKIPPED_COLUMNS}
        self._keep = [i for i, h in enumerate(headers) if h.strip().casefold() not in own]
        super().__init__(path, [headers[i] for i in self._keep] + list(REPORT_COLUMNS))

    def add(self, record: Record, stage: str, error: str, text: str, attempts: int) -> None:
        cells = record.cells
        self._write([cells[i] for i in self._keep] + [
            str(record.number), stage, error, text, str(attempts)
        ])


class SkippedReport(_CsvReport):
    """The rows not sent on purpose (hidden in the sheet...), every input column as read."""

    def __init__(self, path: Path, headers: list[str]) -> None:
        own = {c.casefold() for c in REPORT_COLUMNS + SKIPPED_COLUMNS}
        self._keep = [i for i, h in enumerate(headers) if h.strip().casefold() not in own]
        super().__init__(path, [headers[i] for i in self._keep] + list(SKIPPED_COLUMNS))

    def add(self, record: Record, reason: str, detail: str) -> None:
        cells = record.cells
        self._write([cells[i] for i in self._keep] + [str(record.number), reason, detail])


class SuccessReport(_CsvReport):
    """One line per engaged profile, with the identifier as it was sent (e.g. E.164)."""

    def __init__(self, path: Path, identifier_column: str) -> None:
        super().__init__(path, ["row", identifier_column, "attempts", "http_status",
                                "error_text", "completed_at"])

    def add(self, row: int, identifier: str, *, attempts: int, http_status: int | None,
            error_text: str, completed_at: str) -> None:
        self._write([str(row), identifier, str(attempts),
                     "" if http_status is None else str(http_status), error_text, completed_at])


class RequestsLog:
    """``requests.jsonl`` of a dry run: one ``{"row": N, "body": {...}}`` line per valid row."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb", buffering=2**20)

    def add(self, row: int, body: bytes) -> None:
        self._file.write(b'{"row":%d,"body":%s}\n' % (row, body))

    def close(self) -> None:
        self._file.close()


@dataclass
class Summary:
    """What a run did; written as summary.json and returned by ``batch_engage.run``."""

    input: str
    out: str
    dry_run: bool
    options: dict[str, Any]
    started_at: str
    finished_at: str = ""
    duration_seconds: float = 0.0
    input_format: str = ""
    rows: int = 0
    """Data rows read, blank rows not included."""
    blank: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Rows per outcome: ``ok``, ``valid`` (dry run), ``unsent`` (the run stopped first),
    or a failure stage."""
    errors: Counter[str] = field(default_factory=Counter)
    """Failed rows per error code."""
    examples: dict[str, str] = field(default_factory=dict)
    """The first message seen for each error code."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Rows not sent on purpose, per reason (``hidden_in_sheet``); in skipped.csv."""
    warnings: list[str] = field(default_factory=list)
    requests_sent: int = 0
    """HTTP requests started, retries included, in every pass of the run (see --resume)."""
    pass_requests: int = 0
    """Requests started by this pass: over ``sending_seconds``, the achieved rate."""
    sending_seconds: float = 0.0
    retries: Counter[str] = field(default_factory=Counter)
    """Retries per reason: ``http_429``, ``http_503``, ``timeout``, ``disconnected``..."""
    retries_unanswered: int = 0
    """Retries of requests that got no answer, which the API may have acted on."""
    stopped: str | None = None
    """Why the run stopped before every row was sent (a rejected token...)."""
    row_limit: int | None = None
    """A test send's limit: only the first N valid rows were sent, the rest are unsent."""

    def add_failure(self, stage: str, error: str, text: str) -> None:
        self.outcomes[stage] += 1
        self.errors[error] += 1
        self.examples.setdefault(error, text)

    @property
    def failed(self) -> int:
        return sum(n for outcome, n in self.outcomes.items()
                   if outcome not in ("ok", "valid", "unsent"))

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "input_format": self.input_format,
            "out": self.out,
            "dry_run": self.dry_run,
            "options": self.options,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": round(self.duration_seconds, 3),
            "rows": self.rows,
            "blank": self.blank,
            "failed": self.failed,
            "skipped": dict(sorted(self.skipped.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "errors": dict(self.errors.most_common()),
            "error_examples": self.examples,
            "rows_per_second": round(self.rows / self.duration_seconds, 1)
            if self.duration_seconds > 0 else None,
            "requests_sent": self.requests_sent,
            # Over one second at least, like --rate: 4 requests in 10 ms are not 400/s.
            "requests_this_pass": self.pass_requests,
            "requests_per_second": round(
                self.pass_requests / max(self.sending_seconds, WINDOW_SECONDS), 1)
            if self.pass_requests else None,
            "retries": dict(self.retries.most_common()),
            "retries_unanswered": self.retries_unanswered,
            "stopped": self.stopped,
            "row_limit": self.row_limit,
            "warnings": self.warnings,
        }

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n", "utf-8")
        tmp.replace(path)  # a reader never sees half a summary
