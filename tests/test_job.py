"""One run wired together, through the library: what each pass leaves in the run folder.

Transports are plain async functions, so every run here is in-process and deterministic:
one request in flight at a time and no rate limit unless a test says otherwise, no network.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import signal
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
import pytest

from batch_engage import (
    InputFileError,
    RunOptions,
    Secret,
    UsageError,
    open_table,
    run,
    xlsx_report,
)
from batch_engage import job as job_module
from batch_engage.job import default_out
from batch_engage.journal import JOURNAL_NAME, Fingerprint
from batch_engage.sender import REFUSAL_ERRORS, Answer, RetryPolicy, Unanswered

from .conftest import read_csv, read_requests, read_summary, write_csv

OK = Answer(200, b'{"error": 0, "error_text": "ok"}')
UNCERTAIN_TEXT = (
    "the run was killed while this row's request was on its way; it may or may not have "
    "engaged the profile: check in the account, then send it from failed.csv, or add "
    "--resend-uncertain to --resume")
HIDDEN_TEXT = ("hidden in the sheet (by a filter or by hand); unhide it, or run with "
               "--include-hidden-rows")
SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")

Transport = Callable[[bytes], Awaitable[Answer]]


def emails(tmp_path: Path, *cells: str) -> Path:
    return write_csv(tmp_path / "in.csv", "email\n" + "".join(c + "\n" for c in cells))


def sending(data: Path, out: Path, **changes: Any) -> RunOptions:
    fields: dict[str, Any] = {"input": data, "workflow_id": 1,
                              "api_url": "http://unused.invalid", "token": Secret("t"),
                              "rate_per_second": 0, "max_in_flight": 1, "out": out}
    return RunOptions(**{**fields, **changes})


def recording(sent: list[str], answers: dict[str, Answer] | None = None) -> Transport:
    """Notes each email sent; answers OK unless told otherwise."""
    async def transport(body: bytes) -> Answer:
        email = json.loads(body)["email"]
        sent.append(email)
        return (answers or {}).get(email, OK)
    return transport


def stopping_after(rows: int, control: job_module.RunControl, sent: list[str]) -> Transport:
    """Notes each email sent, and stops the run from its control once ``rows`` were."""
    async def transport(body: bytes) -> Answer:
        sent.append(json.loads(body)["email"])
        if len(sent) == rows:
            control.stop("stopped from the page")
        return OK
    return transport


async def must_not_send(body: bytes) -> Answer:
    raise AssertionError(f"nothing was to be sent, but {body!r} was")


def journal_rows(out: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(out / JOURNAL_NAME)) as db:
        return db.execute("SELECT * FROM rows ORDER BY row").fetchall()


def failed_rows(out: Path) -> list[dict[str, str]]:
    return read_csv(out / "failed.csv")


# --- a kill, then --resume ---------------------------------------------------------------


def crashed(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder as a kill leaves it: rows 2-3 engaged, row 4's request on its way (its
    journal row still ``sending``), rows 5-6 not sent. The process's own crash stands in for
    the kill: it stops the run at the same point, in this process."""
    data = emails(tmp_path, "a@example.com", "b@example.com", "c@example.com",
                  "d@example.com", "e@example.com")
    out = tmp_path / "out"

    async def dies_at_c(body: bytes) -> Answer:
        if json.loads(body)["email"] == "c@example.com":
            raise RuntimeError("the process died here")
        return OK

    with pytest.raises(RuntimeError):
        run(sending(data, out), transport=dies_at_c)
    assert [row[:2] for row in journal_rows(out)] == [(2, "ok"), (3, "ok"), (4, "sending")]
    return data, out


def test_a_row_a_kill_left_on_its_way_is_reported_uncertain_and_not_sent_again(
    tmp_path: Path
) -> None:
    data, out = crashed(tmp_path)
    sent: list[str] = []
    summary = run(sending(data, out, resume=True), transport=recording(sent))
    assert sent == ["d@example.com", "e@example.com"]
    assert failed_rows(out) == [{
        "email": "c@example.com", "_row": "4", "_stage": "uncertain", "_error": "uncertain",
        "_error_text": UNCERTAIN_TEXT, "_attempts": "1",
    }]
    assert sorted((r["row"] for r in read_csv(out / "success.csv")), key=int) == [
        "2", "3", "5", "6"]
    assert summary.outcomes == {"ok": 4, "uncertain": 1}
    assert summary.errors == {"uncertain": 1}
    assert summary.examples == {"uncertain": UNCERTAIN_TEXT}
    # The journal now says so too: a later resume need not guess again.
    (uncertain,) = [row for row in journal_rows(out) if row[0] == 4]
    assert uncertain[:7] == (4, "uncertain", "c@example.com", 1, None, "uncertain",
                             UNCERTAIN_TEXT)
    assert datetime.fromisoformat(uncertain[7]).tzinfo is not None


def test_an_uncertain_row_stays_uncertain_on_every_later_resume(tmp_path: Path) -> None:
    data, out = crashed(tmp_path)
    run(sending(data, out, resume=True), transport=recording([]))
    before = journal_rows(out)
    summary = run(sending(data, out, resume=True), transport=must_not_send)
    assert journal_rows(out) == before
    assert [(r["_row"], r["_stage"], r["_error_text"], r["_attempts"])
            for r in failed_rows(out)] == [("4", "uncertain", UNCERTAIN_TEXT, "1")]
    assert summary.outcomes == {"ok": 4, "uncertain": 1}


