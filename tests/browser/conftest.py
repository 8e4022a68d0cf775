"""Fixtures for the browser tests of ``batch-engage serve``.

The mock API and the page's server run as processes of their own (one test SIGKILLs the
server and starts it again on the same data folder), started from this source tree. The
browser is Debian's Chromium, driven by Playwright's sync API; Playwright's own browser
download is not needed.

Without Chromium every browser test is skipped, loudly, unless
``BATCH_ENGAGE_REQUIRE_BROWSER=1`` (CI) makes that a failure. With
``BATCH_ENGAGE_SCREENSHOTS=DIR`` (``make screenshots``) the flows save a PNG of each step.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from ..conftest import REPO

REQUIRE_ENV = "BATCH_ENGAGE_REQUIRE_BROWSER"
SHOTS_ENV = "BATCH_ENGAGE_SCREENSHOTS"
CHROMIUM_ENV = "BATCH_ENGAGE_CHROMIUM"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
TOKEN = "mock-token-browser"
"""The one token the mock API accepts (made up)."""
START_SECONDS = 30.0
DONE_MS = 60_000
"""How long a page may take to show Done (the longest flow sends for about 15 s)."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_chromium() -> str | None:
    candidates = [os.environ.get(CHROMIUM_ENV), "/usr/bin/chromium",
                  shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def get_json(url: str) -> Any:
    with _NO_PROXY.open(url, timeout=10) as response:
        return json.load(response)


# --- processes ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """This source tree's batch_engage first; no token or API URL from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_ENGAGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def batch_engage(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``batch-engage ARGS`` to the end, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "batch_engage", *map(str, args)], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=60, check=False)


class Process:
    """``batch-engage ARGS`` in the background, its output (both streams) in a log file."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        self.command = " ".join(["batch-engage", *args])
        self._file: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "batch_engage", *args], cwd=cwd,
                                      env=_env(), stdout=self._file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        deadline = time.monotonic() + START_SECONDS
        while True:
            text = self.output()
            if found := pattern.search(text):
                return found
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.command} ended ({self.popen.returncode}):\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.command} printed no {pattern.pattern!r}:\n{text}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut."""
        self.popen.kill()
        self.popen.wait()
        self._file.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()


class MockApi:
    def __init__(self, process: Process) -> None:
        self.process = process
        self.url = process.wait_for(re.compile(r"listening on (http://[0-9.:]+)"))[1]

    def stats(self) -> dict[str, Any]:
        """``accepted`` (identifier -> times engaged), ``accepted_twice``, ``accepted_total``."""
        data: dict[str, Any] = get_json(f"{self.url}/_mock/stats")
        return data


class Server:
    """``batch-engage serve`` on a port of its own, over a data folder that outlives it."""

    def __init__(self, root: Path, api_url: str, token: str, extra: tuple[str, ...]) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        self.data_dir = root / "data"
        self.token_file = root / "token.txt"
        self.set_token(token)
        self.api_url = api_url
        self.extra = extra
        self.starts = 0
        self.start()

    def set_token(self, token: str) -> None:
        self.token_file.write_text(token + "\n", "utf-8")
        self.token_file.chmod(0o600)

    def start(self) -> None:
        self.starts += 1
        self.process = Process(
            ["serve", "--port", "0", "--data-dir", str(self.data_dir), "--api-url",
             self.api_url, "--token-file", str(self.token_file), *self.extra],
            self.root / f"serve-{self.starts}.log", self.root)
        found = self.process.wait_for(re.compile(r"^\s+((http://\S+)/\?key=(\S+))$", re.M))
        self.url, self.base, self.key = found[1], found[2], found[3]

    def kill(self) -> None:
        self.process.kill()

    def api(self, path: str) -> Any:
        """``GET path`` as a script calls it: the key in the query."""
        return get_json(f"{self.base}{path}?key={self.key}")

    def run_folder(self, run_id: str) -> Path:
        return self.data_dir / "runs" / run_id


StartMock = Callable[..., MockApi]
StartServer = Callable[..., Server]


@pytest.fixture
def start_mock(tmp_path: Path) -> Iterator[StartMock]:
    """``start_mock(*options)``: ``batch-engage mock-server --port 0 --token TOKEN OPTIONS``."""
    started: list[Process] = []

    def start(*options: str) -> MockApi:
        process = Process(["mock-server", "--port", "0", "--token", TOKEN, *options],
                          tmp_path / f"mock-{len(started)}.log", tmp_path)
        started.append(process)
        return MockApi(process)

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_server(tmp_path: Path, start_mock: StartMock) -> Iterator[StartServer]:
    """``start_server(mock, token=TOKEN, extra=())``: ``batch-engage serve`` against it."""
    started: list[Server] = []

    def start(mock: MockApi, token: str = TOKEN, extra: tuple[str, ...] = ()) -> Server:
        server = Server(tmp_path / f"serve{len(started)}", mock.url, token, extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.stop()


# --- the browser ----------------------------------------------------------------------------


# Per module, not per session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and the test modules after these call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = find_chromium()
    if path is None:
        message = (f"NO CHROMIUM: the browser tests of `batch-engage serve` did not run. "
                   f"Install Debian's chromium (apt-get install chromium) or set "
                   f"{CHROMIUM_ENV} to a Chromium executable.")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_ENV}=1: a browser is required)", pytrace=False)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    made.set_default_timeout(30_000)
    yield made
    made.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


