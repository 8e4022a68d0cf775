"""One run from input file to reports: read, map, send (or, dry, record), report."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import AsyncExitStack, closing, contextmanager
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

import aiohttp

from .errors import InputFileError, UsageError
from .journal import (
    DONE,
    JOURNAL_NAME,
    LOCK_NAME,
    SENDING,
    UNCERTAIN,
    Engaged,
    Fingerprint,
    Journal,
    RowState,
    RunLock,
    check_options,
    engaged_by,
    stored_options,
)
from .limiter import RateLimiter
from .mapper import IDENTIFIER_COLUMN, Mapper, Request, RowError, identity
from .options import RunOptions
from .progress import Listener, Progress, ProgressBar
from .reader import EXCEL_SUFFIXES, Record, Table, open_table
from .reporter import FailedReport, RequestsLog, SkippedReport, SuccessReport, Summary
from .sender import Result, RetryPolicy, Sender, Transport, aiohttp_transport, timestamp
from .xlsx_report import write_failed_xlsx

DRY_RUN_TOKEN = "***"
HIDDEN_IN_SHEET = "hidden_in_sheet"
HIDDEN_DETAIL = ("hidden in the sheet (by a filter or by hand); unhide it, or run with "
                 "--include-hidden-rows")
ALREADY_ENGAGED = "already_engaged"
# summary.json is rewritten this often during a run, so a crash leaves a recent one.
SUMMARY_EVERY_SECONDS = 2.0


def default_out(input_path: Path, now: datetime) -> Path:
    return Path("runs") / f"{input_path.stem}-{now.strftime('%Y%m%dT%H%M%SZ')}"


@contextmanager
def _claim_out(out: Path, *, resume: bool) -> Iterator[None]:
    """Lock the run folder for this process: a new run needs it empty, a resume its journal."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the run folder {out}: {e.strerror or e}") from None
    with RunLock(out):
        if not resume and any(p.name != LOCK_NAME for p in out.iterdir()):
            raise UsageError(
                f"--out {out} already holds a run; to continue it add --resume, otherwise "
                "choose a new folder (or leave --out out to get a fresh one under runs/)"
            )
        yield


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
        self.engaged = _engaged_before(options)
        """Who the runs in ``options.engaged_in`` engaged: a dry run counts them, a send
        skips them."""

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
        self, records: Iterator[Record], mapper: Mapper, skipped: SkippedReport,
        progress: Progress,
    ) -> Iterator[tuple[Record, Request | RowError]]:
        """Each data row with its request or the reason it has none; blank rows counted,
        hidden rows put in skipped.csv."""
        for record in records:
            if _is_blank(record):
                self.summary.blank += 1
                continue
            self.summary.rows += 1
            if self.skip_hidden(record, skipped):
                progress.row_skipped()
                continue
            yield record, mapper.map(record)

    def skip_hidden(self, record: Record, skipped: SkippedReport) -> bool:
        """A row hidden in the sheet goes to skipped.csv, unless hidden rows are sent."""
        if not record.hidden or self.options.include_hidden_rows:
            return False
        skipped.add(record, HIDDEN_IN_SHEET, HIDDEN_DETAIL)
        self.summary.skipped[HIDDEN_IN_SHEET] += 1
        return True

    def engaged_before(self, record: Record, request: Request, skipped: SkippedReport,
                       failed: FailedReport, progress: Progress) -> bool:
        """Report a row that an earlier run (a test send) engaged, or may have."""
        if not self.engaged:  # most runs: nothing to look up on the per-row path
            return False
        before = self.engaged.get(identity(self.options.matching, request.identifier))
        if before is None:
            return False
        if before.state == "ok":
            skipped.add(record, ALREADY_ENGAGED,
                        f"engaged by the run {before.run.name} at {before.completed_at}")
            self.summary.skipped[ALREADY_ENGAGED] += 1
            progress.row_skipped()
        else:
            self.report_row_error(failed, record, progress, RowError(
                record.number, UNCERTAIN, UNCERTAIN,
                f"the run {before.run.name} was stopped while this row's request was on "
                "its way; it may or may not have engaged the profile: check in the "
                "account, then send it from failed.csv"))
        return True

    def report_row_error(self, failed: FailedReport, record: Record, progress: Progress,
                         error: RowError) -> None:
        failed.add(record, error.stage, error.error, error.text, 0)
        self.summary.add_failure(error.stage, error.error, error.text)
        progress.row_done(ok=False, error=error.error, text=error.text)

    def finish(self) -> Summary:
        hidden = self.summary.skipped[HIDDEN_IN_SHEET]
        if hidden:
            self.warn(f"rows hidden in the sheet (by a filter or by hand) were not sent: "
                      f"{hidden:,}; they are listed in skipped.csv. Unhide them, or run with "
                      "--include-hidden-rows to send them too")
        if self.options.input.suffix.lower() in EXCEL_SUFFIXES:
            # Beside failed.csv, for a marketer who works in Excel: ids and phones as text.
            try:
                write_failed_xlsx(self.out / "failed.csv", self.out / "failed.xlsx")
            except OSError as e:  # a full disk: failed.csv holds the same rows
                self.warn(f"failed.xlsx could not be written ({e.strerror or e}); "
                          "failed.csv holds the same rows")
        self.summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.summary.duration_seconds = time.monotonic() - self.clock
        self.summary.write(self.out / "summary.json")
        return self.summary


