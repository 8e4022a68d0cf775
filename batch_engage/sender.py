"""Send requests through a bounded pool: rate and in-flight limits, retries, and a stop switch.

The HTTP call is passed in as a ``Transport`` (``aiohttp_transport`` in a run, a plain
function in tests), so everything here is testable without a network. Each row ends as one
``Result``; one failing row never stops the pool, a rejected token stops all of it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Protocol, TypeVar

import aiohttp
import orjson

from .limiter import RateLimiter
from .mapper import Request

T = TypeVar("T")
ENDPOINT = "/api/v1.1/workflows/start"

# Answers that say "not now" rather than "no": worth another try after a pause.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Connections refused before any request reached the API: a wrong URL, not a blip.
UNREACHABLE_AFTER_FAILURES = 10
# The token or the account is refused: every further request would be refused too.
REFUSAL_STATUSES = frozenset({401, 403})
REFUSAL_ERRORS = {
    401: "the API rejected the token (error 401, API token required): put the right token "
         "in the BATCH_ENGAGE_TOKEN environment variable or a --token-file, and check "
         "that --api-url is your account's",
    402: "the account's tariff limit is reached (error 402): raise the limit in the "
         "account or wait until it renews, then send the remaining rows",
    403: "the API refused access (error 403, forbidden): check that the token's API "
         "access includes scenarios and that -w is a scenario of this account",
}
_HINTS = {
    400: "the API found the request incorrect: check this row's values and the -w workflow id",
    404: "check the API URL (--api-url) and the workflow id (-w)",
    413: "the request is too large: send fewer or smaller attachments",
}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None = None
    cut_off: bool = False
    """The connection broke after the status arrived, in the middle of the body."""


class Unanswered(Exception):
    """No answer came. ``maybe_sent``: the API may have acted on the request all the same.
    ``fatal``: no request can get through this way (an untrusted certificate): stop."""

    def __init__(self, reason: str, text: str, *, maybe_sent: bool, fatal: bool = False
                 ) -> None:
        super().__init__(text)
        self.reason, self.text, self.maybe_sent, self.fatal = reason, text, maybe_sent, fatal


Transport = Callable[[bytes], Awaitable[Answer]]


class Ledger(Protocol):
    """Where the sender notes which rows are on their way (the journal, in a run)."""

    async def sending(self, row: int, identifier: str) -> str | None:
        """Note the row as on its way; return once the note is durable. Returns why the row
        must not be sent after all (another run claimed its profile), or ``None``."""

    def forget(self, row: int) -> None:
        """The row's last request is known not to have been acted on."""


class _NoLedger:
    async def sending(self, row: int, identifier: str) -> str | None:
        return None

    def forget(self, row: int) -> None:
        pass


class Observer(Protocol):
    """Told what happens between a row's tries and to the whole run (the --log-file)."""

    def retry(self, request: Request, attempt: int, reason: str, delay: float,
              unanswered: bool) -> None:
        """Try ``attempt`` failed for ``reason``; the next one starts in ``delay`` s."""

    def slow_down(self, rate: float) -> None:
        """A 429 lowered the run's rate to ``rate`` requests a second."""

    def stopped(self, reason: str) -> None:
        """The run stops: nothing more is started."""


