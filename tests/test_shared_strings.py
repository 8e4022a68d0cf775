"""Shared strings, as Excel writes every text cell. openpyxl writes inline strings instead, so
these tests move a workbook's text into ``xl/sharedStrings.xml`` themselves, then read it back
both ways (each string an object, or all in one buffer for a big table)."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from batch_engage import xlsx
from batch_engage.reader import open_table

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
INLINE = re.compile(r'<c r="([A-Z]+\d+)"((?: s="\d+")?) t="inlineStr"><is><t[^>]*>([^<]*)</t></is>')


def with_shared_strings(path: Path, items: dict[str, str] | None = None,
                        prefix: str = "") -> Path:
    """The workbook with its inline strings moved to a shared strings table, as Excel keeps
    them. ``items`` replaces a string's <si> content with raw XML (rich text, furigana...)."""
    with zipfile.ZipFile(path) as old:
        parts = {n: old.read(n) for n in old.namelist()}
    table: list[str] = []

    def shared(match: re.Match[str]) -> str:
        text = match.group(3)
        table.append((items or {}).get(html.unescape(text), f"<t>{text}</t>"))
        return f'<c r="{match.group(1)}"{match.group(2)} t="s"><v>{len(table) - 1}</v>'

    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = INLINE.sub(shared, parts[sheet].decode()).encode()
    body = "".join(f"<si>{si}</si>" for si in table)
    sst = f'<sst xmlns="{MAIN}" count="{len(table)}" uniqueCount="{len(table)}">{body}</sst>'
    if prefix:
        sst = re.sub(r"<(/?)(\w+)", rf"<\1{prefix}:\2", sst).replace(
            "xmlns=", f"xmlns:{prefix}=", 1)
    parts["xl/sharedStrings.xml"] = sst.encode()
    rels = "xl/_rels/workbook.xml.rels"
    parts[rels] = parts[rels].decode().replace("</Relationships>", (
        f'<Relationship Type="{RELS}/sharedStrings" Target="sharedStrings.xml" Id="rId99"/>'
        "</Relationships>")).encode()
    out = path.with_name("shared-" + path.name)
    with zipfile.ZipFile(out, "w") as new:
        for name, data in parts.items():
            new.writestr(name, data)
    return out


def cells(path: Path) -> list[list[str]]:
    table = open_table(path)
    try:
        return [table.headers] + [r.cells for r in table.records()]
    finally:
        table.close()


ROWS = [["email", "content.note", "content.code"],
        ["a@b.co", "R&D <team> \"quoted\"", "007"],
        ["c@d.co", "  spaces kept  ", "x"],
        ["e@f.co", "Иван, 東京", "y"]]


def workbook(tmp_path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for row in ROWS:
        ws.append(row)
    path = tmp_path / "in.xlsx"
    wb.save(path)
    return path


@pytest.mark.parametrize("big", [False, True], ids=["objects", "one-buffer"])
@pytest.mark.parametrize("prefix", ["", "x"], ids=["plain", "prefixed"])
def test_shared_strings_read_as_the_inline_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big: bool, prefix: str
) -> None:
    if big:  # as for a table of millions of unique strings
        monkeypatch.setattr(xlsx, "_SMALL_STRINGS_BYTES", 0)
    path = workbook(tmp_path)
    shared = with_shared_strings(path, prefix=prefix)
    with zipfile.ZipFile(shared) as z:
        assert 't="s"' in z.read("xl/worksheets/sheet1.xml").decode()
    assert cells(shared) == cells(path) == ROWS


@pytest.mark.parametrize("prefix", ["", "x"], ids=["plain", "prefixed"])
def test_rich_text_runs_are_joined_and_furigana_left_out(tmp_path: Path, prefix: str) -> None:
    items = {
        "R&D <team> \"quoted\"": '<r><rPr><b/></rPr><t>R&amp;D </t></r><r><t xml:space='
                                 '"preserve">&lt;team&gt; "quoted"</t></r>',
        "Иван, 東京": "<t>Иван, 東京</t><rPh sb=\"0\" eb=\"2\"><t>とうきょう</t></rPh>"
                      "<phoneticPr fontId=\"1\"/>",
        "x": "<t>line_x000D_\r\nbreak</t>",
    }
    got = cells(with_shared_strings(workbook(tmp_path), items, prefix))
    assert got[1][1] == 'R&D <team> "quoted"'
    assert got[3][1] == "Иван, 東京"
    assert got[2][2] == "line\r\nbreak"  # _x000D_ is a carriage return; the XML's CRLF a \n


def test_compact_table_holds_any_text() -> None:
    table = xlsx.SharedStrings()
    for text in ["", "a", "Иван", "東京", "\udcff lone surrogate", "x" * 10_000]:
        table.append(text)
    assert len(table) == 6
    assert [table[i] for i in range(6)] == ["", "a", "Иван", "東京", "\udcff lone surrogate",
                                            "x" * 10_000]


def test_a_string_that_spans_several_reads() -> None:
    """The table is read 64 KB at a time; a string may start just before a read ends and run
    on past the next one."""
    head = f'<sst xmlns="{MAIN}">'
    filler = "a" * (2**16 - len(head) - len("<si><t></t></si>") - 3)
    long = "b" * 150_000
    data = f"{head}<si><t>{filler}</t></si><si><t>{long}</t></si><si><t>last</t></si></sst>"
    assert data.index("<si><t>b") < 2**16 < data.index("</si>", 2**16) - 2**16
    table = xlsx._read_shared_strings(io.BytesIO(data.encode()), [])
    assert [table[i] for i in range(len(table))] == [filler, long, "last"]


def _read_all(path: Path) -> list[tuple[int, list[str], bool, tuple[int, ...]]]:
    with xlsx.Workbook(path) as book:
        return [(r.number, r.cells, r.hidden, r.errors) for r in book.rows(book.sheets[0])]


def test_rows_matched_by_the_learnt_shape_read_as_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of the sheet's usual shape are matched whole; the same rows read cell by cell
    give the same text, hidden flags and errors."""
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["email", "content.zip", "content.paid", "content.when", "content.n"])
    for i in range(40):
        ws.append([f"p{i}@example.com", i * 7 % 99999, i * 1.005, dt.date(2026, 1, 1 + i % 28),
                   -i if i % 3 else 2**60])
        ws.cell(row=i + 2, column=2).number_format = "00000"
        ws.cell(row=i + 2, column=3).number_format = '"$"#,##0.00'
        ws.cell(row=i + 2, column=4).number_format = "dd.mm.yyyy"
    ws.row_dimensions[5].hidden = True
    ws["C8"] = None  # a row of another shape: a cell missing
    ws["E9"] = "=1/0"  # and one with a formula (no cached value: empty)
    ws["B10"] = "text in a number column"
    path = tmp_path / "in.xlsx"
    wb.save(path)
    shared = with_shared_strings(path)
    learnt = _read_all(shared)
    monkeypatch.setattr(xlsx, "_SIMPLE_ROW", re.compile("(?!)"))  # never learn a shape
    assert learnt == _read_all(shared)
    assert learnt[1][1] == ["p0@example.com", "00000", "$0.00", "2026-01-01",
                            "1.15292150460685E+18"]
    assert [n for n, _, hidden, _ in learnt if hidden] == [5]
