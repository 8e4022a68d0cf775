"""Measure the dry-run on big inputs and print figures next to their baselines.

- a 1,000,000-row CSV dry-run: rows/s and peak RSS of the real CLI process
  (target: under 300 MB);
- a 100,000-row XLSX: batch-engage's dry-run against ``pandas.read_excel(engine="openpyxl")``
  on the same file, both timed in this one run (target: at least 5x faster).

Sizes can be lowered for a quick look: ``python -m bench --csv-rows 100000 --xlsx-rows 10000``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pandas as pd

from batch_engage.reader import open_table

DATA = Path(__file__).parent / "data"


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


def run_cli(args: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one batch-engage process, as /usr/bin/time -v reports."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "batch_engage", *args],
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1):
        sys.exit(f"batch-engage {' '.join(args)} exited {child.returncode}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports kilobytes


def read_all(path: Path) -> int:
    """The XLSX path alone: every cell as the text the user sees, nothing mapped."""
    table = open_table(path)
    try:
        return sum(len(r.cells) for r in table.records())
    finally:
        table.close()


def _id_config() -> Path:
    path = DATA / "by-id.toml"
    path.write_text('[columns]\n"content.customer_id" = "field_value"\n', "utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")

    csv_path = DATA / f"customers-{args.csv_rows}.csv"
    if not csv_path.exists():
        make_csv(csv_path, args.csv_rows)
    seconds, peak = run_cli(["run", str(csv_path), "-w", "1", "--dry-run", "-q",
                             "--out", str(DATA / f"out-csv-{stamp}")])
    print(f"CSV dry-run, {args.csv_rows:,} rows: {seconds:.1f} s, "
          f"{args.csv_rows / seconds:,.0f} rows/s, peak RSS {peak / 2**20:.0f} MB "
          f"(target: under 300 MB)")

    xlsx_path = DATA / f"phones-{args.xlsx_rows}.xlsx"
    if not xlsx_path.exists():
        make_xlsx(xlsx_path, args.xlsx_rows)
    start = time.perf_counter()
    pd.read_excel(xlsx_path, engine="openpyxl")
    pandas_seconds = time.perf_counter() - start
    start = time.perf_counter()
    read_all(xlsx_path)
    read_seconds = time.perf_counter() - start
    print(f"XLSX, {args.xlsx_rows:,} rows: batch-engage reader {read_seconds:.2f} s, "
          f'pandas.read_excel(engine="openpyxl") {pandas_seconds:.2f} s: '
          f"reader {pandas_seconds / read_seconds:.1f}x faster (target: at least 5x)")
    for label, extra in [("matched by phone", ["--matching", "phone", "--phone-region", "RU"]),
                         ("matched by customer id", ["--matching", "custom",
                                                     "--field-name", "customer_id",
                                                     "--config", str(_id_config())])]:
        seconds, peak = run_cli(["run", str(xlsx_path), "-w", "1", *extra, "--dry-run", "-q",
                                 "--out", str(DATA / f"out-xlsx-{stamp}-{extra[1]}")])
        print(f"  whole dry-run, {label}: {seconds:.2f} s "
              f"({args.xlsx_rows / seconds:,.0f} rows/s, peak RSS {peak / 2**20:.0f} MB); "
              f"pandas.read_excel alone is {pandas_seconds / seconds:.1f}x that")


if __name__ == "__main__":
    main()
