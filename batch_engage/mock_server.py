"""A local stand-in for the ``workflows/start`` API, with faults to inject on purpose.

It checks each body as the real API would and answers in the real shape (HTTP 200 with
``error`` 0, or with ``error`` 400/401 and its ``error_text``), so rehearsals, the demo and
the tests meet the same answers a run meets in production. ``MockStats`` counts what it
received and accepted; tests read it directly, other processes at ``GET /_mock/stats``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import random
import re
import signal
import ssl
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .sender import ENDPOINT

# aiohttp.web takes 14 ms to import: each function that serves imports it, so the CLI
# (which takes DEFAULT_TOKEN from here) starts a run without it.
if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_TOKEN = "mock-token"
UNKNOWN_PROFILE_ERROR = 440
"""What the mock answers for a profile that does not exist; the real API's code for this
case is not documented (440 is the undocumented code seen in the wild)."""
STATS_PATH = "/_mock/stats"
_MATCHING = frozenset({"email", "phone", "profile_id", "custom"})
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,([A-Za-z0-9+/=]*)")


@dataclass(frozen=True)
class MockConfig:
    token: str = DEFAULT_TOKEN
    fail_rate: float = 0.0
    """Share of requests answered HTTP 503."""
    rate_limit: float = 0.0
    """Requests let through per second (any 1-second window); more get 429. 0: no limit."""
    latency_ms: float = 0.0
    unknown_rate: float = 0.0
    """Share of identifiers that belong to no profile (the same ones on every request)."""
    drop_rate: float = 0.0
    """Share of connections closed before an answer (the request is not acted on)."""
    seed: int | None = None
    slow_seconds: float = 2.0
    """How long a scripted ``Fault.SLOW`` answer takes."""

    def __post_init__(self) -> None:
        for name in ("fail_rate", "unknown_rate", "drop_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.rate_limit < 0 or self.latency_ms < 0:
            raise ValueError("rate_limit and latency_ms cannot be negative")
        if not self.token:
            raise ValueError("the mock server needs a token to accept")


@dataclass
class MockStats:
    received: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    """Requests per answer: ok, unknown_profile, bad_request, bad_token, http_503,
    http_429, dropped, client_gone."""
    accepted: Counter[str] = field(default_factory=Counter)
    """Times each identifier was engaged; above 1 means a profile was engaged twice."""
    received_at: list[float] = field(default_factory=list)
    """``time.monotonic()`` of each request's arrival, for checking a client's rate."""

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "answers": dict(self.answers),
            "accepted_total": sum(self.accepted.values()),
            "accepted_twice": sorted(k for k, n in self.accepted.items() if n > 1),
            "accepted": dict(self.accepted),
        }


class Fault(StrEnum):
    """Faults a test can script request by request (``MockServer(script=...)``)."""

    SERVER_ERROR = "503"
    """HTTP 503 with the API's JSON; not acted on."""
    HTML_ERROR = "html-502"
    """HTTP 502 with a proxy's HTML page; not acted on."""
    HTML_OK = "html-200"
    """HTTP 200 with an HTML page (a maintenance page); not acted on."""
    TOO_MANY = "429"
    """HTTP 429 with ``Retry-After`` in seconds; not acted on."""
    TOO_MANY_DATE = "429-date"
    """HTTP 429 with ``Retry-After`` as an HTTP date; not acted on."""
    SLOW = "slow"
    """Answers after ``MockConfig.slow_seconds``; not acted on if the client gave up."""
    DROP = "drop"
    """The connection is closed before an answer; not acted on."""
    CUT_OFF = "cut-off"
    """Acted on; the answer breaks off halfway through its body."""
    TRUNCATED = "truncated"
    """Acted on; HTTP 200 whose JSON stops short."""
    API_ERROR = "api-error"
    """HTTP 200 with ``error`` 440, as for an unknown profile; not acted on."""


Script = Callable[[int], Fault | None]
"""Request number (1, 2...) -> the fault for that request, if any."""


class _BadRequest(Exception):
    pass