@pytest.mark.parametrize("resumed_before", [False, True])
def test_resend_uncertain_sends_the_rows_a_kill_left_on_their_way(
    tmp_path: Path, resumed_before: bool
) -> None:
    """Whether the row is still ``sending`` (first resume) or already ``uncertain``."""
    data, out = crashed(tmp_path)
    if resumed_before:
        run(sending(data, out, resume=True), transport=recording([]))
    sent: list[str] = []
    summary = run(sending(data, out, resume=True, resend_uncertain=True),
                  transport=recording(sent))
    assert sent == (["c@example.com"] if resumed_before
                    else ["c@example.com", "d@example.com", "e@example.com"])
    assert failed_rows(out) == []
    assert summary.outcomes == {"ok": 5}
    assert [row[:2] for row in journal_rows(out)] == [(n, "ok") for n in range(2, 7)]


def test_an_uncertain_row_to_resend_whose_file_is_gone_fails_instead(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a", "utf-8")
    (tmp_path / "b.txt").write_text("b", "utf-8")
    data = write_csv(tmp_path / "in.csv", "email,attach\na@example.com,a.txt\n"
                                          "b@example.com,b.txt\n")
    out = tmp_path / "out"

    async def dies_at_b(body: bytes) -> Answer:
        if json.loads(body)["email"] == "b@example.com":
            raise RuntimeError("the process died here")
        return OK

    with pytest.raises(RuntimeError):
        run(sending(data, out), transport=dies_at_b)
    (tmp_path / "b.txt").unlink()
    summary = run(sending(data, out, resume=True, resend_uncertain=True),
                  transport=must_not_send)
    assert failed_rows(out) == [{
        "email": "b@example.com", "attach": "b.txt", "_row": "3", "_stage": "validation",
        "_error": "attachment_missing",
        "_error_text": f"row 3, column attach: file 'b.txt' was not found in the attachment "
                       f"folder {tmp_path}; check the name, or pass --attach-dir with the "
                       "folder that holds it",
        "_attempts": "0",
    }]
    assert summary.outcomes == {"ok": 1, "validation": 1}


def in_row_order(path: Path) -> list[dict[str, str]]:
    """A report's rows: a resume reports in row order, a pass as answers come."""
    return sorted(read_csv(path), key=lambda r: int(r.get("row") or r["_row"]))


def test_a_resume_reports_finished_rows_again_as_they_ended(tmp_path: Path) -> None:
    """Reports of the resumed run read as those of one run: same rows, same values, the
    first pass's start time."""
    data = emails(tmp_path, "a@example.com", "b@example.com", "not-an-email",
                  "c@example.com")
    out = tmp_path / "out"
    answers = {"b@example.com": Answer(200, b'{"error": 404, "error_text": "no profile"}')}
    first = run(sending(data, out), transport=recording([], answers))
    success = in_row_order(out / "success.csv")
    for row in success:
        assert datetime.fromisoformat(row.pop("completed_at")).tzinfo is not None
    assert success == [
        {"row": "2", "email": "a@example.com", "attempts": "1", "http_status": "200",
         "error_text": "ok"},
        {"row": "5", "email": "c@example.com", "attempts": "1", "http_status": "200",
         "error_text": "ok"},
    ]
    assert in_row_order(out / "failed.csv") == [
        {"email": "b@example.com", "_row": "3", "_stage": "api", "_error": "api_404",
         "_error_text": "the API answered error 404 'no profile' (HTTP 200); check the API "
                        "URL (--api-url) and the workflow id (-w)",
         "_attempts": "1"},
        {"email": "not-an-email", "_row": "4", "_stage": "validation",
         "_error": "invalid_email",
         "_error_text": "row 4, column email: 'not-an-email' is not an email address (An "
                        "email address must have an @-sign.); correct it",
         "_attempts": "0"},
    ]
    reports = {name: in_row_order(out / name)
               for name in ("success.csv", "failed.csv", "skipped.csv")}
    again = run(sending(data, out, resume=True), transport=must_not_send)
    assert {name: in_row_order(out / name) for name in reports} == reports
    assert again.started_at == first.started_at
    assert read_summary(out)["started_at"] == first.started_at
    assert (again.outcomes, again.errors, again.examples) == (
        first.outcomes, first.errors, first.examples)
    assert again.outcomes == {"ok": 2, "api": 1, "validation": 1}


# --- a run that stops early ---------------------------------------------------------------


def workbook(tmp_path: Path, rows: list[tuple[str, bool]]) -> Path:
    """An .xlsx with an email column; each row's text, and whether it is hidden."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["email"])
    for number, (text, hidden) in enumerate(rows, start=2):
        sheet.append([text])
        sheet.row_dimensions[number].hidden = hidden
    book.save(tmp_path / "in.xlsx")
    return tmp_path / "in.xlsx"


STOPPED_AT_ONCE = [
    ("a@example.com", False),  # 2: the API refuses the token: the run stops here
    ("b@example.com", False),  # 3-7: read ahead, waiting their turn
    ("c@example.com", True),
    ("d@example.com", False),
    ("e@example.com", False),
    ("f@example.com", False),
    ("   ", False),            # 8-11: never read by the sender
    ("g@example.com", True),
    ("h@example.com", False),
    ("", False),
    ("i@example.com", False),
]


def test_a_refused_token_stops_the_run_and_every_row_is_still_accounted_for(
    tmp_path: Path
) -> None:
    data, out = workbook(tmp_path, STOPPED_AT_ONCE), tmp_path / "out"
    sent: list[str] = []
    refused = {"a@example.com": Answer(401, b'{"error": 401, "error_text": "token"}')}
    summary = run(sending(data, out), transport=recording(sent, refused))
    assert sent == ["a@example.com"]
    assert summary.stopped == f"{REFUSAL_ERRORS[401]} (HTTP 401)"
    assert (summary.rows, summary.blank) == (9, 2)
    assert summary.outcomes == {"unsent": 7}
    assert summary.skipped == {"hidden_in_sheet": 2}
    assert [r["_row"] for r in read_csv(out / "skipped.csv")] == ["4", "9"]
    assert failed_rows(out) == []
    assert journal_rows(out) == []  # nothing is known done: all of it is to send
    assert read_summary(out)["outcomes"] == {"unsent": 7}

    sent.clear()
    summary = run(sending(data, out, resume=True), transport=recording(sent))
    assert sent == ["a@example.com", "b@example.com", "d@example.com", "e@example.com",
                    "f@example.com", "h@example.com", "i@example.com"]
    assert summary.outcomes == {"ok": 7}
    assert (summary.rows, summary.blank, summary.stopped) == (9, 2, None)
    assert (summary.requests_sent, summary.pass_requests) == (8, 7)


def test_requests_and_retries_add_up_over_the_passes_of_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No backoff between tries: the test has no server to spare.
    monkeypatch.setattr(job_module, "RetryPolicy", partial(RetryPolicy, base_delay_seconds=0))
    data = emails(tmp_path, "a@example.com", "b@example.com", "c@example.com")
    out = tmp_path / "out"
    calls: Counter[str] = Counter()
    a_engaged = asyncio.Event()

    async def first_pass(body: bytes) -> Answer:
        email = json.loads(body)["email"]
        calls[email] += 1
        if email == "a@example.com":
            if calls[email] == 1:
                raise Unanswered("disconnected", "dropped", maybe_sent=True)
            a_engaged.set()
        if email == "c@example.com":
            await a_engaged.wait()  # a stop would cut off a's retry
            return Answer(401, b"")
        return OK

    first = run(sending(data, out, max_in_flight=3), transport=first_pass)
    assert first.outcomes == {"ok": 2, "unsent": 1}
    assert (first.requests_sent, first.pass_requests) == (4, 4)
    assert (first.retries, first.retries_unanswered) == ({"disconnected": 1}, 1)

    async def busy_once(body: bytes) -> Answer:
        email = json.loads(body)["email"]
        calls[email] += 1
        return Answer(503, b"") if calls[email] == 2 else OK

    second = run(sending(data, out, resume=True), transport=busy_once)
    assert second.outcomes == {"ok": 3}
    assert (second.requests_sent, second.pass_requests) == (6, 2)
    assert (second.retries, second.retries_unanswered) == (
        {"disconnected": 1, "http_503": 1}, 1)
    assert read_summary(out)["retries"] == {"http_503": 1, "disconnected": 1}


class FakeClock:
    """The run's own clock (job.time), moved on by one second per request."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_summary_json_is_rewritten_every_two_seconds_while_rows_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So a crash leaves a recent one; the figures at the end are timed by the same clock."""
    clock = FakeClock()
    monkeypatch.setattr(job_module, "time", clock)
    out = tmp_path / "out"
    seen: list[int | None] = []

    async def tick(body: bytes) -> Answer:
        written = out / "summary.json"
        seen.append(read_summary(out)["outcomes"].get("ok") if written.exists() else None)
        clock.now += 1
        return OK

    data = emails(tmp_path, *(f"k{i}@example.com" for i in range(6)))
    summary = run(sending(data, out), transport=tick)
    assert seen == [None, None, 2, 2, 4, 4]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(JOURNAL_NAME)) == [
        ".lock", "failed.csv", "skipped.csv", "success.csv", "summary.json"]
    assert (summary.duration_seconds, summary.sending_seconds) == (6.0, 6.0)
    figures = read_summary(out)
    assert (figures["duration_seconds"], figures["rows_per_second"],
            figures["requests_per_second"]) == (6.0, 1.0, 1.0)


