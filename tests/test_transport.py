"""The aiohttp transport with the network mocked by aioresponses: what each failure becomes."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from batch_engage.sender import Answer, Unanswered, aiohttp_transport

URL = "https://api.example.com/api/v1.1/workflows/start"


class Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the ``stream_writer`` that aiohttp 3.14
    requires (pnuckowski/aioresponses#289, open); hand it one that has written nothing."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def post(body: bytes, mock: aioresponses) -> Answer:
    async def main() -> Answer:
        async with aiohttp.ClientSession() as session:
            return await aiohttp_transport(session, "https://api.example.com/", 5)(body)

    del mock  # the patch is active while the caller holds it
    return asyncio.run(main())


def test_the_body_goes_to_the_endpoint_as_json() -> None:
    with aioresponses() as mock:
        mock.post(URL, status=200, payload={"data": None, "error": 0, "error_text": "ok"},
                  response_class=Response)
        answer = post(b'{"id": 1}', mock)
        (method, url), calls = next(iter(mock.requests.items()))
    assert (method, str(url)) == ("POST", URL)
    assert calls[0].kwargs["data"] == b'{"id": 1}'
    assert calls[0].kwargs["headers"]["Content-Type"] == "application/json"
    assert calls[0].kwargs["allow_redirects"] is False
    assert answer.status == 200
    assert json.loads(answer.body)["error_text"] == "ok"


def test_retry_after_is_passed_on() -> None:
    with aioresponses() as mock:
        mock.post(URL, status=429, body=b"slow down", headers={"Retry-After": "12"},
                  response_class=Response)
        answer = post(b"{}", mock)
    assert (answer.status, answer.body, answer.retry_after) == (429, b"slow down", "12")


@pytest.mark.parametrize(
    ("exception", "reason", "maybe_sent"),
    [
        (TimeoutError(), "timeout", True),
        (aiohttp.ServerDisconnectedError(), "disconnected", True),
        (aiohttp.ClientPayloadError("broken"), "disconnected", True),
        (aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey(
                "api.example.com", 443, True, True, None, None, None),
            OSError(111, "Connection refused")), "connect_failed", False),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection_error", True),
    ],
)
def test_no_answer_becomes_unanswered(
    exception: Exception, reason: str, maybe_sent: bool
) -> None:
    with aioresponses() as mock:
        mock.post(URL, exception=exception)
        with pytest.raises(Unanswered) as caught:
            post(b"{}", mock)
    assert (caught.value.reason, caught.value.maybe_sent) == (reason, maybe_sent)
