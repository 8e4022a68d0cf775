"""The web page's endpoints, in-process: every step, every refusal, and the token nowhere.

Each test runs the page's aiohttp app and the project's mock API on one event loop, with
aiohttp's test client; every response body is kept, so a test can search them all for the
token at the end.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from batch_engage.mock_server import MockConfig, MockServer, serve_in_thread
from batch_engage.options import Secret
from batch_engage.web import ServeConfig, make_app
from batch_engage.web.security import cookie_name

from .conftest import SAMPLES, read_csv

KEY = "k" * 32
TOKEN = "tok-5be0e41f-secret"
Test = Callable[["Page"], Awaitable[None]]


class Page:
    """A browser's view: the test client with the key cookie, keeping every body it got."""

    def __init__(self, client: TestClient[Any, Any], mock: MockServer, data: Path) -> None:
        self.client = client
        self.mock = mock
        self.data = data
        self.bodies: list[bytes] = []

    async def request(self, method: str, path: str, *, expect: int = 200,
                      **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        kw.setdefault("allow_redirects", True)
        response = await self.client.request(method, path, **kw)
        body = await response.read()
        self.bodies.append(body)
        assert response.status == expect, (response.status, body[:500])
        return response, body.decode("utf-8", "replace")

    async def get(self, path: str, **kw: Any) -> str:
        return (await self.request("GET", path, **kw))[1]

    async def post(self, path: str, **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        return await self.request("POST", path, **kw)

    async def send(self, check_html: str, **fields: str) -> str:
        """Press Send (or, with kind="test", Test send) on a Check's page: the run's id."""
        response, _ = await self.post(send_url(check_html), data={"kind": "full", **fields})
        return response.url.path.rsplit("/", 1)[1]

    async def login(self) -> None:
        await self.get(f"/?key={KEY}")

    async def upload(self, path: Path, name: str | None = None, *, expect: int = 200
                     ) -> tuple[aiohttp.ClientResponse, str]:
        form = FormData()
        form.add_field("file", io.BytesIO(path.read_bytes()), filename=name or path.name)
        return await self.post("/upload", data=form, expect=expect)

    async def check(self, upload_url: str, **fields: str) -> str:
        html = await self.get(upload_url)
        form = mapping_form(html)
        form.update(fields)
        return (await self.post(f"{upload_url}/check", data=form))[1]

    async def wait(self, run_id: str, *statuses: str, seconds: float = 30) -> dict[str, Any]:
        for _ in range(int(seconds * 20)):
            found: dict[str, Any] = json.loads(await self.get(f"/api/runs/{run_id}"))
            if found["status"] in statuses:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} stayed {found['status']}")


def mapping_form(html: str) -> dict[str, str]:
    """The mapping form's fields as the page filled them in (what a browser would post)."""
    form = html[html.index('action="/uploads/'):]
    fields = {}
    for name, value in re.findall(r'<input name="(\w+)"[^>]*?value="([^"]*)"', form):
        fields[name] = value
    for name, body in re.findall(r'<select name="(\w+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', body)
        fields[name] = chosen.group(1) if chosen else ""
    sheet = re.search(r'<input type="hidden" name="sheet" value="([^"]*)"', form)
    if sheet:
        fields["sheet"] = sheet.group(1)
    return fields


def counts(html: str) -> dict[str, int]:
    return {k: int(v.replace(",", "")) for k, v in
            re.findall(r'data-count="(\w+)">([\d,]+)<', html)}


def send_url(html: str) -> str:
    found = re.search(r'action="(/uploads/\w+/checks/\d+/send)"', html)
    assert found, html
    return found.group(1)


@asynccontextmanager
async def serving(tmp_path: Path, *, mock: MockConfig | None = None, token: str | None = TOKEN,
                  **config: Any) -> AsyncIterator[Page]:
    server = MockServer(mock or MockConfig(token=TOKEN))
    runner, url = await server.start()
    data = tmp_path / "data"
    config.setdefault("api_url", url)
    app = make_app(ServeConfig(
        data_dir=data, access_key=KEY, token=lambda: Secret(token) if token else None,
        **config))
    try:
        async with TestClient(TestServer(app)) as client:
            yield Page(client, server, data)
    finally:
        await runner.cleanup()


def page_test(tmp_path: Path, test: Test, **kw: Any) -> Page:
    """Run one page test; afterwards the token must be in no response and no file."""
    seen: list[Page] = []

    async def main() -> None:
        async with serving(tmp_path, **kw) as page:
            seen.append(page)
            await test(page)
            # Let finished runs close their files before the folder is read.
            await asyncio.sleep(0)

    asyncio.run(main())
    page = seen[0]
    for body in page.bodies:
        assert TOKEN.encode() not in body
    for path in page.data.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    return page


def emails_csv(tmp_path: Path, count: int, *, bad: int = 0, name: str = "list.csv") -> Path:
    lines = ["email,first_name"] + [f"user{i}@example.com,User {i}" for i in range(count)]
    lines += [f"broken{i},Broken" for i in range(bad)]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


# --- who may use the page ------------------------------------------------------------------


def test_without_the_key_every_page_is_refused_and_the_key_sets_a_strict_cookie(
    tmp_path: Path
) -> None:
    async def test(page: Page) -> None:
        for path in ("/", "/runs", "/api/runs", "/static/style.css", "/uploads/x"):
            _, text = await page.request("GET", path, expect=403)
            assert "access key" in text
        await page.request("GET", "/?key=wrong", expect=403)
        response, _ = await page.request("GET", f"/runs?key={KEY}", allow_redirects=False,
                                         expect=302)
        assert response.headers["Location"] == "/runs"  # the key leaves the address bar
        cookie = response.cookies[cookie_name(page.client.port)]  # type: ignore[arg-type]
        assert cookie.value == KEY
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        await page.get("/runs")  # now the cookie opens it
        assert json.loads(await page.get("/api/runs")) == []

    page_test(tmp_path, test)


def test_a_script_may_give_the_key_in_the_query_of_an_api_call(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        assert json.loads(await page.get(f"/api/runs?key={KEY}")) == []

    page_test(tmp_path, test)


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:80", "127.0.0.2:1"])
def test_a_foreign_host_is_refused_even_with_the_key(tmp_path: Path, host: str) -> None:
    """DNS rebinding: a page on evil.example.com that resolves to 127.0.0.1."""
    async def test(page: Page) -> None:
        await page.login()
        _, text = await page.request("GET", f"/?key={KEY}", headers={"Host": host},
                                     expect=403)
        assert "open the address that batch-engage serve printed" in text

    page_test(tmp_path, test)


def test_the_public_url_is_the_one_other_host_accepted(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        await page.get("/", headers={"Host": "engage.example.com"})
        await page.request("GET", "/", headers={"Host": "other.example.com"}, expect=403)

    page_test(tmp_path, test, public_url="https://engage.example.com")


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null"])
def test_a_post_from_another_site_is_refused(tmp_path: Path, origin: str) -> None:
    async def test(page: Page) -> None:
        await page.login()
        form = FormData()
        form.add_field("file", io.BytesIO(b"email\na@example.com\n"), filename="a.csv")
        await page.post("/upload", data=form, headers={"Origin": origin}, expect=403)
        assert not any((page.data / "uploads").iterdir())

    page_test(tmp_path, test)


def test_a_post_from_the_page_itself_or_a_keyed_script_without_origin_is_taken(
    tmp_path: Path
) -> None:
    async def test(page: Page) -> None:
        await page.login()
        origin = f"http://127.0.0.1:{page.client.port}"
        form = FormData()
        form.add_field("file", io.BytesIO(b"email\na@example.com\n"), filename="a.csv")
        await page.post("/upload", data=form, headers={"Origin": origin})
        page.client.session.cookie_jar.clear()
        form = FormData()
        form.add_field("file", io.BytesIO(b"email\na@example.com\n"), filename="a.csv")
        await page.post("/upload", data=form, expect=403)  # no Origin, no key

    page_test(tmp_path, test)


# --- uploads -------------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_while_it_streams(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_text("email\n" + "a@example.com\n" * 200_000, "utf-8")  # 2.8 MB

    sent = [0]

    async def chunks() -> AsyncIterator[bytes]:
        """An upload of 64 MB: far more than the server should read before refusing."""
        yield b"email\n"
        for _ in range(1024):
            sent[0] += 1
            yield b"a@example.com\n" * 4681  # 64 KiB

    async def test(page: Page) -> None:
        await page.login()
        _, text = await page.upload(big, expect=413)
        assert "larger than 1 MB" in text
        assert "--max-upload-mb" in text
        # Without a Content-Length (chunked), the limit holds while the bytes arrive.
        writer = aiohttp.MultipartWriter("form-data")
        part = writer.append(chunks())
        part.set_content_disposition("form-data", name="file", filename="big.csv")
        try:
            _, text = await page.post("/upload", data=writer, expect=413)
            assert "larger than 1 MB" in text
        except aiohttp.ClientOSError:
            pass  # the server may close the connection while the client still writes
        assert sent[0] < 128  # it stopped reading soon after the first megabyte
        assert not any((page.data / "uploads").iterdir())  # nothing half-kept

    page_test(tmp_path, test, max_upload_mb=1)


def test_an_upload_name_is_never_a_path(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        source = emails_csv(tmp_path, 2)
        response, text = await page.upload(source, name="../../../escape.csv")
        assert "escape.csv" in text
        upload_id = response.url.path.rsplit("/", 1)[1]
        stored = page.data / "uploads" / upload_id
        assert sorted(p.name for p in stored.iterdir()) == ["input.csv", "upload.json"]
        assert not (tmp_path / "escape.csv").exists()
        assert not list(tmp_path.rglob("escape.csv"))

    page_test(tmp_path, test)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("report.pdf", b"%PDF-1.4 ...", "unknown file type .pdf"),
    ("old.xls", b"\xd0\xcf\x11\xe0", ".xls files are not read; open it in your spreadsheet"),
    ("photo.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "photo.csv"),
    ("empty.csv", b"", "empty.csv is empty"),
])
def test_a_file_the_cli_refuses_gets_the_clis_message_under_its_own_name(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    async def test(page: Page) -> None:
        await page.login()
        path = tmp_path / "upload"
        path.write_bytes(content)
        _, text = await page.upload(path, name=name, expect=400)
        assert message in text.replace("&#39;", "'")
        assert "input." not in text  # the name we stored it under is ours, not theirs
        assert not any((page.data / "uploads").iterdir())

    page_test(tmp_path, test)


# --- the steps -----------------------------------------------------------------------------


def test_every_step_from_upload_to_downloads(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, html = await page.upload(SAMPLES / "customers.csv")
        upload_url = response.url.path
        assert "What was read" in html
        assert "utf-8" in html
        assert "comma" in html
        assert "anna.smirnova@mail.ru" in html  # the first rows, as read
        assert re.search(r'name="role_0"[^>]*>.*?<option value="email" selected', html, re.S)
        html = await page.check(upload_url, workflow_id="12", resource_id="7")
        assert counts(html) == {"valid": 4, "invalid": 3, "duplicate": 1, "hidden": 0,
                                "blank": 1}
        assert "row 5, column email" in html  # a problem row with its message
        assert "repeats row 3, so it was not sent again<" in html  # no --allow-duplicates
        assert "UTF-8" in await page.get(upload_url)
        assert html.count('class="body"') == 3
        assert "&#34;token&#34;: &#34;***&#34;" in html
        assert "Send 4 rows to workflow 12?" in html
        problems = re.search(r'href="(/uploads/\w+/checks/\d+/failed.csv)"', html)
        assert problems is not None
        rows = list(csv.DictReader(io.StringIO(
            (await page.get(problems.group(1))).lstrip("\ufeff"))))
        assert [r["_row"] for r in rows] == ["5", "6", "7", "8"]
        await page.request("GET", problems.group(1).replace("/checks/", "/checks/9"),
                           expect=404)
        run_id = await page.send(html)
        found = await page.wait(run_id, "finished")
        assert found["summary"]["outcomes"] == {"ok": 4, "validation": 3, "duplicate": 1}
        html = await page.get(f"/runs/{run_id}")
        for name in ("success.csv", "failed.csv", "summary.json", "mapping.toml"):
            assert f">{name}</a>" in html
            body = await page.get(f"/runs/{run_id}/files/{name}")
            assert body.encode() == (page.data / "runs" / run_id / name).read_bytes()
        assert sum(page.mock.stats.accepted.values()) == 4
        assert not [k for k, n in page.mock.stats.accepted.items() if n > 1]
        listed = json.loads(await page.get("/api/runs"))
        assert [(r["id"], r["status"]) for r in listed] == [(run_id, "finished")]
        assert "Run of customers.csv" in html

    page_test(tmp_path, test)


def test_a_workbook_offers_its_sheets_and_its_run_writes_failed_xlsx(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "Notes"
    first.append(["nothing here"])
    sheet = book.create_sheet("Clients")
    sheet.append(["Phone", "Name"])
    sheet.append([79001234567, "Ivan"])
    sheet.append(["not a phone", "Olga"])
    path = tmp_path / "clients.xlsx"
    book.save(path)

    async def test(page: Page) -> None:
        await page.login()
        response, html = await page.upload(path)
        assert '<option value="Clients"' in html
        assert "Sheet" in html
        html = await page.get(f"{response.url.path}?sheet=Clients")
        assert "79001234567" in html
        form = mapping_form(html)
        assert form["sheet"] == "Clients"
        assert form["matching"] == "phone"
        html = (await page.post(f"{response.url.path}/check", data={
            **form, "workflow_id": "45", "phone_region": "RU"}))[1]
        assert counts(html)["valid"] == 1
        assert counts(html)["invalid"] == 1
        run_id = await page.send(html)
        await page.wait(run_id, "finished")
        assert ">failed.xlsx</a>" in await page.get(f"/runs/{run_id}")
        body = (await page.request("GET", f"/runs/{run_id}/files/failed.xlsx"))[0]
        assert body.status == 200

    page_test(tmp_path, test)


def test_a_mapping_the_form_cannot_take_says_which_field_to_fix(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 2))
        upload = response.url.path
        for fields, message in [
            ({"workflow_id": ""}, "Workflow id is required"),
            ({"workflow_id": "twelve"}, "Workflow id must be a whole number"),
            ({"workflow_id": "1", "rate": "50"}, "Rate must be above 0 and at most 10"),
            ({"workflow_id": "1", "concurrency": "99"}, "Concurrency must be at most 8"),
            ({"workflow_id": "1", "phone_region": "Russia"}, "Phone region must be a two"),
            ({"workflow_id": "1", "content": "no equals sign"}, "line 1: 'no equals sign' is"),
            ({"workflow_id": "1", "matching": "phone"}, "--matching phone needs a column"),
        ]:
            html = await page.get(upload)
            form = {**mapping_form(html), **fields}
            _, text = await page.post(f"{upload}/check", data=form, expect=400)
            assert message in text.replace("&#39;", "'"), (fields, text[:2000])

    page_test(tmp_path, test)


def test_a_second_send_with_the_same_token_waits_in_a_visible_queue(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        sends = []
        for name, workflow in (("a.csv", "3"), ("b.csv", "4")):
            response, _ = await page.upload(emails_csv(tmp_path, 6, name=name))
            html = await page.check(response.url.path, workflow_id=workflow)
            sends.append(send_url(html))
        first = (await page.post(sends[0], data={"kind": "full"}))[0].url.path.split("/")[-1]
        second = (await page.post(sends[1], data={"kind": "full"}))[0].url.path.split("/")[-1]
        assert json.loads(await page.get(f"/api/runs/{second}")) == {
            "id": second, "status": "queued", "summary": None}
        assert "position <span data-field=\"queue_position\">1</span>" in await page.get(
            f"/runs/{second}")
        await page.wait(first, "finished")
        await page.wait(second, "finished")
        assert sum(page.mock.stats.accepted.values()) == 12

    page_test(tmp_path, test, mock=MockConfig(token=TOKEN, latency_ms=100))


def test_stop_then_resume_sends_every_row_exactly_once(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 40))
        html = await page.check(response.url.path, workflow_id="3", rate="10")
        run_id = await page.send(html)
        await asyncio.sleep(0.5)
        await page.post(f"/runs/{run_id}/stop")
        stopped = await page.wait(run_id, "stopped")
        assert stopped["summary"]["stopped"] == "stopped from the page"
        sent = sum(page.mock.stats.accepted.values())
        assert 0 < sent < 40
        html = await page.get(f"/runs/{run_id}")
        assert ">Resume</button>" in html
        assert "You stopped this run." in html
        assert 'role="alert"' not in html  # a stop asked for is no error
        await page.post(f"/runs/{run_id}/resume")
        finished = await page.wait(run_id, "finished")
        assert finished["summary"]["outcomes"] == {"ok": 40}
        assert sorted(page.mock.stats.accepted.values()) == [1] * 40

    page_test(tmp_path, test, rate=10)


def test_a_test_send_then_the_send_of_the_rest_engages_no_one_twice(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 8, bad=1))
        upload = response.url.path
        html = await page.check(upload, workflow_id="3")
        test_id = await page.send(html, kind="test", rows="3")
        done = await page.wait(test_id, "finished")
        assert done["summary"]["outcomes"]["ok"] == 3
        assert set(page.mock.stats.accepted) == {f"user{i}@example.com" for i in range(3)}
        html = await page.check(upload, workflow_id="3")
        assert counts(html)["engaged"] == 3
        assert "Send 5 rows to workflow 3?" in html
        run_id = await page.send(html)
        finished = await page.wait(run_id, "finished")
        assert finished["summary"]["skipped"] == {"already_engaged": 3}
        assert sorted(page.mock.stats.accepted.values()) == [1] * 8
        skipped = read_csv(page.data / "runs" / run_id / "skipped.csv")
        assert [r["_reason"] for r in skipped] == ["already_engaged"] * 3

    page_test(tmp_path, test)


def test_a_refused_token_stops_the_run_and_says_what_to_do(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 3))
        html = await page.check(response.url.path, workflow_id="3")
        run_id = await page.send(html)
        await page.wait(run_id, "stopped")
        html = await page.get(f"/runs/{run_id}")
        assert "The API refused the token</strong> (error 401, API token required)" in html
        assert "fix the API token (put the right token in ~/tok)" in html
        assert "--token-file" not in html  # the command line's advice is not the page's
        assert ">Resume</button>" in html

    page_test(tmp_path, test, mock=MockConfig(token="another-token"),
              token_hint="put the right token in ~/tok")


def test_without_a_server_token_the_page_asks_for_one_per_run(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 2))
        html = await page.check(response.url.path, workflow_id="3")
        assert 'name="token" type="password"' in html
        await page.post(send_url(html), data={"kind": "full"}, expect=400)
        response, _ = await page.post(send_url(html), data={"kind": "full", "token": TOKEN})
        run_id = response.url.path.rsplit("/", 1)[1]
        await page.wait(run_id, "finished")
        assert sum(page.mock.stats.accepted.values()) == 2

    page_test(tmp_path, test, token=None)


def test_a_fixed_failed_csv_is_offered_the_mapping_of_its_run(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 2, bad=2))
        html = await page.check(response.url.path, workflow_id="77")
        run_id = await page.send(html)
        await page.wait(run_id, "finished")
        failed = await page.get(f"/runs/{run_id}/files/failed.csv")
        fixed = tmp_path / "failed.csv"
        fixed.write_text(failed.replace("broken0,", "fixed0@example.com,").replace(
            "broken1,", "fixed1@example.com,"), "utf-8")
        response, html = await page.upload(fixed)
        assert "the mapping of the run of" in html
        form = mapping_form(html)
        assert form["workflow_id"] == "77"
        html = (await page.post(f"{response.url.path}/check", data=form))[1]
        assert counts(html)["valid"] == 2
        await page.wait(await page.send(html), "finished")
        assert sorted(page.mock.stats.accepted) == [
            "fixed0@example.com", "fixed1@example.com", "user0@example.com",
            "user1@example.com"]

    page_test(tmp_path, test)


@pytest.mark.parametrize("path", [
    "/runs/{run}/files/journal.sqlite",
    "/runs/{run}/files/..%2F..%2Fpages%2F{run}.json",
    "/runs/{run}/files/%2e%2e",
    "/runs/..%2Fuploads/files/summary.json",
    "/runs/nope/files/summary.json",
])
def test_downloads_come_only_from_the_runs_own_folder(tmp_path: Path, path: str) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 1))
        html = await page.check(response.url.path, workflow_id="3")
        run_id = await page.send(html)
        await page.wait(run_id, "finished")
        await page.request("GET", path.format(run=run_id), expect=404)

    page_test(tmp_path, test)


