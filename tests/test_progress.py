"""Progress events: what the CLI's bar and the web page both read while a run goes."""

from __future__ import annotations

import pytest

from batch_engage.progress import EVENT_EVERY_SECONDS, Progress, ProgressEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def collect(total: int | None = 100) -> tuple[Progress, list[ProgressEvent], Clock]:
    clock = Clock()
    events: list[ProgressEvent] = []
    return Progress(total, [events.append], clock=clock), events, clock


def test_listeners_hear_at_most_four_times_a_second_while_rows_pour_in() -> None:
    progress, events, clock = collect()
    for _ in range(50):
        progress.row_done(ok=True)
    assert len(events) == 1  # the first row, then nothing until the interval has passed
    clock.now += EVENT_EVERY_SECONDS
    progress.row_done(ok=False, error="invalid_email", text="row 3: not an email")
    assert len(events) == 2
    assert (events[-1].done, events[-1].ok, events[-1].failed) == (51, 50, 1)


def test_the_rate_and_time_left_come_from_the_last_ten_seconds() -> None:
    progress, _, clock = collect(total=1000)
    for second in range(30):
        clock.now += 1
        for _ in range(20 if second < 20 else 5):  # 20 rows/s, then a slowdown to 5
            progress.row_done(ok=True)
        progress.tick()
    event = progress.event()
    assert event.done == 450
    assert event.rows_per_second == pytest.approx(5.0)  # not the run's average of 15
    assert event.seconds_left == pytest.approx((1000 - 450) / 5.0)
    assert event.elapsed_seconds == pytest.approx(30)


def test_no_rate_is_claimed_in_the_first_second_and_none_left_without_a_total() -> None:
    progress, _, clock = collect(total=None)
    progress.row_done(ok=True)
    clock.now += 0.5
    assert progress.event().rows_per_second is None
    clock.now += 1
    event = progress.event()
    assert event.rows_per_second == pytest.approx(1 / 1.5)
    assert event.seconds_left is None


def test_errors_are_grouped_by_code_latest_first_with_the_latest_message() -> None:
    progress, _, _ = collect()
    for code, text in [("api_404", "row 2: no profile"), ("invalid_email", "row 3: bad"),
                       ("api_404", "row 4: no profile"), ("http_503", "row 5: server")]:
        progress.row_done(ok=False, error=code, text=text)
    errors = progress.event().errors
    assert [(e.error, e.count, e.text) for e in errors] == [
        ("http_503", 1, "row 5: server"),
        ("api_404", 2, "row 4: no profile"),
        ("invalid_email", 1, "row 3: bad"),
    ]


def test_requests_and_retries_are_read_from_the_sender_and_skips_count_as_done() -> None:
    progress, _, _ = collect()
    progress.count_requests(lambda: (12, 3))
    progress.row_skipped()
    event = progress.event()
    assert (event.requests, event.retries, event.done, event.skipped) == (12, 3, 1, 1)


@pytest.mark.parametrize("finished", [True, False])
def test_the_last_event_says_how_the_run_ended_and_a_finished_run_ends_at_its_count(
    finished: bool
) -> None:
    progress, events, _ = collect(total=10)  # an estimate: a cell had a line break
    for _ in range(9):
        progress.row_done(ok=True)
    progress.close(finished=finished)
    last = events[-1]
    assert last.finished is finished
    assert last.total == (9 if finished else 10)
    assert last.seconds_left is None
