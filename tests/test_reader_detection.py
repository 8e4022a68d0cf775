"""What the reader tells from a file before and around reading its rows: the row count a
progress bar shows, which sheet and cells a workbook gives, what a file with the wrong suffix
really is, and which multi-line cells are a stray quote (SPEC "Input files")."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest

from batch_engage.errors import InputFileError
from batch_engage.reader import Record, _Shapes, detect_delimiter, detect_encoding, open_table

from .conftest import write_csv
from .test_reader import make_xlsx, rows

# --- the row count a progress bar shows ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "expected"),
    [
        ("email\na@b.co\nc@d.co\n", "utf-8", 2),
        ("email\r\na@b.co\r\nc@d.co", "utf-8", 2),  # no line end after the last row
        ("email\n", "utf-8", 0),
        # A blank last line is a row that records() yields (and the run counts as blank).
        ("email\na@b.co\n\n", "utf-8", 2),
        ("email\na@b.co\n\n", "utf-8-sig", 2),
        ("email\r\na@b.co\r\nc@d.co\r\n", "utf-16", 2),  # Excel's "Unicode text"
        ("email\na@b.co\nc@d.co\n", "utf-16-le", 2),
        ("email\r\n", "utf-16", 0),
        # Only line ends are trimmed from the end: a last row of spaces or of letters counts.
        ("email\na@b.co\n  \n", "utf-16", 2),
        ("mark\nA\nX\n", "utf-16", 2),
    ],
)
def test_estimated_rows_are_the_rows_records_yields(
    tmp_path: Path, text: str, encoding: str, expected: int
) -> None:
    table = open_table(write_csv(tmp_path / "in.csv", text, encoding))
    try:
        assert table.estimate_rows() == expected
        assert len(list(table.records())) == expected
    finally:
        table.close()


def test_estimated_rows_count_line_ends_past_the_first_mebibyte(tmp_path: Path) -> None:
    """The file is read in 1 MiB chunks: each one's line ends add up."""
    count = 130_000  # about 1.2 MB of rows
    path = write_csv(tmp_path / "in.csv", "email,n\n" + "a@b.co,1\n" * count)
    table = open_table(path)
    try:
        assert table.estimate_rows() == count
    finally:
        table.close()


def test_estimated_rows_of_utf16_survive_a_damaged_code_unit(tmp_path: Path) -> None:
    """Past the header, a lone surrogate is an error records() reports; the estimate, made
    before the rows are read, must not fail on it."""
    damaged = "\ud800".encode("utf-16-le", "surrogatepass")
    body = "email\n" + "a@b.co\n" * 1000
    data = body.encode("utf-16-le") + damaged + "c@d.co\n".encode("utf-16-le")
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    table = open_table(path, encoding="utf-16-le")
    try:
        assert table.estimate_rows() == 1001
        with pytest.raises(InputFileError, match=r"^row \d+: the text is not valid utf-16-le;"):
            list(table.records())
    finally:
        table.close()


@pytest.mark.parametrize(
    ("sheet", "expected"),
    [
        ([["email"], ["a@b.co"], ["c@d.co"], ["e@f.co"]], 3),
        ([["email"]], 0),
        # Empty rows above the header are not rows to come.
        ([[None], [None], ["email"], ["a@b.co"]], 1),
    ],
)
def test_estimated_rows_of_a_sheet_follow_its_header(
    tmp_path: Path, sheet: list[list[object]], expected: int
) -> None:
    table = open_table(make_xlsx(tmp_path / "in.xlsx", {"S": sheet}))
    try:
        assert table.estimate_rows() == expected
    finally:
        table.close()


# --- workbooks: which sheet, which cells ------------------------------------------------------


def _rewrite(path: Path, part: str, edit: Callable[[str], str]) -> Path:
    """The workbook with one of its XML parts rewritten by ``edit``."""
    with zipfile.ZipFile(path) as old:
        parts = {n: old.read(n) for n in old.namelist()}
    parts[part] = edit(parts[part].decode()).encode()
    out = path.with_name("edited-" + path.name)
    with zipfile.ZipFile(out, "w") as new:
        for name, data in parts.items():
            new.writestr(name, data)
    return out


def _message(path: Path, **kw: str) -> str:
    with pytest.raises(InputFileError) as caught:
        rows(path, **kw)
    return str(caught.value)


@pytest.mark.parametrize(
    ("asked", "chosen"),
    [
        ("Data", "data@b.co"),
        ("data", "data@b.co"),
        (" OTHER ", "other@b.co"),  # typed with another case and spaces
    ],
)
def test_sheet_is_found_by_name_whatever_its_case(
    tmp_path: Path, asked: str, chosen: str
) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {
        "Data": [["email"], ["data@b.co"]],
        "Other": [["email"], ["other@b.co"]],
    })
    _, records = rows(path, sheet=asked)
    assert [r.cells for r in records] == [[chosen]]


