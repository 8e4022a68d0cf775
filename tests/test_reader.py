from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import openpyxl
import pytest

from batch_engage.errors import InputFileError
from batch_engage.reader import ExcelTable, Record, detect_delimiter, open_table

from .conftest import write_csv

RUSSIAN = "email;Имя;Город\r\nivan@yandex.ru;Иван;Москва\r\nolga@mail.ru;Ольга;Казань\r\n"


def rows(path: Path, **kw: str) -> tuple[list[str], list[Record]]:
    table = open_table(path, **kw)
    try:
        return table.headers, list(table.records())
    finally:
        table.close()


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("utf-8", "utf-8"),
        ("utf-8-sig", "utf-8-sig"),
        ("cp1251", "cp1251"),
        ("utf-16", "utf-16"),  # Excel's "Unicode text" has a BOM
    ],
)
def test_detects_encoding_of_russian_text(tmp_path: Path, encoding: str, expected: str) -> None:
    path = write_csv(tmp_path / "in.csv", RUSSIAN, encoding)
    table = open_table(path)
    table.close()
    headers, records = rows(path)
    assert table.description.startswith(f"text, {expected},")
    assert headers == ["email", "Имя", "Город"]
    assert [r.cells for r in records] == [
        ["ivan@yandex.ru", "Иван", "Москва"],
        ["olga@mail.ru", "Ольга", "Казань"],
    ]


def test_detects_cp1252_western_text(tmp_path: Path) -> None:
    text = "email,name,city\nfrancois@x.fr,François Müller,Zürich\njose@x.es,José Núñez,Málaga\n"
    path = write_csv(tmp_path / "in.csv", text, "cp1252")
    _, records = rows(path)
    assert records[0].cells[1] == "François Müller"
    assert records[1].cells[2] == "Málaga"


