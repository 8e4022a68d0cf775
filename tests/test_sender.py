"""The sender with the network replaced by plain functions: judging, retries, stop, backpressure."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from batch_engage.limiter import RateLimiter
from batch_engage.mapper import Request
from batch_engage.sender import (
    UNREACHABLE_AFTER_FAILURES,
    Answer,
    Judgement,
    Result,
    RetryPolicy,
    Sender,
    Unanswered,
    Verdict,
    judge,
    parse_retry_after,
)

from .test_limiter import FakeClock

NO_WAIT = RetryPolicy(max_attempts=3, base_delay_seconds=0, max_retry_after_seconds=0)


def api(error: int, text: str = "", status: int = 200, retry_after: str | None = None) -> Answer:
    body = json.dumps({"data": None, "error": error, "error_text": text}).encode()
    return Answer(status, body, retry_after)


@pytest.mark.parametrize(
    ("answer", "verdict", "stage", "error"),
    [
        (api(0, "Successful operation"), Verdict.OK, "", ""),
        (api(440, "Profile not found"), Verdict.FAILED, "api", "api_440"),
        (api(400, "Incorrect request"), Verdict.FAILED, "api", "api_400"),
        (api(400, "Incorrect request", status=400), Verdict.FAILED, "api", "api_400"),
        (api(401, "API token required"), Verdict.REFUSED, "api", "api_401"),
        (api(402, "Tariff limit"), Verdict.REFUSED, "api", "api_402"),
        (api(403, "Forbidden"), Verdict.REFUSED, "api", "api_403"),
        (Answer(401, b"Unauthorized"), Verdict.REFUSED, "api", "api_401"),
        (Answer(403, b"<html>Forbidden</html>"), Verdict.REFUSED, "api", "api_403"),
        (api(429, "Too many requests", status=429), Verdict.RETRY, "http", "http_429"),
        (Answer(503, b"<html>Service Unavailable</html>"), Verdict.RETRY, "http", "http_503"),
        (api(500, "oops", status=500), Verdict.RETRY, "http", "http_500"),
        (Answer(502, b"<html>Bad Gateway</html>"), Verdict.RETRY, "http", "http_502"),
        (Answer(504, b"<html>Gateway Time-out</html>"), Verdict.RETRY, "http", "http_504"),
        (api(504, "Gateway timeout", status=504), Verdict.RETRY, "http", "http_504"),
        (Answer(501, b"Not Implemented"), Verdict.FAILED, "http", "http_501"),
        (Answer(404, b"<html>Not Found</html>"), Verdict.FAILED, "http", "http_404"),
        (Answer(200, b"<html>maintenance</html>"), Verdict.FAILED, "http", "unreadable_answer"),
        (Answer(200, b'{"error": 0, "error_te'), Verdict.FAILED, "http", "unreadable_answer"),
        (Answer(200, b'{"error": true}'), Verdict.FAILED, "http", "unreadable_answer"),
        (Answer(200, b"[0]"), Verdict.FAILED, "http", "unreadable_answer"),
        (Answer(200, b'{"error": "0"}'), Verdict.FAILED, "http", "unreadable_answer"),
        (Answer(204, b""), Verdict.FAILED, "http", "unreadable_answer"),
        # Redirects are not followed: a 3xx is no success, whatever its body says.
        (Answer(300, b""), Verdict.FAILED, "http", "http_300"),
        (api(0, status=300), Verdict.FAILED, "api", "api_0"),
        (Answer(200, b"", cut_off=True), Verdict.FAILED, "http", "answer_cut_off"),
        # The server refused before acting: safe to retry, even if the line broke.
        (Answer(503, b"", cut_off=True), Verdict.RETRY, "http", "http_503"),
    ],
)
def test_judge(answer: Answer, verdict: Verdict, stage: str, error: str) -> None:
    judgement = judge(answer)
    assert (judgement.verdict, judgement.stage, judgement.error) == (verdict, stage, error)


TOKEN_REJECTED = (
    "the API rejected the token (error 401, API token required): put the right token in the "
    "BATCH_ENGAGE_TOKEN environment variable or a --token-file, and check that --api-url is "
    "your account's")
TARIFF_REACHED = (
    "the account's tariff limit is reached (error 402): raise the limit in the account or "
    "wait until it renews, then send the remaining rows")
ACCESS_REFUSED = (
    "the API refused access (error 403, forbidden): check that the token's API access "
    "includes scenarios and that -w is a scenario of this account")
CHECK_PROFILE = "check that the profile exists and matches this row's identifier"
CHECK_ACCOUNT = "check in the account whether this profile was engaged before sending it again"
CHECK_ROW = "the API found the request incorrect: check this row's values and the -w workflow id"
CHECK_URL = "check the API URL (--api-url) and the workflow id (-w)"
# A page that is no JSON, shown in the message: its first 80 bytes, on one line.
MAINTENANCE_PAGE = b"\xff<p>\n" + b"x" * 100
MAINTENANCE_SHOWN = "\ufffd<p> " + "x" * 75


@pytest.mark.parametrize(
    ("answer", "judgement"),
    [
        (api(0, "Successful operation"), Judgement(Verdict.OK, "", "", "Successful operation")),
        (Answer(200, b"", cut_off=True), Judgement(
            Verdict.FAILED, "http", "answer_cut_off",
            "the API began to answer (HTTP 200) and the connection broke off; it has probably "
            "acted on the request: check in the account before sending this row again (it was "
            "not retried, so as not to engage the profile twice)")),
        (api(429, "Too many requests", 429), Judgement(
            Verdict.RETRY, "http", "http_429", "the API answered HTTP 429 (too many requests)")),
        (Answer(503, b"", cut_off=True), Judgement(
            Verdict.RETRY, "http", "http_503", "the API answered HTTP 503 (server error)")),
        (api(401, "API token required"), Judgement(
            Verdict.REFUSED, "api", "api_401", f"{TOKEN_REJECTED} (HTTP 200)")),
        (api(402, "Tariff limit"), Judgement(
            Verdict.REFUSED, "api", "api_402", f"{TARIFF_REACHED} (HTTP 200)")),
        (Answer(403, b"<html>Forbidden</html>"), Judgement(
            Verdict.REFUSED, "api", "api_403", f"{ACCESS_REFUSED} (HTTP 403)")),
        (Answer(404, b"<html>Not Found</html>"), Judgement(
            Verdict.FAILED, "http", "http_404",
            f"the API answered HTTP 404 without its JSON result ('<html>Not Found</html>'); "
            f"{CHECK_URL}")),
        (Answer(200, MAINTENANCE_PAGE), Judgement(
            Verdict.FAILED, "http", "unreadable_answer",
            f"the API answered HTTP 200 without its JSON result ({MAINTENANCE_SHOWN!r}); "
            f"{CHECK_ACCOUNT}")),
        (api(440, "Profile not found"), Judgement(
            Verdict.FAILED, "api", "api_440",
            f"the API answered error 440 'Profile not found' (HTTP 200); {CHECK_PROFILE}")),
        (Answer(200, b'{"error": 440, "error_text": null}'), Judgement(
            Verdict.FAILED, "api", "api_440",
            f"the API answered error 440 '' (HTTP 200); {CHECK_PROFILE}")),
        # The hint for the API's error comes first, then the one for the HTTP status.
        (api(400, "Incorrect request"), Judgement(
            Verdict.FAILED, "api", "api_400",
            f"the API answered error 400 'Incorrect request' (HTTP 200); {CHECK_ROW}")),
        (api(0, "", status=400), Judgement(
            Verdict.FAILED, "api", "api_0",
            f"the API answered error 0 '' (HTTP 400); {CHECK_ROW}")),
        (api(440, "Not found", status=404), Judgement(
            Verdict.FAILED, "api", "api_440",
            f"the API answered error 440 'Not found' (HTTP 404); {CHECK_URL}")),
    ],
)
def test_judgements_say_what_happened_and_what_to_do(answer: Answer, judgement: Judgement) -> None:
    assert judge(answer) == judgement


def test_judgements_say_what_to_do() -> None:
    assert "BATCH_ENGAGE_TOKEN" in judge(api(401)).text
    assert "tariff" in judge(api(402)).text
    assert "'Profile not found'" in judge(api(440, "Profile not found")).text
    assert "check that the profile exists" in judge(api(440, "Profile not found")).text
    assert "before sending it again" in judge(Answer(200, b"<html>")).text


def test_retry_after_in_seconds_and_as_a_date() -> None:
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Fri, 27 Nov 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", now) == 0  # already past
    assert parse_retry_after("-3", now) == 0
    # A date in zone "-0000" ("unknown", RFC 5322) is taken as UTC, as HTTP dates are.
    assert parse_retry_after("Fri, 27 Nov 2026 12:00:30 -0000", now) == 30
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_is_full_jitter_under_a_cap_and_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_delay_seconds=0.5, max_delay_seconds=4, max_retry_after_seconds=60)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(300)]
        assert 0 <= min(delays) < ceiling * 0.1
        assert ceiling * 0.9 < max(delays) <= ceiling
    assert all(policy.delay(1, 10, rng) == 10 for _ in range(20))
    assert policy.delay(1, 3600, rng) == 60


def request(row: int) -> Request:
    return Request(row, f"user{row}@example.com", json.dumps({"row": row}).encode(),
                   f"user{row}@example.com")


Script = Callable[[int, int], Awaitable[Answer]]
"""(row, attempt) -> the answer for that attempt."""


class FakeApi:
    """A transport that answers by script and records what it was sent."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, body: bytes) -> Answer:
        row = json.loads(body)["row"]
        self.calls.append(row)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            return await self.script(row, self.calls.count(row))
        finally:
            self.in_flight -= 1