# --- what every run reports ---------------------------------------------------------------


def test_a_dry_run_writes_each_valid_request_and_fails_the_rest(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email,name\n\n , \na@example.com,\n,,extra\n"
                                          "bad,x\nb@example.com,y\n\n\n")
    out = tmp_path / "out"
    warnings: list[str] = []
    options = RunOptions(input=data, workflow_id=3, dry_run=True, out=out)
    summary = run(options, on_warning=warnings.append)
    assert read_requests(out) == [
        {"row": 4, "body": {"token": "***", "id": 3, "matching": "email",
                            "email": "a@example.com"}},
        {"row": 7, "body": {"token": "***", "id": 3, "matching": "email",
                            "email": "b@example.com"}},
    ]
    assert [(r["_row"], r["_stage"], r["_error"], r["_attempts"])
            for r in failed_rows(out)] == [("5", "validation", "extra_cells", "0"),
                                           ("6", "validation", "invalid_email", "0")]
    assert failed_rows(out)[1]["_error_text"] == (
        "row 6, column email: 'bad' is not an email address (An email address must have "
        "an @-sign.); correct it")
    assert read_csv(out / "skipped.csv") == []
    assert warnings == summary.warnings == ["these columns are ignored: 'name'"]
    # Blank rows (spaces only, or none at all) are not data rows; a ragged row is one.
    assert (summary.rows, summary.blank) == (4, 4)
    assert summary.outcomes == {"valid": 2, "validation": 2}
    assert summary.errors == {"extra_cells": 1, "invalid_email": 1}
    assert summary.examples["invalid_email"] == failed_rows(out)[1]["_error_text"]
    assert read_summary(out) == summary.to_json()
    assert (summary.input, summary.out, summary.dry_run) == (str(data), str(out), True)
    assert summary.options == options.public()
    assert summary.input_format == "text, utf-8, comma-separated"
    assert SECONDS.fullmatch(summary.started_at)
    assert SECONDS.fullmatch(summary.finished_at)
    assert summary.started_at <= summary.finished_at
    assert 0 < summary.duration_seconds < 60


