"""The mock API server over real HTTP: validation, answer shapes, faults and counts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batch_engage.mock_server import (
    STATS_PATH,
    UNKNOWN_PROFILE_ERROR,
    MockConfig,
    serve_in_thread,
)
from batch_engage.sender import ENDPOINT

from .conftest import REPO

TOKEN = "mock-token"
DATA = "data:text/plain;base64,SEVMTE8K"


def post_all(url: str, bodies: list[Any], headers: dict[str, str] | None = None
             ) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    async def main() -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        answers = []
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                async with session.post(url + ENDPOINT, data=data, headers=headers) as r:
                    answers.append((r.status, await r.json(content_type=None), dict(r.headers)))
        return answers

    return asyncio.run(main())


def body(**fields: Any) -> dict[str, Any]:
    return {"token": TOKEN, "id": 12, **fields}


@pytest.mark.parametrize(
    ("request_body", "error", "text"),
    [
        (body(email="ann@example.com"), 0, "Successful operation"),
        (body(matching="phone", phone="+79001234567"), 0, ""),
        (body(matching="profile_id", profile_id="5a74876369d42613b31947b8"), 0, ""),
        (body(matching="custom", field_name="CRM_ID", field_value=123420), 0, ""),
        (body(custom_request={"email": "a@b.co"}), 0, ""),
        (body(email="a@b.co", content={"x": [1]}, resource_id=24,
              attach=[{"data": DATA, "name": "日本.txt"}],
              subscription_filter={"email": "a@b.co", "not_strict": True}), 0, ""),
        ({**body(email="a@b.co"), "token": "wrong"}, 401, "API token required"),
        ({"id": 12, "email": "a@b.co"}, 401, "API token required"),
        (body(email="a@b.co", id="12"), 400, "id must be the integer"),
        (body(email="a@b.co", id=True), 400, "id must be the integer"),
        (body(), 400, "email is required"),
        (body(email="not-an-email"), 400, "invalid email"),
        (body(matching="phone", phone="89001234567"), 400, "international format"),
        (body(matching="sms", phone="+79001234567"), 400, "unknown matching"),
        (body(matching="custom", field_value="1"), 400, "field_name is required"),
        (body(matching="email", custom_request={"a": 1}), 400, "only when no matching"),
        (body(custom_request="[1]"), 400, "must be a JSON object"),
        (body(email="a@b.co", content="text"), 400, "content must be a JSON object"),
        (body(email="a@b.co", resource_id="7"), 400, "resource_id must be an integer"),
        (body(email="a@b.co", attach=[{"data": "SEVMTE8K", "name": "a"}]), 400, "base64,... URI"),
        (body(email="a@b.co", attach=[{"data": "data:text/plain;base64,%%", "name": "a"}]),
         400, "base64,... URI"),
        (body(email="a@b.co", attach={"data": DATA}), 400, "JSON array"),
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
    ],
)
def test_it_checks_bodies_as_the_api_does(
    request_body: Any, error: int, text: str
) -> None:
    with serve_in_thread(MockConfig(token=TOKEN)) as mock:
        [(status, answer, _)] = post_all(mock.url, [request_body])
    assert status == 200  # the API answers errors in the body, with HTTP 200
    assert answer["error"] == error
    assert text in answer["error_text"]
    assert set(answer) == {"data", "error", "error_text"}
    assert mock.stats.received == 1
    assert sum(mock.stats.accepted.values()) == (error == 0)


def test_a_bearer_token_is_accepted_too() -> None:
    with serve_in_thread(MockConfig(token=TOKEN)) as mock:
        [(_, answer, _)] = post_all(mock.url, [{"id": 1, "email": "a@b.co"}],
                                    {"Authorization": f"Bearer {TOKEN}"})
    assert answer["error"] == 0


def test_unknown_profiles_are_the_same_ones_every_time() -> None:
    emails = [f"user{i}@example.com" for i in range(400)]
    config = MockConfig(token=TOKEN, unknown_rate=0.25, seed=3)
    with serve_in_thread(config) as mock:
        first = post_all(mock.url, [body(email=e) for e in emails])
        again = post_all(mock.url, [body(email=e) for e in emails])
    unknown = [e for e, (_, a, _) in zip(emails, first, strict=True) if a["error"]]
    assert 60 < len(unknown) < 140
    assert [a["error"] for _, a, _ in first] == [a["error"] for _, a, _ in again]
    assert {a["error"] for _, a, _ in first} == {0, UNKNOWN_PROFILE_ERROR}
    assert mock.stats.answers["unknown_profile"] == 2 * len(unknown)
    assert set(mock.stats.accepted) == set(emails) - set(unknown)


def test_faults_answer_503_and_429_with_retry_after() -> None:
    with serve_in_thread(MockConfig(token=TOKEN, fail_rate=0.5, seed=1)) as mock:
        answers = post_all(mock.url, [body(email=f"u{i}@example.com") for i in range(200)])
    statuses = [s for s, _, _ in answers]
    assert 60 < statuses.count(503) < 140
    assert statuses.count(200) == mock.stats.answers["ok"] == 200 - statuses.count(503)

    with serve_in_thread(MockConfig(token=TOKEN, rate_limit=5)) as mock:
        answers = post_all(mock.url, [body(email=f"u{i}@example.com") for i in range(8)])
    assert [s for s, _, _ in answers] == [200] * 5 + [429] * 3
    assert answers[-1][2]["Retry-After"] == "1"
    assert answers[-1][1]["error"] == 429


def test_dropped_connections_get_no_answer_and_are_not_acted_on() -> None:
    async def main(url: str) -> tuple[int, int]:
        dropped = answered = 0
        async with aiohttp.ClientSession() as session:
            for i in range(60):
                data = json.dumps(body(email=f"u{i}@example.com")).encode()
                try:
                    async with session.post(url + ENDPOINT, data=data) as r:
                        await r.read()
                        answered += 1
                except aiohttp.ServerDisconnectedError:
                    dropped += 1
        return dropped, answered

    with serve_in_thread(MockConfig(token=TOKEN, drop_rate=0.5, seed=2)) as mock:
        dropped, answered = asyncio.run(main(mock.url))
    assert 10 < dropped < 50
    assert mock.stats.answers["dropped"] == dropped
    assert sum(mock.stats.accepted.values()) == answered


def test_latency_delays_answers() -> None:
    async def timed(url: str) -> float:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            start = loop.time()
            data = json.dumps(body(email="a@b.co")).encode()
            async with session.post(url + ENDPOINT, data=data) as r:
                await r.read()
            return loop.time() - start

    with serve_in_thread(MockConfig(token=TOKEN, latency_ms=200)) as mock:
        assert asyncio.run(timed(mock.url)) >= 0.2


def test_the_config_is_checked() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        MockConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="token"):
        MockConfig(token="")


def test_the_command_serves_until_interrupted_and_reports_its_counts(tmp_path: Path) -> None:
    """`batch-engage mock-server` in its own process, with a real `run` against it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_engage", "mock-server", "--port", "0"],
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert process.stderr is not None
        ready = process.stderr.readline()
        match = re.search(r"listening on (http://\S+) \(token: mock-token\)", ready)
        assert match, ready
        url = match.group(1).rstrip(";")
        data = tmp_path / "in.csv"
        data.write_text("email\na@example.com\nb@example.com\n", "utf-8")
        sent = subprocess.run(
            [sys.executable, "-m", "batch_engage", "run", str(data), "-w", "3",
             "--api-url", url, "--out", str(tmp_path / "out")],
            env={**os.environ, "BATCH_ENGAGE_TOKEN": TOKEN}, capture_output=True, text=True,
            check=False,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr

        async def stats() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session, \
                    session.get(url + STATS_PATH) as r:
                result: dict[str, Any] = await r.json()
                return result

        assert asyncio.run(stats())["accepted"] == {"a@example.com": 1, "b@example.com": 1}
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Received 2 requests: ok 2" in err
