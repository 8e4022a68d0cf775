"""The ``web`` section: ``batch-engage serve`` and the mock API, each a real process of its own.

Two acceptance points of the web page, measured from an aiohttp client here, as browser tabs
would use the page (the key cookie taken once from ``/?key=...``):

- **Check stays responsive**: a CSV of 100,000 rows (``email,first_name,content.promo_code``,
  a few invalid and duplicate rows) is uploaded, then the mapping form the page renders is
  posted to ``/uploads/<id>/check``, three times; seconds from that POST to the whole result
  page (target: under 5 s). Meanwhile another connection GETs ``/runs`` every 20 ms; the max
  and p95 of its answers' latency (target: max under 200 ms). Baselines: the same GET while
  the page is idle, and ``batch-engage run --dry-run`` of the same file and mapping in a
  process of its own. Done with the data folder empty, and again at the end with the runs
  below in it (``/runs`` reads every run's files).
- **Watching costs the run nothing**: a 20,000-row CSV is uploaded and checked, then sent
  (``kind=full``, the Check page's send form) with ``serve --rate 0``, several times (each
  for a workflow id of its own: the data folder's ledger skips whom an earlier run engaged
  in the same workflow), alternately with
  no tab open and with three server-sent-event readers on ``/runs/<id>/events``, each
  reading its stream to the end as an EventSource does. ``summary.requests_per_second`` of
  each run, from ``/api/runs/<id>`` (polled every 250 ms, with or without tabs); best of
  each kind (other work on the machine only slows a run), then the ratio (target: at least
  0.95). The serve process's CPU seconds per run give the same ratio with less of the
  machine's noise in it.
- One more run with no tab, while another connection GETs ``/runs`` every 20 ms: the
  page's latency while it sends (no target; the runs share the page's event loop).

The mock API answers at once, so the run's own CPU is its limit and any cost of the tabs
shows. The table also goes to ``bench/RESULTS.md``, section "Web page".
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import DATA, git_head, put_section, run_cli
from bench.xlsx import machine_header, source_digest

# The page's forms are read as the endpoint tests read them: one parser for both.
from tests.test_web import counts, mapping_form

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION_TITLE = "## Web page"
MOCK_TOKEN = "mock-token"  # the mock server's default token
WORKFLOW_ID = "1"
PING_PATH = "/runs"
PING_EVERY = 0.020
IDLE_SECONDS = 1.0
POLL_EVERY = 0.25
TABS = 3
START_TIMEOUT = 30.0
RUN_TIMEOUT = 300.0
# Bump when the generated CSVs change, so cached files are remade.
GENERATOR_VERSION = 1


# --- input files --------------------------------------------------------------------------------


def web_csv(rows: int, *, problems: bool) -> Path:
    """ROWS data rows; with PROBLEMS, 1 in 200 has a broken e-mail and 1 in 250 repeats the
    e-mail of the row before it (the page lists the first 100 problem rows)."""
    kind = "mixed" if problems else "valid"
    path = DATA / f"web-v{GENERATOR_VERSION}-{kind}-{rows}.csv"
    if path.exists():
        return path
    promos = ("SPRING25", "WELCOME", "VIP", "")
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "first_name", "content.promo_code"])
        for i in range(rows):
            email = f"customer{i}@example{i % 97}.com"
            if problems and i % 200 == 7:
                email = f"customer{i} at example.com"
            elif problems and i % 250 == 11:
                email = f"CUSTOMER{i - 1}@example{(i - 1) % 97}.com"
            w.writerow([email, f"Name{i}", promos[i % 4]])
    tmp.replace(path)
    return path


def cli_config() -> Path:
    """The mapping the page guesses for web_csv's columns, as a ``--config`` for the CLI."""
    path = DATA / "web-columns.toml"
    path.write_text('[columns]\n"first_name" = "content.first_name"\n', "utf-8")
    return path


# --- the two processes ----------------------------------------------------------------------------


@dataclass
class Page:
    base: str
    """``http://127.0.0.1:PORT``."""
    key: str
    pid: int
    """The serve process's."""