def _identifier(body: dict[str, Any]) -> str:
    """Check the matching mode and its identifier as the API does; return the identifier."""
    if "custom_request" in body:
        if "matching" in body:
            raise _BadRequest("custom_request is used only when no matching is given")
        if not isinstance(body["custom_request"], dict):
            raise _BadRequest("custom_request must be a JSON object")
        return json.dumps(body["custom_request"], sort_keys=True, ensure_ascii=False)
    matching = body.get("matching", "email")
    if matching not in _MATCHING:
        raise _BadRequest(f"unknown matching {matching!r}")
    if matching == "custom":
        name, value = body.get("field_name"), body.get("field_value")
        if not isinstance(name, str) or not name:
            raise _BadRequest("field_name is required for matching custom")
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise _BadRequest("field_value is required for matching custom")
        return f"{name}={value}"
    value = body.get(matching)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"{matching} is required for matching {matching}")
    if matching == "email" and (value.count("@") != 1 or value != value.strip()):
        raise _BadRequest(f"invalid email {value!r}")
    if matching == "phone" and not _E164.fullmatch(value):
        raise _BadRequest(f"phone {value!r} is not in international format (+79001234567)")
    return value.lower() if matching == "email" else value


def _check_body(body: dict[str, Any]) -> None:
    workflow = body.get("id")
    if not isinstance(workflow, int) or isinstance(workflow, bool) or workflow <= 0:
        raise _BadRequest("id must be the integer id of a workflow")
    for key in ("content", "subscription_filter"):
        if key in body and not isinstance(body[key], dict):
            raise _BadRequest(f"{key} must be a JSON object")
    resource = body.get("resource_id")
    if resource is not None and (not isinstance(resource, int) or isinstance(resource, bool)):
        raise _BadRequest("resource_id must be an integer")
    attach = body.get("attach", [])
    if not isinstance(attach, list):
        raise _BadRequest("attach must be a JSON array")
    for item in attach:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _BadRequest('each attach item needs "data" and "name"')
        match = _DATA_URI.fullmatch(item.get("data") or "")
        if match is None:
            raise _BadRequest("attach data must be a data:<mime>;base64,... URI")
        try:
            base64.b64decode(match.group(1), validate=True)
        except binascii.Error:
            raise _BadRequest("attach data is not valid base64") from None


def _answer(error: int, text: str, status: int = 200, **headers: str) -> web.Response:
    from aiohttp import web  # noqa: PLC0415  (see the top)

    return web.json_response(
        {"data": None, "error": error, "error_text": text}, status=status, headers=headers)