def aiohttp_transport(
    session: aiohttp.ClientSession, api_url: str, timeout_seconds: float
) -> Transport:
    """POST bodies to ``{api_url}/api/v1.1/workflows/start`` on one shared session."""
    url = api_url.rstrip("/") + ENDPOINT
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    async def post(body: bytes) -> Answer:
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                retry_after = response.headers.get("Retry-After")
                try:
                    return Answer(response.status, await response.read(), retry_after)
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                    # The API had answered (it has a status) before the line broke.
                    return Answer(response.status, b"", retry_after, cut_off=True)
        except TimeoutError:
            raise Unanswered("timeout", f"no answer within --timeout {timeout_seconds:g} s",
                             maybe_sent=True) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise Unanswered(
                "tls_error", f"the server's TLS certificate is not trusted "
                f"({e.certificate_error}); fix the certificate, or for a test server only, "
                "add --no-verify-tls", maybe_sent=False, fatal=True) from None
        except aiohttp.ClientConnectorError as e:
            # The connection was never made, so the API cannot have seen the request.
            raise Unanswered("connect_failed", f"cannot connect to {url}: {e.os_error}",
                             maybe_sent=False) from None
        except aiohttp.ServerDisconnectedError:
            raise Unanswered("disconnected", "the server closed the connection before answering",
                             maybe_sent=True) from None
        except aiohttp.ClientPayloadError:
            raise Unanswered("disconnected", "the connection broke while the answer arrived",
                             maybe_sent=True) from None
        except aiohttp.ClientError as e:
            raise Unanswered("connection_error", f"{type(e).__name__}: {e}",
                             maybe_sent=True) from None

    return post


class Verdict(Enum):
    OK = "ok"
    FAILED = "failed"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    stage: str
    """``api`` (the API answered with an error) or ``http`` (no usable API answer)."""
    error: str
    text: str


def _api_fields(body: bytes) -> tuple[int, str] | None:
    try:
        data = orjson.loads(body)  # a tenth of json's time, on every answer
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if not isinstance(error, int) or isinstance(error, bool):
        return None
    text = data.get("error_text")
    return error, text if isinstance(text, str) else ""