def send_rows(
    fake: FakeApi, rows: int, *, max_in_flight: int = 4, policy: RetryPolicy = NO_WAIT,
    max_pending: int = 16,
) -> tuple[Sender, dict[int, Result]]:
    results: dict[int, Result] = {}

    async def main() -> Sender:
        # 429s slow the limiter down: on a controlled clock that costs no real time.
        clock = FakeClock()
        limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
        sender = Sender(fake, limiter=limiter, max_in_flight=max_in_flight,
                        policy=policy, rng=random.Random(0))
        items = ((r.row, r) for r in map(request, range(2, rows + 2)))

        def done(row: int, req: Request, result: Result) -> None:
            assert row == req.row
            assert row not in results
            results[row] = result

        await sender.send_all(items, done, max_pending=max_pending)
        return sender

    return asyncio.run(main()), results


UTC_MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
UNSENT = ("unsent", 0, None, "", "")
"""A row the run stopped before it was sent: to send again on --resume."""


def settled(result: Result) -> tuple[str, int, int | None, str, str]:
    """The result without its time, once the time is checked: UTC, to the millisecond, as
    success.csv and the journal record it."""
    assert UTC_MILLISECONDS.fullmatch(result.completed_at), result.completed_at
    return result.outcome, result.attempts, result.http_status, result.error, result.error_text


