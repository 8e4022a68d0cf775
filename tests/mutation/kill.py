"""Which of the mutants a `mutmut run` left alive do these tests kill? Without a full run.

    python tests/mutation/kill.py tests/test_journal.py [more files] [-m 'batch_engage.journal.*']

Copies the tests into mutants/kill_tests_PID/ (not mutants/tests/, which a running `mutmut run`
uses) and runs the given files once per mutant, in one process: mutmut's trampolines pick the
mutant from MUTANT_UNDER_TEST at each call. Prints the mutants still alive. Needs the mutants/
folder of a finished (or running) `make mutate`; changes nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
MUTANTS = REPO / "mutants"
ALIVE = {"survived", "no tests", "not checked"}


def alive(patterns: list[str]) -> list[str]:
    text = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                          cwd=REPO, check=True, capture_output=True, text=True).stdout
    names = []
    for line in text.splitlines():
        name, _, state = line.strip().partition(": ")
        if state in ALIVE and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            names.append(name)
    return names


def passes(files: list[str], mutant: str) -> bool:
    os.environ["MUTANT_UNDER_TEST"] = mutant
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = pytest.main([*files, "-x", "-q", "-p", "no:cacheprovider",
                                "--timeout", "30", "-m", "not slow"])
    except Exception:  # e.g. a file the mutant left open, raised as pytest shuts down
        return False
    return code == pytest.ExitCode.OK


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("-m", "--mutants", action="append", default=[],
                        help="glob of mutant names (default: every module)")
    args = parser.parse_args()
    names = alive(args.mutants or ["*"])
    # A package of its own per process, so that two checks at once do not share files.
    copy = MUTANTS / f"kill_tests_{os.getpid()}"
    shutil.copytree(REPO / "tests", copy, ignore=shutil.ignore_patterns("mutation", "__pycache__"))
    files = [str(Path(copy.name) / Path(file).name) for file in args.files]
    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS))
    try:
        if not passes(files, ""):
            sys.exit("the tests fail on the code itself; fix them first")
        left = [name for name in names if passes(files, name)]
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    print(f"{len(names) - len(left)} of {len(names)} killed; alive:")
    for name in left:
        print(f"  {name}")


if __name__ == "__main__":
    main()
