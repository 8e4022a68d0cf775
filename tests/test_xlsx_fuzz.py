"""Property tests for the streaming XLSX reader: any workbook openpyxl writes is read by
batch_engage.xlsx as openpyxl (load_workbook, not read-only) reads it back.

openpyxl is the judge of what each file holds, with two exceptions, each checked in its own
way. openpyxl does not decode Excel's ``_xHHHH_`` escapes, so for text the judge is the text
that the test itself escaped (openpyxl is still asked to confirm that the file holds the
escaped form). And openpyxl does not render number formats, so for those the judge is a short
Decimal computation of what Excel shows.

openpyxl 3.1 writes every string inline (``t="inlineStr"``), in normal and in write-only mode;
the "shared" mode moves them into a shared-string table as Excel stores them. The file's XML
is then varied as other writers vary it, without changing what it says: non-ASCII characters
as character references, a carriage return as ``&#13;``, namespace prefixes (``ns0:row``).
So both the reader's regular-expression path (Excel's usual shape) and its expat path are
covered.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import openpyxl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openpyxl.cell import Cell as JudgedCell
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.rich_text import CellRichText, TextBlock
from openpyxl.cell.text import InlineFont
from openpyxl.utils.datetime import CALENDAR_MAC_1904
from openpyxl.worksheet.worksheet import Worksheet

from batch_engage.xlsx import Row, Sheet, Workbook

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
MAX_ROW = 1_048_576
MAX_COLUMN = 16_384
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],  # long texts are meant to be long
    phases=[p for p in Phase if p is not Phase.explain],  # explaining a failure takes a minute
)

Mode = Literal["inline", "write_only", "shared"]
LineEnd = Literal["escape", "raw", "reference"]
"""How a carriage return is written: as Excel does (_x000D_), raw (as openpyxl does, which
XML reads as a line feed), or as the character reference &#13;."""


@dataclass(frozen=True)
class Text:
    runs: tuple[str, ...]
    """The text as Excel means it, run by run; more than one run makes rich text."""


@dataclass(frozen=True)
class Error:
    code: str


Value = Text | Error | bool | int | float | dt.date | dt.datetime | dt.time | dt.timedelta


@dataclass(frozen=True)
class Cell:
    value: Value
    number_format: str | None = None
    """None: the format openpyxl gives the value (General; yyyy-mm-dd for a date...)."""


@dataclass(frozen=True)
class SheetSpec:
    title: str
    hidden: bool
    cells: dict[tuple[int, int], Cell]
    """By (row number, column index from 0)."""
    hidden_rows: frozenset[int]


@dataclass(frozen=True)
class BookSpec:
    sheets: list[SheetSpec]
    mode: Mode = "inline"
    date1904: bool = False
    cr: LineEnd = "escape"
    phonetic: bool = False
    """Shared mode: give every shared string a phonetic run, which is not part of the text."""
    char_refs: bool = False
    """Sheets and shared strings in ASCII: every other character as &#N;."""
    prefixed: bool = False
    """Sheets and shared strings rewritten by ElementTree, which names the namespace ns0:."""


@dataclass(frozen=True)
class Number:
    """A number shown in General, to be compared as a number."""

    value: float


# --- text as Excel writes it ------------------------------------------------------------------

_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_ESCAPE_TAIL = re.compile(r"x[0-9A-Fa-f]{4}_")


def excel_escape(text: str, escape_cr: bool) -> str:
    """The text as an Excel file holds it (ECMA-376 ST_Xstring): a character XML cannot hold
    becomes _xHHHH_, and an underscore becomes _x005F_ where what follows it would otherwise
    make an escape of it. Built back to front, so that "what follows" is the escaped text."""
    out: list[str] = []  # back to front
    for ch in reversed(text):
        control = ch < " " and ch not in "\t\n" and (escape_cr or ch != "\r")
        if control or ch in "\ufffe\uffff":
            out.append(f"_x{ord(ch):04X}_")
        elif ch == "_" and _ESCAPE_TAIL.match("".join(reversed(out[-6:]))):
            out.append("_x005F_")
        else:
            out.append(ch)
    return "".join(reversed(out))