def test_a_file_with_no_data_rows_is_refused_and_leaves_no_run_folder(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\n\n  \n\n")
    with pytest.raises(InputFileError) as refused:
        run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out"))
    assert str(refused.value) == "in.csv has a header but no data rows; nothing to send"
    assert not (tmp_path / "out").exists()


def test_the_run_folder_defaults_to_one_per_file_and_start_time_under_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_out(Path("data/клиенты.v2.xlsx"), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
                       ) == Path("runs/клиенты.v2-20260102T030405Z")
    monkeypatch.chdir(tmp_path)
    data = emails(tmp_path, "a@example.com")
    summary = run(RunOptions(input=data, workflow_id=1, dry_run=True))
    (folder,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"in-\d{8}T\d{6}Z", folder.name)
    assert summary.out == str(Path("runs") / folder.name)
    assert (folder / "requests.jsonl").exists()


def test_two_runs_of_one_file_in_the_same_second_get_folders_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = default_out(Path("in.csv"), at)
    first.mkdir(parents=True)
    second = default_out(Path("in.csv"), at)
    assert second == Path("runs/in-20260102T030405Z-2")
    second.mkdir()
    assert default_out(Path("in.csv"), at) == Path("runs/in-20260102T030405Z-3")


HIDDEN_BOOK = Path(__file__).parent / "golden" / "workbooks" / "hidden_by_hand.xlsx"


@pytest.mark.parametrize("dry_run", [True, False])
def test_rows_hidden_in_the_sheet_are_skipped_and_the_run_says_so(
    tmp_path: Path, dry_run: bool
) -> None:
    out = tmp_path / "out"
    warnings: list[str] = []
    sent: list[str] = []
    if dry_run:
        options = RunOptions(input=HIDDEN_BOOK, workflow_id=1, dry_run=True, out=out)
    else:
        options = sending(HIDDEN_BOOK, out)
    summary = run(options, on_warning=warnings.append, transport=recording(sent))
    assert [(r["email"], r["_row"], r["_reason"], r["_detail"])
            for r in read_csv(out / "skipped.csv")] == [
        ("a2@example.com", "3", "hidden_in_sheet", HIDDEN_TEXT),
        ("a5@example.com", "6", "hidden_in_sheet", HIDDEN_TEXT)]
    assert summary.skipped == {"hidden_in_sheet": 2}
    assert summary.rows == 8
    assert summary.outcomes == ({"valid": 6} if dry_run else {"ok": 6})
    assert len(sent) == (0 if dry_run else 6)
    assert warnings[-1] == summary.warnings[-1] == (
        "rows hidden in the sheet (by a filter or by hand) were not sent: 2; they are "
        "listed in skipped.csv. Unhide them, or run with --include-hidden-rows to send "
        "them too")


def test_rows_hidden_in_the_sheet_are_sent_when_asked(tmp_path: Path) -> None:
    sent: list[str] = []
    summary = run(sending(HIDDEN_BOOK, tmp_path / "out", include_hidden_rows=True),
                  transport=recording(sent))
    assert len(sent) == 8
    assert summary.skipped == {}
    assert not any("hidden" in w for w in summary.warnings)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("dry_run", "counts"), [
    (True, "ok=2 failed=1"),
    (False, "ok=1 failed=2"),  # the API refuses b
])
def test_the_progress_bar_counts_rows_ok_and_failed_up_to_the_real_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool, counts: str
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # A line break in a cell makes the estimated total one too many: a finished run ends
    # at its real count all the same.
    data = write_csv(tmp_path / "in.csv", 'email,name\na@example.com,"two\nlines"\n'
                                          "b@example.com,\nbad,\n")
    options = (RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out")
               if dry_run else sending(data, tmp_path / "out"))
    refused = {"b@example.com": Answer(200, b'{"error": 404, "error_text": "no profile"}')}
    run(options, transport=recording([], refused))
    shown = terminal.getvalue()
    assert "/4 " in shown  # the estimate, while rows are read
    last = shown.rstrip().split("\r")[-1]
    assert last.startswith("100%")
    assert " 3/3 " in last
    assert counts in last