def test_every_row_gets_one_result_and_the_in_flight_limit_holds() -> None:
    async def ok(_row: int, _attempt: int) -> Answer:
        await asyncio.sleep(0.001)
        return api(0, "Successful operation")

    fake = FakeApi(ok)
    sender, results = send_rows(fake, 200, max_in_flight=5)
    assert sorted(results) == list(range(2, 202))
    assert {r.outcome for r in results.values()} == {"ok"}
    assert fake.most_in_flight == 5
    assert sender.requests_started == 200
    assert not sender.retries


def test_retryable_answers_are_retried_and_counted_by_reason() -> None:
    async def flaky(row: int, attempt: int) -> Answer:
        if row % 2 and attempt == 1:
            return api(429, "Too many", 429, retry_after="0")
        if row % 3 == 0 and attempt < 3:
            raise Unanswered("timeout", "no answer within --timeout 30 s", maybe_sent=True)
        if row % 5 == 0 and attempt == 1:
            return Answer(503, b"")
        return api(0, "Successful operation")

    fake = FakeApi(flaky)
    sender, results = send_rows(fake, 60)
    assert {r.outcome for r in results.values()} == {"ok"}
    assert [results[r].attempts for r in (4, 5, 6, 9, 10)] == [1, 2, 3, 3, 2]
    assert sender.retries["http_429"] == 30
    assert sender.retries["timeout"] == sum(1 if r % 2 else 2 for r in range(2, 62) if r % 3 == 0)
    assert sender.retries_unanswered == sender.retries["timeout"]
    assert sender.requests_started == len(fake.calls) == 60 + sum(sender.retries.values())


