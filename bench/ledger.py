"""The ``ledger`` section: a run with a 10,000,000-entry --ledger next to the same run without.

A nightly import consults the ledger for every row. With ten million entries already in it
(years of nights), a 1,000,000-row dry run, half of whose rows the ledger holds, should take
at most 1.1x its time without a ledger; a send at ``--rate 0`` should keep at least 90% of
its rate while it claims and records each row there.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from bench import summary
from bench.common import DATA, mock_process, put_section, run_cli, timed_run
from bench.xlsx import machine_header

ROUNDS = 3  # interleaved; the best of each: this machine's runs vary by 10-15%
SECTION_TITLE = "## Ledger"
RESULTS = Path(__file__).with_name("RESULTS.md")


def _email(i: int) -> str:
    return f"customer{i}@example{i % 97}.com"


def _ledger(entries: int, in_csv: int) -> Path:
    """A ledger of ``entries`` engagements in workflow 1: every other one of the CSV's first
    ``in_csv`` emails, and the rest other people's. Built once, in key order (fast)."""
    from batch_engage.ledger import SCHEMA  # noqa: PLC0415

    path = DATA / f"ledger-v1-{entries}-{in_csv}.sqlite"
    if path.exists():
        return path
    started = time.monotonic()
    keys = [_email(i) for i in range(0, in_csv, 2)]
    keys += [f"other{i}@example{i % 89}.org" for i in range(entries - len(keys))]
    keys.sort()
    part = path.with_suffix(".part")
    part.unlink(missing_ok=True)
    db = sqlite3.connect(part, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # a bench fixture, rebuilt if a crash spoils it
    db.executescript(SCHEMA)
    db.execute("INSERT INTO runs (folder) VALUES ('/nightly/runs/earlier')")
    db.execute("BEGIN")
    at = time.time() - 86_400
    db.executemany("INSERT INTO entries VALUES (1, 'email', ?, 'ok', 1, 2, ?)",
                   ((k, at) for k in keys))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    part.rename(path)
    print(f"  (built the {entries:,}-entry ledger in {time.monotonic() - started:.0f} s, "
          f"{path.stat().st_size / 2**20:,.0f} MB)")
    return path


def _csv(rows: int, name: str, offset: int = 0) -> Path:
    path = DATA / f"ledger-{name}-{rows}.csv"
    if not path.exists():
        with path.open("w", encoding="utf-8") as f:
            f.write("email,content.first_name,content.n\n")
            f.writelines(f"{_email(offset + i)},Name{i},{i}\n" for i in range(rows))
    return path


def bench_ledger(entries: int, dry_rows: int, send_rows: int, stamp: str) -> None:
    print(f"Ledger with {entries:,} entries (best of {ROUNDS}, interleaved):")
    ledger = _ledger(entries, dry_rows)
    data = _csv(dry_rows, "dry")
    without, with_ledger = [], []
    for round_ in range(ROUNDS):
        out = DATA / f"out-ledger-{stamp}-dry-{round_}"
        seconds, _ = run_cli(["run", str(data), "-w", "1", "--dry-run", "-q", "--out",
                              str(out)])
        without.append(seconds)
        seconds, _ = run_cli(["run", str(data), "-w", "1", "--dry-run", "-q", "--out",
                              str(out) + "-ledger", "--ledger", str(ledger)])
        with_ledger.append(seconds)
    base, timed = min(without), min(with_ledger)
    dry = (f"| dry run of {dry_rows:,} rows, half of them in the ledger (whole process) "
           f"| {timed:.2f} s; without a ledger {base:.2f} s | {timed / base:.2f}x "
           "| at most 1.10x |")
    print(f"  dry run of {dry_rows:,} rows, half of them in the ledger: {timed:.2f} s with it, "
          f"{base:.2f} s without: {timed / base:.2f}x (target: at most 1.10x)")
    summary.add(f"dry run of {dry_rows:,} rows with a {entries:,}-entry ledger (best of "
                f"{ROUNDS})", f"{timed:.2f} s", f"without a ledger: {base:.2f} s",
                f"{timed / base:.2f}x", "at most 1.10x", timed / base <= 1.10)

    # Each send gets a copy of the ledger and rows nobody engaged yet, so every round
    # sends them all; the copy is made before the clock starts.
    token = "bench-token"
    server, url = mock_process(token, 0)
    try:
        plain, claimed = [], []
        for round_ in range(ROUNDS):
            fresh = _csv(send_rows, f"send{round_}", offset=10_000_000 * (round_ + 1))
            out = DATA / f"out-ledger-{stamp}-send-{round_}"
            plain.append(timed_run(fresh, url, token, out, concurrency=32))
            copy = DATA / f"ledger-copy-{stamp}.sqlite"
            shutil.copyfile(ledger, copy)
            claimed.append(timed_run(fresh, url, token, out.with_name(out.name + "-ledger"),
                                     concurrency=32, extra=("--ledger", str(copy))))
            for leftover in DATA.glob(f"{copy.name}*"):
                leftover.unlink()
    finally:
        server.terminate()
        server.wait()
    base, timed = min(plain), min(claimed)
    send = (f"| send of {send_rows:,} rows, --rate 0 --concurrency 32, mock server answering "
            f"at once (the run's own duration) | {send_rows / timed:,.0f} rows/s; without a "
            f"ledger {send_rows / base:,.0f} rows/s | {base / timed:.0%} | at least 90% |")
    print(f"  send of {send_rows:,} rows, --rate 0 --concurrency 32: "
          f"{send_rows / timed:,.0f} rows/s with it, {send_rows / base:,.0f} without: "
          f"{base / timed:.0%} of the rate (target: at least 90%)")
    summary.add(f"send of {send_rows:,} rows, --rate 0, with that ledger (best of {ROUNDS})",
                f"{send_rows / timed:,.0f} rows/s", f"without a ledger: "
                f"{send_rows / base:,.0f} rows/s", f"{base / timed:.0%}", "at least 90%",
                base / timed >= 0.9)
    load = os.getloadavg()
    put_section(RESULTS, SECTION_TITLE, "\n".join([
        SECTION_TITLE, "",
        f"{dt.datetime.now():%Y-%m-%d %H:%M} (local time); load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; a ledger of {entries:,} engagements in "
        f"one workflow ({ledger.stat().st_size / 2**20:,.0f} MB), best of {ROUNDS} runs each, "
        "interleaved.",
        "Command: `python -m bench ledger` (sizes: `--ledger-entries`, `--csv-rows`, "
        "`--send-rows`).", "",
        "| measure | with the ledger; without | ratio | target |",
        "|---|---|---:|---|", dry, send, ""]), machine_header())
    print(f"  (written to {RESULTS})")
    sys.stdout.flush()
