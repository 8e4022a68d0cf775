"""The one table ``make bench`` ends with: each figure beside its baseline from the same run.

Sections add their headline figures here as they measure them; ``write`` prints the table
and puts it in ``bench/RESULTS.md`` under "## Summary", with the machine described at the
top of that file. A section run alone (``python -m bench ledger``) replaces its own rows and
keeps the others', each row saying when it was measured (kept in ``bench/data/``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import DATA, git_head, put_section

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLE = "## Summary"
KEPT = DATA / "summary.json"


@dataclass(frozen=True)
class Figure:
    section: str
    when: str
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
section = ""
"""The section measuring now (set by ``bench.__main__``)."""


def add(measure: str, figure: str, baseline: str, ratio: str, target: str,  # noqa: PLR0917
        met: bool | None) -> None:
    FIGURES.append(Figure(section, time.strftime("%Y-%m-%d %H:%M"), measure, figure,
                          baseline, ratio, target, met))


def write(sections: list[str], order: tuple[str, ...]) -> None:
    if not FIGURES:
        return
    kept = [Figure(**f) for f in json.loads(KEPT.read_text("utf-8"))] if KEPT.exists() else []
    ran = {f.section for f in FIGURES}
    figures = sorted([f for f in kept if f.section not in ran] + FIGURES,
                     key=lambda f: order.index(f.section) if f.section in order else 99)
    KEPT.write_text(json.dumps([asdict(f) for f in figures], indent=1), "utf-8")
    verdict = {True: "yes", False: "**no**", None: ""}
    rows = ["| section | measure | figure | baseline (same run) | ratio | target | met |",
            "|---|---|---:|---:|---:|---|---|"]
    rows += [f"| {f.section} ({f.when}) | {f.measure} | {f.figure} | {f.baseline} | "
             f"{f.ratio} | {f.target} | {verdict[f.met]} |" for f in figures]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join([
        TITLE, "",
        f"Last written {time.strftime('%Y-%m-%d %H:%M')} (local time), git {git_head()}, by "
        f"the sections {', '.join(sections)}; load average at the end {load} on "
        f"{os.cpu_count()} CPUs ({platform.machine()}, Python {platform.python_version()}; "
        "the machine is described at the top of this file). One run of each figure unless "
        "the measure says best of N; the mock server runs in a process of its own. Each "
        "section's own part below has its details.", "",
        *rows, ""])
    print()
    print("\n".join(rows))
    put_section(RESULTS, TITLE, text, "# Benchmark results\n")
    print(f"(written to {RESULTS})")
