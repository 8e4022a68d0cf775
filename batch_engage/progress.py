"""The progress bar on stderr: rows done of the total, ok and failed, rate and time left."""

from __future__ import annotations

import sys
from typing import Never, TextIO

from tqdm import tqdm


class Progress:
    """A tqdm bar, or nothing at all when it is off (``-q``, or stderr is not a terminal)."""

    def __init__(self, total: int | None, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.ok = 0
        self.failed = 0
        self._bar: tqdm[Never] | None = None
        if enabled:
            self._bar = tqdm(
                total=total, unit="row", file=stream or sys.stderr, dynamic_ncols=True,
                smoothing=0.1, mininterval=0.25,
            )

    @staticmethod
    def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
        """On unless asked to be quiet or writing into a file or pipe (cron, CI, Airflow)."""
        stream = stream or sys.stderr
        return not quiet and stream.isatty()

    def row_done(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"ok={self.ok} failed={self.failed}", refresh=False)
            self._bar.update()

    def row_skipped(self) -> None:
        """A row not sent on purpose (hidden in the sheet): done, neither ok nor failed."""
        if self._bar is not None:
            self._bar.update()

    def close(self, *, finished: bool) -> None:
        if self._bar is not None:
            if finished and self._bar.n != self._bar.total:
                # The total was an estimate (a cell with a line break): end at 100%.
                self._bar.total = self._bar.n
                self._bar.refresh()
            self._bar.close()