def test_a_book_whose_sheets_are_all_hidden_opens_its_first(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"One": [["email"], ["a@b.co"]],
                                            "Two": [["email"], ["c@d.co"]]})
    hidden = _rewrite(path, "xl/workbook.xml", lambda xml: xml.replace(
        'state="visible"', 'state="hidden"'))
    table = open_table(hidden)
    table.close()
    assert table.description == "Excel, sheet 'One'"
    assert rows(hidden)[1] == [Record(2, ["a@b.co"], [])]


def test_a_missing_sheet_lists_the_sheets_marking_hidden_ones(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"First": [["email"]], "Secret": [["email"]]})
    path = _rewrite(path, "xl/workbook.xml", lambda xml: xml.replace(
        'name="Secret" sheetId="2" state="visible"', 'name="Secret" sheetId="2" state="hidden"'))
    assert _message(path, sheet="Third") == (
        "edited-in.xlsx has no sheet named 'Third'; its sheets are: 'First', 'Secret' (hidden)")


def test_a_chart_sheet_names_the_sheets_of_rows(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.remove(book.worksheets[0])
    book.create_sheet("Jan").append(["email"])
    book.create_chartsheet("Chart")
    book.create_sheet("Feb").append(["email"])
    book.save(tmp_path / "in.xlsx")
    assert _message(tmp_path / "in.xlsx", sheet="Chart") == (
        "sheet 'Chart' of in.xlsx is a chart, not a table; "
        "pick a sheet of rows with --sheet: 'Jan', 'Feb'")


def test_a_book_of_charts_only_says_it_has_no_sheet_of_rows(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.remove(book.worksheets[0])
    book.create_chartsheet("Chart")
    book.save(tmp_path / "in.xlsx")
    assert _message(tmp_path / "in.xlsx") == (
        "sheet 'Chart' of in.xlsx is a chart, not a table; it has no sheet of rows")


def test_a_book_without_sheets_says_so(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"S": [["email"]]})
    empty = _rewrite(path, "xl/workbook.xml", lambda xml: re.sub(
        r"<sheets>.*</sheets>", "<sheets />", xml))
    assert _message(empty) == "edited-in.xlsx has no worksheets"


def test_a_table_right_of_column_a_keeps_its_own_columns(tmp_path: Path) -> None:
    """Cells left or right of the table are extra cells; error cells are named by their
    column in the table, and only when they are in it."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet["B1"], sheet["C1"], sheet["D1"] = "email", "content.a", "content.b"
    sheet["A2"], sheet["B2"], sheet["C2"], sheet["E2"] = "note", "a@b.co", "#N/A", "#REF!"
    sheet["B3"], sheet["D3"] = "#DIV/0!", "#NUM!"
    sheet["B4"] = "x@y.co"
    sheet.row_dimensions[4].hidden = True
    book.save(tmp_path / "in.xlsx")
    headers, records = rows(tmp_path / "in.xlsx")
    assert headers == ["email", "content.a", "content.b"]
    assert records == [
        Record(2, ["a@b.co", "#N/A", ""], ["note", "#REF!"], False, (1,)),
        Record(3, ["#DIV/0!", "", "#NUM!"], [], False, (0, 2)),
        Record(4, ["x@y.co", "", ""], [], True, ()),
    ]


def test_reading_own_excel_report_back_removes_formula_guard(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "failed.xlsx", {"S": [
        ["email", "'-1.2", "_row", "_error"],
        ["a@b.co", "'=1+1", 2, "x"],
    ]})
    headers, records = rows(path)
    assert headers == ["email", "-1.2", "_row", "_error"]
    assert records[0].cells == ["a@b.co", "=1+1", "2", "x"]


@pytest.mark.parametrize(
    ("others", "hint"),
    [
        ({}, "put the header in its first row and the data below it"),
        ({"Jan": [["email"]], "Feb": [["email"]]}, "pick another sheet with --sheet: 'Jan', 'Feb'"),
    ],
)
def test_an_empty_sheet_says_where_rows_could_be(
    tmp_path: Path, others: dict[str, list[list[object]]], hint: str
) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"Notes": [], **others})
    assert _message(path) == f"sheet 'Notes' of in.xlsx is empty; {hint}"


def test_a_damaged_workbook_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "in.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    message = _message(path)
    assert message.startswith("in.xlsx cannot be opened as an Excel workbook: ")
    assert message.endswith("; open it in Excel and save it again as .xlsx, or export the "
                            "sheet as CSV")
    book = make_xlsx(tmp_path / "book.xlsx", {"S": [["email"], ["a@b.co"]]})
    damaged = _rewrite(book, "xl/worksheets/sheet1.xml", lambda xml: xml.replace(
        '<row r="1">', '<row r="1"><<'))
    message = _message(damaged)
    assert message.startswith("edited-book.xlsx: sheet 'S' is damaged near row ")
    assert message.endswith("; open it in Excel and save it again")


def test_a_sheet_damaged_past_its_start_fails_naming_the_file_and_the_fix(
    tmp_path: Path
) -> None:
    data: list[list[object]] = [["email"]]
    data += [[f"a{i}@b.co"] for i in range(2000)]
    path = make_xlsx(tmp_path / "in.xlsx", {"S": data})
    damaged = _rewrite(path, "xl/worksheets/sheet1.xml", lambda xml: xml.replace(
        '<row r="1900">', '<row r="1900"><<'))
    table = open_table(damaged)
    try:
        with pytest.raises(InputFileError) as caught:
            list(table.records())
    finally:
        table.close()
    message = str(caught.value)
    assert message.startswith("edited-in.xlsx: sheet 'S' is damaged near row ")
    assert message.endswith("; open it in Excel and save it again")


# --- a file whose suffix says Excel -----------------------------------------------------------

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED = "EncryptionInfo".encode("utf-16-le")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"  \r\n\t\n", "in.xlsx is empty; it needs a header row and data rows"),
        (_OLE + bytes(600),
         "in.xlsx is an Excel 97-2003 workbook (.xls) with an .xlsx name; open it in Excel "
         "and save it as .xlsx (Excel Workbook)"),
        # Past the first mebibyte, where the search for the encryption marker reads on.
        (_OLE + bytes(3 << 20),
         "in.xlsx is an Excel 97-2003 workbook (.xls) with an .xlsx name; open it in Excel "
         "and save it as .xlsx (Excel Workbook)"),
        (_OLE + bytes(600) + _ENCRYPTED,
         "in.xlsx is password-protected; save a copy without a password "
         "(File > Info > Protect Workbook) and use that"),
        # The marker cut in two by the 1 MiB read boundary is still found.
        (_OLE + bytes((1 << 20) - len(_OLE) - 10) + _ENCRYPTED + bytes(100),
         "in.xlsx is password-protected; save a copy without a password "
         "(File > Info > Protect Workbook) and use that"),
        (b"email,name\na@b.co,Ann\n",
         "in.xlsx is a text file (CSV or similar), not an Excel workbook; "
         "rename it to in.csv and run it again"),
        (b"\x7fELF\x02\x01\x01\x00\x00",
         "in.xlsx is not an Excel workbook (it does not start like one); open it in "
         "Excel and save it as .xlsx, or export the sheet as CSV"),
        # Only the first 4 KiB are looked at for the zero bytes that text never has.
        (b"x" * 4095 + b"\x00",
         "in.xlsx is not an Excel workbook (it does not start like one); open it in "
         "Excel and save it as .xlsx, or export the sheet as CSV"),
        (b"x" * 4096 + b"\x00",
         "in.xlsx is a text file (CSV or similar), not an Excel workbook; "
         "rename it to in.csv and run it again"),
    ],
)
def test_a_file_named_xlsx_that_is_no_workbook_says_what_it_is(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "in.xlsx"
    path.write_bytes(content)
    assert _message(path) == message


# --- multi-line cells: genuine, or a stray quote ----------------------------------------------


def _read(path: Path) -> list[list[str]] | str:
    """The cells of every row, or the message that refuses the file."""
    try:
        return [r.cells for r in rows(path)[1]]
    except InputFileError as e:
        return str(e)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A number starts many a genuine line of text; where numbers go, it is no row start.
        ("phone,content.name,content.note\n"
         "79001112233,Ann,ok\n"
         '79002223344,Bob,"Call after 6\n12345, Springfield"\n'
         "79003334455,Olga,ok\n"
         "79004445566,Ivan,ok\n",
         [["79001112233", "Ann", "ok"],
          ["79002223344", "Bob", "Call after 6\n12345, Springfield"],
          ["79003334455", "Olga", "ok"],
          ["79004445566", "Ivan", "ok"]]),
        # A short row: only half of the number columns hold numbers in its last line.
        ("phone,content.balance,content.address,content.city\n"
         "79001112233,10.50,Main St,Moscow\n"
         '79002223344,20.00,"Flat 2\n12345, Springfield, IL"\n'
         "79003334455,30.00,Oak St,Kazan\n"
         "79004445566,40.00,Elm St,Tver\n",
         [["79001112233", "10.50", "Main St", "Moscow"],
          ["79002223344", "20.00", "Flat 2\n12345, Springfield, IL", ""],
          ["79003334455", "30.00", "Oak St", "Kazan"],
          ["79004445566", "40.00", "Elm St", "Tver"]]),
        # An email alone on a line is no row of three cells; one in a single-line cell of
        # a multi-line row makes the row no less genuine.
        ("email,content.cc,content.note\n"
         "a@b.co,,ok\n"
         'c@d.co,"ann@x.com, Bob","Write to\nann@x.com"\n'
         "e@f.co,,ok\n"
         "g@h.co,,ok\n",
         [["a@b.co", "", "ok"],
          ["c@d.co", "ann@x.com, Bob", "Write to\nann@x.com"],
          ["e@f.co", "", "ok"],
          ["g@h.co", "", "ok"]]),
    ],
)
def test_genuine_multi_line_cells_are_read_as_they_are(
    tmp_path: Path, text: str, expected: list[list[str]]
) -> None:
    assert _read(write_csv(tmp_path / "in.csv", text)) == expected


FIX = ("; remove the stray quote, or if the cell really is quoted, close it and write any "
       'quote inside it twice (""); then run it again')
LATER = "closes only after what reads as rows of the file, so those"
NEVER = "never closes, so the rest of the file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Phones and balances alone tell that the next line's start is a row.
        ("phone,content.balance,content.name,content.city\n"
         "79001112233,10.50,Ann,Moscow\n"
         '79002223344,20.00,"Hill,Omsk\n'
         '79003334455,30.00,"Doe, J",Kazan\n'
         "79004445566,40.00,Ivan,Tver\n"
         "79005556677,50.00,Olga,Perm\n",
         f"line 3 of in.csv, column 'content.name': a quote (\") opens this cell and {LATER} "
         f"(1 more lines) would be read as one cell{FIX}"),
        # An email where emails go starts a row whatever the number column holds.
        ("email,content.amount,content.name,content.city\n"
         "a@b.co,10,Ann,Moscow\n"
         'c@d.co,20,"Hill,Omsk\n'
         'e@f.co,n/a,"Doe, J",Kazan\n'
         "g@h.co,40,Ivan,Tver\n"
         "i@j.co,50,Olga,Perm\n",
         f"line 3 of in.csv, column 'content.name': a quote (\") opens this cell and {LATER} "
         f"(1 more lines) would be read as one cell{FIX}"),
        # A quote that swallows most of the sample: the columns' shapes are learnt from its
        # lines one by one.
        ("email,content.note\n"
         'a@b.co,"Hill\n'
         "c@d.co,Smith\n"
         "e@f.co,Tver\n"
         'g@h.co,Omsk"\n'
         "i@j.co,ok\n",
         f"line 2 of in.csv, column 'content.note': a quote (\") opens this cell and {LATER} "
         f"(3 more lines) would be read as one cell{FIX}"),
        # A whole row swallowed, though the line where the quote closes is no row: in a
        # file of two columns...
        ("email,content.note\n"
         "a@b.co,hello\n"
         'c@d.co,"Hill\n'
         "e@f.co,Smith\n"
         'Tver"\n'
         "g@h.co,bye\n"
         "i@j.co,ok\n",
         f"line 3 of in.csv, column 'content.note': a quote (\") opens this cell and {LATER} "
         f"(2 more lines) would be read as one cell{FIX}"),
        # ...and in one of three columns of plain text, where the count of cells tells.
        ("profile_id,content.name,content.city\n"
         "u-01,Ann,Moscow\n"
         'u-02,"Hill,Omsk\n'
         "u-03,Smith,Tver\n"
         'u-04,Brown",Perm\n'
         "u-05,Olga,Kazan\n"
         "u-06,Ivan,Sochi\n",
         f"line 3 of in.csv, column 'content.name': a quote (\") opens this cell and {LATER} "
         f"(2 more lines) would be read as one cell{FIX}"),
        # A quote in the last cell that never closes, though what follows reads as no row.
        ("email,content.name,content.city\n"
         "a@b.co,Ann,Moscow\n"
         'c@d.co,Bob,"Omsk\n'
         "near the river\n",
         f"line 3 of in.csv, column 'content.city': a quote (\") opens this cell and {NEVER} "
         f"(1 more lines) would be read as one cell{FIX}"),
        # A cell right of the last header has no name: its place does.
        ("email,content.name\n"
         "a@b.co,Ann\n"
         'c@d.co,Bob,"note\n'
         "more\n",
         f"line 3 of in.csv, column '#3': a quote (\") opens this cell and {NEVER} "
         f"(1 more lines) would be read as one cell{FIX}"),
    ],
)
def test_a_stray_quote_is_refused_naming_its_line_and_column(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _read(write_csv(tmp_path / "in.csv", text)) == expected


def test_a_stray_quote_in_utf16_text_is_refused_too(tmp_path: Path) -> None:
    """The sample the columns' shapes are learnt from is decoded as the file is."""
    text = ("email\tcontent.note\n"
            "a@b.co\thello\n"
            'c@d.co\t"Hill\n'
            "e@f.co\tSmith\n"
            'Tver"\n'
            "g@h.co\tbye\n"
            "i@j.co\tok\n")
    path = write_csv(tmp_path / "in.txt", text, "utf-16")
    assert _read(path) == (
        f"line 3 of in.txt, column 'content.note': a quote (\") opens this cell and {LATER} "
        f"(2 more lines) would be read as one cell{FIX}")


@pytest.mark.parametrize(
    ("lines", "delimiter", "telling"),
    [
        (["a@b.co,10,Ann\n", "c@d.co,20,Bob\n", "e@f.co,30,Olga\n"], ",",
         {0: "email", 1: "number"}),
        # Two rows are too few to tell anything.
        (["a@b.co,10,Ann\n", "c@d.co,20,Bob\n"], ",", {}),
        # Two numbers and a blank: too few filled cells; three are enough.
        (["a@b.co,10,Ann\n", "c@d.co,20,Bob\n", "e@f.co,,Olga\n"], ",", {0: "email"}),
        # Numbers must be more than half of the filled cells.
        (["a@b.co,10,Ann\n", "c@d.co,20,Bob\n", "e@f.co,n/a,Olga\n", "g@h.co,none,Ivan\n"],
         ",", {0: "email"}),
        (["a@b.co,10,Ann\n", "c@d.co,20,Bob\n", "e@f.co,30,Olga\n", "g@h.co,none,Ivan\n"],
         ",", {0: "email", 1: "number"}),
        # Text is almost never an email: three emails that are a third of the filled cells
        # are enough; fewer, or a smaller share, are not.
        (["a@b.co,x,y\n"] * 3 + ["note,x,y\n"] * 6, ",", {0: "email"}),
        (["a@b.co,x,y\n"] * 3 + ["note,x,y\n"] * 7, ",", {}),
        (["a@b.co,x,y\n"] * 2 + ["note,x,y\n"] * 4, ",", {}),
        # Fewer than three emails count only as more than half of the filled cells.
        (["a@b.co,x,y\n"] * 2 + ["note,x,y\n"], ",", {0: "email"}),
        (["a@b.co,x,y\n"] * 2 + ["note,x,y\n"] * 2, ",", {}),
        # A column mostly blank says nothing, and does not stop the columns after it.
        ([",a@b.co,Ann\n", ",c@d.co,Bob\n", "x,e@f.co,Olga\n"], ",", {1: "email"}),
        # Only rows as wide as the header teach, wherever the others are, split on the
        # file's own delimiter.
        (["10;x\n", "20;y\n", "30;z\n", "40;w\n",
          "a@b.co;1;Ann\n", "c@d.co;2;Bob\n", "e@f.co;3;Olga\n"], ";",
         {0: "email", 1: "number"}),
        # A quote that garbles the records: its lines one by one, however many cells each has.
        (['a@b.co,1,"Hill\n', "c@d.co,Smith\n", "e@f.co,Tver\n", 'g@h.co,Omsk"\n'], ",",
         {0: "email"}),
    ],
)
def test_columns_whose_cells_mostly_share_a_shape_tell_rows_apart(
    lines: list[str], delimiter: str, telling: dict[int, str]
) -> None:
    assert _Shapes(lines, delimiter, width=3).telling == telling


def test_the_start_of_a_row_cut_off_by_a_quote_is_told_by_its_email() -> None:
    """Where the cut row has the right number of cells (not sure), only an email where
    emails go tells a row; a number starts many a line of text (12345, Springfield)."""
    shapes = _Shapes(["a@b.co,10,Ann\n", "c@d.co,20,Bob\n", "e@f.co,30,Olga\n"], ",", width=3)
    assert shapes.starts_row("g@h.co,cut off", sure=False)
    assert shapes.starts_row("g@h.co,40,cut off", sure=False)
    assert not shapes.starts_row("12345,40,Springfield", sure=False)
    # A row with the wrong number of cells is sure to be cut: its numbers count too.
    assert shapes.starts_row(",40,cut off", sure=True)
    assert not shapes.starts_row(",40,cut off", sure=False)
    assert not shapes.starts_row("g@h.co", sure=False)  # one cell: no row starts here


# --- encodings --------------------------------------------------------------------------------


def _utf16_like(zeros: int, big_endian: bool) -> bytes:
    """Ten two-byte units of which ``zeros`` hold a zero byte beside a letter, the way
    UTF-16 without a BOM stores ASCII; the rest hold two letters."""
    units = [b"a\x00" if i < zeros else b"ab" for i in range(10)]
    return b"".join(u[::-1] if big_endian else u for u in units)


@pytest.mark.parametrize(
    ("sample", "at_eof", "expected"),
    [
        (b"\xef\xbb\xbfemail\n", True, "utf-8-sig"),
        (b"\xff\xfee\x00\n\x00", True, "utf-16"),
        (b"\xfe\xff\x00e\x00\n", True, "utf-16"),
        ("email\n".encode("utf-16-le"), True, "utf-16-le"),
        ("email\n".encode("utf-16-be"), True, "utf-16-be"),
        # A zero beside more than 3 letters in 10 is UTF-16.
        (_utf16_like(4, big_endian=False), True, "utf-16-le"),
        (_utf16_like(4, big_endian=True), True, "utf-16-be"),
        ("email,Имя\n".encode(), True, "utf-8"),
        # A sample cut inside a letter is UTF-8 still; a file that ends inside one is not.
        (b"email,name\nann@x.fr,Ann\njose@x.es,Jos\xc3", False, "utf-8"),
        (b"email,name\nann@x.fr,Ann\njose@x.es,Jos\xe9", True, "cp1252"),
    ],
)
def test_encoding_is_told_from_the_first_bytes(
    sample: bytes, at_eof: bool, expected: str
) -> None:
    assert detect_encoding(sample, at_eof, "in.csv") == expected


def _damaged(size: int, zeros: int) -> bytes:
    """Text of ``size`` bytes with a zero byte on its second line and the others on its last."""
    head = b"email\na@b.co\x00\n"
    tail = b"e" + b"\x00" * (zeros - 1) + b"@f.co\n"
    rows = b"c@d.co\n" * (size // 7)
    return head + rows[:size - len(head) - len(tail) - 1] + b"\n" + tail


BINARY = ("in.csv holds binary data, not text; export the sheet as CSV (CSV UTF-8) or save "
          "it as .xlsx")


def _nul(line: int) -> str:
    return (f"line {line} of in.csv holds a NUL (zero) byte, which text never has: the file "
            "is damaged there; delete that character in a text editor, or export the sheet "
            "again")


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        # One zero byte, at an even or an odd offset: a damaged text, not UTF-16.
        (b"email\na@b.co\x00\n", _nul(2)),
        (b"email\nab@b.co\x00\n", _nul(2)),
        # Two in a short text are more than damage.
        (b"email\na@b.co\nc\x00@d.co\x00\n", BINARY),
        # Up to one zero byte per 1000 is damage, named at the first one; more is binary.
        (_damaged(3000, zeros=3), _nul(2)),
        (_damaged(3000, zeros=4), BINARY),
        # Zeros at even and odd offsets alike are no UTF-16 either.
        (bytes(64), BINARY),
        # Three letters in ten with a zero beside them is not enough for UTF-16.
        (_utf16_like(3, big_endian=False), BINARY),
        (_utf16_like(3, big_endian=True), BINARY),
        (b"a,b\n\x98\x81\x8d,\x90\x9d\n",
         "cannot tell the text encoding; pass --encoding (utf-8, cp1251 or cp1252), or save "
         "the file as CSV UTF-8"),
    ],
)
def test_text_that_is_no_text_is_refused(sample: bytes, message: str) -> None:
    with pytest.raises(InputFileError) as caught:
        detect_encoding(sample, True, "in.csv")
    assert str(caught.value) == message