def test_final_failures_are_not_retried_and_tries_are_bounded() -> None:
    async def answers(row: int, _attempt: int) -> Answer:
        if row == 2:
            return api(440, "Profile not found")
        if row == 3:
            return Answer(502, b"Bad gateway")
        if row == 4:
            raise Unanswered("connect_failed", "cannot connect", maybe_sent=False)
        return api(0)

    fake = FakeApi(answers)
    sender, results = send_rows(fake, 4)
    assert fake.calls.count(2) == 1
    assert (results[2].outcome, results[2].error, results[2].attempts) == ("api", "api_440", 1)
    assert (results[3].outcome, results[3].error, results[3].attempts) == ("http", "http_502", 3)
    assert results[3].error_text.endswith("gave up after 3 tries")
    assert (results[4].outcome, results[4].error, results[4].attempts) == (
        "network", "connect_failed", 3)
    assert sender.retries_unanswered == 0  # a refused connection never reached the API
    assert results[5].outcome == "ok"


@pytest.mark.parametrize("max_in_flight", [1, 4, 16])
def test_a_rejected_token_stops_the_run_within_the_in_flight_limit(max_in_flight: int) -> None:
    async def refuse(_row: int, _attempt: int) -> Answer:
        await asyncio.sleep(0.001)
        return api(401, "API token required")

    fake = FakeApi(refuse)
    sender, results = send_rows(fake, 500, max_in_flight=max_in_flight,
                                max_pending=4 * max_in_flight)
    assert len(fake.calls) <= max_in_flight
    assert sender.stop_reason is not None
    assert sender.stop_reason == f"{TOKEN_REJECTED} (HTTP 200)"
    # Rows that met the refusal keep what it said; the others never started.
    assert Counter(settled(r) for r in results.values()) == {
        ("unsent", 1, 200, "api_401", f"{TOKEN_REJECTED} (HTTP 200)"): len(fake.calls),
        UNSENT: len(results) - len(fake.calls)}
    assert len(results) <= 4 * max_in_flight + 1  # the rest was never read


def test_a_stop_cancels_rows_waiting_for_a_retry_but_lets_requests_finish() -> None:
    async def script(row: int, attempt: int) -> Answer:
        if row == 2:
            await asyncio.sleep(0.05)
            return api(402, "Tariff limit reached")
        if row == 3:  # on the wire when the refusal arrives: its answer is kept
            await asyncio.sleep(0.06)
            return api(0)
        return api(429, "Too many", 429, retry_after="3600")  # then waits an hour

    fake = FakeApi(script)
    policy = RetryPolicy(max_attempts=5, base_delay_seconds=0, max_retry_after_seconds=3600)
    sender, results = send_rows(fake, 6, max_in_flight=8, policy=policy)
    assert sender.stop_reason == f"{TARIFF_REACHED} (HTTP 200)"
    assert results[3].outcome == "ok"
    assert settled(results[2]) == ("unsent", 1, 200, "api_402", f"{TARIFF_REACHED} (HTTP 200)")
    assert {settled(results[r]) for r in (4, 5, 6, 7)} == {UNSENT}


