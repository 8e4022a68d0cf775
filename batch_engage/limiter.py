"""How many requests may start, and when: a rate limit that holds in every 1-second window.

A token bucket (aiolimiter's ``AsyncLimiter(R, 1)``) starts full, so its first second lets
through the full bucket *and* the refill: close to 2R. Two rules here instead:

- a log of the last starts: a request may start only when fewer than R requests started in
  the second before it, which is the promise made to the user word for word;
- pacing: starts are spread 1/R apart on a schedule, so the server sees a steady stream, not
  R requests at the top of each second. A start that wakes up late does not push the
  schedule back (the next one catches up), so the achieved rate stays at R.

The clock and the sleep are passed in, so tests drive the limiter with a controlled clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_SECONDS = 1.0
# After the API answers 429 the whole run slows down: the rate is halved at most once per
# window (a burst of 429s is one signal, not fifty), and recovers by a small step per
# quiet window, so a server that is merely busy is not hammered back to the full rate.
SLOWDOWN_FACTOR = 0.5
RECOVERY_STEP = 0.05
# Neither slowed below nor recovering by less than one request a second: a run that met
# 429s in its first second (when it had sent only a few) must not crawl for minutes.
MIN_RATE_PER_SECOND = 1.0


class RateLimiter:
    """At most ``max_per_second`` starts in any 1-second window; 0 means no limit.

    ``slow_down()`` lowers the shared rate after a 429 (also when there was no limit: the
    rate just seen becomes the ceiling), and it climbs back to ``max_per_second`` slowly.
    """

    def __init__(
        self, max_per_second: float, *, clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.max_per_second = max_per_second
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._current = max_per_second  # 0: no limit
        self._target = max_per_second
        self._last_change = -math.inf
        self._last_slowdown = -math.inf
        self._next_start = -math.inf
        self._lock = asyncio.Lock()

    @property
    def current_per_second(self) -> float:
        """The rate in force now (lower than ``max_per_second`` after 429s); 0: no limit."""
        self._recover(self._clock())
        return self._current

    def _allowed(self) -> tuple[int, float]:
        """How many starts one window may hold, and how long that window is."""
        if self._current >= 1:
            return math.floor(self._current), WINDOW_SECONDS
        # Below one a second: one start per 1/rate seconds, which also holds per 1 s window.
        return 1, WINDOW_SECONDS / self._current

    def _recover(self, now: float) -> None:
        if self._current == self.max_per_second:
            return
        quiet_windows = int((now - self._last_change) / WINDOW_SECONDS)
        if quiet_windows < 1:
            return
        step = max(RECOVERY_STEP * self._target, MIN_RATE_PER_SECOND)
        raised = self._current + step * quiet_windows
        # Back at the target, the run is back at the user's limit (or at no limit at all).
        self._current = self.max_per_second if raised >= self._target else raised
        self._last_change += quiet_windows * WINDOW_SECONDS

    def slow_down(self) -> None:
        now = self._clock()
        self._recover(now)
        halved_lately = now - self._last_slowdown < WINDOW_SECONDS
        self._last_change = now  # every 429 restarts the wait for a quiet window
        if halved_lately:
            return
        if self._current:
            base = self._current
        else:
            # No limit was set: the rate the server just refused is what to climb back to.
            seen = sum(1 for t in self._starts if t > now - WINDOW_SECONDS)
            base = self._target = max(float(seen), MIN_RATE_PER_SECOND)
        self._current = min(base, max(MIN_RATE_PER_SECOND, base * SLOWDOWN_FACTOR))
        self._last_slowdown = now

    async def acquire(self) -> None:
        """Wait until one more request may start, and count it as started."""
        # One waiter at a time, so starts are granted in arrival order and the log stays exact.
        async with self._lock:
            while True:
                now = self._clock()
                self._recover(now)
                if not self._current:
                    self._record(now, WINDOW_SECONDS)
                    return
                limit, window = self._allowed()
                while self._starts and self._starts[0] <= now - window:
                    self._starts.popleft()
                wait = self._next_start - now
                if len(self._starts) >= limit:
                    # The oldest start in the window leaves it at starts[-limit] + window.
                    wait = max(wait, self._starts[-limit] + window - now)
                if wait <= 0:
                    break
                await self._sleep(wait)
            self._record(now, window)
            interval = 1 / self._current
            # Late by less than one interval: keep the schedule. Idle for longer: start a
            # new one from now, so an idle spell never turns into a burst.
            on_time = now < self._next_start + interval
            self._next_start = (self._next_start if on_time else now) + interval

    def _record(self, now: float, window: float) -> None:
        self._starts.append(now)
        # Keep only what the window (or slow_down's measure of an unlimited rate) can use.
        while self._starts and self._starts[0] <= now - max(window, WINDOW_SECONDS):
            self._starts.popleft()