def xml_line_ends(text: str) -> str:
    """What any XML parser makes of a raw CR or CRLF in text: one LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def as_written(run: str, cr: LineEnd) -> str:
    """The text an XML parser reads from the file for one run (escapes still escaped)."""
    if cr == "raw":
        return xml_line_ends(excel_escape(run, escape_cr=False))
    held = excel_escape(run, escape_cr=True)
    if cr == "reference":  # each _x000D_ escape was replaced by &#13;, a CR to any parser
        held = _ESCAPE.sub(lambda m: "\r" if int(m[1], 16) == 13 else m[0], held)
    return held


# --- strategies -------------------------------------------------------------------------------

_PIECES = [
    "\r", "\r\n", "\n", "\t", "\x00", "\x01", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff",
    "\ufffe", "\uffff", "_x000D_", "_x005F_", "_x0041_", "_x00e9_", "_xD83D_", "_X0041_",
    "_x", "x005F_", "x0041_", "_", "0041_", "<", ">", "&", '"', "'", "&amp;", "]]>", " ", "  ",
    "😀", "Ёлка", "中文", "#N/A", "=1+1",
]
_pieces = st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(_PIECES))
short_texts = st.lists(_pieces, max_size=5).map("".join)
run_texts = st.lists(_pieces, min_size=1, max_size=3).map("".join)
# Longer than the reader's 64 KB read chunks (2 to 4 bytes a character), and nothing to
# escape, so openpyxl's 32,767-character limit is never reached.
_LONG_ALPHABET = st.characters(min_codepoint=0x400, exclude_categories=["Cs"],
                               exclude_characters="\ufffe\uffff")
long_texts = st.builds(lambda unit, length: (unit * length)[:length],
                       st.text(_LONG_ALPHABET, min_size=1, max_size=8),
                       st.integers(20_000, 32_000))
# Runs that make an escape only when joined ("_" then "x0041_"): each run is escaped alone.
_EDGES = st.sampled_from(["_", "_x", "_x00", "x0041_", "x005F_", "0041_", "41_"])
# Mostly plain text: a rich or empty string anywhere in a sheet sends all of it (up to 64 KB)
# through the reader's expat path rather than its regular expressions.
texts = st.one_of(
    run_texts.map(lambda t: Text((t,))),
    st.one_of(
        short_texts.map(lambda t: Text((t,))),
        st.lists(st.one_of(run_texts, _EDGES), min_size=2, max_size=4).map(
            lambda runs: Text(tuple(runs))),
        long_texts.map(lambda t: Text((t,))),
    ),
)
ERROR_CODES = ["#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#SPILL!",
               "#CALC!"]
numbers = st.one_of(
    st.sampled_from([-0.0, 0.1 + 0.2, 2.675, -0.005, 2**53 + 1, 2.0**53 + 2, 1e15, -(10.0**15),
                     1e-5]),
    st.integers(-1_000, 1_000),
    st.integers(-(2**70), 2**70),
    # Excel's range; openpyxl writes 16 digits, so the largest doubles would read back as inf
    st.floats(min_value=-1e307, max_value=1e307, allow_subnormal=False),
    # short decimals, with many half-way cases: 2.675, -0.005, 1234567.125...
    st.builds(lambda m, e: float(f"{m}e{e}"), st.integers(-(10**17), 10**17),
              st.integers(-20, 3)),
)
# openpyxl reads times to the millisecond; none is near a half second, where rounding to the
# second would depend on the last bit of the serial.
_micros = st.one_of(st.just(0),
                    st.integers(0, 999).filter(lambda ms: not 498 <= ms <= 502).map(
                        lambda ms: ms * 1000))
DATE_FORMATS = [None, "mm-dd-yy", "d-mmm-yy", "dd/mm/yyyy", "dddd, mmmm d, yyyy"]
DATETIME_FORMATS = [None, "m/d/yy h:mm", "dd.mm.yyyy hh:mm:ss", "yyyy-mm-dd hh:mm AM/PM"]
TIME_FORMATS = [None, "h:mm", "h:mm:ss AM/PM", "mm:ss"]
ELAPSED_FORMATS = [None, "[h]:mm:ss"]


def moments(first_day: dt.date) -> st.SearchStrategy[Cell]:
    """Dates, times and durations, each with a format that shows it."""
    start = dt.datetime.combine(first_day, dt.time())
    days = st.one_of(st.dates(first_day, first_day + dt.timedelta(days=100)),
                     st.dates(first_day, dt.date(9999, 12, 31)))
    datetimes = st.builds(lambda d, t, us: dt.datetime.combine(d, t).replace(microsecond=us),
                          days, st.times(), _micros)
    return st.one_of(
        st.builds(Cell, days, st.sampled_from(DATE_FORMATS)),
        st.builds(Cell, datetimes.filter(
            lambda m: start <= m <= dt.datetime(9999, 12, 31, 23, 59)),
            st.sampled_from(DATETIME_FORMATS)),
        st.builds(Cell, st.builds(lambda t, us: t.replace(microsecond=us), st.times(), _micros),
                  st.sampled_from(TIME_FORMATS)),
        st.builds(Cell, st.builds(lambda s, us: dt.timedelta(seconds=s, microseconds=us),
                                  st.integers(0, 9_999 * 86_400), _micros),
                  st.sampled_from(ELAPSED_FORMATS)),
    )


def cells(first_day: dt.date) -> st.SearchStrategy[Cell]:
    return st.one_of(
        texts.map(Cell),
        numbers.map(Cell),
        st.booleans().map(Cell),
        st.sampled_from(ERROR_CODES).map(lambda code: Cell(Error(code))),
        moments(first_day),
    )


# No characters openpyxl refuses or XML cannot hold; short enough that openpyxl's renaming of
# a duplicate stays within Excel's 31 characters.
titles = st.text(st.characters(exclude_categories=("Cc", "Cs"),
                               exclude_characters="\\*?:/[]\ufffe\uffff"),
                 min_size=1, max_size=25)


@st.composite
def books(draw: st.DrawFn) -> BookSpec:
    mode: Mode = draw(st.sampled_from(["inline", "write_only", "shared"]))
    date1904 = draw(st.booleans())
    # Excel's first day; 1904-01-01 is serial 0, which openpyxl reads as a time of day.
    first_day = dt.date(1904, 1, 2) if date1904 else dt.date(1900, 1, 1)
    # write-only mode writes every row up to the last, so it gets fewer of them
    last_row = 40 if mode == "write_only" else MAX_ROW
    rows = st.one_of(st.integers(1, 30), st.integers(1, last_row))
    columns = st.one_of(st.integers(0, 30), st.integers(0, MAX_COLUMN - 1))
    sheets = draw(st.lists(st.builds(
        SheetSpec,
        title=titles,
        hidden=st.booleans(),
        cells=st.dictionaries(st.tuples(rows, columns), cells(first_day), max_size=25),
        hidden_rows=st.frozensets(rows, max_size=5),
    ), min_size=1, max_size=3))
    if all(s.hidden for s in sheets):  # a workbook shows at least one sheet
        sheets[-1] = SheetSpec(sheets[-1].title, False, sheets[-1].cells, sheets[-1].hidden_rows)
    cr: LineEnd = draw(st.sampled_from(["escape", "raw", "reference"]))
    phonetic, char_refs = draw(st.booleans()), draw(st.booleans())
    prefixed = draw(st.sampled_from([False, False, True]))  # expat for everything
    return BookSpec(sheets, mode, date1904, cr, phonetic, char_refs, prefixed)


# --- writing ----------------------------------------------------------------------------------


def fill(cell: JudgedCell, spec: Cell, cr: LineEnd) -> None:
    value = spec.value
    if isinstance(value, Text):
        runs = [excel_escape(run, escape_cr=cr != "raw") for run in value.runs]
        if len(runs) == 1:
            cell.value = runs[0]
        else:
            cell.value = CellRichText(
                [run if i % 2 == 0 else TextBlock(InlineFont(b=True), run)
                 for i, run in enumerate(runs)])
        cell.data_type = "s"  # text, even when it reads "=1+1" or "#N/A"
    elif isinstance(value, Error):
        cell.value = value.code
        cell.data_type = "e"
    else:
        cell.value = value
    if spec.number_format is not None:
        cell.number_format = spec.number_format


def write_book(path: Path, book: BookSpec) -> None:
    write_only = book.mode == "write_only"
    wb = openpyxl.Workbook(write_only=write_only)
    if book.date1904:
        wb.epoch = CALENDAR_MAC_1904
    if not write_only:
        wb.remove(wb.worksheets[0])
    for spec in book.sheets:
        ws = wb.create_sheet(spec.title)
        ws.sheet_state = "hidden" if spec.hidden else "visible"
        for number in spec.hidden_rows:
            ws.row_dimensions[number].hidden = True
        if not write_only:
            for (number, column), cell in spec.cells.items():
                fill(ws.cell(row=number, column=column + 1), cell, book.cr)
            continue
        last = max([number for number, _ in spec.cells] + list(spec.hidden_rows), default=0)
        for number in range(1, last + 1):
            line: list[JudgedCell | None] = []
            for (row, column), cell in sorted(spec.cells.items()):
                if row == number:
                    line.extend([None] * (column - len(line)))
                    written = WriteOnlyCell(ws)
                    fill(written, cell, book.cr)
                    line.append(written)
            ws.append(line)
    wb.active = next(i for i, s in enumerate(book.sheets) if not s.hidden)
    wb.save(path)
    rewrite(path, book)


_INLINE = re.compile(rb'<c ([^>]*)t="inlineStr"(?: />|><is>(.*?)</is></c>)', re.DOTALL)
_PHONETIC_RUN = ('<rPh sb="0" eb="1"><t>ルビ</t></rPh><phoneticPr fontId="1"/>').encode()
_BYTES_ESCAPE = re.compile(_ESCAPE.pattern.encode())


def rewrite(path: Path, book: BookSpec) -> None:
    """Vary the XML of the sheets (and move their strings to a shared table) as BOOK says;
    what each cell holds stays the same."""
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    names = [name for name in parts if name.startswith("xl/worksheets/")]
    if book.mode == "shared":
        table: dict[bytes, int] = {}

        def share(m: re.Match[bytes]) -> bytes:
            entry = (m[2] or b"<t/>") + (_PHONETIC_RUN if book.phonetic else b"")
            index = table.setdefault(entry, len(table))
            return b"<c " + m[1] + b't="s"><v>' + str(index).encode() + b"</v></c>"

        for name in names:
            parts[name] = _INLINE.sub(share, parts[name])
        parts["xl/sharedStrings.xml"] = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="{MAIN_NS}" '
            f'count="{len(table)}" uniqueCount="{len(table)}">'.encode()
            + b"".join(b"<si>" + entry + b"</si>" for entry in table) + b"</sst>")
        parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
            b"</Types>",
            b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
            b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
        parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
            b"</Relationships>",
            b'<Relationship Id="rIdStrings" Target="sharedStrings.xml" Type="http://schemas.'
            b'openxmlformats.org/officeDocument/2006/relationships/sharedStrings"/>'
            b"</Relationships>")
        names.append("xl/sharedStrings.xml")
    for name in names:
        data = parts[name]
        if book.prefixed:
            data = ElementTree.tostring(ElementTree.fromstring(data), encoding="utf-8")
        if book.cr == "reference":
            data = _BYTES_ESCAPE.sub(lambda m: b"&#13;" if int(m[1], 16) == 13 else m[0], data)
        if book.char_refs:
            data = data.decode().encode("ascii", "xmlcharrefreplace")
        parts[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


# --- reading and judging ----------------------------------------------------------------------


def read_ours(path: Path) -> list[tuple[Sheet, list[Row]]]:
    with Workbook(path) as book:
        return [(sheet, list(book.rows(sheet))) for sheet in book.sheets]


def worksheets(path: Path) -> list[Worksheet]:
    judged = openpyxl.load_workbook(path).worksheets
    assert all(isinstance(ws, Worksheet) for ws in judged)
    return [ws for ws in judged if isinstance(ws, Worksheet)]


def to_second(moment: dt.datetime) -> dt.datetime:
    return (moment + dt.timedelta(microseconds=500_000)).replace(microsecond=0)


def expected_text(spec: Cell, judged: JudgedCell | None, book: BookSpec) -> str | Number:
    """What the cell must show: text as Excel means it, anything else as openpyxl reads it."""
    value = spec.value
    if isinstance(value, Text):
        held = "".join(as_written(run, book.cr) for run in value.runs)
        if book.mode == "shared":  # openpyxl's shared-string reader deletes every "x005F_"
            held = held.replace("x005F_", "")
        # the file holds the escaped text
        assert ((judged.value if judged else None) or None) == (held or None)
        if book.cr == "raw":
            return "".join(map(xml_line_ends, value.runs))
        return "".join(value.runs)
    assert judged is not None
    got = judged.value
    if isinstance(value, Error):
        assert (judged.data_type, got) == ("e", value.code)
        return value.code
    if isinstance(value, bool):
        assert got is value
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        assert isinstance(got, int | float)
        if isinstance(got, int) and abs(got) < 10**15:
            return str(got)  # General shows a whole number's digits
        return Number(float(got))
    if isinstance(value, dt.datetime):
        assert isinstance(got, dt.datetime)
        return to_second(got).isoformat()
    if isinstance(value, dt.date):
        assert isinstance(got, dt.datetime)
        return got.date().isoformat()
    if isinstance(value, dt.time):
        assert isinstance(got, dt.time)
        return to_second(dt.datetime.combine(dt.date(2000, 1, 1), got)).time().isoformat()
    assert isinstance(got, dt.timedelta)
    seconds = round(got.total_seconds())
    hours = str(seconds // 3600).zfill(1 if spec.number_format == "[h]:mm:ss" else 2)
    return f"{hours}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


_GENERAL = re.compile(r"-?[0-9]+(\.[0-9]+)?(E[+-][0-9]{2,3})?")


def assert_shows(shown: str, expected: str | Number) -> None:
    if isinstance(expected, Number):
        # General: at most 15 significant digits, Excel's E notation
        assert _GENERAL.fullmatch(shown), shown
        assert float(shown) == float(f"{expected.value:.15g}"), (shown, expected.value)
    else:
        assert shown == expected


@FUZZ
@given(book=books())
def test_reads_what_openpyxl_reads_back(tmp_path: Path, book: BookSpec) -> None:
    path = tmp_path / "fuzz.xlsx"
    write_book(path, book)
    judged = worksheets(path)
    ours = read_ours(path)
    assert [(s.name, s.hidden, s.chart) for s, _ in ours] == [
        (ws.title, ws.sheet_state != "visible", False) for ws in judged]
    for spec, (_, rows), ws in zip(book.sheets, ours, judged, strict=True):
        numbers = [row.number for row in rows]
        assert numbers == sorted(set(numbers))
        assert {row.number for row in rows if row.hidden} == {
            number for number, dim in ws.row_dimensions.items() if dim.hidden}
        shown = {(row.number, i): text for row in rows for i, text in enumerate(row.cells)
                 if text}
        expected = {}
        for (number, column), cell in spec.cells.items():
            judged_cell = ws._cells.get((number, column + 1))
            assert judged_cell is None or isinstance(judged_cell, JudgedCell)
            expected[number, column] = expected_text(cell, judged_cell, book)
        expected = {pos: text for pos, text in expected.items() if text != ""}
        assert shown.keys() == expected.keys()
        for pos, text in expected.items():
            assert_shows(shown[pos], text)
        assert {(row.number, i) for row in rows for i in row.errors} == {
            pos for pos, cell in spec.cells.items() if isinstance(cell.value, Error)}


# --- number formats ---------------------------------------------------------------------------

# code: (prefix, least whole digits, thousands separator, decimals, percent)
NUMBER_FORMATS = {
    "0": ("", 1, False, 0, False),
    "0.00": ("", 1, False, 2, False),
    "#,##0": ("", 1, True, 0, False),
    "#,##0.00": ("", 1, True, 2, False),
    "0%": ("", 1, False, 0, True),
    "0.00%": ("", 1, False, 2, True),
    "00000": ("", 5, False, 0, False),
    '"$"#,##0.00': ("$", 1, True, 2, False),
}


def excel_shows(value: float, code: str) -> str:
    """What Excel shows: the value to 15 significant digits, rounded half up to the format's
    decimals, with a minus sign whenever the value is negative."""
    prefix, digits, thousands, decimals, percent = NUMBER_FORMATS[code]
    with localcontext(prec=1000):
        number = abs(Decimal(f"{value:.15g}")) * (100 if percent else 1)
        rounded = number.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{rounded:f}".partition(".")
    whole = f"{int(whole):,}" if thousands else whole.zfill(digits)
    text = prefix + whole + ("." + fraction if fraction else "") + ("%" if percent else "")
    return "-" + text if value < 0 else text


@settings(FUZZ, max_examples=200)
@given(
    values=st.lists(st.tuples(numbers, st.sampled_from(list(NUMBER_FORMATS))), min_size=1,
                    max_size=30),
    mode=st.sampled_from(["inline", "write_only"]),
)
def test_number_formats_show_as_excel_does(
        tmp_path: Path, values: list[tuple[float, str]], mode: Mode) -> None:
    path = tmp_path / "formats.xlsx"
    specs = {(i, 0): Cell(value, code) for i, (value, code) in enumerate(values, start=1)}
    write_book(path, BookSpec([SheetSpec("Formats", False, specs, frozenset())], mode))
    ws = worksheets(path)[0]
    [(_, rows)] = read_ours(path)
    assert [row.number for row in rows] == list(range(1, len(values) + 1))
    for row, (_, code) in zip(rows, values, strict=True):
        judged = ws.cell(row=row.number, column=1)
        assert isinstance(judged.value, int | float)
        assert judged.number_format == code
        assert row.cells == [excel_shows(float(judged.value), code)]


# --- reader bugs, found by the properties above or while writing them -----------------------
# Each failed when it was written; the smallest case, so that a fix shows at once.


def shown_cells(path: Path) -> list[list[str]]:
    [(_, rows)] = read_ours(path)
    return [row.cells for row in rows]


def one_sheet(cells: dict[tuple[int, int], Cell]) -> list[SheetSpec]:
    return [SheetSpec("Sheet", False, cells, frozenset())]


def test_negative_zero_shows_as_zero(tmp_path: Path) -> None:
    # openpyxl writes -0.0 as <v>-0</v>; openpyxl reads it back as 0, and Excel shows 0.
    # (Fixed since, by reading a General whole number as its digits only when isdigit().)
    path = tmp_path / "zero.xlsx"
    write_book(path, BookSpec(one_sheet({(1, 0): Cell(-0.0)})))
    assert shown_cells(path) == [["0"]]


@pytest.mark.parametrize(
    ("value", "code", "shown"),
    [
        (1000000000000001.0, "0", "1000000000000000"),  # no digits past the 15th
        (2.0**60, "#,##0", "1,152,921,504,606,850,000"),
        (28913476988.49998, "0", "28913476989"),  # 15 digits make it ...988.5000: up
        (211720080.3949998, "#,##0.00", "211,720,080.40"),
    ],
)
def test_number_formats_round_through_15_significant_digits(
        tmp_path: Path, value: float, code: str, shown: str) -> None:
    assert excel_shows(value, code) == shown
    path = tmp_path / "digits.xlsx"
    write_book(path, BookSpec(one_sheet({(1, 0): Cell(value, code)})))
    assert shown_cells(path) == [[shown]]


def test_large_number_in_a_two_section_format_is_shown(tmp_path: Path) -> None:
    # Built-in format 39; the reader raised decimal.InvalidOperation out of Workbook.rows
    # (and so out of open_table): the number has more digits than Decimal's default 28.
    path = tmp_path / "big.xlsx"
    write_book(path, BookSpec(one_sheet({(1, 0): Cell(1e30, "#,##0.00;(#,##0.00)")})))
    assert shown_cells(path) == [["1,000,000,000,000,000,000,000,000,000,000.00"]]


@pytest.mark.parametrize("mode", ["inline", "shared"])
def test_character_references_read_as_xml_reads_them(tmp_path: Path, mode: Mode) -> None:
    # &#128; is U+0080 (html.unescape makes it "€"), &#64976; is U+FDD0 (html.unescape
    # drops it), and &#13; is a carriage return that stays one (not a line feed).
    path = tmp_path / "references.xlsx"
    texts = ["\x80\x85\x9f", "a\ufdd0b", "a\rb"]
    write_book(path, BookSpec(one_sheet({(i, 0): Cell(Text((t,))) for i, t in
                                         enumerate(texts, start=1)}),
                              mode, cr="reference", char_refs=True))
    assert shown_cells(path) == [[t] for t in texts]


def test_shared_string_longer_than_a_read_chunk(tmp_path: Path) -> None:
    # The third string starts near the end of the first 64 KB and ends after the next
    # 64 KB: the reader dropped it, and every later string moved up by one.
    path = tmp_path / "long.xlsx"
    texts = ["a" * 30_000, "b" * 30_000, "中" * 25_000, "c"]
    write_book(path, BookSpec(one_sheet({(i, 0): Cell(Text((t,))) for i, t in
                                         enumerate(texts, start=1)}), "shared"))
    assert shown_cells(path) == [[t] for t in texts]


@pytest.mark.parametrize("mode", ["inline", "shared"])
def test_rich_text_runs_are_unescaped_one_by_one(tmp_path: Path, mode: Mode) -> None:
    # Each run (<t>) is an escaped string of its own: a run "_" and a run "x0041_" make the
    # text "_x0041_"; the reader joined the runs first and read an escaped "A".
    path = tmp_path / "runs.xlsx"
    write_book(path, BookSpec(one_sheet({(1, 0): Cell(Text(("_", "x0041_")))}), mode))
    assert shown_cells(path) == [["_x0041_"]]


def test_shared_string_cell_without_value_is_empty(tmp_path: Path) -> None:
    # <c r="B1" t="s"/> is a valid cell (its <v> is optional); the reader's regular
    # expression path raised ValueError on int("").
    path = tmp_path / "empty.xlsx"
    write_book(path, BookSpec(one_sheet({(1, 0): Cell(Text(("x",))),
                                         (1, 1): Cell(Text(("",)))}), "shared"))
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"]
    parts["xl/worksheets/sheet1.xml"] = re.sub(rb'<c r="B1" t="s"><v>\d+</v></c>',
                                               b'<c r="B1" t="s"/>', sheet)
    assert parts["xl/worksheets/sheet1.xml"] != sheet
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    assert shown_cells(path) == [["x", ""]]