def test_check_of_a_large_file_leaves_the_page_answering(tmp_path: Path) -> None:
    """The dry run goes to a worker thread: other tabs are served meanwhile."""
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 60_000))
        check = asyncio.create_task(page.check(response.url.path, workflow_id="3"))
        answered = 0
        while not check.done():
            await page.get("/static/style.css")
            answered += 1
            await asyncio.sleep(0.01)
        assert counts(await check)["valid"] == 60_000
        assert answered > 3

    page_test(tmp_path, test)


def test_a_runs_files_are_the_users_alone(tmp_path: Path) -> None:
    """Folders the page makes are 0700; with serve's umask, files are 0600."""
    async def test(page: Page) -> None:
        await page.login()
        await page.upload(emails_csv(tmp_path, 1))
        for folder in (page.data, page.data / "uploads", page.data / "runs"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        upload = next((page.data / "uploads").iterdir())
        assert stat.S_IMODE(upload.stat().st_mode) == 0o700

    page_test(tmp_path, test)


def test_mapping_toml_runs_the_same_way_from_the_cli(tmp_path: Path, invoke: Any) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(SAMPLES / "clients_cp1251.csv")
        html = await page.check(response.url.path, workflow_id="31")
        await page.wait(await page.send(html), "finished")

    page = page_test(tmp_path, test)
    run = next((page.data / "runs").iterdir())
    result = invoke("run", SAMPLES / "clients_cp1251.csv", "--config", run / "mapping.toml",
                    "--dry-run", "--out", tmp_path / "cli")
    assert result.exit_code in (0, 1), result.output
    page_summary = json.loads((run / "summary.json").read_text("utf-8"))
    cli_summary = json.loads((tmp_path / "cli" / "summary.json").read_text("utf-8"))
    assert cli_summary["outcomes"].get("valid", 0) == page_summary["outcomes"]["ok"]
    assert cli_summary["errors"] == page_summary["errors"]



def test_the_served_process_keeps_its_files_to_its_user_and_the_token_out_of_its_output(
    tmp_path: Path
) -> None:
    """`batch-engage serve` for real: a run's files are 0600 in 0700 folders; start-up
    prints the key address; Ctrl-C stops the server; the token is in no output."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, "utf-8")
    token_file.chmod(0o600)
    data = tmp_path / "data"
    with serve_in_thread(MockConfig(token=TOKEN)) as mock:
        server = subprocess.Popen(
            [sys.executable, "-m", "batch_engage", "serve", "--port", "0", "--data-dir",
             str(data), "--api-url", mock.url, "--token-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONWARNINGS": "error"})
        try:
            assert server.stdout is not None
            printed = ""
            while "?key=" not in printed:
                line = server.stdout.readline()
                assert line, server.stderr.read() if server.stderr else ""
                printed += line
            url = re.search(r"http://\S+\?key=\S+", printed)
            assert url is not None

            async def use() -> None:
                jar = aiohttp.CookieJar(unsafe=True)
                async with aiohttp.ClientSession(cookie_jar=jar) as session:
                    async with session.get(url.group(0)) as response:
                        assert response.status == 200
                    form = FormData()
                    form.add_field("file", io.BytesIO(b"email\na@example.com\n"),
                                   filename="a.csv")
                    async with session.post(url.group(0).split("?")[0] + "upload",
                                            data=form) as response:
                        html = await response.text()
                        upload = str(response.url)
                    fields = {**mapping_form(html), "workflow_id": "5"}
                    async with session.post(upload + "/check", data=fields) as response:
                        html = await response.text()
                    base = upload.split("/uploads/", maxsplit=1)[0]
                    async with session.post(base + send_url(html), data={"kind": "full"}
                                            ) as response:
                        run_url = str(response.url)
                    for _ in range(200):
                        async with session.get(
                                run_url.replace("/runs/", "/api/runs/")) as response:
                            if (await response.json())["status"] == "finished":
                                return
                        await asyncio.sleep(0.05)
                    raise AssertionError("the run did not finish")

            asyncio.run(use())
        finally:
            server.send_signal(signal.SIGINT)
            out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert sum(mock.stats.accepted.values()) == 1
    assert TOKEN not in printed + out + err
    run = next((data / "runs").iterdir())
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes()
    assert (run / "success.csv").is_file()


def test_send_pressed_twice_for_one_file_engages_no_one_twice(tmp_path: Path) -> None:
    """The second Send is queued behind the first, and skips whom the first engaged."""
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 5))
        html = await page.check(response.url.path, workflow_id="3")
        first = await page.send(html)
        second = await page.send(html)
        await page.wait(first, "finished")
        done = await page.wait(second, "finished")
        assert done["summary"]["skipped"] == {"already_engaged": 5}
        assert sorted(page.mock.stats.accepted.values()) == [1] * 5
        html = await page.check(response.url.path, workflow_id="3")
        assert counts(html)["engaged"] == 5
        assert "Nothing left to send: earlier runs engaged every valid row" in html
        html = await page.check(response.url.path, workflow_id="4")  # another workflow
        assert "engaged" not in counts(html)

    page_test(tmp_path, test, mock=MockConfig(token=TOKEN, latency_ms=50))


def test_attachment_files_are_added_beside_the_upload_and_sent(tmp_path: Path) -> None:
    """The attachments sample: the page takes its files, and Check agrees with the CLI."""
    async def test(page: Page) -> None:
        await page.login()
        response, html = await page.upload(SAMPLES / "attachments.csv")
        upload = response.url.path
        assert "Attachment files" in html
        form = FormData()
        for path in (SAMPLES / "files").iterdir():
            form.add_field("files", io.BytesIO(path.read_bytes()), filename=path.name)
        _, html = await page.post(f"{upload}/attachments", data=form)
        assert "<li>order-1001.csv</li>" in html
        assert "<li>日本.txt</li>" in html
        html = await page.check(upload, workflow_id="12", matching="profile_id")
        assert (counts(html)["valid"], counts(html)["invalid"]) == (2, 2)
        assert "of this upload" in html
        assert "--attach-dir" not in html
        assert str(page.data) not in html  # no server folder shown
        await page.wait(await page.send(html), "finished")
        assert sum(page.mock.stats.accepted.values()) == 2

    page_test(tmp_path, test)


@pytest.mark.parametrize("name", ["../escape.txt", ".hidden", "..", "a\\..\\..\\b.txt"])
def test_an_attachment_name_is_a_plain_name_or_refused(tmp_path: Path, name: str) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(SAMPLES / "attachments.csv")
        form = FormData()
        form.add_field("files", io.BytesIO(b"x"), filename=name)
        _, _html = await page.post(f"{response.url.path}/attachments", data=form,
                                  expect=(200 if name.endswith(".txt") else 400))
        files = page.data / "uploads" / response.url.path.rsplit("/", 1)[1] / "files"
        kept = sorted(p.name for p in files.iterdir())
        assert kept == ([name.replace("\\", "/").rsplit("/", 1)[-1]]
                        if name.endswith(".txt") else [])
        assert not list(tmp_path.glob("escape.txt"))

    page_test(tmp_path, test)


def test_tabs_get_live_progress_as_server_sent_events_until_the_run_ends(
    tmp_path: Path
) -> None:
    async def read_events(page: Page, run_id: str) -> list[dict[str, Any]]:
        events = []
        async with page.client.get(f"/runs/{run_id}/events") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            async for line in response.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
        return events

    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 12, bad=1))
        html = await page.check(response.url.path, workflow_id="3", rate="6")
        run_id = await page.send(html)
        tabs = await asyncio.gather(*(read_events(page, run_id) for _ in range(3)))
        for events in tabs:
            assert {e["status"] for e in events[:-1]} <= {"queued", "sending"}
            last = events[-1]
            assert (last["status"], last["summary"]["outcomes"]) == (
                "finished", {"ok": 12, "validation": 1})
            live = [e["progress"] for e in events if e["progress"]]
            assert len(live) >= 3  # the rows arrive over two seconds at 6 a second
            done = [p["done"] for p in live]
            assert done == sorted(done)
            assert live[-1]["total"] == 13
            assert live[-1]["text"]["done"] == f"{live[-1]['done']} of 13 rows"
            failed = [p for p in live if p["failed"]]
            assert failed
            assert failed[-1]["errors"][0]["error"] == "invalid_email"

    page_test(tmp_path, test, rate=6)


def test_a_server_without_an_api_url_checks_files_but_offers_no_send(tmp_path: Path) -> None:
    async def test(page: Page) -> None:
        await page.login()
        response, _ = await page.upload(emails_csv(tmp_path, 2))
        html = await page.check(response.url.path, workflow_id="3")
        assert counts(html)["valid"] == 2
        assert "can check files but not send them" in html
        assert "/send" not in html

    page_test(tmp_path, test, api_url=None)
