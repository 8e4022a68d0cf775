"""Turn a finished `mutmut run` into docs/mutation.md: the score per module and every mutant
that no test killed, each either a survivor to kill or an equivalent with its reason.

Run by `make mutate` after `mutmut run`: python tests/mutation/report.py SECONDS > docs/mutation.md

Equivalent mutants (no test can tell them from the code: same behaviour) are listed by name
in tests/mutation/equivalent-MODULE.toml, with the change mutmut made and the reason:

    ["batch_engage.limiter.xǁRateLimiterǁ_record__mutmut_7"]
    change = '''
    -        while self._starts and self._starts[0] <= now - max(window, WINDOW_SECONDS):
    +        while self._starts and self._starts[0] < now - max(window, WINDOW_SECONDS):'''
    reason = "..."
 The change is
compared with today's: when the code moves, a name can come to mean another mutant, and then
the old reason no longer holds; such an entry is reported as stale and counted as a survivor.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MUTMUT = [sys.executable, "-m", "mutmut"]
# mutmut's statuses: what counts as caught, and what was never judged.
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}
UNJUDGED = {"skipped", "not checked", "check was interrupted by user"}
_LINE = re.compile(r"^\s+(\S+): (.+)$")


def results() -> dict[str, str]:
    text = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    found = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def change(name: str) -> str:
    """The lines the mutant removes and adds, without the diff's context."""
    diff = subprocess.run([*MUTMUT, "show", name], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    lines = [line for line in diff.splitlines()
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return "\n".join(line.rstrip() for line in lines)


def module(name: str) -> str:
    return name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else None
    status = results()
    equivalent: dict[str, dict[str, str]] = {}
    for path in sorted(HERE.glob("equivalent-*.toml")):
        equivalent.update(tomllib.loads(path.read_text("utf-8")))
    judged = {n: s for n, s in status.items() if s not in UNJUDGED}
    survivors: dict[str, str] = {}
    equivalents: dict[str, tuple[str, str]] = {}
    stale: list[str] = []
    for name, state in sorted(judged.items()):
        if state in CAUGHT:
            continue
        diff = change(name)
        entry = equivalent.get(name)
        if entry is not None and entry["change"].strip() == diff.strip():
            equivalents[name] = (diff, entry["reason"])
        else:
            if entry is not None:
                stale.append(name)
            survivors[name] = diff
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, state in judged.items():
        counts = per_module[module(name)]
        counts["mutants"] += 1
        if state in CAUGHT:
            counts["caught"] += 1
            counts["by mypy"] += state == "caught by type check"
        elif name in equivalents:
            counts["equivalent"] += 1
        else:
            counts["survived"] += 1

    def score(counts: Counter[str]) -> str:
        judgeable = counts["mutants"] - counts["equivalent"]
        return f"{100 * counts['caught'] / judgeable:.1f}%" if judgeable else "-"

    def by_tests(counts: Counter[str]) -> str:
        """The score among the mutants that pass `mypy --strict`: what the tests alone do."""
        judgeable = counts["mutants"] - counts["equivalent"] - counts["by mypy"]
        caught = counts["caught"] - counts["by mypy"]
        return f"{100 * caught / judgeable:.1f}%" if judgeable else "-"

    total: Counter[str] = sum(per_module.values(), Counter())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    out = [
        "# Mutation testing results",
        "",
        "Written by `make mutate` (mutmut over the modules listed in `[tool.mutmut]` of",
        "`pyproject.toml`, with the fast tests); do not edit by hand. A mutant is a small bug",
        "put into the code on purpose; it is *caught* when a test fails. Equivalent mutants",
        "behave exactly like the code, so no test can catch them; each is listed below with the",
        "reason, from `tests/mutation/equivalent-*.toml`.",
        "",
        f"- commit `{commit}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"mutmut {_version()}",
    ]
    if seconds is not None:
        out.append(f"- `make mutate` took {seconds / 60:.0f} minutes on this machine")
    out += [
        f"- **mutation score {score(total)}**: {total['caught']:,} caught of "
        f"{total['mutants'] - total['equivalent']:,} mutants "
        f"({total['equivalent']:,} equivalent left out, {total['survived']:,} survived); "
        f"{total['by mypy']:,} of the caught are refused by `mypy --strict` (which `make lint` "
        f"runs on every change) before any test runs; of the mutants mypy accepts, the tests "
        f"catch {by_tests(total)}",
        "",
        "| module | mutants | caught by tests | caught by mypy | equivalent | survived | score "
        "| tests alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, counts in sorted(per_module.items()):
        out.append(f"| `{name}` | {counts['mutants']:,} | "
                   f"{counts['caught'] - counts['by mypy']:,} | {counts['by mypy']:,} | "
                   f"{counts['equivalent']:,} | {counts['survived']:,} | {score(counts)} | "
                   f"{by_tests(counts)} |")
    out += ["", f"## Survivors ({len(survivors)})", ""]
    if not survivors:
        out.append("None.")
    if stale:
        out += ["Listed as equivalent for another change (the code moved): judge again: "
                + ", ".join(f"`{n}`" for n in stale), ""]
    for name, diff in survivors.items():
        out += [f"### `{name}` ({status[name]})", "", "```diff", diff, "```", ""]
    out += ["", f"## Equivalent mutants ({len(equivalents)})", ""]
    for name, (diff, reason) in equivalents.items():
        out += [f"### `{name}`", "", "```diff", diff, "```", "", reason.strip(), ""]
    print("\n".join(out).rstrip())


def _version() -> str:
    return version("mutmut")


if __name__ == "__main__":
    main()
