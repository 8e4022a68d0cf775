"""The ``frame`` section: a dry run from a pandas DataFrame (``run(options, frame=df)``).

A process of its own (started through ``bench.spawn``) builds a 6-column DataFrame (email,
first name, an int, a float, a date, a phone as int64), 1,000,000 rows by default, and
dry-runs it. Figures, from ``/proc/self/status`` at each step:

- the frame's own size, ``memory_usage(deep=True)``;
- the peak RSS of the dry run, counted from before the frame was built, as a multiple of
  the frame's size (target: under 1.5x, i.e. the run adds little beyond the frame). The
  high-water mark is reset once the frame is built (``/proc/self/clear_refs``), so that
  building it is not counted;
- the dry run's rows per second;
- the same dry run without the duplicate check (``allow_duplicates``), whose index of
  identifiers is most of what a run adds: what reading the frame itself adds;
- baselines in the same process: the rows read alone, by ``FrameTable`` (columns turned
  into text a chunk at a time) and by ``itertuples`` (each value through the same rules);
  and the same rows written with ``to_csv`` and dry-run from that file.

``python -m bench.frame ROWS FOLDER`` is the child's side; it prints its figures as JSON.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import summary
from bench.common import DATA, measure

MB = 2**20


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Start the high-water mark again from the RSS now (Linux 4.0 and later)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")
    return _status("VmRSS")


def build(rows: int) -> Any:
    import numpy as np  # noqa: PLC0415  (in the child: the parent's own RSS stays out of it)
    import pandas as pd  # noqa: PLC0415

    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "email": [f"customer{i}@example{i % 97}.com" for i in range(rows)],
        "content.first_name": [f"Name{i}" for i in range(rows)],
        "content.visits": rng.integers(0, 100, rows),
        "content.balance": np.round(rng.random(rows) * 1000, 2),
        "content.birthday": pd.Timestamp("1980-01-01") + pd.to_timedelta(
            rng.integers(0, 9000, rows), unit="D"),
        "content.phone": 79000000000 + np.arange(rows, dtype=np.int64),
    })


def child(rows: int, folder: Path) -> dict[str, float]:
    """Build the frame, dry-run it and the baselines; the figures, in bytes and seconds."""
    import pandas as pd  # noqa: F401, PLC0415  (imported before the first RSS figure)

    from batch_engage import RunOptions, run  # noqa: PLC0415
    from batch_engage.frame import FrameTable, _text  # noqa: PLC0415

    before = _reset_peak()
    frame = build(rows)
    size = int(frame.memory_usage(deep=True).sum())
    built = _reset_peak()
    start = time.perf_counter()
    summary = run(RunOptions(input=Path("bench.dataframe"), workflow_id=1, dry_run=True,
                             quiet=True, out=folder / "frame"), frame=frame)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    if summary.outcomes["valid"] != rows:
        sys.exit(f"the dry run did not take every row: {summary.outcomes}")
    unchecked_start = _reset_peak()
    start = time.perf_counter()
    run(RunOptions(input=Path("bench.dataframe"), workflow_id=1, dry_run=True, quiet=True,
                   allow_duplicates=True, out=folder / "frame-all"), frame=frame)
    unchecked_seconds = time.perf_counter() - start
    unchecked_growth = _status("VmHWM") - unchecked_start

    start = time.perf_counter()
    for _ in FrameTable(frame, Path("bench.dataframe")).records():
        pass
    read_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for values in frame.itertuples(index=False, name=None):
        [_text(v) for v in values]
    tuples_seconds = time.perf_counter() - start

    csv_start = _reset_peak()
    start = time.perf_counter()
    csv = folder / "frame.csv"
    frame.to_csv(csv, index=False)
    to_csv_seconds = time.perf_counter() - start
    run(RunOptions(input=csv, workflow_id=1, dry_run=True, quiet=True, out=folder / "csv"))
    csv_seconds = time.perf_counter() - start - to_csv_seconds
    return {"size": size, "before": before, "built": built, "peak": peak,
            "seconds": seconds, "unchecked_seconds": unchecked_seconds,
            "unchecked_growth": unchecked_growth, "read_seconds": read_seconds,
            "tuples_seconds": tuples_seconds, "to_csv_seconds": to_csv_seconds,
            "csv_seconds": csv_seconds, "csv_growth": _status("VmHWM") - csv_start,
            "csv_bytes": csv.stat().st_size}


def bench_frame(rows: int, stamp: str) -> None:
    folder = DATA / f"out-frame-{stamp}"
    folder.mkdir()
    try:
        done = measure([sys.executable, "-m", "bench.frame", str(rows), str(folder)],
                       capture=True)
    finally:
        shutil.rmtree(folder)  # three runs' reports and a CSV: 700 MB that tell nothing more
    if done.returncode != 0:
        sys.exit(f"bench.frame failed (exit {done.returncode}): {done.stderr}")
    f = json.loads(done.stdout)
    ratio = (f["peak"] - f["before"]) / f["size"]
    print(f"DataFrame dry-run, {rows:,} rows x 6 columns, the frame "
          f"{f['size'] / MB:.0f} MB (memory_usage(deep=True)):")
    print(f"  {f['seconds']:.1f} s, {rows / f['seconds']:,.0f} rows/s; peak RSS "
          f"{f['peak'] / MB:.0f} MB: {f['before'] / MB:.0f} MB before the frame, "
          f"{(f['built'] - f['before']) / MB:.0f} MB for it once built, "
          f"{(f['peak'] - f['built']) / MB:.0f} MB more during the run")
    print(f"  peak less the RSS before the frame: {ratio:.2f}x the frame "
          f"(target: under 1.5x)")
    print(f"  without the duplicate check: {rows / f['unchecked_seconds']:,.0f} rows/s, "
          f"{f['unchecked_growth'] / MB:.0f} MB more during the run")
    print(f"  reading alone: FrameTable {rows / f['read_seconds']:,.0f} rows/s, "
          f"itertuples {rows / f['tuples_seconds']:,.0f} rows/s")
    print(f"  baseline, to_csv ({f['csv_bytes'] / MB:.0f} MB, {f['to_csv_seconds']:.1f} s) "
          f"then a dry run of the file: {rows / f['csv_seconds']:,.0f} rows/s, "
          f"{f['csv_growth'] / MB:.0f} MB more at its peak")
    print(f"  whole process: {done.seconds:.0f} s, peak RSS {done.peak_bytes / MB:.0f} MB")
    summary.add(f"DataFrame dry run, {rows:,} rows: peak RSS less the RSS before the frame",
                f"{(f['peak'] - f['before']) / MB:.0f} MB", f"the frame: {f['size'] / MB:.0f} "
                "MB (memory_usage(deep=True))", f"{ratio:.2f}x", "under 1.5x", ratio < 1.5)


if __name__ == "__main__":
    json.dump(child(int(sys.argv[1]), Path(sys.argv[2])), sys.stdout)
