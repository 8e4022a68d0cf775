"""Measure batch-engage and print figures next to baselines measured in the same run.

- ``dry-run``: a 1,000,000-row CSV dry-run, rows/s and peak RSS of the real CLI process
  (targets: 100,000 rows/s, under 150 MB) beside ``pandas.read_csv(chunksize)`` reading it;
  the same matched by phone (target: 50,000 rows/s); a 10,000,000-row one's peak RSS
  (``--csv-max-rows``; target: at most 1.2x the 1,000,000-row figure); a 100,000-row XLSX
  against ``pandas.read_excel(engine="openpyxl")`` on the same file (target: at least 5x).
- ``start``: when the first request of a run over the 1,000,000-row CSV reaches the mock
  server, from the process's start (target: under 0.3 s), beside a process that only
  imports asyncio and aiohttp.
- ``rate``: ``--rate 50`` over 1,000 rows against a fast mock server: the busiest 1-second
  window of the server's own receive times (target: at most 51) and the mean rate (at least
  47/s).
- ``throughput``: 20,000 rows with ``--rate 0 --concurrency 32`` against a mock server in
  its own process (answering at once, then after 20 ms like a real API), next to the same
  run with the journal's writes switched off (target: the journal keeps at least 90% of the
  rate) and to a bare aiohttp loop posting the same bodies to the same server, on asyncio's
  loop (the target's baseline) and on uvloop's (batch-engage's where installed), and on
  uvloop with a durable mark before each request: the least SPEC's rule for a kill or a
  power loss costs any client (``bench/bare_client.py``).
- ``xlsx``: an Excel-like 10-column workbook of 100,000 rows and one of 1,048,575 (Excel's
  limit with the header), read by pandas, openpyxl, python-calamine and batch-engage's
  reader, and sent through a whole CLI dry run, each in its own process: seconds, rows/s,
  peak RSS (targets: pandas takes at least 5x the reader's time on 100,000 rows; the dry
  run stays under 300 MB on the big one). Slow baselines are skipped on the big file. The
  table also goes to ``bench/RESULTS.md``.
- ``web``: ``batch-engage serve --rate 0`` and the mock API as processes of their own. The
  Check of a 100,000-row CSV (target: under 5 s) while another connection GETs ``/runs``
  every 20 ms (target: max latency under 200 ms), next to the CLI's dry run and the idle
  page, with the data folder empty and then holding the runs; a 20,000-row run watched by
  three event-stream tabs and by none, alternately (target: at least 95% of the unwatched
  rate). The table also goes to ``bench/RESULTS.md``.
- ``ledger``: a 1,000,000-row dry run (``--csv-rows``) and a 20,000-row send at
  ``--rate 0`` (``--send-rows``), each with a 10,000,000-entry ``--ledger`` and without
  (targets: the dry run at most 1.1x, the send at least 90% of the rate).
- ``frame``: a 1,000,000-row, 6-column pandas DataFrame dry-run through
  ``run(options, frame=df)``: rows/s, and the peak RSS beyond what the process held before
  the frame was built, as a multiple of the frame's own size (target: under 1.5x); next to
  reading it with ``itertuples`` and to a ``to_csv`` of it dry-run from the file.

The run ends with one table of the headline figures of the sections that ran, each
beside its baseline from the same run (``bench/summary.py``), also in ``bench/RESULTS.md``.

Peak RSS is each process's own: commands start from the small ``bench/spawn.py``, since
Linux would count this process's memory in a child it starts directly.

Pick sections and lower sizes for a quick look:
``python -m bench rate throughput --csv-rows 100000 --send-rows 5000``,
``python -m bench xlsx --xlsx-max-rows 0``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openpyxl
import pandas as pd

from bench import summary
from bench.common import DATA, id_config, measure, mock_process, run_cli, timed_run
from bench.frame import bench_frame
from bench.ledger import bench_ledger
from bench.web import bench_web
from bench.xlsx import bench_xlsx

# batch_engage is imported where it is used: the xlsx section still measures its baselines
# while batch_engage's reader is being rewritten and does not import.


def make_csv(path: Path, rows: int) -> None:
    rnd = random.Random(1)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "phone", "content.first_name", "content.promo_code",
                    "content.order.total", "content.items", "resource_id"])
        for i in range(rows):
            w.writerow([f"customer{i}@example{i % 97}.com", f"+7900{i:07d}", f"Name{i}",
                        rnd.choice(["SPRING25", "WELCOME", "VIP"]), f"{rnd.random() * 1000:.2f}",
                        '["Red dress","Silk scarf"]' if i % 3 == 0 else "", str(i % 5 + 1)])


def make_xlsx(path: Path, rows: int) -> None:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Customers")
    ws.append(["phone", "content.customer_id", "content.name", "content.birthday",
               "content.balance", "content.visits"])
    day = dt.date(1980, 1, 1)
    for i in range(rows):
        ws.append([79000000000 + i, f"{i:08d}", f"Name {i}", day + dt.timedelta(days=i % 9000),
                   round(i * 1.25, 2), i % 50])
    wb.save(path)


def read_all(path: Path) -> int:
    """The XLSX path alone: every cell as the text the user sees, nothing mapped."""
    from batch_engage.reader import open_table  # noqa: PLC0415  (see the imports)

    table = open_table(path)
    try:
        return sum(len(r.cells) for r in table.records())
    finally:
        table.close()


PANDAS_CSV = ("import sys, time, pandas as pd\n"
              "t = time.perf_counter()\n"
              "n = sum(len(c) for c in pd.read_csv(sys.argv[1], chunksize=100_000, dtype=str))\n"
              "print(time.perf_counter() - t)\n")


def _csv(rows: int) -> Path:
    path = DATA / f"customers-{rows}.csv"
    if not path.exists():
        print(f"(writing {path.name} once: {rows:,} rows)", flush=True)
        make_csv(path, rows)
    return path


def bench_dry_run(csv_rows: int, csv_max_rows: int, xlsx_rows: int, stamp: str) -> None:
    import batch_engage.reader  # noqa: F401, PLC0415  (before the clock starts in read_all)

    csv_path = _csv(csv_rows)
    seconds, peak = run_cli(["run", str(csv_path), "-w", "1", "--dry-run", "-q",
                             "--out", str(DATA / f"out-csv-{stamp}")])
    pandas = measure([sys.executable, "-c", PANDAS_CSV, str(csv_path)], capture=True)
    pandas_seconds = float(pandas.stdout)
    print(f"CSV dry-run, {csv_rows:,} rows: {seconds:.1f} s, "
          f"{csv_rows / seconds:,.0f} rows/s, peak RSS {peak / 2**20:.0f} MB "
          f"(targets: 100,000 rows/s, under 150 MB); pandas.read_csv(chunksize=100,000) "
          f"alone: {pandas_seconds:.1f} s, peak RSS {pandas.peak_bytes / 2**20:.0f} MB")
    summary.add(f"CSV dry run, {csv_rows:,} rows, email (whole process)",
                f"{csv_rows / seconds:,.0f} rows/s ({seconds:.1f} s)",
                f"pandas.read_csv(chunksize) alone: {csv_rows / pandas_seconds:,.0f} rows/s",
                f"{pandas_seconds / seconds:.2f}x", "at least 100,000 rows/s",
                csv_rows / seconds >= 100_000)
    summary.add(f"CSV dry run, {csv_rows:,} rows: peak RSS", f"{peak / 2**20:.0f} MB",
                f"pandas.read_csv(chunksize) alone: {pandas.peak_bytes / 2**20:.0f} MB",
                f"{peak / pandas.peak_bytes:.2f}x", "under 150 MB", peak < 150 * 2**20)
    phone_seconds, _ = run_cli(["run", str(csv_path), "-w", "1", "--matching", "phone",
                                "--dry-run", "-q", "--out", str(DATA / f"out-phone-{stamp}")])
    print(f"  the same by phone: {csv_rows / phone_seconds:,.0f} rows/s (target: 50,000)")
    summary.add(f"CSV dry run, {csv_rows:,} rows, phone",
                f"{csv_rows / phone_seconds:,.0f} rows/s ({phone_seconds:.1f} s)",
                f"by email: {csv_rows / seconds:,.0f} rows/s", f"{seconds / phone_seconds:.2f}x",
                "at least 50,000 rows/s", csv_rows / phone_seconds >= 50_000)
    if csv_max_rows:
        big_seconds, big_peak = run_cli(["run", str(_csv(csv_max_rows)), "-w", "1", "--dry-run",
                                         "-q", "--out", str(DATA / f"out-csv-big-{stamp}")])
        print(f"CSV dry-run, {csv_max_rows:,} rows: {big_seconds:.0f} s, "
              f"{csv_max_rows / big_seconds:,.0f} rows/s, peak RSS {big_peak / 2**20:.0f} MB "
              f"({big_peak / peak:.2f}x the {csv_rows:,}-row run's; target: at most 1.2x)")
        summary.add(f"CSV dry run, {csv_max_rows:,} rows: peak RSS",
                    f"{big_peak / 2**20:.0f} MB ({csv_max_rows / big_seconds:,.0f} rows/s)",
                    f"{csv_rows:,} rows: {peak / 2**20:.0f} MB", f"{big_peak / peak:.2f}x",
                    "at most 1.2x", big_peak <= 1.2 * peak)

    xlsx_path = DATA / f"phones-{xlsx_rows}.xlsx"
    if not xlsx_path.exists():
        make_xlsx(xlsx_path, xlsx_rows)
    start = time.perf_counter()
    pd.read_excel(xlsx_path, engine="openpyxl")
    pandas_seconds = time.perf_counter() - start
    start = time.perf_counter()
    read_all(xlsx_path)
    read_seconds = time.perf_counter() - start
    print(f"XLSX, {xlsx_rows:,} rows: batch-engage reader {read_seconds:.2f} s, "
          f'pandas.read_excel(engine="openpyxl") {pandas_seconds:.2f} s: '
          f"reader {pandas_seconds / read_seconds:.1f}x faster (target: at least 5x)")
    for label, extra in [("matched by phone", ["--matching", "phone", "--phone-region", "RU"]),
                         ("matched by customer id", ["--matching", "custom",
                                                     "--field-name", "customer_id",
                                                     "--config", str(id_config())])]:
        seconds, peak = run_cli(["run", str(xlsx_path), "-w", "1", *extra, "--dry-run", "-q",
                                 "--out", str(DATA / f"out-xlsx-{stamp}-{extra[1]}")])
        print(f"  whole dry-run, {label}: {seconds:.2f} s "
              f"({xlsx_rows / seconds:,.0f} rows/s, peak RSS {peak / 2**20:.0f} MB); "
              f"pandas.read_excel alone is {pandas_seconds / seconds:.1f}x that")


def bench_start(csv_rows: int, rounds: int = 5) -> None:
    """The first request's arrival at the mock server, from the process's start."""
    from batch_engage.mock_server import MockConfig, serve_in_thread  # noqa: PLC0415

    data = _csv(csv_rows)
    firsts: list[float] = []
    with serve_in_thread(MockConfig(token="bench-token")) as mock:
        for round_ in range(rounds):
            seen = len(mock.stats.received_at)
            start = time.monotonic()  # the server's clock too: CLOCK_MONOTONIC, one machine
            child = subprocess.Popen(
                [sys.executable, "-m", "batch_engage", "run", str(data), "-w", "1", "--rate",
                 "0", "-q", "--api-url", mock.url, "--out", str(DATA / f"out-start-{round_}-"
                                                                f"{time.time_ns()}")],
                env={**os.environ, "BATCH_ENGAGE_TOKEN": "bench-token"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while len(mock.stats.received_at) == seen and child.poll() is None:
                    time.sleep(0.0005)
            finally:
                child.kill()
                child.wait()
            if len(mock.stats.received_at) == seen:
                sys.exit("the run sent nothing")
            firsts.append(mock.stats.received_at[seen] - start)
    floor = min(measure([sys.executable, "-c", "import asyncio, aiohttp"]).seconds
                for _ in range(rounds))
    first = sorted(firsts)[len(firsts) // 2]
    print(f"First request, {csv_rows:,}-row CSV: {first:.3f} s after the process started "
          f"(median of {rounds}: {', '.join(f'{x:.3f}' for x in firsts)}; target: under 0.3 s); "
          f"a process that only imports asyncio and aiohttp: {floor:.3f} s")
    summary.add(f"first request after start, {csv_rows:,}-row CSV (median of {rounds})",
                f"{first:.3f} s", f"python -c 'import asyncio, aiohttp': {floor:.3f} s",
                f"{first / floor:.2f}x", "under 0.3 s", first < 0.3)


def _emails(rows: int) -> Path:
    path = DATA / f"emails-{rows}.csv"
    if not path.exists():
        path.write_text("email,content.n\n" + "".join(
            f"person{i}@example.com,{i}\n" for i in range(rows)), "utf-8")
    return path


def bench_rate(rows: int, rate: float, stamp: str) -> None:
    from batch_engage.mock_server import MockConfig, serve_in_thread  # noqa: PLC0415

    token = "bench-token"
    with serve_in_thread(MockConfig(token=token)) as mock:
        run_cli(["run", str(_emails(rows)), "-w", "1", "--rate", f"{rate:g}", "-q",
                 "--api-url", mock.url, "--out", str(DATA / f"out-rate-{stamp}")],
                env={"BATCH_ENGAGE_TOKEN": token})
        times = sorted(mock.stats.received_at)
    busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    mean = (len(times) - 1) / (times[-1] - times[0])
    print(f"Rate shape, --rate {rate:g} over {len(times):,} requests: busiest 1-second "
          f"window {busiest} (target: at most {int(rate) + 1}), mean {mean:.1f}/s "
          f"(target: at least {0.94 * rate:.0f}/s), {times[-1] - times[0]:.1f} s in all")


def _accepted(url: str) -> int:
    from batch_engage.mock_server import STATS_PATH  # noqa: PLC0415

    with urllib.request.urlopen(url + STATS_PATH) as answer:
        total: int = json.load(answer)["accepted_total"]
        return total


def bench_throughput(rows: int, concurrency: int, latency_ms: float, stamp: str) -> None:
    from batch_engage.sender import ENDPOINT  # noqa: PLC0415

    token = "bench-token"
    data = _emails(rows)
    dry = DATA / f"out-dry-{latency_ms:g}ms-{stamp}"
    run_cli(["run", str(data), "-w", "1", "--dry-run", "-q", "--out", str(dry)])
    server, url = mock_process(token, latency_ms)
    rounds = 3
    try:
        journal: list[float] = []
        no_journal: list[float] = []
        bare: list[float] = []
        bare_uv: list[float] = []
        bare_marked: list[float] = []
        for round_ in range(rounds):  # interleaved, best of each, to even out the noise
            out = DATA / f"out-tp-{latency_ms:g}ms-{stamp}-{round_}"
            journal.append(timed_run(data, url, token, out, concurrency=concurrency,
                                      module="batch_engage"))
            no_journal.append(timed_run(data, url, token, out.with_name(out.name + "-off"),
                                         concurrency=concurrency, module="bench.no_journal"))
            marks = str(out.with_name(out.name + "-marks"))
            for seconds, extra in ((bare, ["asyncio"]), (bare_uv, ["uvloop"]),
                                   (bare_marked, ["uvloop", marks])):
                done = subprocess.run(
                    [sys.executable, "-m", "bench.bare_client", url + ENDPOINT,
                     str(dry / "requests.jsonl"), str(concurrency), *extra],
                    env={**os.environ, "BENCH_TOKEN": token}, capture_output=True, text=True,
                    check=True)
                seconds.append(float(done.stdout))
        accepted = _accepted(url)
    finally:
        server.terminate()
        server.wait()
    if accepted != 5 * rounds * rows:
        sys.exit(f"the server accepted {accepted} requests, expected {5 * rounds * rows}")
    best_journal, best_off, best_bare = min(journal), min(no_journal), min(bare)
    best_bare_uv, best_marked = min(bare_uv), min(bare_marked)
    print(f"Throughput, {rows:,} rows, --rate 0 --concurrency {concurrency}, mock server in "
          f"its own process answering after {latency_ms:g} ms, best of {rounds}:")
    print(f"  batch-engage:                  {rows / best_journal:7,.0f} rows/s "
          f"({best_journal:.2f} s: read, map, journal, send, report)")
    print(f"  batch-engage, journal off:     {rows / best_off:7,.0f} rows/s "
          f"({best_off:.2f} s); with the journal: {best_off / best_journal:.0%} of that "
          f"(target: at least 90%)")
    print(f"  bare aiohttp loop:             {rows / best_bare:7,.0f} rows/s "
          f"({best_bare:.2f} s: send only); batch-engage: {best_bare / best_journal:.0%} of it")
    print(f"  bare aiohttp loop on uvloop:   {rows / best_bare_uv:7,.0f} rows/s "
          f"({best_bare_uv:.2f} s); batch-engage (on uvloop too): "
          f"{best_bare_uv / best_journal:.0%} of it")
    print(f"  bare loop on uvloop, each request marked durably first (a line and fdatasync, "
          f"one per loop iteration): {rows / best_marked:7,.0f} rows/s ({best_marked:.2f} s); "
          f"{best_bare / best_marked:.2f}x the bare loop's rate; batch-engage: "
          f"{best_marked / best_journal:.0%} of it")
    goal = 0.9 if latency_ms == 0 else 0.97
    summary.add(f"send {rows:,} rows, --rate 0 --concurrency {concurrency}, server answers "
                f"after {latency_ms:g} ms (best of {rounds})",
                f"{rows / best_journal:,.0f} rows/s", f"bare aiohttp loop: "
                f"{rows / best_bare:,.0f} rows/s", f"{best_bare / best_journal:.2f}x",
                f"at least {goal:g}x", best_bare / best_journal >= goal)
    summary.add(f"the same, against a bare loop on uvloop ({latency_ms:g} ms)",
                f"{rows / best_journal:,.0f} rows/s", f"bare aiohttp loop on uvloop: "
                f"{rows / best_bare_uv:,.0f} rows/s", f"{best_bare_uv / best_journal:.2f}x",
                "", None)
    summary.add(f"the same, against a bare loop on uvloop that marks each request durably "
                f"before it leaves, as SPEC's kill and power-loss rule asks ({latency_ms:g} ms)",
                f"{rows / best_journal:,.0f} rows/s", f"bare loop with durable marks: "
                f"{rows / best_marked:,.0f} rows/s ({best_bare / best_marked:.2f}x the bare "
                f"loop's rate)", f"{best_marked / best_journal:.2f}x", "", None)
    summary.add(f"the same, journal on / off ({latency_ms:g} ms)",
                f"{rows / best_journal:,.0f} rows/s", f"journal off: {rows / best_off:,.0f} "
                "rows/s", f"{best_off / best_journal:.2f}x", "", None)


SECTIONS = ("dry-run", "start", "rate", "throughput", "xlsx", "web", "frame", "ledger")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"some of {', '.join(SECTIONS)} [default: all]")
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--csv-max-rows", type=int, default=10_000_000,
                        help="rows of the bigger CSV in dry-run, for its peak RSS; 0 skips it "
                             "[default: 10,000,000]")
    parser.add_argument("--xlsx-rows", type=int, default=100_000,
                        help="data rows of the XLSX in dry-run, and of the smaller workbook in "
                             "xlsx [default: 100,000]")
    parser.add_argument("--xlsx-max-rows", type=int, default=1_048_575,
                        help="data rows of the bigger workbook in xlsx; 0 skips it "
                             "[default: 1,048,575: 1,048,576 with the header, Excel's limit]")
    parser.add_argument("--rate-rows", type=int, default=1000)
    parser.add_argument("--send-rows", type=int, default=20_000)
    parser.add_argument("--web-check-rows", type=int, default=100_000,
                        help="rows of the CSV the web section checks [default: 100,000]")
    parser.add_argument("--web-send-rows", type=int, default=20_000,
                        help="rows of the web section's runs [default: 20,000]")
    parser.add_argument("--web-rounds", type=int, default=3,
                        help="runs with no tab and with three tabs, each [default: 3]")
    parser.add_argument("--web-concurrency", type=int, default=8,
                        help="serve --concurrency in the web section [default: 8, serve's]")
    parser.add_argument("--frame-rows", type=int, default=1_000_000,
                        help="rows of the DataFrame in frame [default: 1,000,000]")
    parser.add_argument("--ledger-entries", type=int, default=10_000_000,
                        help="entries in the ledger section's ledger [default: 10,000,000]")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {', '.join(sorted(unknown))}; pick from "
                     + ", ".join(SECTIONS))
    args.sections = args.sections or SECTIONS
    DATA.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    def starting(section: str) -> bool:
        summary.section = section
        return section in args.sections

    if starting("dry-run"):
        bench_dry_run(args.csv_rows, args.csv_max_rows, args.xlsx_rows, stamp)
    if starting("start"):
        bench_start(args.csv_rows)
    if starting("rate"):
        bench_rate(args.rate_rows, 50, stamp)
    if starting("throughput"):
        # A local mock that answers at once makes the client's CPU the limit; a real API
        # answers in tens of milliseconds, which is what --concurrency is there to hide.
        for latency_ms in (0, 20):
            bench_throughput(args.send_rows, 32, latency_ms, stamp)
    if starting("xlsx"):
        bench_xlsx(args.xlsx_rows, args.xlsx_max_rows, stamp)
    if starting("web"):
        bench_web(args.web_check_rows, args.web_send_rows, args.web_rounds,
                  args.web_concurrency, stamp)
    if starting("frame"):
        bench_frame(args.frame_rows, stamp)
    if starting("ledger"):
        bench_ledger(args.ledger_entries, args.csv_rows, args.send_rows, stamp)
    summary.write(list(args.sections), SECTIONS)


if __name__ == "__main__":
    main()