def test_rows_are_read_only_as_fast_as_they_finish(caplog: pytest.LogCaptureFixture) -> None:
    """Backpressure: the reader is never more than max_pending rows ahead of the results."""
    read = 0
    finished = 0
    most_ahead = 0

    def items() -> Iterator[tuple[int, Request]]:
        nonlocal read, most_ahead
        for row in range(2, 1002):
            read += 1
            most_ahead = max(most_ahead, read - finished)
            yield row, request(row)

    async def slow(_row: int, _attempt: int) -> Answer:
        await asyncio.sleep(0.0005)
        return api(0)

    def done(_row: int, _req: Request, _result: Result) -> None:
        nonlocal finished
        finished += 1

    async def main() -> None:
        sender = Sender(FakeApi(slow), limiter=RateLimiter(0), max_in_flight=8, policy=NO_WAIT)
        await sender.send_all(items(), done, max_pending=32)

    asyncio.run(main())
    assert finished == 1000
    assert most_ahead <= 33
    # Each finished row's task is let go cleanly: nothing is left to the loop's error log.
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_an_error_in_reporting_stops_the_pool_and_is_raised() -> None:
    async def ok(_row: int, _attempt: int) -> Answer:
        return api(0)

    def done(row: int, _req: Request, _result: Result) -> None:
        if row == 10:
            raise OSError(28, "No space left on device")

    async def main() -> Sender:
        sender = Sender(FakeApi(ok), limiter=RateLimiter(0), max_in_flight=2, policy=NO_WAIT)
        items = ((r.row, r) for r in map(request, range(2, 1000)))
        with pytest.raises(OSError, match="No space left"):
            await sender.send_all(items, done, max_pending=4)
        return sender

    sender = asyncio.run(main())
    assert sender.requests_started < 20
    assert sender.stop_reason == "an unexpected error stopped the run (OSError)"


def test_a_url_that_never_connects_stops_the_run_rather_than_failing_every_row() -> None:
    async def refused(_row: int, _attempt: int) -> Answer:
        raise Unanswered("connect_failed", "cannot connect to http://x: refused",
                         maybe_sent=False)

    fake = FakeApi(refused)
    sender, results = send_rows(fake, 200)
    # The tenth refusal stops it; attempts already under way (at most 4) end as well.
    assert UNREACHABLE_AFTER_FAILURES <= len(fake.calls) < UNREACHABLE_AFTER_FAILURES + 4
    assert sender.stop_reason == ("cannot connect to http://x: refused; no request has "
                                  "reached the API yet: check --api-url and the network")
    assert {r.outcome for r in results.values()} == {"unsent"}


def test_once_the_api_was_reached_refused_connections_are_retried() -> None:
    async def outage(row: int, attempt: int) -> Answer:
        if row > 2 and attempt < 3:
            raise Unanswered("connect_failed", "refused", maybe_sent=False)
        await asyncio.sleep(0.001)
        return api(0)

    fake = FakeApi(outage)
    sender, results = send_rows(fake, 40, max_in_flight=1)
    assert sender.stop_reason is None
    assert {r.outcome for r in results.values()} == {"ok"}
    assert sender.retries["connect_failed"] == 2 * 39


def test_every_try_is_noted_as_sending_before_it_leaves() -> None:
    """Not only the first: a retry may be acted on, so after a kill it must be uncertain."""
    events: list[tuple[str, int]] = []
    identifiers: set[str] = set()

    class Journal:
        async def sending(self, row: int, identifier: str) -> None:
            events.append(("sending", row))
            identifiers.add(identifier)

        def forget(self, row: int) -> None:
            events.append(("forget", row))

    async def transport(body: bytes) -> Answer:
        row = json.loads(body)["row"]
        events.append(("request", row))
        tries = events.count(("request", row))
        return Answer(504, b"") if tries < 3 else api(0)

    async def main() -> Result:
        sender = Sender(transport, limiter=RateLimiter(0), max_in_flight=1, policy=NO_WAIT,
                        ledger=Journal())
        return await sender.send(request(7))

    assert asyncio.run(main()).outcome == "ok"
    assert events == [("sending", 7), ("request", 7), ("forget", 7)] * 2 + [
        ("sending", 7), ("request", 7)]
    assert identifiers == {"user7@example.com"}  # what --resume names an uncertain row by