def test_an_unnamed_sample_is_called_the_file() -> None:
    with pytest.raises(InputFileError, match=r"^line 2 of the file holds a NUL"):
        detect_encoding(b"email\na@b.co\x00\n", True)


def test_a_western_file_ending_in_an_accent_is_cp1252(tmp_path: Path) -> None:
    text = "email,name\nann@x.fr,Ann\njose@x.es,José"
    headers, records = rows(write_csv(tmp_path / "in.csv", text, "cp1252"))
    assert headers == ["email", "name"]
    assert [r.cells for r in records] == [["ann@x.fr", "Ann"], ["jose@x.es", "José"]]


def test_a_bom_read_as_text_is_dropped_from_the_first_header(tmp_path: Path) -> None:
    """--encoding utf-8 on a file saved as "CSV UTF-8" leaves its BOM in the first name."""
    path = write_csv(tmp_path / "in.csv", "email,name,\na@b.co,Ann,\n", "utf-8-sig")
    headers, records = rows(path, encoding="utf-8")
    assert headers == ["email", "name"]
    assert [r.cells for r in records] == [["a@b.co", "Ann"]]


def test_an_undecodable_header_names_row_1(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"email,n\x81me\na@b.co,Ann\n")
    with pytest.raises(InputFileError, match=r"^row 1: the text is not valid cp1252;"):
        open_table(path, encoding="cp1252")