def _listeners(options: RunOptions, on_progress: Listener | None) -> list[Listener]:
    listeners: list[Listener] = [ProgressBar()] if ProgressBar.wanted(options.quiet) else []
    if on_progress is not None:
        listeners.append(on_progress)
    return listeners


def _dry_run(job: _Run, table: Table, progress: Progress) -> Summary:
    mapper = Mapper(table.headers, job.options, DRY_RUN_TOKEN, job.warn)
    records = table.records()
    first = job.first_data_row(records)
    with _claim_out(job.out, resume=False), \
            FailedReport(job.out / "failed.csv", table.headers) as failed, \
            SkippedReport(job.out / "skipped.csv", table.headers) as skipped, \
            closing(RequestsLog(job.out / "requests.jsonl")) as requests:
        for record, result in job.mapped(chain([first], records), mapper, skipped, progress):
            if isinstance(result, Request):
                if job.engaged_before(record, result, skipped, failed, progress):
                    continue
                requests.add(result.row, result.body)
                job.summary.outcomes["valid"] += 1
                progress.row_done(ok=True)
            else:
                job.report_row_error(failed, record, progress, result)
    progress.close(finished=True)
    return job.finish()


class _Known:
    """The journal's rows, walked alongside the input: both are in row order."""

    def __init__(self, states: Generator[RowState, None, None]) -> None:
        self._states = states
        self._next = next(states, None)

    def get(self, row: int) -> RowState | None:
        while self._next is not None and self._next.row < row:
            self._next = next(self._states, None)
        return self._next if self._next is not None and self._next.row == row else None

    def close(self) -> None:
        self._states.close()


def _uncertain(known: RowState) -> RowState:
    return RowState(
        known.row, UNCERTAIN, known.identifier, max(1, known.attempts), None, "uncertain",
        "the run was killed while this row's request was on its way; it may or may not have "
        "engaged the profile: check in the account, then send it from failed.csv, or add "
        "--resend-uncertain to --resume", timestamp())


