"""The rate limiter under a controlled clock: no test here sleeps for real."""

from __future__ import annotations

import asyncio
import bisect
import itertools

import pytest

from batch_engage.limiter import RateLimiter


class FakeClock:
    """Time moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def start_times(limiter: RateLimiter, clock: FakeClock, n: int, workers: int) -> list[float]:
    times: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            await limiter.acquire()
            times.append(clock.now)
            await asyncio.sleep(0)  # let the other workers in, as a request would

    async def main() -> None:
        share, extra = divmod(n, workers)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(workers)))

    asyncio.run(main())
    return sorted(times)


def busiest_window(times: list[float], seconds: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + seconds)."""
    return max(bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times))


@pytest.mark.parametrize("workers", [1, 8, 32])
def test_never_more_than_the_rate_in_any_second(workers: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    times = start_times(limiter, clock, 1000, workers)
    assert len(times) == 1000
    assert busiest_window(times) == 50
    # Paced, not bursty: one start every 1/50 s, so 1000 starts take 19.98 s.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.02)
    assert times[-1] - times[0] == pytest.approx(19.98)
    per_window = [bisect.bisect_left(times, times[0] + k + 1) - bisect.bisect_left(
        times, times[0] + k) for k in range(20)]
    assert per_window == [50] * 20


def test_the_first_second_is_no_exception() -> None:
    """aiolimiter's AsyncLimiter(R, 1) starts full and refills, so its first second holds
    nearly 2R starts; here the first second is like every other, and so is each half."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    times = start_times(limiter, clock, 600, 16)
    assert busiest_window(times) == 200
    assert busiest_window(times, 0.5) <= 101  # 100, or 101 by float rounding at the edge


class LateClock(FakeClock):
    """Every sleep overshoots, as timers on a busy event loop do."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + 0.007)


def test_late_wakeups_do_not_lower_the_rate_or_break_the_limit() -> None:
    clock = LateClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    times = start_times(limiter, clock, 1000, 8)
    assert busiest_window(times) <= 50
    # Sleeping 7 ms too long on every 20 ms gap would lose a quarter of the rate; the
    # schedule catches up instead.
    assert 1000 / (times[-1] - times[0]) >= 0.95 * 50


@pytest.mark.parametrize(
    ("rate", "idle_seconds"),
    [
        (10, 0.35),
        (10, 5.0),
        (10, 600.0),
        # Idle for exactly one interval past the schedule: the first spell long enough to
        # start a new schedule (2/s keeps the arithmetic exact in binary floats).
        (2, 1.0),
    ],
)
def test_an_idle_spell_never_turns_into_a_burst(rate: float, idle_seconds: float) -> None:
    """Rows stop coming for a while (a slow read, retries backing off): the starts that
    follow are paced 1/R apart again, not let through at once to catch up."""
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)

    async def starts(n: int) -> list[float]:
        times: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            times.append(clock.now)

        await asyncio.gather(*(one() for _ in range(n)))
        return times

    async def main() -> tuple[list[float], list[float]]:
        before = await starts(10)
        clock.now += idle_seconds
        return before, await starts(10)

    before, after = asyncio.run(main())
    assert [b - a for a, b in itertools.pairwise(before)] == pytest.approx([1 / rate] * 9)
    assert [b - a for a, b in itertools.pairwise(after)] == pytest.approx([1 / rate] * 9)
    assert after[0] - before[-1] >= 1 / rate
    assert busiest_window(before + after) <= rate


def test_rates_below_one_per_second_space_the_starts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep)
    times = start_times(limiter, clock, 4, 2)
    assert [t - times[0] for t in times] == pytest.approx([0, 2, 4, 6])