def test_a_run_that_stops_leaves_its_bar_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    data = emails(tmp_path, "a@example.com", "b@example.com", "c@example.com")
    refused = {"b@example.com": Answer(403, b"")}
    run(sending(data, tmp_path / "out"), transport=recording([], refused))
    assert terminal.getvalue().rstrip().split("\r")[-1].startswith(" 33%")


def test_quiet_runs_show_no_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run(sending(emails(tmp_path, "a@example.com"), tmp_path / "out", quiet=True),
        transport=recording([]))
    assert terminal.getvalue() == ""


def test_the_summary_names_the_input_format(tmp_path: Path) -> None:
    summary = run(sending(HIDDEN_BOOK, tmp_path / "out"), transport=recording([]))
    with closing(open_table(HIDDEN_BOOK)) as table:
        assert summary.input_format == table.description == "Excel, sheet 'People'"


def test_a_stop_leaves_the_rows_past_the_read_ahead_unread_for_resume(tmp_path: Path) -> None:
    """Rows are read only a little ahead of sending (4 per --concurrency slot), so memory
    stays flat however long the file: when the run stops, the rows past that point are not
    even validated; they count as unsent, and --resume reads them."""
    cells = ["a@example.com", *(f"k{i}@example.com" for i in range(7)), "bad-1", "bad-2",
             "z@example.com", "bad-3"]
    data, out = emails(tmp_path, *cells), tmp_path / "out"
    sent: list[str] = []
    refused = {"a@example.com": Answer(401, b"")}
    summary = run(sending(data, out, max_in_flight=2), transport=recording(sent, refused))
    # Rows 2-9 waited for a slot; rows 10-13 were never read, so not even validated.
    assert sent == ["a@example.com"]
    assert failed_rows(out) == []
    assert summary.outcomes == {"unsent": 12}
    summary = run(sending(data, out, resume=True), transport=recording(sent))
    assert [r["_row"] for r in failed_rows(out)] == ["10", "11", "13"]
    assert summary.outcomes == {"ok": 9, "validation": 3}


def test_a_run_sends_on_uvloop_where_it_is_installed(tmp_path: Path) -> None:
    loops: list[str] = []

    async def transport(body: bytes) -> Answer:
        loops.append(type(asyncio.get_running_loop()).__module__)
        return OK

    run(sending(emails(tmp_path, "a@example.com"), tmp_path / "out"), transport=transport)
    assert loops == ["uvloop"]


def test_without_uvloop_a_run_sends_on_asyncios_own_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Windows, where uvloop is not installed."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    loops: list[str] = []

    async def transport(body: bytes) -> Answer:
        loops.append(type(asyncio.get_running_loop()).__module__)
        return OK

    summary = run(sending(emails(tmp_path, "a@example.com"), tmp_path / "out"),
                  transport=transport)
    assert summary.outcomes == Counter({"ok": 1})
    assert loops == ["asyncio.unix_events"]


def test_ctrl_c_in_a_library_run_is_the_callers_keyboard_interrupt(tmp_path: Path) -> None:
    """Signal handling is the CLI's choice, not a library's: a task runner's Ctrl-C
    reaches it as usual."""
    async def ctrl_c(body: bytes) -> Answer:
        signal.raise_signal(signal.SIGINT)
        return OK

    data = emails(tmp_path, "a@example.com", "b@example.com")
    with pytest.raises(KeyboardInterrupt):
        run(sending(data, tmp_path / "out"), transport=ctrl_c)


def test_with_signals_handled_ctrl_c_stops_the_run_and_the_rest_stays_to_send(
    tmp_path: Path
) -> None:
    data, out = emails(tmp_path, "a@example.com", "b@example.com", "c@example.com"), \
        tmp_path / "out"
    sent: list[str] = []

    async def ctrl_c_at_a(body: bytes) -> Answer:
        sent.append(json.loads(body)["email"])
        signal.raise_signal(signal.SIGINT)
        return OK  # the request on the wire is let finish

    summary = run(sending(data, out), transport=ctrl_c_at_a, handle_signals=True)
    assert sent == ["a@example.com"]
    assert summary.stopped == "interrupted (Ctrl-C)"
    assert summary.outcomes == {"ok": 1, "unsent": 2}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