def judge(answer: Answer) -> Judgement:
    """What an answer means for its row; judged on the HTTP status and the body's ``error``."""
    status = answer.status
    fields = _api_fields(answer.body)
    if answer.cut_off and status not in RETRY_STATUSES:
        return Judgement(
            Verdict.FAILED, "http", "answer_cut_off",
            f"the API began to answer (HTTP {status}) and the connection broke off; it has "
            "probably acted on the request: check in the account before sending this row "
            "again (it was not retried, so as not to engage the profile twice)")
    if status in RETRY_STATUSES:
        return Judgement(Verdict.RETRY, "http", f"http_{status}",
                         f"the API answered HTTP {status}"
                         + (" (too many requests)" if status == 429 else " (server error)"))
    if fields is not None and fields[0] in REFUSAL_ERRORS:
        code = fields[0]
    elif status in REFUSAL_STATUSES:
        code = status
    else:
        code = 0
    if code:
        return Judgement(Verdict.REFUSED, "api", f"api_{code}",
                         f"{REFUSAL_ERRORS[code]} (HTTP {status})")
    if fields is None:
        shown = answer.body[:80].decode("utf-8", "replace").replace("\n", " ")
        return Judgement(
            Verdict.FAILED, "http", f"http_{status}" if status >= 300 else "unreadable_answer",
            f"the API answered HTTP {status} without its JSON result ({shown!r}); "
            + _HINTS.get(status, "check in the account whether this profile was engaged "
                                 "before sending it again"),
        )
    error, error_text = fields
    if 200 <= status < 300 and error == 0:
        return Judgement(Verdict.OK, "", "", error_text)
    hint = _HINTS.get(error) or _HINTS.get(status) or (
        "check that the profile exists and matches this row's identifier")
    return Judgement(Verdict.FAILED, "api", f"api_{error}",
                     f"the API answered error {error} {error_text!r} (HTTP {status}); {hint}")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``Retry-After`` sets a floor (up to a cap)."""

    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    max_retry_after_seconds: float = 300.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        backoff = rng.uniform(0, ceiling)
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.max_retry_after_seconds))


@dataclass(frozen=True, slots=True)
class Result:
    outcome: str
    """``ok``; a failure stage (``api``, ``http``, ``network``); ``unsent``: the run
    stopped before this row got an answer, so it still has to be sent; ``uncertain``:
    the run was aborted while the row's request was on its way; or ``already_engaged``:
    another run sharing the ledger claimed the profile first (``error_text`` says which)."""
    attempts: int
    http_status: int | None
    error: str
    error_text: str
    completed_at: str


def timestamp() -> str:
    """Now, as success.csv and the journal record it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Sender:
    """Sends each row with retries under shared limits; ``stop()`` ends the whole run."""

    def __init__(
        self, transport: Transport, *, limiter: RateLimiter, max_in_flight: int,
        policy: RetryPolicy, rng: random.Random | None = None, ledger: Ledger | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._transport = transport
        self._ledger = ledger or _NoLedger()
        self._observer = observer
        self._limiter = limiter
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._policy = policy
        self._rng = rng or random.Random()
        self._waiting: set[asyncio.Task[object]] = set()
        self._on_the_wire: set[asyncio.Task[object]] = set()
        self.stop_reason: str | None = None
        self.requests_started = 0
        self.retries: Counter[str] = Counter()
        self.retries_unanswered = 0
        self._reached = False
        self._connect_failures = 0

    def stop(self, reason: str) -> None:
        """Start nothing more; rows waiting for a slot or a retry end as ``unsent``.

        Requests already on the wire are left to finish: their answers are worth keeping.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
            if self._observer is not None:
                self._observer.stopped(reason)
        for task in list(self._waiting):
            task.cancel()

    def abort(self, reason: str) -> None:
        """Stop, and cut off the requests on the wire too: their rows end ``uncertain``."""
        self.stop(reason)
        for task in list(self._on_the_wire):
            task.cancel()

    async def send(self, request: Request) -> Result:
        """One row to its final result, however many attempts that takes."""
        task = asyncio.current_task()
        assert task is not None
        try:
            return await self._attempts(request, task)
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise
            task.uncancel()
            return Result("unsent", 0, None, "", "", timestamp())

    def _unreachable(self, error: Unanswered) -> bool:
        """A wrong --api-url, or no network: every request so far failed to connect.

        Stopping beats giving each row of a big file all its tries; the rows stay unsent,
        for --resume. Once any request got through, an outage is ridden out with retries.
        """
        if self._reached or error.reason != "connect_failed":
            return False
        self._connect_failures += 1
        return self._connect_failures >= UNREACHABLE_AFTER_FAILURES

    @contextmanager
    def _stoppable(self, task: asyncio.Task[object]) -> Iterator[None]:
        """While inside, ``stop()`` may cancel the task: it is waiting, not sending."""
        self._waiting.add(task)
        try:
            yield
        finally:
            self._waiting.discard(task)

    async def _attempts(self, request: Request, task: asyncio.Task[object]) -> Result:
        attempt = 0
        while True:
            # Waiting, not sending, until the request leaves: ``stop()`` may cancel it.
            # (Set by hand: a context manager per wait was a few per cent of a fast run.)
            self._waiting.add(task)
            try:
                await self._in_flight.acquire()
            except BaseException:
                self._waiting.discard(task)
                raise
            try:
                try:
                    # Noted before the rate wait, so the note's commit overlaps with it.
                    taken = await self._ledger.sending(request.row, request.identifier)
                    if taken is not None:
                        return Result("already_engaged", attempt, None, "already_engaged",
                                      taken, timestamp())
                    await self._limiter.acquire()
                finally:
                    self._waiting.discard(task)
                if self.stop_reason is not None:
                    return Result("unsent", attempt, None, "", "", timestamp())
                attempt += 1
                self.requests_started += 1
                self._on_the_wire.add(task)
                try:
                    answer = await self._transport(request.body)
                except asyncio.CancelledError:
                    if self.stop_reason is None:
                        raise
                    task.uncancel()
                    return Result("uncertain", attempt, None, "uncertain",
                                  "the run was stopped while this row's request was on its way; "
                                  "it may or may not have engaged the profile: check in the "
                                  "account before sending it again", timestamp())
                except Unanswered as e:
                    if e.fatal or self._unreachable(e):
                        self.stop(e.text if e.fatal else (
                            f"{e.text}; no request has reached the API yet: check --api-url "
                            "and the network"))
                        return Result("unsent", attempt, None, e.reason, e.text, timestamp())
                    failure = Result("network", attempt, None, e.reason, e.text, timestamp())
                    reason, unanswered, retry_after = e.reason, e.maybe_sent, None
                else:
                    self._reached = True
                    verdict = judge(answer)
                    if verdict.verdict is Verdict.OK:
                        return Result("ok", attempt, answer.status, "", verdict.text, timestamp())
                    if verdict.verdict is Verdict.REFUSED:
                        self.stop(verdict.text)
                        return Result("unsent", attempt, answer.status, verdict.error,
                                      verdict.text, timestamp())
                    failure = Result(verdict.stage, attempt, answer.status, verdict.error,
                                     verdict.text, timestamp())
                    if verdict.verdict is Verdict.FAILED:
                        return failure
                    reason, unanswered = verdict.error, False
                    self._ledger.forget(request.row)
                    retry_after = parse_retry_after(answer.retry_after, datetime.now(UTC))
                    if answer.status == 429:
                        self._slow_down()
            finally:
                self._on_the_wire.discard(task)
                self._in_flight.release()
            if attempt >= self._policy.max_attempts:
                return Result(failure.outcome, attempt, failure.http_status, failure.error,
                              failure.error_text + f"; gave up after {attempt} tries",
                              failure.completed_at)
            if self.stop_reason is not None:
                # The run stopped while this try was on the wire: no wait for a retry that
                # will never be made here. --resume makes that retry instead.
                return Result("unsent", attempt, None, "", "", timestamp())
            self.retries[reason] += 1
            self.retries_unanswered += unanswered
            delay = self._policy.delay(attempt, retry_after, self._rng)
            if self._observer is not None:
                self._observer.retry(request, attempt, reason, delay, unanswered)
            with self._stoppable(task):
                await asyncio.sleep(delay)

    def _slow_down(self) -> None:
        if self._observer is None:
            self._limiter.slow_down()
            return
        # Most 429s of a burst leave the rate as it is (halved at most once a second).
        before = self._limiter.current_per_second
        self._limiter.slow_down()
        after = self._limiter.current_per_second
        if after != before:
            self._observer.slow_down(after)

    async def send_all(
        self, items: Iterable[tuple[T, Request]], on_result: Callable[[T, Request, Result], None],
        *, max_pending: int,
    ) -> None:
        """Send every item, calling ``on_result`` as each finishes.

        ``max_pending`` workers take the items in order, one at a time: at most that many rows
        are read ahead and alive at once, so memory does not grow with the file, and no task
        is made per row. Stops reading when the run is stopped; the caller decides what
        unread rows mean.
        """
        rows = iter(items)
        crashes: list[Exception] = []

        async def worker() -> None:
            while self.stop_reason is None:
                try:
                    item, request = next(rows)
                except StopIteration:
                    return
                except Exception as e:  # reading failed: the rows on their way finish first
                    crashes.append(e)
                    self.stop(f"reading the input failed ({type(e).__name__})")
                    return
                try:
                    on_result(item, request, await self.send(request))
                except Exception as e:
                    # Stop at once, before another row starts: the caller re-raises it.
                    crashes.append(e)
                    self.stop(f"an unexpected error stopped the run ({type(e).__name__})")

        workers = [asyncio.create_task(worker()) for _ in range(max_pending)]
        try:
            await asyncio.gather(*workers)
        except asyncio.CancelledError:
            # The caller gave up on the run (a library run's Ctrl-C): so do its rows, rather
            # than go on sending while the caller cleans up.
            for task in workers:
                task.cancel()
            raise
        if crashes:
            raise crashes[0]