def _wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes],
              what: str) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text("utf-8", "replace"))
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"{what} did not start:\n{log.read_text('utf-8', 'replace')[-2000:]}")


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def servers(folder: Path, concurrency: int) -> Iterator[Page]:
    """The mock API and ``batch-engage serve --rate 0`` in front of it, ended on the way out.

    Their output goes to files under FOLDER, so no pipe can fill up and stall them.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("BATCH_ENGAGE_TOKEN", "BATCH_ENGAGE_API_URL")}
    started: list[subprocess.Popen[bytes]] = []
    try:
        mock_log = folder / "mock.log"
        with mock_log.open("wb") as log:
            mock = subprocess.Popen(
                [sys.executable, "-m", "batch_engage", "mock-server", "--port", "0"],
                stdout=log, stderr=log, env=env)
        started.append(mock)
        api_url = _wait_for(mock_log, r"listening on (http://[0-9.:]+)", mock,
                            "the mock server").group(1)
        token_file = folder / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(MOCK_TOKEN, "utf-8")
        serve_log = folder / "serve.log"
        with serve_log.open("wb") as log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "batch_engage", "serve", "--port", "0",
                 "--data-dir", str(folder / "data"), "--api-url", api_url,
                 "--token-file", str(token_file), "--rate", "0",
                 "--concurrency", str(concurrency)],
                stdout=log, stderr=log, env=env)
        started.append(serve)
        found = _wait_for(serve_log, r"(http://127\.0\.0\.1:\d+)/\?key=(\S+)", serve,
                          "batch-engage serve")
        yield Page(found.group(1), found.group(2), serve.pid)
    finally:
        for process in reversed(started):
            _end(process)


# --- a tab ----------------------------------------------------------------------------------------


async def tab(page: Page, connections: int = 1) -> aiohttp.ClientSession:
    """A client with the page's key cookie (HttpOnly, SameSite=Strict: hence unsafe=True,
    as the cookie jar would otherwise keep it from an IP address)."""
    session = aiohttp.ClientSession(
        page.base, cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=RUN_TIMEOUT))
    async with session.get(f"/?key={page.key}") as answer:
        await answer.read()
        if answer.status != 200:
            await session.close()
            sys.exit(f"the page refused its own key: HTTP {answer.status}")
    return session


async def _ok(answer: aiohttp.ClientResponse, what: str) -> str:
    text = await answer.text()
    if answer.status != 200:
        sys.exit(f"{what}: HTTP {answer.status}: {text[:500]}")
    return text


async def upload(session: aiohttp.ClientSession, path: Path) -> tuple[str, str, float]:
    """POST the file; the upload's address, the page it redirects to, and the seconds."""
    form = aiohttp.FormData()
    start = time.perf_counter()
    with path.open("rb") as file:
        form.add_field("file", file, filename=path.name, content_type="text/csv")
        async with session.post("/upload", data=form) as answer:
            html = await _ok(answer, f"upload of {path.name}")
            where = answer.url.path
    return where, html, time.perf_counter() - start


async def check(session: aiohttp.ClientSession, upload_url: str, read_html: str,
                workflow_id: str = WORKFLOW_ID) -> tuple[str, float]:
    """POST the mapping as the page guessed it; the result page and the seconds it took."""
    form = {**mapping_form(read_html), "workflow_id": workflow_id}
    start = time.perf_counter()
    async with session.post(f"{upload_url}/check", data=form) as answer:
        html = await _ok(answer, "check")
    return html, time.perf_counter() - start


# --- 1. Check, and another tab meanwhile -------------------------------------------------------