@pytest.mark.parametrize(("signals", "timeout"), [
    (1, 0.05),  # the requests on the wire get --timeout seconds to finish
    (2, 30.0),  # a second Ctrl-C does not wait
])
def test_requests_still_on_the_wire_after_ctrl_c_are_cut_off_and_uncertain(
    tmp_path: Path, signals: int, timeout: float
) -> None:
    data, out = emails(tmp_path, "a@example.com", "b@example.com"), tmp_path / "out"

    async def hangs(body: bytes) -> Answer:
        for _ in range(signals):
            signal.raise_signal(signal.SIGINT)
        await asyncio.sleep(5)
        return OK

    summary = run(sending(data, out, timeout_seconds=timeout), transport=hangs,
                  handle_signals=True)
    assert summary.stopped == "interrupted (Ctrl-C)"
    assert summary.outcomes == {"uncertain": 1, "unsent": 1}
    assert failed_rows(out) == [{
        "email": "a@example.com", "_row": "2", "_stage": "uncertain", "_error": "uncertain",
        "_error_text": "the run was stopped while this row's request was on its way; it may "
                       "or may not have engaged the profile: check in the account before "
                       "sending it again",
        "_attempts": "1",
    }]


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path: Path, dry_run: bool) -> None:
    data, out = emails(tmp_path, "a@example.com"), tmp_path / "out"
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=out))
    options = (RunOptions(input=data, workflow_id=1, dry_run=True, out=out) if dry_run
               else sending(data, out))
    with pytest.raises(UsageError) as refused:
        run(options, transport=must_not_send)
    assert str(refused.value) == (
        f"--out {out} already holds a run; to continue it add --resume, otherwise choose a "
        "new folder (or leave --out out to get a fresh one under runs/)")


def test_resume_needs_a_run_to_continue(tmp_path: Path) -> None:
    data, out = emails(tmp_path, "a@example.com"), tmp_path / "out"
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=out))  # reports, no journal
    with pytest.raises(UsageError, match=r"^there is no run to resume in "):
        run(sending(data, out, resume=True), transport=must_not_send)


def test_each_request_is_the_rows_body_with_the_runs_token(tmp_path: Path) -> None:
    bodies: list[Any] = []

    async def keep(body: bytes) -> Answer:
        bodies.append(json.loads(body))
        return OK

    data = emails(tmp_path, "a@example.com")
    run(sending(data, tmp_path / "out", token=Secret("s3cret"), workflow_id=12),
        transport=keep)
    assert bodies == [{"token": "s3cret", "id": 12, "matching": "email",
                       "email": "a@example.com"}]


def test_requests_start_no_faster_than_the_rate(tmp_path: Path) -> None:
    starts: list[float] = []

    async def timed(body: bytes) -> Answer:
        starts.append(asyncio.get_running_loop().time())
        return OK

    data = emails(tmp_path, *(f"k{i}@example.com" for i in range(11)))
    run(sending(data, tmp_path / "out", rate_per_second=50, max_in_flight=4),
        transport=timed)
    assert starts[-1] - starts[0] >= 10 / 50 - 0.01  # ten gaps of 1/50 s at least


class PoolMade(Exception):
    """Ends the run once its HTTP connection pool is asked for."""


