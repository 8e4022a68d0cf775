"""The aiohttp transport with the network mocked by aioresponses: what each failure becomes."""

from __future__ import annotations

import asyncio
import json
import ssl
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


def post(body: bytes, mock: aioresponses, api_url: str = "https://api.example.com/") -> Answer:
    async def main() -> Answer:
        async with aiohttp.ClientSession() as session:
            return await aiohttp_transport(session, api_url, 5)(body)

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
    assert calls[0].kwargs["headers"] == {
        "Content-Type": "application/json", "Accept": "application/json"}
    assert calls[0].kwargs["allow_redirects"] is False
    assert calls[0].kwargs["timeout"] == aiohttp.ClientTimeout(total=5)  # --timeout, per request
    assert answer.status == 200
    assert json.loads(answer.body)["error_text"] == "ok"


@pytest.mark.parametrize(
    ("api_url", "endpoint"),
    [
        ("https://api.example.com", URL),
        ("https://api.example.com//", URL),
        # A gateway's path prefix is kept: only the slashes at the end are dropped.
        ("https://gw.example.com/SANDBOX/", "https://gw.example.com/SANDBOX/api/v1.1/workflows/start"),
    ],
)
def test_the_endpoint_is_appended_to_the_api_url(api_url: str, endpoint: str) -> None:
    with aioresponses() as mock:
        mock.post(endpoint, status=200, payload={"data": None, "error": 0, "error_text": "ok"},
                  response_class=Response)
        answer = post(b"{}", mock, api_url)
        (_, url), _ = next(iter(mock.requests.items()))
    assert str(url) == endpoint
    assert answer.status == 200


def test_retry_after_is_passed_on() -> None:
    with aioresponses() as mock:
        mock.post(URL, status=429, body=b"slow down", headers={"Retry-After": "12"},
                  response_class=Response)
        answer = post(b"{}", mock)
    assert (answer.status, answer.body, answer.retry_after) == (429, b"slow down", "12")


@pytest.mark.parametrize(
    "read_error",
    [aiohttp.ClientPayloadError("Response payload is not completed"),
     aiohttp.ServerDisconnectedError()],
)
def test_an_answer_cut_off_in_its_body_keeps_its_status(read_error: Exception) -> None:
    """The API had begun to answer, so it got the request: that is no "no answer"."""

    class CutOff(Response):
        """The status and the headers arrived, then the line broke during the body."""

        async def read(self) -> bytes:
            raise read_error

    with aioresponses() as mock:
        mock.post(URL, status=503, body=b'{"data": null, "err', headers={"Retry-After": "7"},
                  response_class=CutOff)
        answer = post(b"{}", mock)
    assert answer == Answer(503, b"", "7", cut_off=True)


CONNECTION_KEY = aiohttp.client_reqrep.ConnectionKey(
    "api.example.com", 443, True, True, None, None, None)
CERTIFICATE_ERROR = ssl.SSLCertVerificationError(
    1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")


@pytest.mark.parametrize(
    ("exception", "reason", "text", "maybe_sent", "fatal"),
    [
        (TimeoutError(), "timeout", "no answer within --timeout 5 s", True, False),
        (aiohttp.ServerDisconnectedError(), "disconnected",
         "the server closed the connection before answering", True, False),
        (aiohttp.ClientPayloadError("broken"), "disconnected",
         "the connection broke while the answer arrived", True, False),
        (aiohttp.ClientConnectorError(CONNECTION_KEY, OSError(111, "Connection refused")),
         "connect_failed", f"cannot connect to {URL}: [Errno 111] Connection refused",
         False, False),
        (aiohttp.ClientConnectorCertificateError(CONNECTION_KEY, CERTIFICATE_ERROR),
         "tls_error", "the server's TLS certificate is not trusted ([SSL: "
         "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate); "
         "fix the certificate, or for a test server only, add --no-verify-tls", False, True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "connection_error",
         "ClientOSError: [Errno 104] Connection reset by peer", True, False),
    ],
)
def test_no_answer_becomes_unanswered(
    exception: Exception, reason: str, text: str, maybe_sent: bool, fatal: bool
) -> None:
    """Each says what happened, whether the API may have acted, and whether to stop."""
    with aioresponses() as mock:
        mock.post(URL, exception=exception)
        with pytest.raises(Unanswered) as caught:
            post(b"{}", mock)
    error = caught.value
    assert (error.reason, error.text, error.maybe_sent, error.fatal) == (
        reason, text, maybe_sent, fatal)
    assert str(error) == text  # what a traceback or a log line shows