# --- what open_table refuses ------------------------------------------------------------------

SAVE_AS = ("files are not read; open it in your spreadsheet program and save it as .xlsx "
           "(Excel Workbook) or .csv (CSV UTF-8)")


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("in.csv", b"email\na@b.co\n", {"sheet": "S"},
         "--sheet only applies to Excel files, and in.csv is text"),
        ("in.xlsx", b"PK\x03\x04", {"encoding": "cp1251"},
         "--encoding and --delimiter only apply to text files, and in.xlsx is Excel"),
        ("in.xlsx", b"PK\x03\x04", {"delimiter": ";"},
         "--encoding and --delimiter only apply to text files, and in.xlsx is Excel"),
        ("in.csv", b"email\na@b.co\n", {"encoding": "klingon"},
         "unknown encoding 'klingon'; use e.g. utf-8, cp1251 or cp1252"),
        ("in.csv", b"email\na@b.co\n", {"delimiter": ";;"},
         "--delimiter must be one character, not ';;'; e.g. ';' or tab"),
        ("in.csv", b",,\n\n , \n", {}, "in.csv has no header row; the first row must name columns"),
        ("in.csv", bytes(range(256)) * 10, {}, BINARY),
        ("in.csv", _OLE + bytes(100), {},
         "in.csv is an Excel 97-2003 workbook (.xls) or a password-protected one, not a text "
         "file; open it in Excel and save it as .xlsx (Excel Workbook) or as .csv (CSV UTF-8)"),
        ("old.xls", b"x", {}, f"old.xls: .xls {SAVE_AS}"),
        ("old.ods", b"x", {}, f"old.ods: .ods {SAVE_AS}"),
        ("old.xlsb", b"x", {}, f"old.xlsb: .xlsb {SAVE_AS}"),
        ("old.numbers", b"x", {}, f"old.numbers: .numbers {SAVE_AS}"),
        ("data.json", b"{}", {},
         "data.json: unknown file type .json; batch-engage reads .csv, .tsv, .txt, .xlsx and "
         ".xlsm"),
        ("README", b"email\n", {},
         "README: unknown file type (no suffix); batch-engage reads .csv, .tsv, .txt, .xlsx "
         "and .xlsm"),
    ],
)
def test_open_table_refuses_with_what_to_do(
    tmp_path: Path, name: str, content: bytes, options: dict[str, str], message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert _message(path, **options) == message


def test_a_missing_file_or_a_folder_is_named_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "in.csv"
    assert _message(missing) == f"input file {missing} does not exist; check its name and folder"
    folder = tmp_path / "exports.csv"
    folder.mkdir()
    assert _message(folder) == f"input {folder} is a folder; give the path of a CSV or Excel file"


# --- delimiters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "preferred", "expected"),
    [
        # Commas in the header's names split it wider, but only semicolons split every row
        # the same way, the first row included.
        (["email;name, surname, initials\n", "a@b.co;Ann\n", "c@d.co;Smith, John, J.\n"],
         None, ";"),
        # Rows Excel left empty (only semicolons) are blank, not rows split the wrong way.
        (["email;name, surname\n", "a@b.co;Smith, John\n", ";\n", ";\n"], None, ";"),
        # A tie goes to the delimiter the suffix prefers (tab for .tsv)...
        (["email,name\tcity\n", "a@b.co,Ann\tRome\n"], "\t", "\t"),
        # ...or else to the first of , ; tab |.
        (["email,name;city\n", "a@b.co,Ann;Rome\n"], None, ","),
        (["email,name;city\n", "a@b.co,Ann;Rome\n"], ";", ";"),
        # A file of one column: nothing splits it.
        (["email\n", "a@b.co\n"], None, ","),
        (["email\n", "a@b.co\n"], "\t", "\t"),
    ],
)
def test_delimiter_is_the_one_that_splits_the_rows_as_the_header(
    lines: list[str], preferred: str | None, expected: str
) -> None:
    assert detect_delimiter(lines, preferred) == expected