def always(reply: Answer | Unanswered) -> FakeApi:
    """An API that gives every request the same answer, or the same lack of one."""

    async def script(_row: int, _attempt: int) -> Answer:
        if isinstance(reply, Unanswered):
            raise reply
        return reply

    return FakeApi(script)


@pytest.mark.parametrize(
    ("reply", "result", "stop_reason"),
    [
        (api(0, "Successful operation"), ("ok", 1, 200, "", "Successful operation"), None),
        (api(440, "Profile not found"), (
            "api", 1, 200, "api_440",
            f"the API answered error 440 'Profile not found' (HTTP 200); {CHECK_PROFILE}"),
         None),
        (Answer(502, b"Bad gateway"), (
            "http", 3, 502, "http_502",
            "the API answered HTTP 502 (server error); gave up after 3 tries"), None),
        (Unanswered("timeout", "no answer within --timeout 30 s", maybe_sent=True), (
            "network", 3, None, "timeout",
            "no answer within --timeout 30 s; gave up after 3 tries"),
         None),
        (api(402, "Tariff limit"), (
            "unsent", 1, 200, "api_402", f"{TARIFF_REACHED} (HTTP 200)"),
         f"{TARIFF_REACHED} (HTTP 200)"),
        (Unanswered("tls_error", "the server's TLS certificate is not trusted", maybe_sent=False,
                    fatal=True),
         ("unsent", 1, None, "tls_error", "the server's TLS certificate is not trusted"),
         "the server's TLS certificate is not trusted"),
    ],
)
def test_each_way_a_row_ends_gives_its_whole_result(
    reply: Answer | Unanswered, result: tuple[str, int, int | None, str, str],
    stop_reason: str | None,
) -> None:
    sender, results = send_rows(always(reply), 1)
    assert settled(results[2]) == result
    assert sender.stop_reason == stop_reason


def test_the_tenth_refused_connection_in_a_row_stops_the_run() -> None:
    """Tries count as well as rows do: a lone row meets a wrong URL as surely as many."""
    fake = always(Unanswered("connect_failed", "cannot connect to http://x: refused",
                             maybe_sent=False))
    policy = RetryPolicy(max_attempts=50, base_delay_seconds=0)
    sender, results = send_rows(fake, 1, policy=policy)
    assert fake.calls == [2] * UNREACHABLE_AFTER_FAILURES
    assert settled(results[2]) == (
        "unsent", UNREACHABLE_AFTER_FAILURES, None, "connect_failed",
        "cannot connect to http://x: refused")
    assert sender.stop_reason is not None


def test_timeouts_are_never_taken_for_a_wrong_url() -> None:
    """A timeout means the server was reached (or may have been): ride it out, row by row."""
    fake = always(Unanswered("timeout", "no answer within --timeout 30 s", maybe_sent=True))
    sender, results = send_rows(fake, 6, max_in_flight=1)
    assert len(fake.calls) == 18 > UNREACHABLE_AFTER_FAILURES
    assert sender.stop_reason is None
    assert {r.outcome for r in results.values()} == {"network"}


class Forever:
    """Waits that never end on their own: an hour-long rate wait, a journal on a dead disk."""

    def __init__(self) -> None:
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        await asyncio.get_running_loop().create_future()

    async def sleep(self, _seconds: float) -> None:
        await self.wait()