def test_the_connection_pool_holds_as_many_connections_as_the_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a transport the run makes its own HTTP client. Its pool must let every one of
    --concurrency requests have a connection (aiohttp's default pool is 100), and must check
    TLS as asked. A pool of the wrong size only shows in timing, so it is looked at here."""
    asked: list[dict[str, Any]] = []

    def connector(**options: Any) -> None:
        asked.append(options)
        raise PoolMade

    monkeypatch.setattr(aiohttp, "TCPConnector", connector)
    data = emails(tmp_path, "a@example.com")
    for verify_tls in (True, False):
        options = sending(data, tmp_path / f"out-{verify_tls}", max_in_flight=150,
                          verify_tls=verify_tls, api_url="http://127.0.0.1:9", max_attempts=1)
        with pytest.raises(PoolMade):
            run(options)
    assert asked == [{"limit": 150, "ssl": True}, {"limit": 150, "ssl": False}]


def two_sheets(tmp_path: Path) -> Path:
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.append(["email"])
    first.append(["first@example.com"])
    book.create_sheet("Send").append(["email"])
    book["Send"].append(["send@example.com"])
    book.save(tmp_path / "in.xlsx")
    return tmp_path / "in.xlsx"


@pytest.mark.parametrize(("make", "option", "shown", "email"), [
    # Guessing would split on ";" here: it holds more of them.
    (lambda tmp: write_csv(tmp / "in.csv", "email,note;a;b\nx@example.com,n;1;2\n"),
     {"delimiter": ","}, "text, utf-8, comma-separated", "x@example.com"),
    # Guessing would say cp1252.
    (lambda tmp: write_csv(tmp / "in.csv", "email,note\nx@example.com,Zürich\n", "latin-1"),
     {"encoding": "latin-1"}, "text, latin-1, comma-separated", "x@example.com"),
    (two_sheets, {"sheet": "Send"}, "Excel, sheet 'Send'", "send@example.com"),
])
def test_the_input_is_read_as_the_options_say_not_as_guessed(
    tmp_path: Path, make: Callable[[Path], Path], option: dict[str, Any], shown: str,
    email: str
) -> None:
    out = tmp_path / "out"
    summary = run(RunOptions(input=make(tmp_path), workflow_id=1, dry_run=True, out=out,
                             **option))
    assert summary.input_format == shown
    assert [r["body"]["email"] for r in read_requests(out)] == [email]


def test_resume_refuses_an_input_file_edited_since_the_run_started(tmp_path: Path) -> None:
    data, out = emails(tmp_path, "a@example.com"), tmp_path / "out"
    run(sending(data, out), transport=recording([]))
    emails(tmp_path, "b@example.com")  # same size, other bytes
    with pytest.raises(UsageError, match=r"^in\.csv is not the file this run started with"):
        run(sending(data, out, resume=True), transport=must_not_send)


def test_a_new_run_sends_while_its_file_is_hashed_and_keeps_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request does not wait for a large file's hash, which only a resume needs;
    the hash is in the journal by the end all the same."""
    data, out = emails(tmp_path, "a@example.com", "b@example.com"), tmp_path / "out"
    first_sent = threading.Event()
    hash_of = Fingerprint.of

    def hashed_after_the_first_request(cls: type[Fingerprint], path: Path) -> Fingerprint:
        assert first_sent.wait(10), "the run waited for the hash before sending"
        return hash_of(path)

    def stored() -> Any:
        with closing(sqlite3.connect(out / JOURNAL_NAME)) as db:
            found = db.execute("SELECT value FROM meta WHERE key = 'input_sha256'").fetchone()
        return None if found is None else json.loads(found[0])

    async def transport(body: bytes) -> Answer:
        if first_sent.is_set():  # the second row: a kill now would find the hash on disk
            for _ in range(500):
                if stored() is not None:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the hash was not stored once known")
        first_sent.set()
        return OK

    monkeypatch.setattr(Fingerprint, "of", classmethod(hashed_after_the_first_request))
    assert run(sending(data, out), transport=transport).outcomes == Counter({"ok": 2})
    assert stored() == hashlib.sha256(data.read_bytes()).hexdigest()


# --- what the web page needs from a run: a stop handle, a row limit, earlier runs, async ----


def test_a_stop_from_the_control_acts_as_ctrl_c(tmp_path: Path) -> None:
    """Rows on the wire finish, nothing more starts, the rest are unsent and resumable."""
    data = emails(tmp_path, *(f"k{i}@example.com" for i in range(6)))
    control = job_module.RunControl()
    sent: list[str] = []

    stop_at_the_second_row = stopping_after(2, control, sent)

    summary = run(sending(data, tmp_path / "out"), transport=stop_at_the_second_row,
                  control=control)
    assert summary.stopped == "stopped from the page"
    assert sent == ["k0@example.com", "k1@example.com"]
    assert summary.outcomes == Counter({"ok": 2, "unsent": 4})
    resumed: list[str] = []
    run(sending(data, tmp_path / "out", resume=True), transport=recording(resumed))
    assert resumed == [f"k{i}@example.com" for i in range(2, 6)]


def test_a_stop_before_sending_begins_sends_nothing(tmp_path: Path) -> None:
    control = job_module.RunControl()
    control.stop("stopped from the page")
    summary = run(sending(emails(tmp_path, "a@example.com"), tmp_path / "out"),
                  transport=must_not_send, control=control)
    assert summary.stopped == "stopped from the page"
    assert summary.outcomes == Counter({"unsent": 1})


def test_a_second_stop_cuts_off_the_requests_on_the_wire(tmp_path: Path) -> None:
    control = job_module.RunControl()

    async def hangs(body: bytes) -> Answer:
        control.stop("stopped from the page")
        control.stop("stopped from the page")
        await asyncio.sleep(60)
        return OK

    summary = run(sending(emails(tmp_path, "a@example.com"), tmp_path / "out"),
                  transport=hangs, control=control)
    assert summary.outcomes == Counter({"uncertain": 1})


def test_a_row_limit_sends_the_first_valid_rows_and_leaves_the_rest_unsent(
    tmp_path: Path
) -> None:
    data = emails(tmp_path, "a@example.com", "bad", "b@example.com", "", "c@example.com",
                  "d@example.com")
    sent: list[str] = []
    summary = run(sending(data, tmp_path / "out", row_limit=2), transport=recording(sent))
    assert sent == ["a@example.com", "b@example.com"]
    assert summary.outcomes == Counter({"ok": 2, "validation": 1, "unsent": 2})
    assert (summary.rows, summary.blank, summary.row_limit, summary.stopped) == (5, 1, 2, None)
    assert [r["_row"] for r in failed_rows(tmp_path / "out")] == ["3"]


def test_run_async_shares_the_callers_loop_and_reports_progress(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email,note\na@example.com,x\nbad,x\n"
                                          "b@example.com,x\ngone@example.com,x\n")
    events: list[Any] = []
    warnings: list[str] = []
    gone = Answer(200, b'{"error": 404, "error_text": "no profile"}')

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        async def on_loop(body: bytes) -> Answer:
            assert asyncio.get_running_loop() is loop
            return gone if b"gone@" in body else OK

        return await job_module.run_async(
            sending(data, tmp_path / "out"), transport=on_loop, on_progress=events.append,
            on_warning=warnings.append)

    summary = asyncio.run(main())
    assert summary.outcomes == Counter({"ok": 2, "validation": 1, "api": 1})
    assert warnings == ["these columns are ignored: 'note'"]
    assert events[0].total == 4  # counted before the first row is done
    last = events[-1]
    assert (last.total, last.done, last.ok, last.failed, last.finished) == (4, 4, 2, 2, True)
    assert last.requests == 3
    texts = {e.error: e.text for e in last.errors}
    assert texts.keys() == {"invalid_email", "api_404"}
    assert texts["invalid_email"].startswith("row 3, column email: 'bad' is not an email")
    assert texts["api_404"].startswith("the API answered error 404 'no profile' (HTTP 200)")


def _workbook(path: Path) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["email", "code"])
    sheet.append(["a@example.com", "00123"])
    sheet.append(["not an email", "00456"])
    book.save(path)
    return path