@pytest.mark.parametrize(
    ("name", "text", "options", "description", "cells"),
    [
        # Cells that hold commas do not tie a .tsv file to commas...
        ("in.tsv", "email\tname, surname\na@b.co\tSmith, John\n", {},
         "text, utf-8, tab-separated", ["a@b.co", "Smith, John"]),
        # ...nor cells that hold tabs a .csv file to tabs.
        ("in.csv", "email,name\tsurname\na@b.co,Smith\tJohn\n", {},
         "text, utf-8, comma-separated", ["a@b.co", "Smith\tJohn"]),
        # Excel's sep= line wins over what the text looks like.
        ("in.csv", "sep=;\nemail;name,surname\na@b.co;Smith,John\n", {},
         "text, utf-8, semicolon-separated", ["a@b.co", "Smith,John"]),
        ("in.csv", "email#name\na@b.co#Ann\n", {"delimiter": "#"},
         "text, utf-8, '#'-separated", ["a@b.co", "Ann"]),
    ],
)
def test_delimiter_and_description_of_a_text_file(
    tmp_path: Path, name: str, text: str, options: dict[str, str], description: str,
    cells: list[str]
) -> None:
    path = write_csv(tmp_path / name, text)
    table = open_table(path, **options)
    table.close()
    assert table.description == description
    assert [r.cells for r in rows(path, **options)[1]] == [cells]