@pytest.mark.parametrize("held_by", ["rate limit", "journal"])
def test_a_stop_cancels_rows_waiting_for_the_rate_limit_or_the_journal(held_by: str) -> None:
    forever = Forever()

    class Journal:
        async def sending(self, row: int, identifier: str) -> None:
            if row == 3 and held_by == "journal":
                await forever.wait()

        def forget(self, row: int) -> None:
            pass

    async def refuse_once_row_3_waits(_body: bytes) -> Answer:
        for _ in range(10):  # long enough for row 3 to get as far as it can
            await asyncio.sleep(0)
        return api(401, "API token required")

    async def main() -> tuple[Sender, dict[int, Result]]:
        clock = FakeClock()
        # One start a second: row 2 starts at once, row 3 would wait for the next second.
        rate = 1 if held_by == "rate limit" else 0
        limiter = RateLimiter(rate, clock=clock, sleep=forever.sleep)
        sender = Sender(refuse_once_row_3_waits, limiter=limiter, max_in_flight=4,
                        policy=NO_WAIT, ledger=Journal())
        results: dict[int, Result] = {}
        await sender.send_all(((r, request(r)) for r in (2, 3)),
                              lambda row, _req, result: results.__setitem__(row, result),
                              max_pending=4)
        return sender, results

    sender, results = asyncio.run(main())
    assert forever.waiting == 1  # row 3 was held there when the refusal came
    assert settled(results[2]) == ("unsent", 1, 200, "api_401", f"{TOKEN_REJECTED} (HTTP 200)")
    assert settled(results[3]) == UNSENT
    assert sender.requests_started == 1


def refused_while_row_3_is_on_the_wire(answer: Answer) -> Script:
    """Row 2's token is refused while row 3's request is on the wire; row 3 then gets
    ``answer``."""
    row_3_on_the_wire = asyncio.Event()

    async def script(row: int, _attempt: int) -> Answer:
        if row == 2:
            await row_3_on_the_wire.wait()
            return api(401, "API token required")
        row_3_on_the_wire.set()
        for _ in range(5):  # long enough for row 2's refusal to stop the run
            await asyncio.sleep(0)
        return answer

    return script


def test_a_row_that_meets_a_stop_between_tries_ends_unsent_without_another() -> None:
    """Its request was on the wire at the stop and was answered 503: there is no next try,
    and it is no failure either, but a row to send on --resume."""
    fake = FakeApi(refused_while_row_3_is_on_the_wire(Answer(503, b"")))
    sender, results = send_rows(fake, 2)
    assert sender.stop_reason == f"{TOKEN_REJECTED} (HTTP 200)"
    assert settled(results[3]) == ("unsent", 1, None, "", "")
    assert fake.calls.count(3) == 1


def test_a_stopped_run_does_not_wait_out_a_retry_delay() -> None:
    """A row whose answer says "retry" after the run stopped (a rejected token) ends unsent
    at once, rather than after its Retry-After (up to 300 s)."""
    script = refused_while_row_3_is_on_the_wire(
        api(429, "Too many requests", 429, retry_after="300"))
    results: dict[int, Result] = {}

    async def main() -> Sender:
        sender = Sender(FakeApi(script), limiter=RateLimiter(0), max_in_flight=4,
                        policy=RetryPolicy(base_delay_seconds=0))
        sending = sender.send_all(((r, request(r)) for r in (2, 3)),
                                  lambda row, _, result: results.update({row: result}),
                                  max_pending=4)
        await asyncio.wait_for(sending, 0.2)  # ends in a few ms once nothing waits
        return sender

    sender = asyncio.run(main())
    # Its answer said "not now", so it was not acted on: resume sends it.
    assert settled(results[3]) == ("unsent", 1, None, "", "")
    assert not sender.retries


def test_a_stop_reads_no_further_and_still_waits_for_requests_on_the_wire() -> None:
    row_3_on_the_wire = asyncio.Event()
    row_2_reported = asyncio.Event()

    async def script(row: int, _attempt: int) -> Answer:
        if row == 2:
            await row_3_on_the_wire.wait()
            return api(401, "API token required")
        row_3_on_the_wire.set()
        await row_2_reported.wait()  # answered only after the stop
        return api(0, "Successful operation")

    results: dict[int, Result] = {}
    read: list[int] = []

    def done(row: int, _req: Request, result: Result) -> None:
        results[row] = result
        if row == 2:
            row_2_reported.set()

    def rows() -> Iterator[tuple[int, Request]]:
        for r in range(2, 100):
            read.append(r)
            yield r, request(r)

    async def main() -> None:
        sender = Sender(FakeApi(script), limiter=RateLimiter(0), max_in_flight=4,
                        policy=NO_WAIT)
        # Two rows alive at once: after row 2's refusal, row 4 is not even read.
        await sender.send_all(rows(), done, max_pending=2)

    asyncio.run(main())
    assert read == [2, 3]
    assert sorted(results) == [2, 3]
    assert settled(results[3]) == ("ok", 1, 200, "", "Successful operation")


