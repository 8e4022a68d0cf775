"""The run folder's reports, written directly: CSV reports, requests.jsonl and summary.json."""

from __future__ import annotations

import json
import locale
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_engage import Record, Summary
from batch_engage.reporter import (
    FailedReport,
    RequestsLog,
    SkippedReport,
    SuccessReport,
    guard,
)

from .conftest import read_csv

BOM = "\ufeff".encode()


@pytest.mark.parametrize(("cell", "written"), [
    ("=1+1", "'=1+1"),
    ("+79001234567", "'+79001234567"),
    ("-5", "'-5"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    # A value that starts with the guard gets one more, so reading strips exactly one.
    ("'quoted", "''quoted"),
    ("plain", "plain"),
    ("a=b", "a=b"),
    ("", ""),
])
def test_cells_that_excel_would_run_as_formulas_get_a_leading_quote(
    cell: str, written: str
) -> None:
    assert guard(cell) == written


def test_report_headers_and_cells_are_guarded_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "failed.csv"
    with FailedReport(path, ["=evil", "email"]) as report:
        report.add(Record(2, ["=HYPERLINK(1)", "-a@example.com"], []), "validation",
                   "invalid_email", "=text", 0)
    assert read_csv(path) == [{
        "'=evil": "'=HYPERLINK(1)", "email": "'-a@example.com", "_row": "2",
        "_stage": "validation", "_error": "invalid_email", "_error_text": "'=text",
        "_attempts": "0",
    }]


def test_a_report_row_is_in_the_file_once_flushed(tmp_path: Path) -> None:
    """Rows are buffered (the journal is what a kill must not lose) and reach the file when
    the run flushes, every few seconds: UTF-8 with a BOM (for Excel), CRLF-ended as the csv
    module writes it."""
    path = tmp_path / "success.csv"
    report = SuccessReport(path, "email")
    try:
        report.add(2, "анна@example.com", attempts=1, http_status=200, error_text="ok",
                   completed_at="2026-01-01T00:00:00.000+00:00")
        report.flush()
        assert path.read_bytes() == BOM + (
            "row,email,attempts,http_status,error_text,completed_at\r\n"
            "2,анна@example.com,1,200,ok,2026-01-01T00:00:00.000+00:00\r\n").encode()
    finally:
        report.close()


@pytest.mark.parametrize(("http_status", "shown"), [(None, ""), (201, "201")])
def test_success_report_shows_a_missing_http_status_as_an_empty_cell(
    tmp_path: Path, http_status: int | None, shown: str
) -> None:
    with SuccessReport(tmp_path / "success.csv", "phone") as report:
        report.add(7, "+79001234567", attempts=3, http_status=http_status, error_text="",
                   completed_at="t")
    assert read_csv(tmp_path / "success.csv") == [{
        "row": "7", "phone": "'+79001234567", "attempts": "3", "http_status": shown,
        "error_text": "", "completed_at": "t",
    }]


def test_failed_report_replaces_the_columns_of_a_report_it_is_run_again_on(
    tmp_path: Path
) -> None:
    """Running failed.csv (or skipped.csv) again brings their own _-columns along: the new
    failed.csv keeps the input columns once and adds its own, however the old ones are
    spelled."""
    headers = ["email", " _Row ", "_stage", "name", "_ERROR", "_error_text", "_attempts",
               "_reason", "_detail"]
    cells = ["a@example.com", "9", "api", "Anna", "api_1", "old", "2", "hidden", "d"]
    with FailedReport(tmp_path / "failed.csv", headers) as report:
        report.add(Record(4, cells, []), "http", "http_503", "busy", 5)
    with (tmp_path / "failed.csv").open(encoding="utf-8-sig") as f:
        assert f.readline() == "email,name,_row,_stage,_error,_error_text,_attempts\n"
    assert read_csv(tmp_path / "failed.csv") == [{
        "email": "a@example.com", "name": "Anna", "_row": "4", "_stage": "http",
        "_error": "http_503", "_error_text": "busy", "_attempts": "5",
    }]


def test_skipped_report_lists_the_input_columns_then_why(tmp_path: Path) -> None:
    headers = ["email", "_row", "_Stage", "city", "_reason", "_detail", "_error",
               "_error_text", "_attempts"]
    cells = ["a@example.com", "3", "x", "Omsk", "r", "d", "e", "t", "1"]
    with SkippedReport(tmp_path / "skipped.csv", headers) as report:
        report.add(Record(6, cells, [], hidden=True), "hidden_in_sheet", "hidden")
    with (tmp_path / "skipped.csv").open(encoding="utf-8-sig") as f:
        assert f.readline() == "email,city,_row,_reason,_detail\n"
    assert read_csv(tmp_path / "skipped.csv") == [{
        "email": "a@example.com", "city": "Omsk", "_row": "6", "_reason": "hidden_in_sheet",
        "_detail": "hidden",
    }]


def test_requests_log_has_one_json_line_per_row_with_the_body_as_sent(tmp_path: Path) -> None:
    log = RequestsLog(tmp_path / "requests.jsonl")
    log.add(2, b'{"email":"a@example.com"}')
    log.add(10, b'{"email":"\\u0430@example.com"}')
    log.close()
    assert (tmp_path / "requests.jsonl").read_bytes() == (
        b'{"row":2,"body":{"email":"a@example.com"}}\n'
        b'{"row":10,"body":{"email":"\\u0430@example.com"}}\n')


def summary(**changes: Any) -> Summary:
    fields: dict[str, Any] = {"input": "in.csv", "out": "runs/x", "dry_run": False,
                              "options": {"rate": 10.0},
                              "started_at": "2026-01-01T00:00:00+00:00"}
    return Summary(**{**fields, **changes})


def test_each_failure_counts_its_stage_and_error_and_keeps_the_first_message() -> None:
    s = summary()
    s.add_failure("validation", "invalid_email", "row 2: bad")
    s.add_failure("validation", "invalid_email", "row 3: bad too")
    s.add_failure("api", "api_404", "not found")
    s.outcomes["ok"] += 4
    s.outcomes["unsent"] += 2
    s.outcomes["valid"] += 1
    assert s.outcomes == Counter({"ok": 4, "validation": 2, "unsent": 2, "api": 1, "valid": 1})
    assert s.errors == Counter({"invalid_email": 2, "api_404": 1})
    assert s.examples == {"invalid_email": "row 2: bad", "api_404": "not found"}
    assert s.failed == 3  # ok, valid and unsent rows are not failures


def test_summary_json_holds_every_figure_of_the_run() -> None:
    s = summary(finished_at="2026-01-01T00:01:00+00:00", duration_seconds=12.34567,
                input_format="CSV, utf-8", rows=100, blank=2, requests_sent=130,
                pass_requests=90, sending_seconds=9.0, retries_unanswered=3,
                stopped="interrupted (Ctrl-C)", row_limit=5, warnings=["w1"])
    s.skipped["hidden_in_sheet"] = 4
    s.skipped["already_engaged"] = 1
    s.outcomes.update({"unsent": 10, "ok": 80, "api": 5})
    s.errors.update({"api_404": 1, "api_400": 4})
    s.examples["api_400"] = "bad"
    s.retries.update({"timeout": 1, "http_429": 7})
    assert json.dumps(s.to_json()) == json.dumps({
        "input": "in.csv",
        "input_format": "CSV, utf-8",
        "out": "runs/x",
        "dry_run": False,
        "options": {"rate": 10.0},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:01:00+00:00",
        "duration_seconds": 12.346,
        "rows": 100,
        "blank": 2,
        "failed": 5,
        # Sorted by name; errors and retries most common first.
        "skipped": {"already_engaged": 1, "hidden_in_sheet": 4},
        "outcomes": {"api": 5, "ok": 80, "unsent": 10},
        "errors": {"api_400": 4, "api_404": 1},
        "error_examples": {"api_400": "bad"},
        "rows_per_second": 8.1,
        "requests_sent": 130,
        "requests_this_pass": 90,
        "requests_per_second": 10.0,
        "retries": {"http_429": 7, "timeout": 1},
        "retries_unanswered": 3,
        "stopped": "interrupted (Ctrl-C)",
        "row_limit": 5,
        "warnings": ["w1"],
    })


@pytest.mark.parametrize(("duration", "rows", "rows_per_second"), [
    (0.0, 5, None),  # nothing measured yet: no rate rather than a division by zero
    (0.5, 5, 10.0),
    (3.0, 10, 3.3),
    (8.0, 1, 0.1),
])
def test_rows_per_second_is_over_the_whole_run(
    duration: float, rows: int, rows_per_second: float | None
) -> None:
    figures = summary(duration_seconds=duration, rows=rows).to_json()
    assert figures["rows_per_second"] == rows_per_second


@pytest.mark.parametrize(("requests", "seconds", "per_second"), [
    (0, 5.0, None),  # a pass that sent nothing has no rate
    (4, 0.01, 4.0),  # over one second at least, like --rate: not 400/s
    (3, 0.0, 3.0),
    (10, 4.0, 2.5),
    (1, 3.0, 0.3),
])
def test_requests_per_second_is_over_this_pass_and_at_least_one_second(
    requests: int, seconds: float, per_second: float | None
) -> None:
    figures = summary(pass_requests=requests, sending_seconds=seconds).to_json()
    assert figures["requests_per_second"] == per_second


def test_summary_file_is_readable_utf8_json_for_people(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    s = summary(input="клиенты.csv")
    s.write(path)
    text = path.read_text("utf-8")
    assert text.startswith('{\n  "input": "клиенты.csv",\n  "input_format": ""')
    assert text.endswith('\n  "warnings": []\n}\n')
    assert json.loads(text) == s.to_json()


def test_writing_the_summary_again_replaces_it_and_a_half_written_one(tmp_path: Path) -> None:
    """The summary is written beside and renamed, so a reader never sees half of one; a
    temporary file that a kill left half written is replaced by the next write."""
    path = tmp_path / "summary.json"
    (tmp_path / "summary.tmp").write_text('{"inp', "utf-8")
    summary(rows=1).write(path)
    summary(rows=2).write(path)
    assert json.loads(path.read_text("utf-8"))["rows"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """The plain C locale of a cron job or a container: its text encoding is ASCII."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


@pytest.mark.skipif(bool(sys.flags.utf8_mode), reason="Python's UTF-8 mode ignores the locale")
def test_the_summary_is_utf8_whatever_the_locale(tmp_path: Path, ascii_locale: None) -> None:
    summary(input="клиенты.csv").write(tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_bytes())["input"] == "клиенты.csv"
