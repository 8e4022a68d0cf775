"""The one table ``make bench`` ends with: each figure beside its baseline from the same run.

Sections add their headline figures here as they measure them; ``write`` prints the table
and puts it in ``bench/RESULTS.md`` under "## Summary", with the machine described at the
top of that file. Only the sections that ran this time are in it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import put_section

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLE = "## Summary"


@dataclass(frozen=True)
class Figure:
    measure: str
    figure: str
    baseline: str
    """What the figure is compared with, measured in the same run (or the figure it is
    held to)."""
    ratio: str
    target: str
    met: bool | None
    """None: no target, shown for what it tells."""


FIGURES: list[Figure] = []


def add(measure: str, figure: str, baseline: str, ratio: str, target: str,  # noqa: PLR0917
        met: bool | None) -> None:
    FIGURES.append(Figure(measure, figure, baseline, ratio, target, met))


def _head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def write(sections: list[str]) -> None:
    if not FIGURES:
        return
    verdict = {True: "yes", False: "**no**", None: ""}
    rows = ["| measure | figure | baseline (same run) | ratio | target | met |",
            "|---|---:|---:|---:|---|---|"]
    rows += [f"| {f.measure} | {f.figure} | {f.baseline} | {f.ratio} | {f.target} | "
             f"{verdict[f.met]} |" for f in FIGURES]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join([
        TITLE, "",
        f"{time.strftime('%Y-%m-%d %H:%M')} (local time), git {_head()}; sections: "
        f"{', '.join(sections)}; load average at the end {load} on {os.cpu_count()} CPUs "
        f"({platform.machine()}, Python {platform.python_version()}; the machine is "
        "described at the top of this file). One run of each figure unless the section "
        "says best of N; the mock server runs in a process of its own.", "",
        *rows, ""])
    print()
    print("\n".join(rows))
    put_section(RESULTS, TITLE, text, "# Benchmark results\n")
    print(f"(written to {RESULTS})")