class MockServer:
    """The aiohttp application and the state behind it; ``stats`` is what it saw."""

    def __init__(self, config: MockConfig | None = None, script: Script | None = None) -> None:
        from aiohttp import web  # noqa: PLC0415  (see the top)

        self.config = config or MockConfig()
        self.script = script
        self.on_accept: Callable[[dict[str, Any]], None] | None = None
        """Called with each body the server acts on, for tests that check what was sent."""
        self.stats = MockStats()
        self._down_until = 0.0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._address = ("", 0)
        self._rng = random.Random(self.config.seed)
        self._passed: deque[float] = deque()
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_post(ENDPOINT, self._start_workflow)
        self.app.router.add_get(STATS_PATH, self._stats)

    def _unknown(self, identifier: str) -> bool:
        # Decided by the identifier, not by chance: a missing profile stays missing on retry.
        salt = str(self.config.seed or 0).encode()
        return zlib.crc32(salt + identifier.encode()) / 2**32 < self.config.unknown_rate

    def _over_rate_limit(self, now: float) -> bool:
        limit = self.config.rate_limit
        if not limit:
            return False
        while self._passed and self._passed[0] <= now - 1.0:
            self._passed.popleft()
        if len(self._passed) >= limit:
            return True
        self._passed.append(now)
        return False

    async def _stats(self, _request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415  (see the top)

        return web.json_response(self.stats.to_json())

    async def _start_workflow(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415  (see the top)

        now = time.monotonic()
        stats, config = self.stats, self.config
        stats.received += 1
        stats.received_at.append(now)
        fault = self.script(stats.received) if self.script else None
        if now < self._down_until:  # an outage: connections still open are dropped too
            fault = Fault.DROP
        if self._over_rate_limit(now):
            stats.answers["http_429"] += 1
            return _answer(429, "Too many requests", 429, **{"Retry-After": "1"})
        if fault is Fault.DROP or (config.drop_rate and self._rng.random() < config.drop_rate):
            stats.answers["dropped"] += 1
            if request.transport is not None:
                request.transport.close()
            # aiohttp closes the connection without an answer when a handler is cancelled.
            raise asyncio.CancelledError
        try:
            raw = await request.read()
        except ConnectionResetError:  # the client went away mid-request (a killed run)
            stats.answers["client_gone"] += 1
            raise asyncio.CancelledError from None
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if fault is Fault.SLOW:
            await asyncio.sleep(config.slow_seconds)
            if request.transport is None or request.transport.is_closing():
                stats.answers["client_gone"] += 1
                raise asyncio.CancelledError
        if fault is Fault.SERVER_ERROR or (
                config.fail_rate and self._rng.random() < config.fail_rate):
            stats.answers["http_503"] += 1
            return _answer(503, "Service temporarily unavailable", 503)
        if fault in (Fault.TOO_MANY, Fault.TOO_MANY_DATE):
            stats.answers["http_429"] += 1
            later = email.utils.format_datetime(
                datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
            return _answer(429, "Too many requests", 429, **{
                "Retry-After": later if fault is Fault.TOO_MANY_DATE else "1"})
        if fault in (Fault.HTML_ERROR, Fault.HTML_OK):
            stats.answers[fault.value] += 1
            return web.Response(
                status=502 if fault is Fault.HTML_ERROR else 200, content_type="text/html",
                text="<html><body><h1>Bad Gateway</h1><p>nginx</p></body></html>")
        try:
            body = json.loads(raw)
        except ValueError:
            stats.answers["bad_request"] += 1
            return _answer(400, "Incorrect request: the body is not JSON")
        if not isinstance(body, dict):
            stats.answers["bad_request"] += 1
            return _answer(400, "Incorrect request: the body must be a JSON object")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if body.get("token", bearer) != config.token:
            stats.answers["bad_token"] += 1
            return _answer(401, "API token required")
        try:
            _check_body(body)
            identifier = _identifier(body)
        except _BadRequest as e:
            stats.answers["bad_request"] += 1
            return _answer(400, f"Incorrect request: {e}")
        if fault is Fault.API_ERROR or self._unknown(identifier):
            stats.answers["unknown_profile"] += 1
            return _answer(UNKNOWN_PROFILE_ERROR, "Profile not found")
        stats.answers["ok"] += 1
        stats.accepted[identifier] += 1
        if self.on_accept is not None:
            self.on_accept(body)
        if fault is Fault.TRUNCATED:
            return web.Response(status=200, content_type="application/json",
                                body=b'{"data": null, "error": 0, "error_te')
        if fault is Fault.CUT_OFF:
            await self._cut_off(request)
        return _answer(0, "Successful operation")

    @staticmethod
    async def _cut_off(request: web.Request) -> None:
        """Start a full answer, send half of its body, then break the connection."""
        from aiohttp import web  # noqa: PLC0415  (see the top)

        body = json.dumps({"data": None, "error": 0, "error_text": "Successful operation"})
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "application/json", "Content-Length": str(len(body))})
        await response.prepare(request)
        await response.write(body[: len(body) // 2].encode())
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError

    async def outage(self, seconds: float) -> None:
        """Go away: refuse new connections and drop open ones, then come back."""
        from aiohttp import web  # noqa: PLC0415  (see the top)

        assert self._site is not None
        assert self._runner is not None
        self._down_until = time.monotonic() + seconds
        await self._site.stop()
        await asyncio.sleep(seconds)
        self._site = web.TCPSite(self._runner, *self._address)  # the same port again
        await self._site.start()

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
        """Listen on ``host:port`` (0: any free port), over TLS when given a context;
        return the runner and the base URL."""
        from aiohttp import web  # noqa: PLC0415  (see the top)

        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        bound = runner.addresses[0]
        self._runner, self._site, self._address = runner, site, (host, bound[1])
        return runner, f"{'https' if tls else 'http'}://{host}:{bound[1]}"


@dataclass(frozen=True)
class RunningMock:
    url: str
    server: MockServer
    loop: asyncio.AbstractEventLoop

    @property
    def stats(self) -> MockStats:
        return self.server.stats

    def outage(self, seconds: float) -> None:
        """Start an outage of ``seconds`` in the server's thread; returns at once."""
        asyncio.run_coroutine_threadsafe(self.server.outage(seconds), self.loop)


@contextmanager
def serve_in_thread(
    config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0,
    script: Script | None = None, tls: ssl.SSLContext | None = None,
) -> Iterator[RunningMock]:
    """Run a mock server on its own event loop in a thread, for the demo and for tests
    whose client side runs its own loop (``batch_engage.run``, the CLI)."""
    server = MockServer(config, script)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="mock-server", daemon=True)
    thread.start()
    try:
        runner, url = asyncio.run_coroutine_threadsafe(server.start(host, port, tls), loop).result()
        try:
            yield RunningMock(url, server, loop)
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def serve(
    server: MockServer, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    """Serve until SIGINT or SIGTERM, then close cleanly."""
    runner, url = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        on_ready(url)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
