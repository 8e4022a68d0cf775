"""One run from input file to reports: read, map, and (for now) record what would be sent."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

from .errors import InputFileError, UsageError
from .mapper import Mapper, RowError
from .options import RunOptions
from .reader import Record, open_table
from .reporter import FailedReport, RequestsLog, Summary

DRY_RUN_TOKEN = "***"


def default_out(input_path: Path, now: datetime) -> Path:
    return Path("runs") / f"{input_path.stem}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"--out {out} already holds files; choose a new folder for this run "
            "(or leave --out out to get a fresh one under runs/)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the run folder {out}: {e.strerror or e}") from None


def _is_blank(record: Record) -> bool:
    """Excel leaves rows whose cells are all empty at the end of a sheet: not data rows."""
    return not record.extra and not any(c.strip() for c in record.cells)


def run(options: RunOptions, *, on_warning: Callable[[str], None] | None = None) -> Summary:
    """Run one job and return its summary. Raises UsageError or InputFileError (nothing sent).

    Never prints and never exits the process; warnings go to ``on_warning``.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    out = options.out or default_out(options.input, started)
    summary = Summary(
        input=str(options.input), out=str(out), dry_run=options.dry_run,
        options=options.public(), started_at=started.isoformat(timespec="seconds"),
    )

    def warn(message: str) -> None:
        summary.warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    if not options.dry_run:
        raise UsageError("sending is not available in this version; run with --dry-run")

    table = open_table(
        options.input, encoding=options.encoding, delimiter=options.delimiter,
        sheet=options.sheet,
    )
    with closing(table):
        summary.input_format = table.description
        mapper = Mapper(table.headers, options, DRY_RUN_TOKEN, warn)
        records = table.records()
        # Look for a first data row before creating anything, so a file without one
        # leaves no half-made run folder behind.
        for record in records:
            if _is_blank(record):
                summary.blank += 1
                continue
            break
        else:
            raise InputFileError(
                f"{options.input.name} has a header but no data rows; nothing to send"
            )
        _prepare_out(out)
        with FailedReport(out / "failed.csv", table.headers) as failed, \
                closing(RequestsLog(out / "requests.jsonl")) as requests:
            for current in chain([record], records):
                if _is_blank(current):
                    summary.blank += 1
                    continue
                summary.rows += 1
                result = mapper.map(current)
                if isinstance(result, RowError):
                    failed.add(current, result.stage, result.error, result.text, 0)
                    summary.add_failure(result.stage, result.error, result.text)
                else:
                    requests.add(result.row, result.body)
                    summary.outcomes["valid"] += 1
    summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    summary.duration_seconds = time.monotonic() - clock
    summary.write(out / "summary.json")
    return summary
