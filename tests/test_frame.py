"""A run from a pandas DataFrame (``run(options, frame=df)``): the same cells, rows and
reports as from the same data in a workbook, without a copy of the frame."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest

from batch_engage import (
    InputFileError,
    Matching,
    RunOptions,
    Secret,
    UsageError,
    run,
    run_async,
)
from batch_engage import job as job_module
from batch_engage.frame import FrameTable
from batch_engage.mock_server import MockConfig, serve_in_thread
from batch_engage.sender import Answer, Transport

from .conftest import MOCK_TOKEN, REPO, read_csv, read_requests, read_summary

OK = Answer(200, b'{"error": 0, "error_text": "ok"}')


def texts(frame: pd.DataFrame) -> list[list[str]]:
    return [record.cells for record in FrameTable(frame, Path("t.dataframe")).records()]


def dry_run(tmp_path: Path, name: str, frame: pd.DataFrame | None = None,
            data: Path | None = None, **changes: Any) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / name
    options = RunOptions(input=data or Path("crm-export"), workflow_id=7, dry_run=True,
                         out=out, **changes)
    return out, run(options, frame=frame).to_json()


# --- the acceptance comparison: a frame and the same data in an .xlsx -------------------------

NAT = pd.NaT
ROWS: list[dict[str, Any]] = [
    {"email": "ann@example.com", "content.customer_id": "00123", "content.visits": 42,
     "content.balance": 19.9, "content.birthday": pd.Timestamp("1990-01-15"),
     "content.last_visit": pd.Timestamp("2024-03-01 08:30:00"),
     "content.phone_text": "+79001234567", "content.phone_number": 79001234567,
     "content.mixed": "A1", "content.points": 1, "content.vip": True},
    {"email": "bob@example.com", "content.customer_id": "007", "content.visits": 0,
     "content.balance": 274.66, "content.birthday": NAT,
     "content.last_visit": pd.Timestamp("2024-03-02 00:00:00"),
     "content.phone_text": "89001234567", "content.phone_number": 89001234567,
     "content.mixed": 42, "content.points": None, "content.vip": False},
    {"email": None, "content.customer_id": None, "content.visits": 3,
     "content.balance": math.nan, "content.birthday": pd.Timestamp("2000-02-29"),
     "content.last_visit": NAT, "content.phone_text": None, "content.phone_number": 1,
     "content.mixed": None, "content.points": 3, "content.vip": True},
    {"email": "not-an-email", "content.customer_id": "1", "content.visits": -5,
     "content.balance": 1e16, "content.birthday": pd.Timestamp("1969-07-20"),
     "content.last_visit": pd.Timestamp("1969-07-20 20:17:40"),
     "content.phone_text": "+7 900 123-45-67", "content.phone_number": 79001234568,
     "content.mixed": 3.5, "content.points": 4, "content.vip": False},
    {"email": "Ann@Example.com", "content.customer_id": "00123", "content.visits": 1,
     "content.balance": 0.1 + 0.2, "content.birthday": pd.Timestamp("2024-12-31"),
     "content.last_visit": pd.Timestamp("2024-12-31 23:59:59"),
     "content.phone_text": "", "content.phone_number": 0, "content.mixed": math.nan,
     "content.points": 5, "content.vip": True},
    {"email": "eve@example.com", "content.customer_id": " 0042 ", "content.visits": 2**40,
     "content.balance": 79001234567.0, "content.birthday": NAT,
     "content.last_visit": pd.Timestamp("2024-01-01 12:00:00"),
     "content.phone_text": "+79001234569", "content.phone_number": 79001234569,
     "content.mixed": True, "content.points": None, "content.vip": True},
]


def acceptance_frame() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS)
    frame["content.points"] = frame["content.points"].astype("Int64")  # pd.NA for None
    frame["content.mixed"] = frame["content.mixed"].astype(object)
    return frame


def in_a_cell(column: str, value: Any) -> Any:
    """The value as an Excel user would hold it in a cell; missing values as empty cells.

    pandas has no date type: a column of midnights is how it holds dates, and it shows
    them as dates, as Excel shows date cells; so that column becomes date cells."""
    if value is None or value is pd.NA or value is NAT or (
            isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date() if column == "content.birthday" else value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def test_a_frame_makes_the_bodies_and_reports_the_same_workbook_makes(tmp_path: Path) -> None:
    frame = acceptance_frame()
    assert frame["content.birthday"].dtype.kind == "M"
    assert frame["content.phone_number"].dtype == np.int64
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(frame.columns))
    for values in frame.itertuples(index=False, name=None):
        sheet.append([in_a_cell(c, v) for c, v in zip(frame.columns, values, strict=True)])
    workbook = tmp_path / "crm-export.xlsx"
    book.save(workbook)

    from_frame, frame_summary = dry_run(tmp_path, "frame", frame)
    from_book, _ = dry_run(tmp_path, "book", data=workbook)

    requests = read_requests(from_frame)
    assert requests == read_requests(from_book)
    assert read_csv(from_frame / "failed.csv") == read_csv(from_book / "failed.csv")
    assert [r["row"] for r in requests] == [2, 3, 7]
    assert requests[0]["body"]["content"] == {
        "customer_id": "00123", "visits": "42", "balance": "19.9", "birthday": "1990-01-15",
        "last_visit": "2024-03-01T08:30:00", "phone_text": "+79001234567",
        "phone_number": "79001234567", "mixed": "A1", "points": "1", "vip": "TRUE"}
    assert requests[1]["body"]["content"] == {
        "customer_id": "007", "visits": "0", "balance": "274.66",
        "last_visit": "2024-03-02T00:00:00", "phone_text": "89001234567",
        "phone_number": "89001234567", "mixed": "42", "vip": "FALSE"}
    assert requests[2]["body"]["content"] == {
        "customer_id": " 0042 ", "visits": "1099511627776", "balance": "79001234567",
        "last_visit": "2024-01-01T12:00:00", "phone_text": "+79001234569",
        "phone_number": "79001234569", "mixed": "TRUE", "vip": "TRUE"}
    failed = read_csv(from_frame / "failed.csv")
    assert [(r["_row"], r["_error"]) for r in failed] == [
        ("4", "missing_value"), ("5", "invalid_email"), ("6", "duplicate")]
    assert failed[0]["content.balance"] == failed[0]["content.mixed"] == ""
    assert (failed[0]["content.last_visit"], failed[0]["content.points"]) == ("", "3")
    assert (failed[1]["content.balance"], failed[1]["content.birthday"]) == (
        "1E+16", "1969-07-20")
    assert (failed[1]["content.mixed"], failed[1]["content.last_visit"]) == (
        "3.5", "1969-07-20T20:17:40")
    assert (failed[2]["content.balance"], failed[2]["content.last_visit"]) == (
        "0.3", "2024-12-31T23:59:59")
    assert failed[2]["_error_text"] == (
        "row 6, column email: 'Ann@Example.com' repeats row 2, so it was not sent again; "
        "pass --allow-duplicates to send every row")
    assert frame_summary["input_format"] == "pandas DataFrame"
    assert frame_summary["input"] == "crm-export"
    assert frame_summary["outcomes"] == {"valid": 3, "validation": 2, "duplicate": 1}


# --- each kind of column --------------------------------------------------------------------


@pytest.mark.parametrize(("values", "shown"), [
    (pd.Series(["a", None, " b ", "00123"]), ["a", "", " b ", "00123"]),
    (pd.Series(["a", None], dtype="string"), ["a", ""]),
    (pd.Series([79001234567, -3], dtype="int64"), ["79001234567", "-3"]),
    (pd.Series([7, 255], dtype="uint8"), ["7", "255"]),
    # A phone column with a gap becomes float64 in pandas: still no .0, no 7.9e10.
    (pd.Series([79001234567, None]), ["79001234567", ""]),
    (pd.Series([19.9, 274.66, 1e16, 1e15, 123456789012345.6, -0.0, 0.1 + 0.2]),
     ["19.9", "274.66", "1E+16", "1E+15", "123456789012346", "0", "0.3"]),
    # Whole ids of 16 digits and more keep every digit: the frame holds them exactly.
    (pd.Series([1234567890123456789]), ["1234567890123456789"]),
    (pd.Series([1, None], dtype="Int64"), ["1", ""]),
    (pd.Series([1.5, None], dtype="Float64"), ["1.5", ""]),
    (pd.Series([True, False]), ["TRUE", "FALSE"]),
    (pd.Series([True, None], dtype="boolean"), ["TRUE", ""]),
    # Dates alone while every value is at midnight, as pandas prints such a column.
    (pd.Series(pd.to_datetime(["1990-01-15", "NaT"])), ["1990-01-15", ""]),
    (pd.Series(pd.to_datetime(["1990-01-15 00:00:00", "1990-01-16 08:30:00.5", "NaT"],
                                format="ISO8601")),
     ["1990-01-15T00:00:00", "1990-01-16T08:30:01", ""]),
    (pd.Series(pd.to_datetime(["1990-01-15 08:30:00.499"]).as_unit("ns")),
     ["1990-01-15T08:30:00"]),
    (pd.Series(pd.to_datetime(["2024-03-01 08:30:00", "NaT"]).tz_localize("Europe/Moscow")),
     ["2024-03-01T08:30:00+03:00", ""]),
    (pd.Series([pd.Timestamp("2024-03-01"), dt.date(2024, 3, 2), dt.time(8, 30, 0, 250),
                dt.time(8, 30, 0, 500000), dt.datetime(2024, 3, 3, 9, 0, 0, 700000),
                pd.NaT, pd.NA, None, math.nan], dtype=object),
     ["2024-03-01T00:00:00", "2024-03-02", "08:30:00", "08:30:01", "2024-03-03T09:00:01",
      "", "", "", ""]),
    (pd.Series([decimal.Decimal("19.90"), decimal.Decimal("1E+3"), decimal.Decimal("NaN")]),
     ["19.90", "1000", ""]),
    (pd.Series([np.int64(5), np.float64(2.0), np.bool_(True), 7.25], dtype=object),
     ["5", "2", "TRUE", "7.25"]),
    (pd.Series(pd.Categorical(["vip", None, "vip", "new"])), ["vip", "", "vip", "new"]),
    (pd.Series(pd.Categorical([3.0, None, 19.9])), ["3", "", "19.9"]),
    (pd.Series(pd.to_timedelta(["8h30min", None])), ["0 days 08:30:00", ""]),
], ids=lambda v: str(v.dtype) if isinstance(v, pd.Series) else None)
def test_each_kind_of_column_is_shown_as_the_rules_say(values: pd.Series[Any],
                                                       shown: list[str]) -> None:
    assert [row[0] for row in texts(values.to_frame("content.x"))] == shown


def test_rows_are_read_a_chunk_at_a_time_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batch_engage.frame.CHUNK_ROWS", 3)
    frame = pd.DataFrame({"n": range(8), "d": pd.date_range("2024-01-01", periods=8)})
    records = list(FrameTable(frame, Path("t")).records())
    assert [(r.number, r.cells) for r in records] == [
        (i + 2, [str(i), f"2024-01-0{i + 1}"]) for i in range(8)]


def test_a_datetime_column_is_judged_as_a_whole_past_the_first_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batch_engage.frame.CHUNK_ROWS", 1)
    stamps = [pd.Timestamp("2024-01-01")] * 40 + [pd.Timestamp("2024-01-01 00:00:01")]
    assert texts(pd.DataFrame({"d": stamps}))[0] == ["2024-01-01T00:00:00"]


def test_headers_are_the_column_names_as_text() -> None:
    table = FrameTable(pd.DataFrame([[1, 2, 3]], columns=["email", 5, "email"]), Path("t"))
    assert table.headers == ["email", "5", "email"]
    assert table.estimate_rows() == table.row_bound() == 1


# --- rows, reports, sending --------------------------------------------------------------------


@pytest.mark.parametrize("index", [pd.RangeIndex(1000, 1005), pd.Index(list("edcba")),
                                   pd.Index([4, 4, 0, 9, 1])])
def test_row_numbers_count_rows_as_a_spreadsheet_does_whatever_the_index(
        tmp_path: Path, index: pd.Index[Any]) -> None:
    frame = pd.DataFrame({"email": ["a@example.com", "bad", "b@example.com", None,
                                    "A@example.com"], "content.n": range(5)}, index=index)
    out, summary = dry_run(tmp_path, "out", frame)
    assert [r["row"] for r in read_requests(out)] == [2, 4]
    failed = read_csv(out / "failed.csv")
    assert [(r["_row"], r["_error"]) for r in failed] == [
        ("3", "invalid_email"), ("5", "missing_value"), ("6", "duplicate")]
    assert failed[0]["_error_text"].startswith("row 3, column email: 'bad'")
    assert failed[2]["_error_text"].startswith(
        "row 6, column email: 'A@example.com' repeats row 2,")
    assert summary["rows"] == 5


def test_a_row_with_every_cell_empty_is_blank_and_still_counted(tmp_path: Path) -> None:
    frame = pd.DataFrame({"email": [None, "a@example.com", math.nan],
                          "content.d": pd.to_datetime(["NaT"] * 3)})
    out, summary = dry_run(tmp_path, "out", frame)
    assert [r["row"] for r in read_requests(out)] == [3]
    assert (summary["rows"], summary["blank"]) == (1, 2)


def test_the_row_guards_count_a_frames_rows(tmp_path: Path) -> None:
    """--max-rows counts rows by a reader of their own: the frame's, not a file's."""
    frame = pd.DataFrame({"email": [f"k{i}@example.com" for i in range(5)]})
    options = RunOptions(input=tmp_path / "crm-export", workflow_id=3, dry_run=True,
                         out=tmp_path / "out", max_rows=2)
    message = "has more data rows than --max-rows 2 allows (it has at least 3; about 5)"
    with pytest.raises(InputFileError, match=re.escape(message)):
        run(options, frame=frame)
    with pytest.raises(InputFileError, match=re.escape(message)):
        asyncio.run(run_async(options, frame=frame))


def test_a_frame_is_sent_and_reported_as_a_file_is(tmp_path: Path) -> None:
    frame = pd.DataFrame({"phone": [79001234567, 79001234568, 12, 79001234569],
                          "content.first_name": ["Ann", None, "Bob", "Анна"]},
                         index=[10, 20, 30, 40])
    out = tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        summary = run(RunOptions(
            input=tmp_path / "crm-export", workflow_id=3, api_url=mock.url,
            token=Secret(MOCK_TOKEN), matching=Matching.PHONE, phone_region="RU",
            rate_per_second=0, out=out, quiet=True), frame=frame)
    assert mock.stats.accepted == Counter({"+79001234567": 1, "+79001234568": 1,
                                           "+79001234569": 1})
    assert summary.outcomes == Counter({"ok": 3, "validation": 1})
    success = read_csv(out / "success.csv")
    assert sorted(((r["row"], r["phone"], r["attempts"]) for r in success),
                  key=lambda r: int(r[0])) == [
        ("2", "'+79001234567", "1"), ("3", "'+79001234568", "1"), ("5", "'+79001234569", "1")]
    failed = read_csv(out / "failed.csv")
    assert [(r["_row"], r["phone"], r["content.first_name"], r["_error"]) for r in failed] == [
        ("4", "12", "Bob", "invalid_phone")]
    assert read_summary(out)["input_format"] == "pandas DataFrame"
    assert not (out / "failed.xlsx").exists()


def stop_after(rows: int, control: job_module.RunControl, sent: list[str]) -> Transport:
    async def transport(body: bytes) -> Answer:
        sent.append(json.loads(body)["email"])
        if len(sent) == rows:
            control.stop("stopped from the task")
        return OK
    return transport


def recording(sent: list[str]) -> Transport:
    async def transport(body: bytes) -> Answer:
        sent.append(json.loads(body)["email"])
        return OK
    return transport


def test_a_stopped_frame_run_resumes_with_the_same_cells_and_refuses_others(
        tmp_path: Path) -> None:
    frame = pd.DataFrame({"email": [f"k{i}@example.com" for i in range(5)],
                          "content.n": [1, 2, 3, 4, 5]})
    out = tmp_path / "out"

    def options(**changes: Any) -> RunOptions:
        return RunOptions(input=Path("nightly"), workflow_id=1, api_url="http://unused.invalid",
                          token=Secret("t"), rate_per_second=0, max_in_flight=1, out=out,
                          **changes)

    control = job_module.RunControl()
    sent: list[str] = []
    summary = run(options(), frame=frame, transport=stop_after(2, control, sent),
                  control=control)
    assert summary.outcomes == Counter({"ok": 2, "unsent": 3})

    changed = frame.assign(**{"content.n": [1, 2, 3, 4, 6]})
    with pytest.raises(UsageError, match=r"^nightly is not the file this run started with"):
        run(options(resume=True), frame=changed, transport=recording([]))
    # The same cells from other dtypes are the same input: texts decide each request.
    same = frame.assign(**{"content.n": [1.0, 2.0, 3.0, 4.0, 5.0]}).set_index(
        pd.Index(list("abcde")))
    resumed: list[str] = []
    summary = run(options(resume=True), frame=same, transport=recording(resumed))
    assert resumed == ["k2@example.com", "k3@example.com", "k4@example.com"]
    assert summary.outcomes == Counter({"ok": 5})


def test_run_async_takes_a_frame(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = asyncio.run(run_async(
        RunOptions(input=Path("crm-export"), workflow_id=2, dry_run=True, out=out),
        frame=pd.DataFrame({"email": ["a@example.com"]})))
    assert summary.outcomes == Counter({"valid": 1})
    assert [r["row"] for r in read_requests(out)] == [2]


def test_the_default_run_folder_is_named_after_the_input_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    summary = run(RunOptions(input=Path("exports/crm-export.dataframe"), workflow_id=2,
                             dry_run=True), frame=pd.DataFrame({"email": ["a@example.com"]}))
    assert Path(summary.out).parent == Path("runs")
    assert Path(summary.out).name.startswith("crm-export-")


def test_attachments_are_found_beside_the_input_name(tmp_path: Path) -> None:
    (tmp_path / "terms.txt").write_text("terms", "utf-8")
    out, _ = dry_run(tmp_path, "out", pd.DataFrame(
        {"email": ["a@example.com"], "attach": ["terms.txt"]}), data=tmp_path / "crm-export")
    assert read_requests(out)[0]["body"]["attach"][0]["name"] == "terms.txt"


def test_a_failed_csv_read_back_with_pandas_loses_its_formula_guards(tmp_path: Path) -> None:
    frame = pd.DataFrame({"email": ["bad", "a@example.com"], "content.note": ["=1+2", "-5"],
                          "@owner": ["me", "you"]})
    first, _ = dry_run(tmp_path, "first", frame)
    failed = pd.read_csv(first / "failed.csv", dtype=str, keep_default_na=False)
    assert (failed.loc[0, "content.note"], failed.columns[2]) == ("'=1+2", "'@owner")
    assert FrameTable(failed, Path("failed")).headers[:3] == ["email", "content.note", "@owner"]
    failed.loc[0, "email"] = "b@example.com"
    again, _ = dry_run(tmp_path, "again", failed)
    assert read_requests(again)[0]["body"]["content"] == {"note": "=1+2"}


# --- mistakes -------------------------------------------------------------------------------


def test_what_is_not_a_frame_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"frame= takes a pandas DataFrame, not Series; a "
                                         r"Series is one column: pass series\.to_frame\(\)"):
        dry_run(tmp_path, "out", pd.Series(["a@example.com"], name="email"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"not list$"):
        dry_run(tmp_path, "out", [["a@example.com"]])  # type: ignore[arg-type]


def test_file_options_are_refused_for_a_frame(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^the sheet option applies to files, and the input "
                                         r"is a DataFrame; leave sheet unset$"):
        dry_run(tmp_path, "out", pd.DataFrame({"email": ["a@example.com"]}), sheet="Data")


def test_a_frame_without_columns_or_rows_is_refused_before_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^the DataFrame given as crm-export has no columns"):
        dry_run(tmp_path, "out", pd.DataFrame(index=range(3)))
    with pytest.raises(InputFileError, match=r"^crm-export has a header but no data rows"):
        dry_run(tmp_path, "out", pd.DataFrame({"email": []}))
    assert not (tmp_path / "out").exists()


# --- pandas stays optional ----------------------------------------------------------------


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


# In a process of their own, like the kill tests: `make mutate` (which leaves slow tests out)
# could not follow its mutants there.
@pytest.mark.slow
def test_importing_batch_engage_does_not_import_pandas(tmp_path: Path) -> None:
    done = python("""
        import sys
        import batch_engage
        import batch_engage.cli
        print("pandas" in sys.modules)
    """, tmp_path)
    assert (done.stdout, done.stderr) == ("False\n", "")


@pytest.mark.slow
def test_without_pandas_files_run_and_a_frame_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("email\na@example.com\n", "utf-8")
    done = python("""
        import sys
        sys.modules["pandas"] = None  # as if it were not installed
        from pathlib import Path
        from batch_engage import RunOptions, UsageError, run
        summary = run(RunOptions(input=Path("in.csv"), workflow_id=1, dry_run=True,
                                 out=Path("out")))
        print(dict(summary.outcomes))
        try:
            run(RunOptions(input=Path("x"), workflow_id=1, dry_run=True), frame=object())
        except UsageError as e:
            print(e)
    """, tmp_path)
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "{'valid': 1}",
        "a DataFrame input needs pandas, which is not installed: "
        "pip install 'batch-engage[pandas]'"]
    assert (tmp_path / "out" / "requests.jsonl").is_file()
