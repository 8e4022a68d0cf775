"""Write the golden test workbooks and, where LibreOffice is installed, their golden CSVs.

Run from the repository root (``make golden-workbooks``). Every workbook is rebuilt byte for
byte the same (fixed document dates, fixed ZIP entry times). Each golden CSV is what
LibreOffice Calc shows in the first *visible* sheet of its workbook, cell by cell ("save cell
contents as shown"), written by LibreOffice itself in headless mode; without ``soffice`` the
committed golden CSVs are left as they are. See README.md beside this file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from openpyxl import Workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import CALENDAR_MAC_1904
from openpyxl.worksheet.worksheet import Worksheet

HERE = Path(__file__).resolve().parent
# Tokens: comma, double quote, UTF-8 (76), from line 1, no column types, language 0 (the
# process locale: C.UTF-8 below, which LibreOffice takes as en-US), do not quote every text
# cell, (import only), save cell contents AS SHOWN. A 12th token, the sheet's 1-based number,
# is appended for the sheet to export; LibreOffice then names the file <stem>-<sheet name>.csv.
CSV_FILTER = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true"
# Fixed document dates and ZIP entry times, so that every run writes the same bytes.
FIXED_STAMP = dt.datetime(2026, 1, 1, 0, 0, 0)
ZIP_TIME = (2026, 1, 1, 0, 0, 0)
SOFFICE_TIMEOUT_SECONDS = 180

Value = str | int | float | bool | dt.datetime | dt.date | dt.time | None


@dataclass(frozen=True, slots=True)
class Column:
    """One ``content.<label>`` column: a number format and the values under the header."""

    label: str
    number_format: str
    values: tuple[Value, ...]


def email(n: int) -> str:
    return f"a{n}@example.com"


def write_sheet(ws: Worksheet, columns: Sequence[Column], *, email_of: Callable[[int], str]
                = email) -> None:
    """Header ``email, content.<label>...``; row r+2 holds the r-th value of every column."""
    ws.append(["email", *(f"content.{c.label}" for c in columns)])
    height = max(len(c.values) for c in columns)
    for r in range(height):
        ws.cell(row=r + 2, column=1, value=email_of(r + 1))
        for i, col in enumerate(columns, start=2):
            if r < len(col.values) and col.values[r] is not None:
                cell = ws.cell(row=r + 2, column=i, value=col.values[r])
                cell.number_format = col.number_format
    for i in range(1, len(columns) + 2):
        ws.column_dimensions[get_column_letter(i)].width = 22


def new_book() -> tuple[Workbook, Worksheet]:
    wb = Workbook()
    wb.properties.creator = "make_workbooks.py"
    wb.properties.created = FIXED_STAMP
    ws = wb.active
    assert isinstance(ws, Worksheet)
    return wb, ws


# --- formats.xlsx ----------------------------------------------------------------------------

D = dt.date
T = dt.time
DT = dt.datetime

FORMAT_COLUMNS = (
    Column("zero5", "00000", (1234, -42, 0, 123456, 7, 0.4, 99999.6)),
    Column("zero6", "000000", (1234, -42, 0, 1234567, 7, 5.5)),
    Column("fixed2", "0.00", (19.9, -3.14159, 0, 1234567.891, 0.004, 2.675, 1.005)),
    Column("fixed1", "0.0", (19.95, -0.04, 0, 98765432.1, 0.05, 0.25)),
    Column("thousands", "#,##0", (1234567, -9876, 0, 12345678901, 0.4, 999.5)),
    Column("thousands2", "#,##0.00", (1234.5, -1234567.891, 0, 1e12, 0.001)),
    Column("percent", "0%", (0.15, -0.05, 0, 12.5, 0.004, 0.125)),
    Column("percent2", "0.00%", (0.15, -0.0525, 0, 12.3456, 0.00001)),
    Column("usd", '"$"#,##0.00', (1234.5, -99.99, 0, 1e9, 0.01)),
    Column("rub", '#,##0.00 "₽"', (1234.5, -99.99, 0, 1e9, 0.01)),
    Column("eur", "[$€-407] #,##0.00", (1234.5, -99.99, 0, 1e9, 0.01)),
    Column("sections", '#,##0.00;[Red]-#,##0.00;"zero"', (1234.5, -1234.5, 0, 1e7, 0.001)),
    Column("parens", "0.00;(0.00)", (5.5, -5.5, 0, 123456.789, -0.001)),
    Column("general", "General", (
        274.66, 0.1 + 0.2, 1 / 3, 123456789012, 79001234567, 1e20, 0.000012345, -5.5,
        0, 1234567.125, 100000000000000.0, 2 / 3 * 1000,
    )),
    Column("text", "@", ("00123", "0042", "79001234567", "12345678901234567890", "1.50",
                         "1e5")),
    Column("elapsed_hms", "[h]:mm:ss", (1.5, 0.25, 0, 2.75 + 1 / 86400, 100 + 1 / 48)),
    Column("time_mmss", "mm:ss", (T(0, 12, 34), T(0, 0, 5), T(0, 59, 59), T(0, 0, 0))),
    Column("time_ampm", "h:mm AM/PM", (T(8, 30), T(20, 45), T(0, 0), T(12, 0), T(23, 59))),
    Column("time_hhmmss", "hh:mm:ss", (T(8, 30), T(23, 59, 59), T(0, 0), T(12, 0, 1))),
    Column("date_iso", "yyyy-mm-dd", (
        D(1990, 1, 15), D(2026, 11, 20), D(2000, 2, 29), D(1900, 3, 1), D(9999, 12, 31),
        DT(2026, 11, 20, 8, 30), D(1900, 1, 15), D(1900, 2, 28),
    )),
    Column("date_dmy", "dd.mm.yyyy", (D(1990, 1, 15), D(2026, 11, 20), D(1969, 7, 20))),
    Column("date_mdy", "m/d/yyyy", (D(1990, 1, 15), D(2026, 11, 20), D(2024, 2, 29))),
    Column("date_dmmmy", "d mmm yyyy", (D(1990, 1, 15), D(2026, 11, 20), D(2001, 9, 9))),
    Column("datetime_iso", "yyyy-mm-dd hh:mm:ss", (
        DT(1990, 1, 15, 8, 30), DT(2026, 11, 20, 23, 59, 59), DT(2026, 11, 20, 0, 0),
        DT(2000, 2, 29, 12, 0, 1),
    )),
    Column("datetime_dmyhm", "dd.mm.yyyy hh:mm", (
        DT(1990, 1, 15, 8, 30), DT(2026, 11, 20, 23, 59), DT(2026, 11, 20, 0, 0),
    )),
    Column("bool", "General", (True, False, True)),
    Column("sci", "0.00E+00", (12345.678, -0.000123, 0, 1e20, 1)),
)


def formats_book() -> Workbook:
    wb, ws = new_book()
    ws.title = "Formats"
    write_sheet(ws, FORMAT_COLUMNS)
    return wb


# --- hidden rows -----------------------------------------------------------------------------

CITIES = ("Moscow", "Kazan", "Moscow", "Omsk", "Kazan", "Moscow", "Omsk", "Moscow")
NAMES = ("Anna", "Boris", "Vera", "Gleb", "Dina", "Egor", "Zoya", "Ilya")


def people_sheet(ws: Worksheet) -> None:
    write_sheet(ws, (
        Column("name", "General", NAMES),
        Column("city", "General", CITIES),
        Column("code", "00000", tuple(range(101, 101 + len(NAMES)))),
    ))


def hidden_by_hand_book() -> Workbook:
    """Rows 3 and 6 hidden by hand (Format > Rows > Hide), no filter."""
    wb, ws = new_book()
    ws.title = "People"
    people_sheet(ws)
    for row in (3, 6):
        ws.row_dimensions[row].hidden = True
    return wb


def hidden_filter_book() -> Workbook:
    """An AutoFilter keeping city = Moscow; the other rows are hidden, as Excel saves them."""
    wb, ws = new_book()
    ws.title = "People"
    people_sheet(ws)
    last = len(NAMES) + 1
    ws.auto_filter.ref = f"A1:D{last}"
    ws.auto_filter.add_filter_column(2, ["Moscow"])
    for row in range(2, last + 1):
        if CITIES[row - 2] != "Moscow":
            ws.row_dimensions[row].hidden = True
    return wb


# --- hidden_sheet.xlsx -----------------------------------------------------------------------


def hidden_sheet_book() -> Workbook:
    """The first sheet is hidden and holds other emails; the second one is the one to read."""
    wb, old = new_book()
    old.title = "Old"
    write_sheet(old, (Column("name", "General", ("Hidden1", "Hidden2", "Hidden3")),),
                email_of=lambda n: f"hidden{n}@example.com")
    old.sheet_state = "hidden"
    ws = wb.create_sheet("Customers")
    write_sheet(ws, (
        Column("name", "General", ("Anna", "Boris", "Vera", "Gleb")),
        Column("amount", "0.00", (19.9, 5, 0, 1234.5)),
    ))
    wb.active = 1
    return wb


# --- errors.xlsx -----------------------------------------------------------------------------

ERRORS = ("#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!")


def errors_book() -> Workbook:
    """Rows 2-8: one error each in content.value; row 9: #N/A only in ignored_col; row 10:
    no error; row 11: an error in content.name."""
    wb, ws = new_book()
    ws.title = "Errors"
    ws.append(["email", "content.name", "content.value", "ignored_col"])
    n = 0
    for n, error in enumerate(ERRORS, start=1):
        ws.append([email(n), f"Name{n}", error, "x"])
    ws.append([email(n + 1), "Ignored", "ok", "#N/A"])
    ws.append([email(n + 2), "Clean", 42, "y"])
    ws.append([email(n + 3), "#DIV/0!", "ok", "z"])
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            if cell.value in ERRORS:
                assert cell.data_type == "e", cell.coordinate
    return wb


# --- dates1904.xlsx --------------------------------------------------------------------------


def dates1904_book() -> Workbook:
    wb, ws = new_book()
    wb.epoch = CALENDAR_MAC_1904
    ws.title = "Dates"
    write_sheet(ws, (
        Column("date_iso", "yyyy-mm-dd", (
            D(1990, 1, 15), D(2026, 11, 20), D(1904, 1, 1), D(1904, 1, 2), D(2000, 2, 29),
        )),
        Column("date_dmy", "dd.mm.yyyy", (D(1990, 1, 15), D(2026, 11, 20), D(1904, 3, 1))),
        Column("datetime_iso", "yyyy-mm-dd hh:mm:ss", (
            DT(1990, 1, 15, 8, 30), DT(2026, 11, 20, 23, 59, 59), DT(1904, 1, 1, 12, 0),
        )),
        Column("time_hhmmss", "hh:mm:ss", (T(8, 30), T(23, 59, 59))),
        Column("general", "General", (274.66, 79001234567, 1.5)),
    ))
    return wb


BOOKS: dict[str, Callable[[], Workbook]] = {
    "formats.xlsx": formats_book,
    "hidden_by_hand.xlsx": hidden_by_hand_book,
    "hidden_filter.xlsx": hidden_filter_book,
    "hidden_sheet.xlsx": hidden_sheet_book,
    "errors.xlsx": errors_book,
    "dates1904.xlsx": dates1904_book,
}


# --- writing ---------------------------------------------------------------------------------


def first_visible_sheet(wb: Workbook) -> tuple[int, str]:
    """The 1-based number and the title of the first visible sheet."""
    for number, ws in enumerate(wb.worksheets, start=1):
        if ws.sheet_state == "visible":
            return number, ws.title
    raise ValueError("the workbook has no visible sheet")


_MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")


def save_deterministic(wb: Workbook, path: Path) -> None:
    """Save, then rewrite the ZIP with a fixed modification date and fixed entry times."""
    tmp = path.with_suffix(".tmp")
    wb.save(tmp)
    stamp = FIXED_STAMP.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = _MODIFIED.sub(rb"\g<1>" + stamp + rb"\g<2>", data)
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    tmp.unlink()


def check_error_cells(path: Path) -> None:
    """Error cells must be saved as t="e" (an error), not as text that reads like one."""
    with zipfile.ZipFile(path) as z:
        xml = z.read("xl/worksheets/sheet1.xml").decode("utf-8")
    found = re.findall(r'<c r="[A-Z]+\d+" t="e"><v>([^<]*)</v></c>', xml)
    if sorted(found) != sorted([*ERRORS, "#N/A", "#DIV/0!"]):
        raise SystemExit(f"{path.name}: unexpected error cells in the XML: {found}")


def soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def lo_version(program: str) -> str:
    result = subprocess.run([program, "--version"], capture_output=True, text=True,
                            check=True, timeout=SOFFICE_TIMEOUT_SECONDS)
    return result.stdout.strip()


def convert(program: str, book: Path, sheet_number: int, sheet_title: str) -> Path:
    """Export one sheet of BOOK as LibreOffice shows it; returns the golden CSV's path."""
    golden = book.with_name(book.stem + ".golden.csv")
    with tempfile.TemporaryDirectory(prefix="golden-workbooks-") as tmp:
        work = Path(tmp)
        # A profile of its own: no settings from the user's, and no clash with a running
        # LibreOffice. C.UTF-8: English (USA) separators, AM/PM and month names.
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "LANGUAGE": ""}
        cmd = [
            program, f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless", "--norestore",
            "--convert-to", f"{CSV_FILTER},false,false,{sheet_number}",
            "--outdir", str(work / "out"), str(book),
        ]
        subprocess.run(cmd, env=env, capture_output=True, check=True,
                       timeout=SOFFICE_TIMEOUT_SECONDS)
        # With a sheet number, LibreOffice names the file after the sheet.
        produced = work / "out" / f"{book.stem}-{sheet_title}.csv"
        if not produced.exists():
            made = sorted(p.name for p in (work / "out").glob("*"))
            raise SystemExit(f"{book.name}: LibreOffice wrote {made}, not {produced.name}")
        shutil.copyfile(produced, golden)
    return golden


def main() -> int:
    program = soffice()
    if program is None:
        print("soffice not found (Debian: apt-get install libreoffice-calc-nogui): "
              "workbooks written, golden CSVs left as they are", file=sys.stderr)
    else:
        print(f"using {lo_version(program)}")
    for name, build in BOOKS.items():
        wb = build()
        path = HERE / name
        save_deterministic(wb, path)
        if name == "errors.xlsx":
            check_error_cells(path)
        print(f"wrote {path.relative_to(HERE.parent.parent.parent)}")
        if program is not None:
            number, title = first_visible_sheet(wb)
            golden = convert(program, path, number, title)
            print(f"wrote {golden.relative_to(HERE.parent.parent.parent)} (sheet {title!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