def test_an_abort_cuts_off_requests_on_the_wire_and_their_rows_end_uncertain() -> None:
    async def no_answer(_row: int, _attempt: int) -> Answer:
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    fake = FakeApi(no_answer)
    results: dict[int, Result] = {}
    on_the_wire: list[int] = []

    async def main() -> Sender:
        sender = Sender(fake, limiter=RateLimiter(0), max_in_flight=2, policy=NO_WAIT)

        async def abort_once_both_are_on_the_wire() -> None:
            for _ in range(10):
                await asyncio.sleep(0)
            on_the_wire.append(fake.in_flight)
            sender.abort("interrupted (Ctrl-C)")

        interrupting = asyncio.create_task(abort_once_both_are_on_the_wire())
        await sender.send_all(((r, request(r)) for r in range(2, 6)),
                              lambda row, _req, result: results.__setitem__(row, result),
                              max_pending=8)
        await interrupting
        return sender

    sender = asyncio.run(main())
    assert on_the_wire == [2]
    assert sender.stop_reason == "interrupted (Ctrl-C)"
    assert settled(results[2]) == settled(results[3]) == (
        "uncertain", 1, None, "uncertain",
        "the run was stopped while this row's request was on its way; it may or may not have "
        "engaged the profile: check in the account before sending it again")
    assert {settled(results[r]) for r in (4, 5)} == {UNSENT}


def test_an_abort_leaves_alone_a_task_whose_request_is_done() -> None:
    """Only requests still on the wire are cut off: the task that sent a row goes on."""

    async def main() -> Result:
        sender = Sender(always(api(0, "Successful operation")), limiter=RateLimiter(0),
                        max_in_flight=1, policy=NO_WAIT)
        result = await sender.send(request(2))
        sender.abort("interrupted (SIGTERM)")
        await asyncio.sleep(0)  # where a cancel aimed at this task would land
        return result

    assert settled(asyncio.run(main())) == ("ok", 1, 200, "", "Successful operation")


@dataclass(frozen=True)
class RecordingPolicy(RetryPolicy):
    """Records what each wait was based on, and waits no time at all."""

    asked: list[tuple[int, float | None, random.Random]] = field(default_factory=list)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        self.asked.append((attempt, retry_after, rng))
        return 0.0


def test_retry_after_sets_the_wait_and_only_429s_slow_the_run_down() -> None:
    in_an_hour = email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    replies: list[Answer | Unanswered] = [
        api(503, "Service unavailable", 503, retry_after="7"),
        api(429, "Too many requests", 429, retry_after=in_an_hour),
        Unanswered("timeout", "no answer within --timeout 30 s", maybe_sent=True),
        api(0, "Successful operation"),
    ]
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    rates: list[float] = []

    async def transport(_body: bytes) -> Answer:
        rates.append(limiter.current_per_second)
        reply = replies[len(rates) - 1]
        if isinstance(reply, Unanswered):
            raise reply
        return reply

    policy = RecordingPolicy(max_attempts=5)
    rng = random.Random(0)

    async def main() -> Result:
        sender = Sender(transport, limiter=limiter, max_in_flight=1, policy=policy, rng=rng)
        return await sender.send(request(2))

    assert settled(asyncio.run(main()))[:2] == ("ok", 4)
    assert rates == [100, 100, 50, 50]  # the 503 left the rate alone; the 429 halved it
    (first, seconds, rng_1), (second, date, rng_2), (third, none, rng_3) = policy.asked
    assert (first, seconds, second, third, none) == (1, 7.0, 2, 3, None)
    assert date is not None
    assert 3590 < date <= 3600
    # The jitter comes from the rng the sender was given: seeded, a run's waits repeat.
    assert rng_1 is rng_2 is rng_3 is rng
