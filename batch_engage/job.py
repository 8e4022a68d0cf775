"""One run from input file to reports: read, map, send (or, dry, record), report."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, closing
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

import aiohttp

from .errors import InputFileError, UsageError
from .limiter import RateLimiter
from .mapper import IDENTIFIER_COLUMN, Mapper, Request, RowError
from .options import RunOptions
from .progress import Progress
from .reader import Record, Table, open_table
from .reporter import FailedReport, RequestsLog, SuccessReport, Summary
from .sender import Result, RetryPolicy, Sender, Transport, aiohttp_transport

DRY_RUN_TOKEN = "***"
# summary.json is rewritten this often during a run, so a crash leaves a recent one.
SUMMARY_EVERY_SECONDS = 2.0


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


class _Run:
    """The state one run shares between reading, sending and reporting."""

    def __init__(self, options: RunOptions, on_warning: Callable[[str], None] | None) -> None:
        self.options = options
        started = datetime.now(UTC)
        self.clock = time.monotonic()
        self.out = options.out or default_out(options.input, started)
        self.summary = Summary(
            input=str(options.input), out=str(self.out), dry_run=options.dry_run,
            options=options.public(), started_at=started.isoformat(timespec="seconds"),
        )
        self._on_warning = on_warning

    def warn(self, message: str) -> None:
        self.summary.warnings.append(message)
        if self._on_warning is not None:
            self._on_warning(message)

    def first_data_row(self, records: Iterator[Record]) -> Record:
        """Skip leading blank rows; a file without a data row leaves no run folder behind."""
        for record in records:
            if not _is_blank(record):
                return record
            self.summary.blank += 1
        raise InputFileError(
            f"{self.options.input.name} has a header but no data rows; nothing to send"
        )

    def mapped(
        self, records: Iterator[Record], mapper: Mapper, failed: FailedReport,
        progress: Progress,
    ) -> Iterator[tuple[Record, Request]]:
        """Valid rows with their requests; invalid ones go straight to failed.csv."""
        for record in records:
            if _is_blank(record):
                self.summary.blank += 1
                continue
            self.summary.rows += 1
            result = mapper.map(record)
            if isinstance(result, RowError):
                failed.add(record, result.stage, result.error, result.text, 0)
                self.summary.add_failure(result.stage, result.error, result.text)
                progress.row_done(ok=False)
            else:
                yield record, result

    def finish(self) -> Summary:
        self.summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.summary.duration_seconds = time.monotonic() - self.clock
        self.summary.write(self.out / "summary.json")
        return self.summary


def _progress(options: RunOptions, table: Table) -> Progress:
    enabled = Progress.wanted(options.quiet)
    return Progress(table.estimate_rows() if enabled else None, enabled=enabled)


def _dry_run(job: _Run, table: Table) -> Summary:
    mapper = Mapper(table.headers, job.options, DRY_RUN_TOKEN, job.warn)
    records = table.records()
    first = job.first_data_row(records)
    _prepare_out(job.out)
    progress = _progress(job.options, table)
    with FailedReport(job.out / "failed.csv", table.headers) as failed, \
            closing(RequestsLog(job.out / "requests.jsonl")) as requests:
        for _, request in job.mapped(chain([first], records), mapper, failed, progress):
            requests.add(request.row, request.body)
            job.summary.outcomes["valid"] += 1
            progress.row_done(ok=True)
    progress.close(finished=True)
    return job.finish()


async def _send(
    job: _Run, table: Table, transport: Transport | None
) -> Summary:
    options = job.options
    assert options.token is not None
    assert options.api_url is not None
    mapper = Mapper(table.headers, options, options.token.reveal(), job.warn)
    records = table.records()
    first = job.first_data_row(records)
    _prepare_out(job.out)
    summary = job.summary
    progress = _progress(options, table)
    async with AsyncExitStack() as stack:
        failed = stack.enter_context(FailedReport(job.out / "failed.csv", table.headers))
        success = stack.enter_context(SuccessReport(
            job.out / "success.csv", IDENTIFIER_COLUMN[options.matching]))
        if transport is None:
            # One session for the run, made inside the running loop, with a connection
            # pool exactly as large as the in-flight limit.
            session = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=options.max_in_flight)))
            transport = aiohttp_transport(session, options.api_url, options.timeout_seconds)
        sender = Sender(
            transport, limiter=RateLimiter(options.rate_per_second),
            max_in_flight=options.max_in_flight,
            policy=RetryPolicy(max_attempts=options.max_attempts),
        )
        last_write = time.monotonic()

        def on_result(record: Record, request: Request, result: Result) -> None:
            nonlocal last_write
            if result.outcome == "ok":
                success.add(request.row, request.identifier, attempts=result.attempts,
                            http_status=result.http_status, error_text=result.error_text,
                            completed_at=result.completed_at)
                summary.outcomes["ok"] += 1
                progress.row_done(ok=True)
            elif result.outcome == "unsent":
                summary.outcomes["unsent"] += 1
            else:
                failed.add(record, result.outcome, result.error, result.error_text,
                           result.attempts)
                summary.add_failure(result.outcome, result.error, result.error_text)
                progress.row_done(ok=False)
            if time.monotonic() - last_write >= SUMMARY_EVERY_SECONDS:
                last_write = time.monotonic()
                job.summary.write(job.out / "summary.json")

        started = time.monotonic()
        try:
            await sender.send_all(
                job.mapped(chain([first], records), mapper, failed, progress), on_result,
                max_pending=4 * options.max_in_flight,
            )
        finally:
            summary.sending_seconds = time.monotonic() - started
            summary.requests_sent = sender.requests_started
            summary.retries = sender.retries
            summary.retries_unanswered = sender.retries_unanswered
            summary.stopped = sender.stop_reason
        if sender.stop_reason is not None:
            # Rows never read are still to be sent, like those that met the refusal.
            # (itertools.chain, unlike a generator, leaves ``records`` open for this.)
            for record in records:
                if _is_blank(record):
                    summary.blank += 1
                else:
                    summary.rows += 1
                    summary.outcomes["unsent"] += 1
    progress.close(finished=sender.stop_reason is None)
    return job.finish()


def run(options: RunOptions, *, on_warning: Callable[[str], None] | None = None,
        transport: Transport | None = None) -> Summary:
    """Run one job and return its summary. Raises UsageError or InputFileError (nothing sent).

    Never prints (but for the progress bar) and never exits the process; warnings go to
    ``on_warning``. ``transport`` replaces the HTTP client, for tests. Inside a running event
    loop (a notebook) the run gets a loop of its own in a worker thread.
    """
    table = open_table(
        options.input, encoding=options.encoding, delimiter=options.delimiter,
        sheet=options.sheet,
    )
    with closing(table):
        job = _Run(options, on_warning)
        job.summary.input_format = table.description
        if options.dry_run:
            return _dry_run(job, table)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_send(job, table, transport))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _send(job, table, transport)).result()