@pytest.mark.parametrize(
    ("text", "headers", "cells"),
    [
        # A header alone: the delimiter is told from it.
        ("email;name\n", ["email", "name"], []),
        ("email;name", ["email", "name"], []),
        # The last row of a small file counts: without it, the header's comma would tie.
        ("email;name, surname\na@b.co;Ann\n", ["email", "name, surname"], [["a@b.co", "Ann"]]),
        # Old Mac line ends (CR only), as Excel for Mac's "CSV (Macintosh)" writes them.
        ("email;name\ra@b.co;Ann\rc@d.co;Bob\r", ["email", "name"],
         [["a@b.co", "Ann"], ["c@d.co", "Bob"]]),
    ],
)
def test_small_files_are_split_as_their_lines_show(
    tmp_path: Path, text: str, headers: list[str], cells: list[list[str]]
) -> None:
    found, records = rows(write_csv(tmp_path / "in.csv", text))
    assert found == headers
    assert [r.cells for r in records] == cells


def test_a_header_longer_than_the_sample_is_split_on_its_delimiter(tmp_path: Path) -> None:
    names = [f"content.c{i:05}" for i in range(5000)]  # 75 KB: past the first 64 KiB
    path = write_csv(tmp_path / "in.csv", ";".join(["email", *names]) + "\na@b.co\n")
    headers, records = rows(path)
    assert headers == ["email", *names]
    assert records[0].cells == ["a@b.co"] + [""] * 5000