def test_excel_unicode_text_is_tab_separated_utf16(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.txt", RUSSIAN.replace(";", "\t"), "utf-16")
    headers, records = rows(path)
    assert headers == ["email", "Имя", "Город"]
    assert records[1].cells == ["olga@mail.ru", "Ольга", "Казань"]


@pytest.mark.parametrize("splits_a_letter", [True, False])
def test_utf8_past_the_sample_is_utf8_wherever_the_sample_ends(
    tmp_path: Path, splits_a_letter: bool
) -> None:
    """The first 64 KiB decide the encoding; they may end inside a two-byte letter."""
    header = "email,Имя\n".encode()
    row = "user@example.com,Иван\n".encode()
    count = 64 * 1024 // len(row) + 10

    def body(pad: int) -> bytes:
        return header + b"x" * pad + row * count

    def split(data: bytes) -> bool:
        try:
            data[:64 * 1024].decode()
        except UnicodeDecodeError:
            return True
        return False

    pad = next(p for p in range(len(row)) if split(body(p)) == splits_a_letter)
    path = tmp_path / "in.csv"
    path.write_bytes(body(pad))
    table = open_table(path)
    records = list(table.records())
    table.close()
    assert table.description.startswith("text, utf-8,")
    assert len(records) == count
    assert {r.cells[1] for r in records} == {"Иван"}


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_in_either_byte_order(tmp_path: Path, codec: str) -> None:
    path = write_csv(tmp_path / "in.txt", RUSSIAN.replace(";", "\t"), codec)
    headers, records = rows(path)
    assert headers == ["email", "Имя", "Город"]
    assert records[1].cells == ["olga@mail.ru", "Ольга", "Казань"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_detects_each_delimiter(tmp_path: Path, delimiter: str) -> None:
    text = delimiter.join(["email", "content.name", "content.note"]) + "\n"
    text += delimiter.join(["a@b.co", "Ann", "x, y; z"]) + "\n" if delimiter == "|" else ""
    text += delimiter.join(["c@d.co", "Bob", "plain"]) + "\n"
    headers, records = rows(write_csv(tmp_path / "in.csv", text))
    assert headers == ["email", "content.name", "content.note"]
    assert records[-1].cells == ["c@d.co", "Bob", "plain"]


def test_one_column_file_is_not_split_on_a_letter(tmp_path: Path) -> None:
    text = "email\nanna@mail.ru\nsergey.ivanov@yandex.ru\nmaria@example.com\n"
    headers, records = rows(write_csv(tmp_path / "in.csv", text))
    assert headers == ["email"]
    assert [r.cells for r in records] == [
        ["anna@mail.ru"], ["sergey.ivanov@yandex.ru"], ["maria@example.com"],
    ]


def test_delimiter_prefers_consistent_split() -> None:
    # Commas appear inside values, but only semicolons split every row the same way.
    lines = ["email;note\n", "a@b.co;x, y\n", "c@d.co;one, two, three\n"]
    assert detect_delimiter(lines, None) == ";"


def test_overrides_win_over_detection(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email;name\na@b.co;Ann\n", "cp1252")
    headers, _ = rows(path, delimiter=",", encoding="cp1251")
    assert headers == ["email;name"]


def test_cells_keep_leading_zeros_and_empty_is_empty(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "phone,id\n79001234567,03999315\n,\n89001234567,007\n")
    _, records = rows(path)
    assert [r.cells for r in records] == [
        ["79001234567", "03999315"], ["", ""], ["89001234567", "007"],
    ]


def test_quoted_newline_is_one_row_and_numbers_follow_records(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", 'email,note\na@b.co,"two\nlines"\nc@d.co,x\n')
    _, records = rows(path)
    assert [(r.number, r.cells[1]) for r in records] == [(2, "two\nlines"), (3, "x")]


def test_ragged_rows_are_padded_or_keep_their_extra_cells(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "a,b,c\n1\n1,2,3,4,\n1,2,3,,\n")
    _, records = rows(path)
    assert records[0] == Record(2, ["1", "", ""], [])
    assert records[1] == Record(3, ["1", "2", "3"], ["4"])
    assert records[2] == Record(4, ["1", "2", "3"], [])


def test_reading_own_report_back_removes_formula_guard(tmp_path: Path) -> None:
    text = "email,content.code,_row,_error\na@b.co,'=1+1,2,x\nc@d.co,''quoted,3,y\n"
    _, records = rows(write_csv(tmp_path / "failed.csv", text))
    assert records[0].cells[:2] == ["a@b.co", "=1+1"]
    assert records[1].cells[:2] == ["c@d.co", "'quoted"]


def test_other_files_keep_a_leading_quote(tmp_path: Path) -> None:
    _, records = rows(write_csv(tmp_path / "in.csv", "email,code\na@b.co,'=1\n"))
    assert records[0].cells == ["a@b.co", "'=1"]


def test_invalid_utf8_late_in_file_names_row_and_fix(tmp_path: Path) -> None:
    good = "email,name\n" + "a@b.co,Ann\n" * 20000
    path = tmp_path / "in.csv"
    path.write_bytes(good.encode() + "x@y.co,Иван\n".encode("cp1251"))
    table = open_table(path)
    message = r"row 20002: .*not valid utf-8; try --encoding cp1251"
    with pytest.raises(InputFileError, match=message):
        list(table.records())
    table.close()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("empty.csv", b"", "is empty"),
        ("blank.csv", b"\n\n  \n", "is empty"),
        ("garbage.csv", bytes(range(256)) * 10, "binary data"),
        ("old.xls", b"x", "save it as .xlsx"),
        ("table.ods", b"x", "save it as .xlsx"),
        ("data.json", b"{}", "unknown file type .json"),
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "cannot be opened as an Excel workbook"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=message):
        open_table(path)


def make_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    wb = openpyxl.Workbook()
    for sheet in wb.worksheets:
        wb.remove(sheet)
    for name, data in sheets.items():
        ws = wb.create_sheet(name)
        for row in data:
            ws.append(row)
    wb.save(path)
    return path


def test_xlsx_numbers_dates_and_blank_cells(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"S": [
        ["Phone", "id", "born", "balance"],
        [79001234567, "03999315", dt.date(1990, 1, 15), 2.5],
        [None, "00012", None, 3],
        [79261112233, "x", dt.datetime(2026, 1, 2, 3, 4, 5), None],
    ]})
    headers, records = rows(path)
    assert headers == ["Phone", "id", "born", "balance"]
    assert [r.cells for r in records] == [
        ["79001234567", "03999315", "1990-01-15", "2.5"],
        ["", "00012", "", "3"],
        ["79261112233", "x", "2026-01-02T03:04:05", ""],
    ]


def test_xlsx_sheet_choice_and_row_numbers(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {
        "First": [["email"], ["a@b.co"]],
        "Second": [["email"], ["c@d.co"], [None], ["e@f.co"]],
    })
    _, records = rows(path, sheet="Second")
    assert [(r.number, r.cells) for r in records] == [(2, ["c@d.co"]), (3, [""]), (4, ["e@f.co"])]
    message = "no sheet named 'Third'; its sheets are: 'First', 'Second'"
    with pytest.raises(InputFileError, match=message):
        open_table(path, sheet="Third")


def test_xlsx_that_starts_lower_keeps_sheet_row_numbers(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws["B3"], ws["C3"] = "email", "content.x"
    ws["B4"], ws["C4"] = "a@b.co", "1"
    wb.save(tmp_path / "in.xlsx")
    headers, records = rows(tmp_path / "in.xlsx")
    assert headers == ["email", "content.x"]
    assert [(r.number, r.cells) for r in records] == [(4, ["a@b.co", "1"])]


def _rewrite_sheet(path: Path, edit: Callable[[str], str]) -> Path:
    """The sheet rewritten by ``edit`` (openpyxl writes no shared strings; for those, see
    test_shared_strings)."""
    with zipfile.ZipFile(path) as old:
        parts = {n: old.read(n) for n in old.namelist()}
    name = "xl/worksheets/sheet1.xml"
    parts[name] = edit(parts[name].decode()).encode()
    out = path.with_name("edited-" + path.name)
    with zipfile.ZipFile(out, "w") as new:
        for part, data in parts.items():
            new.writestr(part, data)
    return out


def _prefixed(xml: str) -> str:
    """The same sheet with its namespace under a prefix, as some generators write it."""
    xml = re.sub(r"<(/?)(?!\?)(\w+)", r"<\1x:\2", xml)
    return xml.replace('xmlns="', 'xmlns:x="', 1)


def _reordered(xml: str) -> str:
    """Cells with t before s, and whitespace between cells: not the usual shape."""
    xml = re.sub(r'<c r="([A-Z]+\d+)" s="(\d+)" t="(\w+)"', r'<c t="\3" r="\1" s="\2"', xml)
    return xml.replace("</c><c", "</c>\n  <c")


@pytest.mark.parametrize("edit", [_prefixed, _reordered])
def test_workbooks_in_other_xml_shapes_read_the_same(
    tmp_path: Path, edit: Callable[[str], str]
) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["email", "content.zip", "content.name", "content.when"])
    for i in range(5):
        ws.append([f"a{i}@b.co", 1234 + i, f"R&D <{i}>", dt.date(2026, 1, i + 1)])
        ws.cell(row=i + 2, column=2).number_format = "00000"
    ws.row_dimensions[3].hidden = True
    ws["B4"] = "=1/0"
    path = tmp_path / "in.xlsx"
    wb.save(path)
    edited = _rewrite_sheet(path, edit)
    assert edited.read_bytes() != path.read_bytes()
    original, changed = rows(path), rows(edited)
    assert changed == original
    assert original[1][0].cells == ["a0@b.co", "01234", "R&D <0>", "2026-01-01"]
    assert [r.hidden for r in original[1]] == [False, True, False, False, False]


def _open_descriptors(path: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += fd.readlink() == path.resolve()
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_closing_a_workbook_read_halfway_closes_its_file(tmp_path: Path) -> None:
    """A run that stops early (Ctrl-C, a refused token) still holds its row generator."""
    path = tmp_path / "in.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [["email"], ["a@b.co"], ["c@d.co"]]:
        sheet.append(row)
    book.save(path)
    table = open_table(path)
    records = table.records()
    next(records)
    assert _open_descriptors(path) == 1
    table.close()
    assert _open_descriptors(path) == 0


def test_a_workbook_names_its_sheets_of_rows_and_the_one_it_reads(tmp_path: Path) -> None:
    """What a web page's Sheet select offers."""
    path = make_xlsx(tmp_path / "in.xlsx", {
        "First": [["email"], ["a@b.co"]],
        "Second": [["email"], ["c@d.co"]],
    })
    with closing(open_table(path, sheet="Second")) as table:
        assert isinstance(table, ExcelTable)
        assert (table.sheets, table.sheet) == (["First", "Second"], "Second")
