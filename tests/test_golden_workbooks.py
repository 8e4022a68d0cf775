"""The XLSX reader against what LibreOffice shows in the same workbooks.

tests/golden/workbooks/ holds small workbooks and, beside each, ``<stem>.golden.csv``: the first
visible sheet as LibreOffice Calc shows it, cell by cell (see README.md there; regenerate with
``make golden-workbooks``). This test only reads the committed CSVs: it never needs LibreOffice.

What the dry run must write, per the SPEC's "Input files":
- numbers, booleans, text and elapsed times (``[h]:mm:ss``): exactly the golden text, except the
  few cells where Excel is known to show something else than LibreOffice (EXCEL_DIFFERS);
- date and time cells: ISO 8601 (``1990-01-15``, ``1990-01-15T08:30:00``, ``08:30:00``) for the
  instant that LibreOffice shows in the sheet's own format (DATE_TIME_COLUMNS);
- rows hidden in the sheet: skipped.csv as ``hidden_in_sheet``, or sent with
  ``--include-hidden-rows``; the default sheet is the first visible one;
- a cell showing an Excel error in a ``content.*`` column: the row fails as ``cell_error``.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from .conftest import CliRun, read_csv, read_requests

WORKBOOKS = Path(__file__).parent / "golden" / "workbooks"
BOOKS = (
    "formats.xlsx",
    "hidden_by_hand.xlsx",
    "hidden_filter.xlsx",
    "hidden_sheet.xlsx",
    "errors.xlsx",
    "dates1904.xlsx",
)
# Sheet row numbers (header = 1) hidden in the first visible sheet; LibreOffice's CSV export
# keeps hidden rows, so the golden CSVs hold them too.
HIDDEN_ROWS: dict[str, frozenset[int]] = {
    "hidden_by_hand.xlsx": frozenset({3, 6}),  # hidden by hand
    "hidden_filter.xlsx": frozenset({3, 5, 6, 8}),  # AutoFilter city = Moscow
}
EXCEL_ERRORS = frozenset({"#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!"})
CONTENT = "content."
BOM = b"\xef\xbb\xbf"
FAILED_COLUMNS = ["_row", "_stage", "_error", "_error_text", "_attempts"]
SKIPPED_COLUMNS = ["_row", "_reason", "_detail"]

# Column label -> (kind, the strptime pattern that LibreOffice's text follows). The product
# writes these as ISO 8601 whatever the cell's format: kind "date" as 1990-01-15, "datetime"
# as 1990-01-15T08:30:00, "time" (a time of day) as 08:30:00.
DATE_TIME_COLUMNS: dict[str, tuple[str, str]] = {
    "date_iso": ("date", "%Y-%m-%d"),            # yyyy-mm-dd
    "date_dmy": ("date", "%d.%m.%Y"),            # dd.mm.yyyy
    "date_mdy": ("date", "%m/%d/%Y"),            # m/d/yyyy
    "date_dmmmy": ("date", "%d %b %Y"),          # d mmm yyyy
    "datetime_iso": ("datetime", "%Y-%m-%d %H:%M:%S"),  # yyyy-mm-dd hh:mm:ss
    "datetime_dmyhm": ("datetime", "%d.%m.%Y %H:%M"),   # dd.mm.yyyy hh:mm
    "time_mmss": ("time", "%M:%S"),              # mm:ss
    "time_ampm": ("time", "%I:%M %p"),           # h:mm AM/PM
    "time_hhmmss": ("time", "%H:%M:%S"),         # hh:mm:ss
}
ISO_SHAPE = {
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "datetime": re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"),
    "time": re.compile(r"\d{2}:\d{2}:\d{2}"),
}

_TRUNCATED = ("no double holds 1990-01-15 08:30 exactly; LibreOffice 7.4 truncates the serial, "
              "a fraction of a microsecond early, to 08:29:59, Excel rounds it to 08:30:00")
_LEAP_1900 = ("1900 date system: Excel counts the non-existent 1900-02-29, LibreOffice does "
              "not, so serials 1-59 show one day earlier in LibreOffice")
# (workbook, sheet row, header) -> (LibreOffice's text, Excel's text, why). The golden CSV may
# hold either (a newer LibreOffice may agree with Excel); the product must show Excel's.
EXCEL_DIFFERS: dict[tuple[str, int, str], tuple[str, str, str]] = {
    ("formats.xlsx", 3, "content.fixed1"): (
        "0.0", "-0.0", "-0.04 as 0.0: Excel keeps the minus of a negative value that rounds "
        "to zero, LibreOffice drops it"),
    ("formats.xlsx", 7, "content.general"): (
        "1E+020", "1E+20", "1e20 in General: LibreOffice writes a three-digit exponent"),
    ("formats.xlsx", 8, "content.general"): (
        "0.000012345", "1.2345E-05", "General below 1e-4: Excel switches to scientific "
        "(0.00001 shows 1E-05), LibreOffice keeps the decimals"),
    ("formats.xlsx", 2, "content.datetime_iso"): (
        "1990-01-15 08:29:59", "1990-01-15 08:30:00", _TRUNCATED),
    ("formats.xlsx", 2, "content.datetime_dmyhm"): (
        "15.01.1990 08:29", "15.01.1990 08:30", _TRUNCATED),
    ("formats.xlsx", 8, "content.date_iso"): ("1900-01-14", "1900-01-15", _LEAP_1900),
    ("formats.xlsx", 9, "content.date_iso"): ("1900-02-27", "1900-02-28", _LEAP_1900),
}


@dataclass(frozen=True, slots=True)
class Golden:
    headers: list[str]
    rows: dict[int, dict[str, str]]
    """Sheet row number -> header -> the text Excel shows (LibreOffice's, EXCEL_DIFFERS applied)."""

    def errors(self, number: int) -> list[tuple[str, str]]:
        """(header, error) of the cells showing an Excel error in the columns that are sent."""
        return [(h, v) for h, v in self.rows[number].items()
                if h.startswith(CONTENT) and v in EXCEL_ERRORS]


def load_golden(book: str) -> Golden:
    path = WORKBOOKS / book.replace(".xlsx", ".golden.csv")
    with path.open(encoding="utf-8", newline="") as f:
        header, *body = list(csv.reader(f))
    rows: dict[int, dict[str, str]] = {}
    for number, cells in enumerate(body, start=2):
        assert len(cells) == len(header), f"{path.name} line {number} is ragged"
        rows[number] = dict(zip(header, cells, strict=True))
    for (name, number, column), (lo_text, excel_text, why) in EXCEL_DIFFERS.items():
        if name == book:
            shown = rows[number][column]
            assert shown in {lo_text, excel_text}, (
                f"{path.name} row {number} {column}: {shown!r}; EXCEL_DIFFERS expects "
                f"{lo_text!r} ({why}): regenerated with another LibreOffice?")
            rows[number][column] = excel_text
    return Golden(header, rows)


def parse_iso(kind: str, text: str) -> dt.datetime:
    if kind == "date":
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
    if kind == "datetime":
        return dt.datetime.fromisoformat(text)
    return dt.datetime.combine(dt.date(1900, 1, 1), dt.time.fromisoformat(text))


def cell_problem(label: str, golden: str, actual: Any) -> str | None:
    """Why the product's content value is not the golden cell, or None when it is."""
    if not isinstance(actual, str):
        return f"{actual!r} is not a string (golden {golden!r})"
    if label not in DATE_TIME_COLUMNS:
        return None if actual == golden else f"{actual!r} != golden {golden!r}"
    kind, pattern = DATE_TIME_COLUMNS[label]
    if not ISO_SHAPE[kind].fullmatch(actual):
        return f"{actual!r} is not ISO 8601 {kind} text (golden shows {golden!r})"
    shown = dt.datetime.strptime(golden, pattern)
    # Compare what the cell's format shows (minutes of an mm:ss cell, the date of a date cell):
    # the product's instant, written in LibreOffice's pattern and read back, is the same.
    mine = dt.datetime.strptime(parse_iso(kind, actual).strftime(pattern), pattern)
    return None if mine == shown else f"{actual!r} is not the instant shown as {golden!r}"


def run_dry(invoke: CliRun, tmp_path: Path, book: str, *extra: str) -> Path:
    out = tmp_path / "out"
    result = invoke("run", WORKBOOKS / book, "-w", "1", "--dry-run", "--out", out, *extra)
    assert result.exit_code in {0, 1}, f"exit {result.exit_code}\n{result.output}"
    return out


def report_rows(path: Path) -> list[dict[str, str]]:
    """A report's rows, or none when the run did not write it; it must start with a BOM."""
    if not path.exists():
        return []
    assert path.read_bytes().startswith(BOM), f"{path.name} has no UTF-8 BOM"
    return read_csv(path)


def request_problems(golden: Golden, out: Path, sent: set[int]) -> list[str]:
    """Every way requests.jsonl differs from the golden rows that must be sent."""
    problems = []
    requests = read_requests(out)
    rows = [r["row"] for r in requests]
    if sorted(rows) != sorted(sent):
        problems.append(f"requests for rows {sorted(rows)}, expected rows {sorted(sent)}")
    for request in requests:
        number, body = request["row"], request["body"]
        if number not in golden.rows:
            problems.append(f"row {number}: not a row of the golden sheet")
            continue
        if number not in sent:
            problems.append(f"row {number}: sent, but it is hidden in the sheet or shows an "
                            f"Excel error: {golden.rows[number]}")
            continue
        cells = golden.rows[number]
        head = {k: body.get(k) for k in ("token", "id", "matching", "email")}
        want = {"token": "***", "id": 1, "matching": "email", "email": cells["email"]}
        if head != want:
            problems.append(f"row {number}: {head} != {want}")
        expected = {h.removeprefix(CONTENT): v for h, v in cells.items()
                    if h.startswith(CONTENT) and v != ""}
        content = body.get("content", {})
        for label in sorted(expected.keys() - content.keys()):
            problems.append(f"row {number} content.{label}: missing (golden "
                            f"{expected[label]!r})")
        for label in sorted(content.keys() - expected.keys()):
            problems.append(f"row {number} content.{label}: {content[label]!r} sent for an "
                            "empty or ignored cell")
        for label in sorted(expected.keys() & content.keys()):
            why = cell_problem(label, expected[label], content[label])
            if why is not None:
                problems.append(f"row {number} content.{label}: {why}")
    return problems


def failed_problems(golden: Golden, failed: list[dict[str, str]], failing: set[int]) -> list[str]:
    """failed.csv must hold exactly the rows showing an Excel error, as cell_error."""
    if failed and list(failed[0]) != golden.headers + FAILED_COLUMNS:
        return [f"failed.csv columns {list(failed[0])}, expected the input's then "
                f"{FAILED_COLUMNS}"]
    problems = []
    numbers = sorted(int(r["_row"]) for r in failed)
    if numbers != sorted(failing):
        problems.append(f"failed.csv rows {numbers}, expected {sorted(failing)}")
    for r in failed:
        number = int(r["_row"])
        if number not in failing:
            continue
        got = (r["email"], r["_stage"], r["_error"])
        if got != (golden.rows[number]["email"], "validation", "cell_error"):
            problems.append(f"failed.csv row {number}: (email, _stage, _error) = {got}")
        for header, error in golden.errors(number):
            if header not in r["_error_text"] or error not in r["_error_text"]:
                problems.append(f"failed.csv row {number}: _error_text {r['_error_text']!r} "
                                f"does not name {header} and {error}")
    return problems


def skipped_problems(golden: Golden, skipped: list[dict[str, str]], hidden: frozenset[int]
                     ) -> list[str]:
    """skipped.csv must list exactly the hidden rows as hidden_in_sheet, cells as shown."""
    if skipped and list(skipped[0]) != golden.headers + SKIPPED_COLUMNS:
        return [f"skipped.csv columns {list(skipped[0])}, expected the input's then "
                f"{SKIPPED_COLUMNS}"]
    problems = []
    rows = [r for r in skipped if r["_reason"] == "hidden_in_sheet"]
    numbers = sorted(int(r["_row"]) for r in rows)
    if numbers != sorted(hidden):
        problems.append(f"skipped.csv hidden_in_sheet rows {numbers}, expected {sorted(hidden)}")
    for r in rows:
        number = int(r["_row"])
        cells = {h: r[h] for h in golden.headers}
        if number in golden.rows and cells != golden.rows[number]:
            problems.append(f"skipped.csv row {number}: {cells} != golden "
                            f"{golden.rows[number]}")
    return problems


@pytest.mark.parametrize("book", BOOKS)
def test_golden_files_are_committed(book: str) -> None:
    assert (WORKBOOKS / book).is_file()
    assert load_golden(book).rows


@pytest.mark.parametrize("book", BOOKS)
def test_dry_run_shows_cells_as_excel_does(invoke: CliRun, tmp_path: Path, book: str) -> None:
    golden = load_golden(book)
    hidden = HIDDEN_ROWS.get(book, frozenset())
    failing = {n for n in golden.rows if n not in hidden and golden.errors(n)}
    sent = set(golden.rows) - hidden - failing
    out = run_dry(invoke, tmp_path, book)

    problems = request_problems(golden, out, sent)
    problems += failed_problems(golden, report_rows(out / "failed.csv"), failing)
    problems += skipped_problems(golden, report_rows(out / "skipped.csv"), hidden)
    assert not problems, "\n".join(f"{book}: {p}" for p in problems)


@pytest.mark.parametrize("book", sorted(HIDDEN_ROWS))
def test_include_hidden_rows_sends_them(invoke: CliRun, tmp_path: Path, book: str) -> None:
    golden = load_golden(book)
    out = run_dry(invoke, tmp_path, book, "--include-hidden-rows")
    problems = request_problems(golden, out, set(golden.rows))
    problems += skipped_problems(golden, report_rows(out / "skipped.csv"), frozenset())
    assert not problems, "\n".join(f"{book}: {p}" for p in problems)


def test_the_hidden_first_sheet_is_not_read(invoke: CliRun, tmp_path: Path) -> None:
    out = run_dry(invoke, tmp_path, "hidden_sheet.xlsx")
    emails = [r["body"]["email"] for r in read_requests(out)]
    assert emails == [f"a{n}@example.com" for n in range(1, 5)]


@pytest.mark.parametrize("book", BOOKS)
def test_hidden_rows_table_matches_the_workbook(book: str) -> None:
    """HIDDEN_ROWS says what the workbook holds (read with openpyxl, not the product)."""
    wb = openpyxl.load_workbook(WORKBOOKS / book)
    ws = next(s for s in wb.worksheets if s.sheet_state == "visible")
    hidden = {n for n, d in ws.row_dimensions.items() if d.hidden}
    assert hidden == HIDDEN_ROWS.get(book, frozenset())