async def ping(session: aiohttp.ClientSession, stop: asyncio.Event) -> list[float]:
    """GET PING_PATH every PING_EVERY seconds (the next at once when one is late) until STOP;
    each answer's latency, whole body read."""
    latencies = []
    next_at = time.perf_counter()
    while not stop.is_set():
        start = time.perf_counter()
        async with session.get(PING_PATH) as answer:
            await _ok(answer, f"GET {PING_PATH}")
        latencies.append(time.perf_counter() - start)
        next_at = max(next_at + PING_EVERY, time.perf_counter())
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), next_at - time.perf_counter())
    return latencies


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class CheckFigures:
    rows: int
    runs_in_folder: int
    """Runs in the data folder (the page's Runs list, and what GET /runs reads)."""
    megabytes: float
    upload_seconds: float
    check_seconds: list[float]
    counts: dict[str, int]
    busy: list[float]
    """Latencies of another tab's GETs during the Checks."""
    idle: list[float]
    """The same GET with the page idle, just before."""
    serve_cpu: list[float]
    """CPU seconds the serve process spent during each Check (both cores count)."""


async def measure_check(page: Page, path: Path, rows: int, repeats: int,
                        runs_in_folder: int) -> CheckFigures:
    """Upload PATH, ping the idle page for a while, then Check it REPEATS times, another tab
    pinging meanwhile (the latency of a blocked loop depends on how the threads meet)."""
    async with await tab(page) as first, await tab(page) as other:
        upload_url, read_html, upload_seconds = await upload(first, path)
        stop = asyncio.Event()
        pinger = asyncio.create_task(ping(other, stop))
        await asyncio.sleep(IDLE_SECONDS)
        stop.set()
        figures = CheckFigures(rows, runs_in_folder, path.stat().st_size / 2**20,
                               upload_seconds, [], {}, [], await pinger, [])
        for _ in range(repeats):
            stop = asyncio.Event()
            pinger = asyncio.create_task(ping(other, stop))
            cpu_before = _cpu_seconds(page.pid)
            html, seconds = await check(first, upload_url, read_html)
            figures.serve_cpu.append(_cpu_seconds(page.pid) - cpu_before)
            stop.set()
            busy = await pinger
            figures.busy += busy
            figures.check_seconds.append(seconds)
            if figures.counts and counts(html) != figures.counts:
                sys.exit(f"two Checks of one upload differ: {figures.counts}, {counts(html)}")
            figures.counts = counts(html)
            print(f"    {seconds:.2f} s; another tab's GET {PING_PATH}: max {_ms(max(busy))}",
                  flush=True)
    return figures


# --- 2. a run, watched by three tabs or none -----------------------------------------------------


@dataclass
class Watched:
    events: int = 0
    last: dict[str, Any] = field(default_factory=dict)


async def watch(session: aiohttp.ClientSession, run_id: str) -> Watched:
    """Read the run's event stream to its end, as a tab's EventSource does."""
    seen = Watched()
    async with session.get(f"/runs/{run_id}/events") as answer:
        if answer.status != 200:
            sys.exit(f"events of run {run_id}: HTTP {answer.status}")
        async for line in answer.content:
            if line.startswith(b"data: "):
                seen.events += 1
                seen.last = json.loads(line[6:])
    return seen