@pytest.mark.parametrize(("rate", "per_window"), [(10.5, 10), (1.5, 1)])
def test_fractional_rates_round_down_per_window(rate: float, per_window: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    times = start_times(limiter, clock, 100, 4)
    assert busiest_window(times) == per_window


def test_below_one_a_second_a_late_start_is_still_followed_by_a_full_gap() -> None:
    """A start that came late keeps the schedule (the next one may catch up), but below one
    a second the window is 1/rate long: no two starts closer than that, ever."""
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock, sleep=clock.sleep)

    async def main() -> list[float]:
        times: list[float] = []
        await limiter.acquire()
        times.append(clock.now)
        clock.now += 3.0  # one second behind the schedule, which said 1002
        for _ in range(2):
            await limiter.acquire()
            times.append(clock.now)
        return times

    assert asyncio.run(main()) == [1000.0, 1003.0, 1005.0]


def test_zero_means_no_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    times = start_times(limiter, clock, 500, 8)
    assert clock.sleeps == []
    assert times[-1] == times[0]


def test_429s_halve_the_rate_once_per_window_and_it_recovers_slowly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.slow_down()
    assert limiter.current_per_second == 50
    limiter.slow_down()  # the same burst of 429s: one signal
    clock.now += 0.5
    limiter.slow_down()
    assert limiter.current_per_second == 50
    clock.now += 0.9
    limiter.slow_down()  # a new window, still refused: halve again
    assert limiter.current_per_second == 25
    clock.now += 1.0  # a quiet window: up by 5% of the limit
    assert limiter.current_per_second == 30
    clock.now += 10.0
    assert limiter.current_per_second == 80
    clock.now += 10.0
    assert limiter.current_per_second == 100  # never above the user's limit


def test_a_steady_stream_of_429s_halves_the_rate_once_a_second() -> None:
    """The windows between halvings are half-open: a 429 a full second after the last
    halving is a new signal, and every 429 restarts the wait for a quiet window."""
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    rates: list[float] = []
    for _ in range(5):
        limiter.slow_down()
        rates.append(limiter.current_per_second)
        clock.now += 0.5
    assert rates == [50, 50, 25, 25, 12.5]


def test_the_slower_rate_is_what_acquire_enforces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.slow_down()
    times = start_times(limiter, clock, 100, 4)
    first_second = [t for t in times if t < times[0] + 1]
    assert len(first_second) == 50
    assert first_second[-1] - first_second[0] == pytest.approx(49 / 50)


def test_unlimited_runs_slow_down_to_half_the_rate_they_had() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    clock_start = clock.now
    start_times(limiter, clock, 300, 4)  # 300 starts at one instant: no pacing
    limiter.slow_down()
    assert limiter.current_per_second == 150
    times = start_times(limiter, clock, 200, 4)
    # This second is used up already; from the next one on, starts are paced at 150/s
    # plus one recovery step of 15 per quiet second.
    assert times[0] == clock_start + 1.0
    assert len([t for t in times if t < clock_start + 2.0]) == 165
    clock.now += 30.0  # 5% of 300 per quiet window: back to no limit
    assert limiter.current_per_second == 0


def test_an_unlimited_run_is_unlimited_again_once_back_at_the_rate_it_had() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    start_times(limiter, clock, 10, 2)
    limiter.slow_down()
    # 10/s were refused: half of that, climbing back by 1/s (the least step) per quiet second.
    assert limiter.current_per_second == 5
    clock.now += 4.0
    assert limiter.current_per_second == 9
    clock.now += 1.0  # back at 10/s, the rate that met the 429: no limit any more
    assert limiter.current_per_second == 0


def test_an_unlimited_run_measures_its_rate_over_the_second_before_the_429() -> None:
    """The second before the 429 is half-open, like acquire's windows: starts exactly one
    second earlier belong to the second before it."""
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    start_times(limiter, clock, 6, 2)
    clock.now += 0.5
    start_times(limiter, clock, 4, 2)
    clock.now += 0.5
    limiter.slow_down()
    assert limiter.current_per_second == 2  # half of the 4 starts at +0.5 s