def test_a_first_row_longer_than_the_sample_does_not_sway_the_delimiter(tmp_path: Path) -> None:
    """The sample ends inside that row: its cut end is left out of the judging."""
    long_name = "Smith, " + "J" * 70_000
    text = f"email;name, surname;note\na@b.co;{long_name};ok\nc@d.co;Doe, A;ok\n"
    headers, records = rows(write_csv(tmp_path / "in.csv", text))
    assert headers == ["email", "name, surname", "note"]
    assert [r.cells for r in records] == [["a@b.co", long_name, "ok"], ["c@d.co", "Doe, A", "ok"]]


def test_a_file_of_only_a_sep_line_has_no_header_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "sep=;\n")
    assert _message(path) == "in.csv has no header row; the first row must name columns"


def test_a_cell_keeps_its_own_line_breaks(tmp_path: Path) -> None:
    """Windows line ends inside a quoted cell are the cell's text, not a line end to
    translate."""
    path = write_csv(tmp_path / "in.csv", 'email,note\r\na@b.co,"two\r\nlines"\r\n')
    assert [r.cells for r in rows(path)[1]] == [["a@b.co", "two\r\nlines"]]


def test_a_nul_byte_past_the_sample_counts_the_sep_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"sep=,\nemail\n" + b"a@b.co\n" * 10_000 + b"c@d\x00.co\n")
    table = open_table(path)
    try:
        with pytest.raises(InputFileError) as caught:
            list(table.records())
    finally:
        table.close()
    assert str(caught.value) == (
        "line 10003 of in.csv holds a NUL (zero) byte, which text never has: the file is "
        "damaged there; delete that character in a text editor, or export the sheet again")


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        # A UTF-16 header with half a character in it.
        ("email,na".encode("utf-16-le") + b"\x00\xd8" + "me\na@b.co,Ann\n".encode("utf-16-le"),
         {"encoding": "utf-16-le"},
         "row 1: the text is not valid utf-16-le; try --encoding cp1251, or save the file as "
         "CSV UTF-8"),
        # Bytes that cp1252 leaves undefined.
        (b"email,name\na@b.co,Ann\nc@d.co,Bo\x81b\n", {"encoding": "cp1252"},
         "row 3: the text is not valid cp1252; try --encoding utf-8, or save the file as "
         "CSV UTF-8"),
    ],
)
def test_text_in_another_encoding_names_its_row_and_one_to_try(
    tmp_path: Path, data: bytes, options: dict[str, str], message: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    assert _message(path, **options) == message


# The first 64 KiB decide that a file is empty; blank lines can fill them with rows after.
@pytest.mark.xfail(strict=True, reason="a text file whose first 64 KiB are blank lines is "
                   "refused as empty, though the header and rows follow")
def test_blank_lines_past_the_sample_still_lead_to_the_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "\n" * 70_000 + "email\na@b.co\n")
    _, records = rows(path)
    assert [(r.number, r.cells) for r in records] == [(70_002, ["a@b.co"])]


@pytest.mark.xfail(strict=True, reason="a text file named .xlsx whose first 64 KiB are blank "
                   "is called empty, not a text file")
def test_a_text_file_named_xlsx_that_starts_blank_is_called_a_text_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.xlsx", " " * 70_000 + "email\na@b.co\n")
    assert _message(path) == ("in.xlsx is a text file (CSV or similar), not an Excel workbook; "
                              "rename it to in.csv and run it again")