def test_a_workbook_input_gets_failed_xlsx_beside_failed_csv_and_a_text_file_does_not(
    tmp_path: Path
) -> None:
    run(RunOptions(input=_workbook(tmp_path / "in.xlsx"), workflow_id=1, dry_run=True,
                   out=tmp_path / "book"))
    again = run(RunOptions(input=tmp_path / "book" / "failed.xlsx", workflow_id=1,
                           dry_run=True, out=tmp_path / "again"))
    assert again.errors == Counter({"invalid_email": 1})
    assert failed_rows(tmp_path / "again")[0]["code"] == "00456"
    run(RunOptions(input=emails(tmp_path, "bad"), workflow_id=1, dry_run=True,
                   out=tmp_path / "text"))
    assert not (tmp_path / "text" / "failed.xlsx").exists()


def test_a_failed_xlsx_that_cannot_be_written_is_a_warning_and_summary_json_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(csv_path: Path, xlsx: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xlsx_report, "write_failed_xlsx", disk_full)
    warnings: list[str] = []
    summary = run(RunOptions(input=_workbook(tmp_path / "in.xlsx"), workflow_id=1,
                             dry_run=True, out=tmp_path / "out"), on_warning=warnings.append)
    message = ("failed.xlsx could not be written (No space left on device); failed.csv "
               "holds the same rows")
    assert warnings[-1] == message
    assert read_summary(tmp_path / "out")["warnings"][-1] == message
    assert summary.failed == 1


def test_progress_events_keep_coming_while_no_row_finishes_and_tell_a_stop(
    tmp_path: Path
) -> None:
    """A long Retry-After or a slow API: the heartbeat moves the time left on, once a
    second; after Stop, the events say the run is stopping."""
    control = job_module.RunControl()
    events: list[Any] = []

    async def slow(body: bytes) -> Answer:
        await asyncio.sleep(2.3)
        control.stop("stopped from the page")
        await asyncio.sleep(1.2)
        return OK

    data = emails(tmp_path, "a@example.com", "b@example.com")
    run(sending(data, tmp_path / "out"), transport=slow, on_progress=events.append,
        control=control)
    during = [e for e in events if e.finished is None]
    assert [e.done for e in during[:2]] == [0, 0]  # two heartbeats before the row is done
    assert during[-1].stopping == "stopped from the page"
    assert events[-1].finished is False


def test_a_resumed_test_send_counts_the_rows_it_already_sent_toward_its_limit(
    tmp_path: Path
) -> None:
    data = emails(tmp_path, *(f"k{i}@example.com" for i in range(6)))
    control = job_module.RunControl()
    sent: list[str] = []

    stop_after_two = stopping_after(2, control, sent)

    run(sending(data, tmp_path / "out", row_limit=4), transport=stop_after_two,
        control=control)
    assert sent == ["k0@example.com", "k1@example.com"]
    summary = run(sending(data, tmp_path / "out", row_limit=4, resume=True),
                  transport=recording(sent))
    assert sent[2:] == ["k2@example.com", "k3@example.com"]
    assert summary.outcomes == Counter({"ok": 4, "unsent": 2})


def test_a_resent_uncertain_row_counts_toward_a_test_sends_limit(tmp_path: Path) -> None:
    data = emails(tmp_path, *(f"k{i}@example.com" for i in range(6)))
    control = job_module.RunControl()
    sent: list[str] = []

    stop_after_two = stopping_after(2, control, sent)

    out = tmp_path / "out"
    run(sending(data, out, row_limit=4), transport=stop_after_two, control=control)
    with closing(sqlite3.connect(out / JOURNAL_NAME)) as db, db:
        db.execute("UPDATE rows SET state = 'sending' WHERE row = 3")  # k1, as a kill leaves it
    resent: list[str] = []
    run(sending(data, out, row_limit=4, resume=True, resend_uncertain=True),
        transport=recording(resent))
    assert resent == ["k1@example.com", "k2@example.com", "k3@example.com"]


def test_a_resume_with_a_smaller_limit_than_already_sent_sends_nothing_more(
    tmp_path: Path
) -> None:
    data = emails(tmp_path, *(f"k{i}@example.com" for i in range(5)))
    control = job_module.RunControl()
    sent: list[str] = []

    stop_after_three = stopping_after(3, control, sent)

    run(sending(data, tmp_path / "out"), transport=stop_after_three, control=control)
    summary = run(sending(data, tmp_path / "out", row_limit=2, resume=True),
                  transport=must_not_send)
    assert summary.outcomes == Counter({"ok": 3, "unsent": 2})
