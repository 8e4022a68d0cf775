"""How far a run has got, as events: the one source the CLI's bar and the web page both read."""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Never, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


# The rate and the time left are judged over the last few seconds, so a pause (a burst of
# 429s, a slow API) shows at once and a long run's early speed does not linger.
RATE_WINDOW_SECONDS = 10.0
# Events go out at most this often while rows finish; a heartbeat sends them when none do.
EVENT_EVERY_SECONDS = 0.25
LATEST_ERRORS = 5


@dataclass(frozen=True, slots=True)
class ErrorCount:
    error: str
    """The error code (``invalid_email``, ``api_404``...)."""
    count: int
    text: str
    """The latest message for that code."""


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    total: int | None
    """Data rows in the input, an estimate until the run ends (a cell with a line break);
    None while unknown."""
    done: int
    ok: int
    failed: int
    skipped: int
    requests: int
    """HTTP requests started in this pass, retries included."""
    retries: int
    rows_per_second: float | None
    seconds_left: float | None
    elapsed_seconds: float
    errors: tuple[ErrorCount, ...]
    """The error codes seen, most recent first."""
    stopping: str | None
    """Why the run is stopping (rows on the wire still finishing), or None."""
    finished: bool | None
    """None while running; True when every row was done, False when the run stopped."""


Listener = Callable[[ProgressEvent], None]


class Progress:
    """Counts rows as the run reports them and tells its listeners, a few times a second."""

    def __init__(self, total: int | None, listeners: Iterable[Listener] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.ok = 0
        self.failed = 0
        self.skipped = 0
        self._listeners = list(listeners)
        self._clock = clock
        self._started = clock()
        self._next_event = self._started
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._errors: Counter[str] = Counter()
        self._texts: dict[str, str] = {}
        self._requests: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.stopping: str | None = None
        self.finished: bool | None = None

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    def count_requests(self, counter: Callable[[], tuple[int, int]]) -> None:
        """Where requests and retries are counted: the sender, once sending starts."""
        self._requests = counter

    def row_done(self, ok: bool, error: str = "", text: str = "") -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
            self._errors[error] += 1
            # Moved to the end, so the dict's order is most recent last.
            self._texts.pop(error, None)
            self._texts[error] = text
        self._changed()

    def row_skipped(self) -> None:
        """A row not sent on purpose (hidden in the sheet): done, neither ok nor failed."""
        self.skipped += 1
        self._changed()

    def _changed(self) -> None:
        if self._listeners and self._clock() >= self._next_event:
            self.tick()

    def tick(self) -> None:
        """Tell the listeners now (the heartbeat calls this while no row finishes)."""
        now = self._clock()
        self._next_event = now + EVENT_EVERY_SECONDS
        event = self.event(now)
        for listener in self._listeners:
            listener(event)

    def event(self, now: float | None = None) -> ProgressEvent:
        now = self._clock() if now is None else now
        done = self.done
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_SECONDS:
            self._samples.popleft()
        since, done_then = self._samples[0]
        rate = (done - done_then) / (now - since) if now - since >= 1.0 else None
        left = None
        if rate and self.total is not None and self.finished is None:
            left = max(0, self.total - done) / rate
        requests, retries = self._requests()
        errors = tuple(ErrorCount(code, self._errors[code], self._texts[code])
                       for code in reversed(self._texts))[:LATEST_ERRORS]
        return ProgressEvent(
            total=self.total, done=done, ok=self.ok, failed=self.failed, skipped=self.skipped,
            requests=requests, retries=retries, rows_per_second=rate, seconds_left=left,
            elapsed_seconds=now - self._started, errors=errors, stopping=self.stopping,
            finished=self.finished,
        )

    def close(self, *, finished: bool) -> None:
        if finished:
            # The total was an estimate (a cell with a line break): end at the real count.
            self.total = self.done
        self.finished = finished
        self.tick()


class ProgressBar:
    """The CLI's tqdm bar on stderr, drawn from progress events."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar: tqdm[Never] | None = None

    @staticmethod
    def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
        """On unless asked to be quiet or writing into a file or pipe (cron, CI, Airflow)."""
        stream = stream or sys.stderr
        return not quiet and stream.isatty()

    def __call__(self, event: ProgressEvent) -> None:
        if self._bar is None:
            from tqdm import tqdm  # noqa: PLC0415  (only with a bar: -q or cron skips it)
            self._bar = tqdm(total=event.total, unit="row", file=self._stream,
                             dynamic_ncols=True, smoothing=0.1, mininterval=0.25)
        bar = self._bar
        if event.total != bar.total:
            bar.total = event.total
        bar.set_postfix_str(f"ok={event.ok} failed={event.failed}", refresh=False)
        bar.update(event.done - bar.n)
        if event.finished is not None:
            bar.refresh()
            bar.close()
