"""The sender with the network replaced by plain functions: judging, retries, stop, backpressure."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import pytest

from batch_engage.limiter import RateLimiter
from batch_engage.mapper import Request
from batch_engage.sender import (
    UNREACHABLE_AFTER_FAILURES,
    Answer,
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
    ],
)
def test_judge(answer: Answer, verdict: Verdict, stage: str, error: str) -> None:
    judgement = judge(answer)
    assert (judgement.verdict, judgement.stage, judgement.error) == (verdict, stage, error)


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
    return Request(row, f"user{row}@example.com", json.dumps({"row": row}).encode())


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
    assert "rejected the token" in sender.stop_reason
    assert {r.outcome for r in results.values()} == {"unsent"}
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
    assert "tariff limit" in (sender.stop_reason or "")
    assert results[3].outcome == "ok"
    assert {results[r].outcome for r in (2, 4, 5, 6, 7)} == {"unsent"}


def test_rows_are_read_only_as_fast_as_they_finish() -> None:
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


def test_a_url_that_never_connects_stops_the_run_rather_than_failing_every_row() -> None:
    async def refused(_row: int, _attempt: int) -> Answer:
        raise Unanswered("connect_failed", "cannot connect to http://x: refused",
                         maybe_sent=False)

    fake = FakeApi(refused)
    sender, results = send_rows(fake, 200)
    # The tenth refusal stops it; attempts already under way (at most 4) end as well.
    assert UNREACHABLE_AFTER_FAILURES <= len(fake.calls) < UNREACHABLE_AFTER_FAILURES + 4
    assert sender.stop_reason is not None
    assert "no request has reached the API yet: check --api-url" in sender.stop_reason
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

    class Journal:
        async def sending(self, row: int, identifier: str) -> None:
            events.append(("sending", row))

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