class RunControl:
    """A handle that stops a run as Ctrl-C does: start nothing more, let the requests on
    the wire finish (for at most --timeout seconds), then cut them off.

    Made before the run starts, so a stop can come at any time; ``stop`` is called from the
    run's own event loop (a signal handler, a web request on the same loop).
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._sender: Sender | None = None
        self._timeout_seconds = 0.0
        self._abort: asyncio.TimerHandle | None = None
        self._progress: Progress | None = None

    def stop(self, reason: str) -> None:
        if self.reason is not None:
            if self._sender is not None:  # asked twice: cut the requests off now
                self._sender.abort(self.reason)
            return
        self.reason = reason
        if self._progress is not None:
            self._progress.stopping = reason
        if self._sender is not None:
            self._stop_sender(self._sender)

    def _stop_sender(self, sender: Sender) -> None:
        assert self.reason is not None
        sender.stop(self.reason)
        self._abort = asyncio.get_running_loop().call_later(
            self._timeout_seconds, sender.abort, self.reason)

    @contextmanager
    def attached(self, sender: Sender, timeout_seconds: float, progress: Progress
                 ) -> Iterator[None]:
        self._sender, self._timeout_seconds, self._progress = sender, timeout_seconds, progress
        if self.reason is not None:  # stopped before sending began
            progress.stopping = self.reason
            self._stop_sender(sender)
        try:
            yield
        finally:
            if self._abort is not None:
                self._abort.cancel()
            self._sender = self._progress = None


async def _heartbeat(progress: Progress) -> None:
    """Progress events while no row finishes (a long Retry-After): the time left moves."""
    while True:
        await asyncio.sleep(1.0)
        progress.tick()


def _engaged_before(options: RunOptions) -> dict[str, Engaged]:
    engaged: dict[str, Engaged] = {}
    for out in options.engaged_in:
        for identifier, earlier in engaged_by(out, options.workflow_id,
                                              options.matching.value).items():
            engaged[identity(options.matching, identifier)] = earlier
    return engaged


async def _send(
    job: _Run, table: Table, transport: Transport | None, control: RunControl,
    progress: Progress,
) -> Summary:
    options = job.options
    assert options.token is not None
    assert options.api_url is not None
    if options.resume:  # before the file is judged by options the run may not have had
        check_options(stored_options(job.out), options.fixed())
    fingerprint = await asyncio.to_thread(Fingerprint.of, options.input)
    mapper = Mapper(table.headers, options, options.token.reveal(), job.warn)
    records = table.records()
    first = job.first_data_row(records)
    summary = job.summary
    async with AsyncExitStack() as stack:
        stack.enter_context(_claim_out(job.out, resume=options.resume))
        journal = Journal(job.out / JOURNAL_NAME)
        stack.callback(journal.close)
        known: _Known | None = None
        if options.resume:
            journal.check_resume(fingerprint, options.fixed(), options.input.name)
            known = _Known(journal.states())
            stack.callback(known.close)
            summary.started_at = journal.meta("started_at")  # reports read as one run
        else:
            journal.begin(fingerprint, options.fixed(), summary.started_at)
        failed = stack.enter_context(FailedReport(job.out / "failed.csv", table.headers))
        skipped = stack.enter_context(SkippedReport(job.out / "skipped.csv", table.headers))
        success = stack.enter_context(SuccessReport(
            job.out / "success.csv", IDENTIFIER_COLUMN[options.matching]))
        if transport is None:
            # One session for the run, made inside the running loop, with a connection
            # pool exactly as large as the in-flight limit.
            session = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=options.max_in_flight, ssl=options.verify_tls)))
            transport = aiohttp_transport(session, options.api_url, options.timeout_seconds)
        sender = Sender(
            transport, limiter=RateLimiter(options.rate_per_second),
            max_in_flight=options.max_in_flight,
            policy=RetryPolicy(max_attempts=options.max_attempts), ledger=journal,
        )
        last_write = time.monotonic()

        def report(record: Record, state: RowState) -> None:
            nonlocal last_write
            if state.state == "ok":
                success.add(state.row, state.identifier, attempts=state.attempts,
                            http_status=state.http_status, error_text=state.error_text,
                            completed_at=state.completed_at)
                summary.outcomes["ok"] += 1
                progress.row_done(ok=True)
            else:
                failed.add(record, state.state, state.error, state.error_text, state.attempts)
                summary.add_failure(state.state, state.error, state.error_text)
                progress.row_done(ok=False, error=state.error, text=state.error_text)
            if time.monotonic() - last_write >= SUMMARY_EVERY_SECONDS:
                last_write = time.monotonic()
                summary.write(job.out / "summary.json")

        past_limit: list[Record] = []

        def to_send() -> Iterator[tuple[Record, Request]]:
            """The rows still to send; the rest are reported on the way."""
            taken = 0  # valid rows, for a test send's limit
            for record, result in job.mapped(chain([first], records), mapper, skipped,
                                             progress):
                state = known.get(record.number) if known is not None else None
                if state is None:
                    if isinstance(result, Request):
                        if job.engaged_before(record, result, skipped, failed, progress):
                            continue
                        if options.row_limit is not None and taken >= options.row_limit:
                            summary.rows -= 1  # counted again with the rows left
                            past_limit.append(record)
                            return
                        taken += 1
                        yield record, result
                    else:
                        job.report_row_error(failed, record, progress, result)
                elif state.state in DONE or (state.state in (SENDING, UNCERTAIN)
                                             and not options.resend_uncertain):
                    taken += 1
                    if state.state == SENDING:
                        state = _uncertain(state)
                        journal.record(state)
                    report(record, state)
                elif isinstance(result, Request):
                    taken += 1
                    yield record, result
                else:  # an uncertain row to resend that no longer maps (a file is gone)
                    job.report_row_error(failed, record, progress, result)

        def leave_unsent(rest: Iterator[Record]) -> None:
            """Rows not sent: never read (the run stopped) or past a test send's limit."""
            for record in rest:
                if _is_blank(record):
                    summary.blank += 1
                    continue
                summary.rows += 1
                if not job.skip_hidden(record, skipped):
                    summary.outcomes["unsent"] += 1

        def on_result(record: Record, request: Request, result: Result) -> None:
            if result.outcome == "unsent":
                journal.forget(request.row)
                summary.outcomes["unsent"] += 1
                return
            state = RowState(request.row, result.outcome, request.identifier, result.attempts,
                             result.http_status, result.error, result.error_text,
                             result.completed_at)
            journal.record(state)
            report(record, state)

        await journal.start()
        started = time.monotonic()
        progress.count_requests(lambda: (sender.requests_started, sum(sender.retries.values())))
        heartbeat = asyncio.create_task(_heartbeat(progress))
        try:
            with control.attached(sender, options.timeout_seconds, progress):
                await sender.send_all(to_send(), on_result,
                                      max_pending=4 * options.max_in_flight)
        finally:
            heartbeat.cancel()
            await journal.stop()
            summary.sending_seconds = time.monotonic() - started
            summary.pass_requests = sender.requests_started
            summary.stopped = sender.stop_reason
            journal.add_pass(sender.requests_started, sender.retries,
                             sender.retries_unanswered)
            summary.requests_sent = journal.meta("requests_sent")
            summary.retries = Counter(journal.meta("retries"))
            summary.retries_unanswered = journal.meta("retries_unanswered")
        if sender.stop_reason is not None or past_limit:
            # Rows never read are still to be sent, like those that met the refusal.
            # (itertools.chain, unlike a generator, leaves ``records`` open for this.)
            # Counting them reads the rest of the file: off the loop, which may be serving
            # a web page.
            await asyncio.to_thread(leave_unsent, chain(past_limit, records))
        if options.row_limit is not None:
            summary.row_limit = options.row_limit
    progress.close(finished=sender.stop_reason is None)
    # Off the loop: failed.xlsx of a large run takes a while, and a web page shares the loop.
    return await asyncio.to_thread(job.finish)


