"""The process exit codes, one place for all of them (documented in README.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    SUCCESS = 0
    """Every row succeeded (or, with --dry-run, every row is valid)."""
    ROWS_FAILED = 1
    """The run finished and some rows failed; failed.csv lists them."""
    USAGE_OR_INPUT_ERROR = 2
    """Bad options, config or input file: nothing was sent."""
    STOPPED = 3
    """Stopped early (interrupted, token rejected, tariff limit): resumable."""