async def finished(session: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        async with session.get(f"/api/runs/{run_id}") as answer:
            found: dict[str, Any] = json.loads(await _ok(answer, f"run {run_id}"))
        if found["status"] in ("finished", "stopped"):
            return found
        await asyncio.sleep(POLL_EVERY)
    sys.exit(f"run {run_id} did not finish in {RUN_TIMEOUT:.0f} s")


@dataclass
class RunFigures:
    tabs: int
    rate: float
    seconds: float
    events: list[int]
    serve_cpu: float
    """CPU seconds of the serve process from the POST of the send to the end of the run."""
    load: float
    """The 1-minute load average at the end of the run."""
    latencies: list[float]
    """Another tab's GETs of PING_PATH during the run, when it was asked to ping."""


async def one_run(page: Page, session: aiohttp.ClientSession, send_url: str, rows: int, *,
                  tabs: int, pinger: aiohttp.ClientSession | None = None) -> RunFigures:
    """Send, with TABS tabs reading the run's events, and PINGER (another tab) GETting
    PING_PATH meanwhile if given."""
    stop = asyncio.Event()
    pings = asyncio.create_task(ping(pinger, stop)) if pinger is not None else None
    cpu_before = _cpu_seconds(page.pid)
    async with session.post(send_url, data={"kind": "full"}, allow_redirects=False) as answer:
        await answer.read()
        if answer.status != 303:
            sys.exit(f"send: HTTP {answer.status}, expected 303 to the run's page")
        run_id = answer.headers["Location"].rsplit("/", 1)[1]
    viewers = await tab(page, connections=tabs) if tabs else None
    watchers = [asyncio.create_task(watch(viewers, run_id))
                for _ in range(tabs)] if viewers is not None else []
    try:
        found = await finished(session, run_id)
        seen = await asyncio.gather(*watchers)
        serve_cpu = _cpu_seconds(page.pid) - cpu_before
        stop.set()
        latencies = await pings if pings is not None else []
    finally:
        if viewers is not None:
            await viewers.close()
        if pings is not None:
            pings.cancel()
    summary = found["summary"] or {}
    if found["status"] != "finished" or summary.get("outcomes") != {"ok": rows}:
        sys.exit(f"run {run_id} ended {found['status']}: {summary.get('outcomes')}, "
                 f"{summary.get('stopped')}")
    for watched in seen:
        if watched.last.get("status") != "finished":
            sys.exit(f"a tab's stream of run {run_id} ended on {watched.last.get('status')}")
    return RunFigures(tabs, float(summary["requests_per_second"]),
                      float(summary["duration_seconds"]), [w.events for w in seen],
                      serve_cpu, os.getloadavg()[0], latencies)


_runs = itertools.count(1000)


async def checked(session: aiohttp.ClientSession, path: Path, rows: int) -> str:
    """Upload PATH and check it for a workflow of its own; the address of its send form.
    (The data folder's ledger skips whom an earlier run engaged in the same workflow.)"""
    upload_url, read_html, _ = await upload(session, path)
    html, _ = await check(session, upload_url, read_html, str(next(_runs)))
    if counts(html).get("valid") != rows or counts(html).get("engaged"):
        sys.exit(f"the check of {path.name} found {counts(html)}, not {rows:,} valid rows, "
                 "none engaged")
    found = re.search(r'action="(/uploads/\w+/checks/\d+/send)"', html)
    if found is None:
        sys.exit("the check page has no send form")
    return found.group(1)


async def measure_runs(page: Page, path: Path, rows: int, rounds: int
                       ) -> tuple[list[RunFigures], RunFigures]:
    """ROUNDS runs with no tab and with TABS tabs, alternately; then one more with no tab,
    while another tab GETs PING_PATH every PING_EVERY seconds (not in the ratio: the
    pings cost the run some CPU)."""
    async with await tab(page) as session, await tab(page) as other:
        runs = []
        for _ in range(rounds):  # interleaved, to even out the noise
            for tabs in (0, TABS):
                send_url = await checked(session, path, rows)
                runs.append(await one_run(page, session, send_url, rows, tabs=tabs))
                run = runs[-1]
                print(f"    {rows:,} rows, {tabs} tab(s): {run.rate:,.0f} requests/s, serve's "
                      f"CPU {run.serve_cpu:.2f} s, load {run.load:.1f}", flush=True)
        send_url = await checked(session, path, rows)
        pinged = await one_run(page, session, send_url, rows, tabs=0, pinger=other)
        print(f"    {rows:,} rows, no tab, another tab's GET {PING_PATH} meanwhile: "
              f"max {_ms(max(pinged.latencies))}", flush=True)
        return runs, pinged


# --- the section ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _versions() -> str:
    found = []
    for name in ("batch-engage", "aiohttp", "jinja2"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _check_lines(c: CheckFigures, first: bool) -> list[list[str]]:
    folder = "data folder empty" if not c.runs_in_folder else \
        f"data folder holding {c.runs_in_folder} runs"
    repeats = len(c.check_seconds)
    return [
        [f"Check of {c.rows:,} rows, POST to the whole result page, slowest of {repeats} "
         f"({folder})", f"{max(c.check_seconds):.2f} s", "target: under 5 s"],
        *([["  the same dry run by the CLI, whole process (its own duration)", "{cli}",
            "baseline"]] if first else []),
        [f"  another tab's GET {PING_PATH} every 20 ms during these Checks ({len(c.busy)} "
         "requests): max", _ms(max(c.busy)), "target: under 200 ms"],
        ["  the same GETs: p95", _ms(percentile(c.busy, 0.95)), ""],
        [f"  the same GET with the page idle ({len(c.idle)} requests): max, p95",
         f"{_ms(max(c.idle))}, {_ms(percentile(c.idle, 0.95))}", "baseline"],
    ]


def table(checks: list[CheckFigures], runs: list[RunFigures], pinged: RunFigures, *,
          cli_seconds: float, cli_run_seconds: float, send_rows: int, concurrency: int
          ) -> list[list[str]]:
    none = max(r.rate for r in runs if r.tabs == 0)
    watched = max(r.rate for r in runs if r.tabs == TABS)
    cpu_none = statistics.median(r.serve_cpu for r in runs if r.tabs == 0)
    cpu_watched = statistics.median(r.serve_cpu for r in runs if r.tabs == TABS)
    during = pinged.latencies
    rounds = len(runs) // 2
    c = checks[0]
    lines = [
        ["measure", "figure", "target / baseline"],
        [f"Upload of the {c.rows:,}-row CSV ({c.megabytes:.1f} MB), POST to the read page",
         f"{c.upload_seconds:.2f} s", ""],
    ]
    for k, figures in enumerate(checks):
        lines += _check_lines(figures, k == 0)
    cli = f"{cli_seconds:.2f} s ({cli_run_seconds:.2f} s)"
    lines = [[cell.replace("{cli}", cli) for cell in line] for line in lines]
    return [
        *lines,
        [f"Run of {send_rows:,} rows, --rate 0 --concurrency {concurrency}, no tab open, "
         f"best of {rounds}", f"{none:,.0f} requests/s", "baseline"],
        [f"  the same with {TABS} tabs reading its events, best of {rounds}",
         f"{watched:,.0f} requests/s", ""],
        [f"  {TABS} tabs / no tab", f"{watched / none:.2f}", "target: at least 0.95"],
        ["  CPU seconds of the serve process per run, median: no tab, "
         f"{TABS} tabs (no tab / {TABS} tabs)",
         f"{cpu_none:.2f} s, {cpu_watched:.2f} s ({cpu_none / cpu_watched:.2f})",
         "the same ratio, little moved by other work on the machine"],
        [f"Another tab's GET {PING_PATH} during one more run, no tab watching "
         f"({len(during)} requests): max, p95",
         f"{_ms(max(during))}, {_ms(percentile(during, 0.95))}",
         "no target (the Check's: under 200 ms)"],
    ]


def format_text(lines: list[list[str]]) -> str:
    widths = [max(len(line[k]) for line in lines) for k in range(3)]
    return "\n".join(f"{a.ljust(widths[0])}  {b.rjust(widths[1])}  {c}".rstrip()
                     for a, b, c in lines)


def format_markdown(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|---|---:|---|"]
    out += ["| " + " | ".join(cell.strip().replace("|", "\\|") for cell in line) + " |"
            for line in lines[1:]]
    return "\n".join(out)


def write_results(markdown_table: str, notes: list[str], when: dt.datetime,
                  path: Path = RESULTS) -> None:
    """Put the "Web page" section in PATH, replacing the one already there."""
    load = os.getloadavg()
    section = "\n".join([
        SECTION_TITLE,
        "",
        f"{when:%Y-%m-%d %H:%M} (local time); load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {len(os.sched_getaffinity(0))} CPUs "
        f"(the machine described at the top); {_versions()}.",
        "Command: `python -m bench web` (sizes: `--web-check-rows`, `--web-send-rows`, "
        "`--web-rounds`, `--web-concurrency`).",
        "",
        "`batch-engage serve --rate 0` and `batch-engage mock-server` (answering at once) run",
        "as processes of their own; the tabs are aiohttp clients in the bench process, each",
        "holding the key cookie. Latencies are whole answers (body read) on a kept-alive",
        "connection of their own.",
        "",
        markdown_table,
        "",
        *[f"- {note}" for note in notes],
        "",
    ])
    put_section(path, SECTION_TITLE, section, machine_header())


def _cli_dry_run(path: Path, stamp: str) -> tuple[float, float, dict[str, int]]:
    out = DATA / f"out-web-cli-{stamp}"
    seconds, _ = run_cli(["run", str(path), "-w", WORKFLOW_ID, "--config", str(cli_config()),
                          "--dry-run", "-q", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    for name in out.iterdir():
        name.unlink()
    out.rmdir()
    return seconds, float(summary["duration_seconds"]), summary["outcomes"]


def bench_web(check_rows: int, send_rows: int, rounds: int, concurrency: int,
              stamp: str, *, check_repeats: int = 3) -> None:
    print(f"Web page: batch-engage serve --rate 0 --concurrency {concurrency} and the mock API, "
          f"each in its own process", flush=True)
    check_path = web_csv(check_rows, problems=True)
    send_path = web_csv(send_rows, problems=False)
    before = source_digest()
    cli_seconds, cli_run_seconds, cli_outcomes = _cli_dry_run(check_path, stamp)
    with tempfile.TemporaryDirectory(prefix=f"web-{stamp}-", dir=DATA) as tmp, \
            servers(Path(tmp), concurrency) as page:
        print(f"  checks of {check_rows:,} rows, another tab meanwhile, data folder empty ...",
              flush=True)
        checks = [asyncio.run(measure_check(page, check_path, check_rows, check_repeats, 0))]
        print(f"  runs of {send_rows:,} rows, watched by {TABS} tabs or none ...", flush=True)
        runs, pinged = asyncio.run(measure_runs(page, send_path, send_rows, rounds))
        in_folder = len(runs) + 1
        print(f"  checks of {check_rows:,} rows again, {in_folder} runs in the data folder ...",
              flush=True)
        checks.append(asyncio.run(measure_check(page, check_path, check_rows, check_repeats,
                                                in_folder)))
    after = source_digest()
    shown = checks[0].counts
    expected = {"valid": cli_outcomes.get("valid", 0),
                "invalid": cli_outcomes.get("validation", 0),
                "duplicate": cli_outcomes.get("duplicate", 0)}
    notes = [
        f"batch_engage sources measured (sha256 of batch_engage/*.py, first 12): {before}; "
        f"git HEAD {git_head()}"
        + (f"; CHANGED WHILE IT RAN (now {after})" if after != before else ""),
        f"the Check showed {', '.join(f'{k} {v:,}' for k, v in shown.items())}"
        + ("" if all(shown.get(k) == v for k, v in expected.items()) else
           f"; THE CLI'S DRY RUN FOUND {cli_outcomes}"),
        *(f"Checks with {c.runs_in_folder} runs in the data folder (seconds, CPU seconds of "
          f"the serve process): " + "; ".join(
              f"{s:.2f} s, CPU {cpu:.2f} s" for s, cpu in zip(c.check_seconds, c.serve_cpu,
                                                             strict=True))
          for c in checks),
        "runs in order (tabs: requests/s, seconds, serve's CPU seconds, 1-minute load "
        "average after; events each tab read): " + "; ".join(
            f"{r.tabs}: {r.rate:,.0f}/s, {r.seconds:.2f} s, CPU {r.serve_cpu:.2f} s, "
            f"load {r.load:.1f}"
            + (f" ({', '.join(map(str, r.events))})" if r.events else "") for r in runs),
    ]
    lines = table(checks, runs, pinged, cli_seconds=cli_seconds,
                  cli_run_seconds=cli_run_seconds, send_rows=send_rows,
                  concurrency=concurrency)
    print(format_text(lines))
    for note in notes:
        print(f"  {note}")
    write_results(format_markdown(lines), notes, dt.datetime.now())
    print(f"  (written to {RESULTS})")