@contextmanager
def _interruptible(control: RunControl) -> Iterator[None]:
    """Ctrl-C or SIGTERM: start nothing more and let requests on the wire finish (for at
    most --timeout seconds). A second one cuts them off: their rows end ``uncertain``."""
    loop = asyncio.get_running_loop()
    for signum, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        loop.add_signal_handler(signum, control.stop, f"interrupted ({name})")
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _open(options: RunOptions) -> Table:
    return open_table(options.input, encoding=options.encoding, delimiter=options.delimiter,
                      sheet=options.sheet)


def run(options: RunOptions, *, on_warning: Callable[[str], None] | None = None,
        transport: Transport | None = None, handle_signals: bool = False,
        on_progress: Listener | None = None, control: RunControl | None = None) -> Summary:
    """Run one job and return its summary. Raises UsageError or InputFileError (nothing sent).

    Never prints (but for the progress bar) and never exits the process; warnings go to
    ``on_warning``, progress events to ``on_progress`` (a few a second). ``control`` can stop
    the run as Ctrl-C does. ``transport`` replaces the HTTP client, for tests.
    ``handle_signals`` (the CLI's choice, not a library's) makes Ctrl-C and SIGTERM stop the
    run gracefully. Inside a running event loop (a notebook) the run gets a loop of its own
    in a worker thread; an async caller wants ``run_async``.
    """
    with closing(_open(options)) as table:
        job = _Run(options, on_warning)
        job.summary.input_format = table.description
        listeners = _listeners(options, on_progress)
        progress = Progress(table.estimate_rows() if listeners else None, listeners)
        if options.dry_run:
            return _dry_run(job, table, progress)
        control = control or RunControl()

        async def send(signals: bool) -> Summary:
            if not signals:
                return await _send(job, table, transport, control, progress)
            with _interruptible(control):
                return await _send(job, table, transport, control, progress)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(send(handle_signals))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # Signal handlers belong to the main thread: none in this one.
            return pool.submit(asyncio.run, send(False)).result()


async def run_async(options: RunOptions, *, on_warning: Callable[[str], None] | None = None,
                    transport: Transport | None = None, on_progress: Listener | None = None,
                    control: RunControl | None = None) -> Summary:
    """``run`` on the caller's event loop (a web server's): sending shares the loop, while
    opening the file, counting its rows and a dry run go to a worker thread, so the loop
    is never blocked for long."""
    table = await asyncio.to_thread(_open, options)
    try:
        job = _Run(options, on_warning)
        job.summary.input_format = table.description
        listeners = _listeners(options, on_progress)
        total = await asyncio.to_thread(table.estimate_rows) if listeners else None
        progress = Progress(total, listeners)
        if options.dry_run:
            return await asyncio.to_thread(_dry_run, job, table, progress)
        return await _send(job, table, transport, control or RunControl(), progress)
    finally:
        table.close()