class Shots:
    """A full-page PNG of a step, when BATCH_ENGAGE_SCREENSHOTS names a folder."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def __call__(self, page: Page, name: str, *, full_page: bool = True) -> None:
        """``full_page=False`` for a modal dialog: its backdrop covers only the viewport."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if full_page:  # no focus ring on the field filled last
            page.evaluate("document.activeElement?.blur()")
        page.screenshot(path=self.folder / f"{name}.png", full_page=full_page,
                        animations="disabled")


@pytest.fixture
def shot() -> Shots:
    folder = os.environ.get(SHOTS_ENV)
    return Shots(Path(folder).resolve() if folder else None)


# --- the steps of the page ------------------------------------------------------------------


def upload(page: Page, server: Server, path: Path, shot: Shots | None = None) -> str:
    """Open the page with its key, upload ``path``; return the id of the upload."""
    page.goto(server.url)
    expect(page).not_to_have_url(re.compile(r"key="))  # the key went into the cookie
    if shot:
        shot(page, "01-upload")
    page.get_by_label("Spreadsheet").set_input_files(path)
    page.wait_for_url(re.compile(r"/uploads/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[1]


def fill(page: Page, fields: dict[str, str]) -> None:
    """Fill the mapping's fields by their labels ("Workflow id", "Resource id", "Rate"...)."""
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)


def counts(page: Page) -> dict[str, int]:
    """The numbers the page shows in its ``data-count`` elements."""
    found = {}
    for element in page.locator("[data-count]").all():
        name = element.get_attribute("data-count")
        assert name is not None
        found[name] = int(element.inner_text().replace(",", "").strip())
    return found


def check(page: Page) -> dict[str, int]:
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible()
    return counts(page)


def send(page: Page, shot: Shots | None = None) -> str:
    """Send, then Confirm; return the run's id (the last part of the run page's address)."""
    page.get_by_role("button", name="Send", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    if shot:
        shot(page, "04-confirm", full_page=False)
    dialog.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    return page.url.rsplit("/", 1)[1]


def _wait_end(page: Page) -> str:
    """Wait until the run page shows how the run ended ("Done" or "Stopped"); which one."""
    heading = page.get_by_role("heading", name=re.compile(r"^(Done|Stopped)$"))
    expect(heading).to_be_visible(timeout=DONE_MS)
    return heading.inner_text()


def wait_done(page: Page) -> None:
    ended = _wait_end(page)
    assert ended == "Done", page.get_by_role("main").inner_text()


def wait_stopped(page: Page) -> None:
    ended = _wait_end(page)
    assert ended == "Stopped", page.get_by_role("main").inner_text()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()


def live_done(page: Page) -> int:
    """The live "Done" counter: rows done so far (its text is "N of M rows")."""
    text = page.locator("[data-field=done]").inner_text()
    found = re.match(r"([\d,]+)", text)
    return int(found[1].replace(",", "")) if found else 0


def wait_live_done(page: Page, at_least: int) -> int:
    deadline = time.monotonic() + DONE_MS / 1000
    while (done := live_done(page)) < at_least:
        assert time.monotonic() < deadline, f"the page shows {done} rows done, not {at_least}"
        page.wait_for_timeout(100)
    return done


def download(page: Page, name: str) -> bytes:
    with page.expect_download() as info:
        page.get_by_role("link", name=name, exact=True).click()
    return Path(info.value.path()).read_bytes()


def wait_until(what: str, condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {seconds:g} s"
        time.sleep(0.1)


# --- files ----------------------------------------------------------------------------------


def write_emails(path: Path, count: int, prefix: str = "client") -> list[str]:
    """A CSV of ``count`` valid rows (email, first name); returns the emails."""
    emails = [f"{prefix}{i:03d}@shop-mail.ru" for i in range(1, count + 1)]
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "first_name"])
        writer.writerows([email, f"Name {i}"] for i, email in enumerate(emails, 1))
    return emails


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.DictReader(file))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))
