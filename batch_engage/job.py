"""One run from input file to reports: read, map, send (or, dry, record), report."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from contextlib import AsyncExitStack, ExitStack, closing, contextmanager
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import aiohttp

from .errors import InputFileError, UsageError
from .journal import (
    DONE,
    JOURNAL_NAME,
    LOCK_NAME,
    SENDING,
    UNCERTAIN,
    Fingerprint,
    Journal,
    RowState,
    RunLock,
    check_options,
    is_running,
    state_of,
    stored_options,
)
from .ledger import COUNTED, Entry, Ledger, LookedUp, already_engaged, iso, kind_of
from .ledger import OK as ENGAGED
from .limiter import RateLimiter
from .mapper import IDENTIFIER_COLUMN, Mapper, Request, RowError
from .options import RunOptions
from .progress import Listener, Progress, ProgressBar
from .reader import EXCEL_SUFFIXES, ExcelTable, Record, Table, TextTable, open_table
from .reporter import FailedReport, RequestsLog, SkippedReport, SuccessReport, Summary
from .runlog import RunLog
from .sender import Result, RetryPolicy, Sender, Transport, aiohttp_transport, timestamp

if TYPE_CHECKING:
    import pandas as pd

DRY_RUN_TOKEN = "***"
HIDDEN_IN_SHEET = "hidden_in_sheet"
HIDDEN_DETAIL = ("hidden in the sheet (by a filter or by hand); unhide it, or run with "
                 "--include-hidden-rows")
ALREADY_ENGAGED = "already_engaged"
# summary.json is rewritten this often during a run, so a crash leaves a recent one.
SUMMARY_EVERY_SECONDS = 2.0


def default_out(input_path: Path, now: datetime) -> Path:
    """``runs/<stem>-<UTC time>``, or with ``-2``, ``-3``... when a run of the same file
    started in the same second already has that folder (a script's second run)."""
    base = Path("runs") / f"{input_path.stem}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


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
    return not record.extra and not any(map(str.strip, record.cells))


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
        self.own_folder = self.out.absolute()
        """As the ledger names runs."""
        self.log: RunLog | None = None
        """The --log-file; None (most runs) costs no per-row work."""
        if options.log_file is not None:  # last: nothing after it can fail and leave it open
            self.log = RunLog.begin(options, self.out, self.warn)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.log is not None:
            if e is not None:
                self.log.error(e)
            self.log.close()

    def warn(self, message: str) -> None:
        self.summary.warnings.append(message)
        if self._on_warning is not None:
            self._on_warning(message)
        if self.log is not None:
            self.log.warning(message)

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
        if self.log is not None:
            self.log.identify(mapper)
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
        if self.log is not None:
            self.log.row(record, "skipped", HIDDEN_IN_SHEET)
        return True

    def open_ledger(self, *, writing: bool) -> Ledger | None:
        """The ``--ledger``; a dry run only reads it, and one that does not exist yet is
        empty."""
        options = self.options
        if options.ledger is None or not (writing or options.ledger.is_file()):
            return None
        assert options.workflow_id is not None
        return Ledger(options.ledger, workflow_id=options.workflow_id,
                      kind=kind_of(options.matching.value, options.field_name),
                      days=options.ledger_days, run=self.out if writing else None)

    def engaged_before(self, record: Record, entry: Entry | None,
                       skipped: SkippedReport | None, failed: FailedReport,
                       progress: Progress) -> bool:
        """Report a row that the ledger says an earlier run engaged, or may have; ``False``:
        send it. A dry run (no ``skipped``) counts the engaged rows, for Check and the
        summary, without listing them: the run itself does."""
        if entry is None or not entry.counts or entry.run == self.own_folder:
            return False  # none, too old, or this run's own (a resume: its journal knows)
        if entry.state != ENGAGED and not is_running(entry.run):
            # A run that was killed while the row was on its way: its journal knows more.
            state = state_of(entry.run, entry.row)
            if state == "ok":
                entry = entry._replace(state=ENGAGED)
            elif state is None or state in DONE or self.options.resend_uncertain:
                return False  # it failed there, or was never sent: this run sends it
            else:
                self.report_row_error(failed, record, progress, RowError(
                    record.number, UNCERTAIN, UNCERTAIN,
                    f"the run in {entry.run} was stopped at {iso(entry.at)} while this row's "
                    "request was on its way; it may or may not have engaged the profile: "
                    "check in the account, and if it was not, send it again with "
                    "--resend-uncertain (failed.csv with the same --ledger will do)"))
                return True
        self.skip_engaged(record, None if skipped is None else already_engaged(entry), skipped,
                          progress)
        return True

    def skip_engaged(self, record: Record, detail: str | None, skipped: SkippedReport | None,
                     progress: Progress) -> None:
        if skipped is not None and detail is not None:
            skipped.add(record, ALREADY_ENGAGED, detail)
        self.summary.skipped[ALREADY_ENGAGED] += 1
        progress.row_skipped()
        if self.log is not None:
            self.log.row(record, "skipped", ALREADY_ENGAGED)

    def report_row_error(self, failed: FailedReport, record: Record, progress: Progress,
                         error: RowError) -> None:
        failed.add(record, error.stage, error.error, error.text, 0)
        self.summary.add_failure(error.stage, error.error, error.text)
        progress.row_done(ok=False, error=error.error, text=error.text)
        if self.log is not None:
            self.log.row(record, error.stage, error.error)

    def finish(self) -> Summary:
        hidden = self.summary.skipped[HIDDEN_IN_SHEET]
        if hidden:
            self.warn(f"rows hidden in the sheet (by a filter or by hand) were not sent: "
                      f"{hidden:,}; they are listed in skipped.csv. Unhide them, or run with "
                      "--include-hidden-rows to send them too")
        if self.options.input.suffix.lower() in EXCEL_SUFFIXES:
            # Beside failed.csv, for a marketer who works in Excel: ids and phones as text.
            # (openpyxl, with numpy, is a sixth of the start-up: imported only here.)
            from .xlsx_report import write_failed_xlsx  # noqa: PLC0415
            try:
                write_failed_xlsx(self.out / "failed.csv", self.out / "failed.xlsx")
            except OSError as e:  # a full disk: failed.csv holds the same rows
                self.warn(f"failed.xlsx could not be written ({e.strerror or e}); "
                          "failed.csv holds the same rows")
        self.summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.summary.duration_seconds = time.monotonic() - self.clock
        self.summary.write(self.out / "summary.json")
        if self.log is not None:
            self.log.finish(self.summary)
        return self.summary


def _listeners(options: RunOptions, on_progress: Listener | None) -> list[Listener]:
    listeners: list[Listener] = [ProgressBar()] if ProgressBar.wanted(options.quiet) else []
    if on_progress is not None:
        listeners.append(on_progress)
    return listeners


def _dry_run(job: _Run, table: Table, progress: Progress) -> Summary:
    mapper = Mapper(table.headers, job.options, DRY_RUN_TOKEN, job.warn,
                    spill_folder=job.out)
    records = table.records()
    first = job.first_data_row(records)
    with _claim_out(job.out, resume=False), closing(mapper), \
            FailedReport(job.out / "failed.csv", table.headers) as failed, \
            SkippedReport(job.out / "skipped.csv", table.headers) as skipped, \
            closing(RequestsLog(job.out / "requests.jsonl")) as requests:
        ledger = job.open_ledger(writing=False)
        try:
            _dry_rows(job, LookedUp(
                job.mapped(chain([first], records), mapper, skipped, progress), ledger,
                counting=True),
                failed=failed, requests=requests, progress=progress)
        finally:
            if ledger is not None:
                ledger.close()
    progress.close(finished=True)
    return job.finish()


def _dry_rows(job: _Run, rows: Iterable[tuple[Record, Request | RowError, Entry | None]], *,
              failed: FailedReport, requests: RequestsLog, progress: Progress) -> None:
    for record, result, entry in rows:
        if isinstance(result, Request):
            if entry is COUNTED:  # half a nightly import's rows: spared engaged_before's tests
                job.skip_engaged(record, None, None, progress)
                continue
            if entry is not None and job.engaged_before(record, entry, None, failed, progress):
                continue
            requests.add(result.row, result.body)
            job.summary.outcomes["valid"] += 1
            progress.row_done(ok=True)
            if job.log is not None:
                job.log.row(record, "valid")
        else:
            job.report_row_error(failed, record, progress, result)


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


async def _send(
    job: _Run, table: Table, transport: Transport | None, control: RunControl,
    progress: Progress,
) -> Summary:
    options = job.options
    assert options.token is not None
    assert options.api_url is not None
    if options.resume:  # before the file is judged by options the run may not have had
        check_options(stored_options(job.out), options.fixed())
    # In a thread of its own: hashlib lets go of the interpreter lock, and a new run sends
    # while a large file is hashed (60 ms a million rows), only a resume compares the hash.
    hashing = asyncio.ensure_future(asyncio.to_thread(_fingerprint, table))
    mapper = Mapper(table.headers, options, options.token.reveal(), job.warn,
                    spill_folder=job.out)
    records = table.records()
    first = job.first_data_row(records)
    summary = job.summary
    async with AsyncExitStack() as stack:
        stack.enter_context(_claim_out(job.out, resume=options.resume))
        stack.enter_context(closing(mapper))
        ledger = job.open_ledger(writing=True)
        if ledger is not None:
            stack.callback(ledger.close)  # after the journal's last commit, which writes it
        journal = Journal(job.out / JOURNAL_NAME, ledger)
        stack.callback(journal.close)
        known: _Known | None = None
        if options.resume:
            journal.check_resume(await hashing, options.fixed(), options.input.name)
            known = _Known(journal.states())
            stack.callback(known.close)
            summary.started_at = journal.meta("started_at")  # reports read as one run
        elif isinstance(table, TextTable | ExcelTable):
            journal.begin(Fingerprint.stat(table.path), options.fixed(), summary.started_at)
            hashing.add_done_callback(partial(_store_hash, journal))
            stack.push_async_callback(_hashed, journal, hashing)  # before the journal closes
        else:
            journal.begin(await hashing, options.fixed(), summary.started_at)
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
            observer=job.log,
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
                for csv_report in (success, failed, skipped):
                    csv_report.flush()

        past_limit: list[Record] = []
        unread = chain([first], records)  # what is left of it once the run stops
        rows = LookedUp(job.mapped(unread, mapper, skipped, progress), ledger)

        def to_send() -> Iterator[tuple[Record, Request]]:
            """The rows still to send; the rest are reported on the way."""
            taken = 0  # valid rows, for a test send's limit
            for record, result, entry in rows:
                state = known.get(record.number) if known is not None else None
                if state is None:
                    if isinstance(result, Request):
                        if entry is not None and job.engaged_before(record, entry, skipped,
                                                                    failed, progress):
                            continue
                        if options.row_limit is not None and taken >= options.row_limit:
                            summary.rows -= 1  # counted again with the rows left
                            past_limit.append(record)
                            return
                        taken += 1
                        yield record, expect(result, entry)
                    else:
                        job.report_row_error(failed, record, progress, result)
                elif state.state in DONE or (state.state in (SENDING, UNCERTAIN)
                                             and not options.resend_uncertain):
                    taken += 1
                    if state.state == SENDING:
                        state = _uncertain(state)
                        journal.record(state)
                        if job.log is not None:  # decided now; the rest were logged then
                            job.log.result(record, state)
                    report(record, state)
                elif isinstance(result, Request):
                    taken += 1
                    yield record, expect(result, entry)
                else:  # an uncertain row to resend that no longer maps (a file is gone)
                    job.report_row_error(failed, record, progress, result)

        def expect(request: Request, entry: Entry | None) -> Request:
            if ledger is not None:  # its claim will be made on what the ledger held now
                ledger.expect(request.row, request.key, entry)
            return request

        def leave_unsent(rest: Iterator[Record]) -> None:
            """Rows not sent: never read (the run stopped) or past a test send's limit."""
            for record in rest:
                if _is_blank(record):
                    summary.blank += 1
                    continue
                summary.rows += 1
                if not job.skip_hidden(record, skipped):
                    summary.outcomes["unsent"] += 1
                    if job.log is not None:
                        job.log.row(record, "unsent")

        def on_result(record: Record, request: Request, result: Result) -> None:
            if result.outcome == "unsent":
                journal.forget(request.row)
                summary.outcomes["unsent"] += 1
                if job.log is not None:
                    job.log.row(record, "unsent", result.error, attempts=result.attempts)
                return
            if result.outcome == ALREADY_ENGAGED:  # another run claimed it first
                journal.forget(request.row)
                job.skip_engaged(record, result.error_text, skipped, progress)
                return
            state = RowState(request.row, result.outcome, request.identifier, result.attempts,
                             result.http_status, result.error, result.error_text,
                             result.completed_at)
            journal.record(state)
            report(record, state)
            if job.log is not None:
                job.log.result(record, state)

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
            # (itertools.chain, unlike a generator, leaves ``unread`` open for this.)
            # Counting them reads the rest of the file: off the loop, which may be serving
            # a web page.
            for record in rows.ahead():  # read for a ledger look-up, and counted then
                summary.outcomes["unsent"] += 1
                if job.log is not None:
                    job.log.row(record, "unsent")
            await asyncio.to_thread(leave_unsent, chain(past_limit, unread))
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


def _open(options: RunOptions, frame: pd.DataFrame | None) -> Table:
    if frame is not None:
        from .frame import open_frame  # noqa: PLC0415  (pandas: only for a DataFrame)
        return open_frame(frame, options)
    return open_table(options.input, encoding=options.encoding, delimiter=options.delimiter,
                      sheet=options.sheet)


def _store_hash(journal: Journal, hashing: asyncio.Future[Fingerprint]) -> None:
    """The hash as soon as it is known: a kill after that resumes on the hash."""
    if not hashing.cancelled() and hashing.exception() is None:
        journal.hashed(hashing.result())


async def _hashed(journal: Journal, hashing: asyncio.Future[Fingerprint]) -> None:
    """The hash, in the journal whatever the run's end; reading the file may have failed."""
    journal.hashed(await hashing)


def _fingerprint(table: Table) -> Fingerprint:
    """What --resume compares: a file's bytes, or a DataFrame's cells as read."""
    if isinstance(table, TextTable | ExcelTable):
        return Fingerprint.of(table.path)
    from .frame import FrameTable  # noqa: PLC0415  (as in _open)
    assert isinstance(table, FrameTable)
    return table.fingerprint()


def check_row_count(options: RunOptions, table: Table, reopen: Callable[[], Table]) -> None:
    """``--min-rows``/``--max-rows``: refuse the input before anything is sent.

    A cheap bound (line ends, row tags) settles most files; rows are only read, by a
    reader of their own, as far as a limit needs: never the whole of a large file twice.
    """
    low, high = options.min_rows, options.max_rows
    if low is None and high is None:
        return
    bound = table.row_bound()
    need = max(low or 0, high + 1 if high is not None and bound > high else 0)
    count = 0
    if need:
        with closing(reopen()) as counting:
            for record in counting.records():
                count += not _is_blank(record)
                if count >= need:
                    break
    name = options.input.name
    if high is not None and count > high:
        raise InputFileError(
            f"{name} has more data rows than --max-rows {high:,} allows (it has at least "
            f"{count:,}; about {bound:,}), so nothing was sent: check the export that made "
            "it, or raise --max-rows if this size is expected")
    if low is not None and count < low:
        raise InputFileError(
            f"{name} has {count:,} data rows, fewer than --min-rows {low:,}, so nothing was "
            "sent: check the export that made it (did it run, did it find the rows?), or "
            "lower --min-rows if this size is expected")


def run(options: RunOptions, *, on_warning: Callable[[str], None] | None = None,
        transport: Transport | None = None, handle_signals: bool = False,
        on_progress: Listener | None = None, control: RunControl | None = None,
        frame: pd.DataFrame | None = None) -> Summary:
    """Run one job and return its summary. Raises UsageError or InputFileError (nothing sent).

    Never prints (but for the progress bar) and never exits the process; warnings go to
    ``on_warning``, progress events to ``on_progress`` (a few a second). ``control`` can stop
    the run as Ctrl-C does. ``transport`` replaces the HTTP client, for tests.
    ``handle_signals`` (the CLI's choice, not a library's) makes Ctrl-C and SIGTERM stop the
    run gracefully. Inside a running event loop (a notebook) the run gets a loop of its own
    in a worker thread; an async caller wants ``run_async``. ``frame``, a pandas DataFrame,
    holds the rows instead of the file ``options.input``, which then only names them (in the
    reports, the default ``out`` and ``attach_dir``).
    """
    with closing(_open(options, frame)) as table, ExitStack() as stack:
        check_row_count(options, table, lambda: _open(options, frame))
        job = stack.enter_context(_Run(options, on_warning))
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
            return _run_loop(send(handle_signals))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # Signal handlers belong to the main thread: none in this one.
            return pool.submit(_run_loop, send(False)).result()


def _run_loop(main: Coroutine[None, None, Summary]) -> Summary:
    """``asyncio.run`` on uvloop where it is installed (not on Windows): a send at
    ``--rate 0`` takes a tenth less time on it (bench/RESULTS.md, "Send profile")."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def run_async(options: RunOptions, *, on_warning: Callable[[str], None] | None = None,
                    transport: Transport | None = None, on_progress: Listener | None = None,
                    control: RunControl | None = None, frame: pd.DataFrame | None = None,
                    ) -> Summary:
    """``run`` on the caller's event loop (a web server's): sending shares the loop, while
    opening the file, counting its rows and a dry run go to a worker thread, so the loop
    is never blocked for long."""
    table = await asyncio.to_thread(_open, options, frame)
    with closing(table), ExitStack() as stack:
        await asyncio.to_thread(check_row_count, options, table, lambda: _open(options, frame))
        job = stack.enter_context(_Run(options, on_warning))
        job.summary.input_format = table.description
        listeners = _listeners(options, on_progress)
        total = await asyncio.to_thread(table.estimate_rows) if listeners else None
        progress = Progress(total, listeners)
        if options.dry_run:
            return await asyncio.to_thread(_dry_run, job, table, progress)
        return await _send(job, table, transport, control or RunControl(), progress)
