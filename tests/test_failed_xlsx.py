"""failed.xlsx: failed.csv as a workbook of text cells, which ``run`` reads back exactly."""

from __future__ import annotations

import csv
import gc
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_engage import Matching, RunOptions, run, xlsx_report
from batch_engage.reader import open_table
from batch_engage.xlsx_report import write_failed_xlsx

from .conftest import read_requests

# --- helpers ----------------------------------------------------------------------------------


def write_failed_csv(path: Path, rows: list[list[str]]) -> Path:
    """A failed.csv as FailedReport writes one: UTF-8 with a BOM, comma-separated."""
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def sheet_xml(xlsx: Path) -> str:
    with zipfile.ZipFile(xlsx) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/sheet")]
        assert len(sheets) == 1
        return z.read(sheets[0]).decode("utf-8")


MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def stored_cells(xlsx: Path) -> list[tuple[str, str]]:
    """Each cell of the sheet as its type (t=) and the text it stores (escapes and all)."""
    root = ElementTree.fromstring(sheet_xml(xlsx))
    return [(c.get("t", "n"), "".join(t.text or "" for t in c.iter(f"{MAIN}t")))
            for c in root.iter(f"{MAIN}c")]


def assert_only_text_cells(xlsx: Path) -> None:
    root = ElementTree.fromstring(sheet_xml(xlsx))
    assert list(root.iter(f"{MAIN}f")) == []  # no formula
    assert list(root.iter(f"{MAIN}v")) == []  # no value of another type
    types = {kind for kind, _ in stored_cells(xlsx)}
    assert types == {"inlineStr"}


def read_back(xlsx: Path) -> tuple[list[str], list[list[str]]]:
    table = open_table(xlsx)
    try:
        return table.headers, [r.cells for r in table.records()]
    finally:
        table.close()


def dry_run(data: Path, out: Path, region: str | None) -> Any:
    return run(RunOptions(input=data, workflow_id=1, dry_run=True, out=out, quiet=True,
                          matching=Matching.PHONE, phone_region=region))


# --- a workbook's failed rows, back through run ----------------------------------------------

HEADER = ["phone", "content.customer_id", "content.note", "content.name", "content.address",
          "content.misc", "content.empty"]
# Phones are numbers without a country code: every row fails without --phone-region, and
# every row is valid with --phone-region RU. The other cells are text (kind "s"), each a case.
ROWS: list[list[Any]] = [
    [79001234567, "00123", "=1+1", "Иван Петров", "ул. Ленина, 1\nкв. 5", "#N/A", None],
    [89161234567, "007", "@home", "Мария", "line1_x000D_\nline2", "_x005F_x0041_", ""],
    [9031234567, "-5", "+7", "'quoted", "\ttab", " spaced ", "bell_x0007_"],
    [79261234567, "0000", "=SUM(A1)", "emoji 🙂", 'a "quote"', "#DIV/0!", "x"],
]


def input_workbook(path: Path) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for number, row in enumerate(ROWS, start=2):
        for column, value in enumerate(row, start=1):
            cell = sheet.cell(number, column, value)
            if isinstance(value, str):
                cell.data_type = "s"  # text, even "=1+1" and "#N/A"
    book.save(path)
    return path


def test_the_failed_rows_of_a_workbook_run_again_from_failed_xlsx_exactly(
    tmp_path: Path
) -> None:
    data = input_workbook(tmp_path / "in.xlsx")
    # What the rows send once fixed (here: by the phone region), straight from the input.
    direct = dry_run(data, tmp_path / "direct", "RU")
    assert direct.outcomes == {"valid": len(ROWS)}
    # Without the region every row fails: failed.csv, then failed.xlsx beside it.
    first = tmp_path / "first"
    assert dry_run(data, first, None).outcomes == {"validation": len(ROWS)}
    write_failed_xlsx(first / "failed.csv", first / "failed.xlsx")
    assert_only_text_cells(first / "failed.xlsx")
    texts = {text for _, text in stored_cells(first / "failed.xlsx")}
    for text in ("00123", "79001234567", "'=1+1", "#N/A", "'-5", "''quoted", "Иван Петров"):
        assert text in texts

    # failed.xlsx, fixed by the region, sends what the input sends...
    fixed = tmp_path / "fixed"
    assert dry_run(first / "failed.xlsx", fixed, "RU").outcomes == {"valid": len(ROWS)}
    assert read_requests(fixed) == read_requests(tmp_path / "direct")
    bodies = [r["body"]["content"] for r in read_requests(fixed)]
    assert bodies[0]["customer_id"] == "00123"
    assert bodies[0]["note"] == "=1+1"
    assert bodies[1]["address"] == "line1\r\nline2"
    assert bodies[1]["misc"] == "_x0041_"
    assert bodies[2]["name"] == "'quoted"
    # ...and, not fixed, fails with the very same failed.csv, cell for cell.
    again = tmp_path / "again"
    assert dry_run(first / "failed.xlsx", again, None).outcomes == {"validation": len(ROWS)}
    assert (again / "failed.csv").read_bytes() == (first / "failed.csv").read_bytes()


# --- cells --------------------------------------------------------------------------------------

TRICKY = [
    "=SUM(A1)", "=1+1", "#N/A", "#DIV/0!", "#REF!", "00123", "79001234567", "1e5", "TRUE",
    "2024-01-15", "  padded  ", "line\nbreak", "cr\r\nlf", "lone\rcr", "tab\there",
    "ctrl\x01\x1f", "_x0041_", "_x0041\x02", "__x0041_", "_x005F_", "x" * 40_000,
    "\ufffe", "Привет, мир", "🙂", "'", "''", "'=1",
]


def test_every_cell_is_a_text_cell_holding_exactly_the_csvs_text(tmp_path: Path) -> None:
    header = [f"c{i}" for i in range(len(TRICKY))]
    source = write_failed_csv(tmp_path / "failed.csv", [header, TRICKY, list(reversed(TRICKY))])
    write_failed_xlsx(source, tmp_path / "failed.xlsx")
    assert_only_text_cells(tmp_path / "failed.xlsx")
    # No _row column: the reader takes every cell as it is, guard or not.
    assert read_back(tmp_path / "failed.xlsx") == (header, [TRICKY, list(reversed(TRICKY))])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(codec="utf-8")), min_size=1, max_size=6))
def test_any_text_round_trips(tmp_path_factory: pytest.TempPathFactory, cells: list[str]) -> None:
    folder = tmp_path_factory.mktemp("any")
    header = [f"c{i}" for i in range(len(cells))]
    source = write_failed_csv(folder / "failed.csv", [header, cells])
    write_failed_xlsx(source, folder / "failed.xlsx")
    headers, rows = read_back(folder / "failed.xlsx")
    assert headers == header
    assert rows == [cells]


def test_header_cells_are_text_too(tmp_path: Path) -> None:
    header = ["email", "#N/A", "_x0041_", "'=x", "_row"]
    source = write_failed_csv(tmp_path / "failed.csv", [header, ["a@b.c", "", "", "", "2"]])
    write_failed_xlsx(source, tmp_path / "failed.xlsx")
    assert_only_text_cells(tmp_path / "failed.xlsx")
    # An own report (it has _row): the reader removes one guard from headers as from cells.
    assert read_back(tmp_path / "failed.xlsx") == (
        ["email", "#N/A", "_x0041_", "=x", "_row"], [["a@b.c", "", "", "", "2"]])


def test_a_header_only_failed_csv_gives_a_workbook_with_the_header(tmp_path: Path) -> None:
    header = ["email", "content.name", "_row", "_stage", "_error", "_error_text", "_attempts"]
    source = write_failed_csv(tmp_path / "failed.csv", [header])
    write_failed_xlsx(source, tmp_path / "failed.xlsx")
    book = openpyxl.load_workbook(tmp_path / "failed.xlsx")
    assert book.sheetnames == ["failed"]
    assert [[c.value for c in row] for row in book["failed"].iter_rows()] == [header]
    assert read_back(tmp_path / "failed.xlsx") == (header, [])


def test_the_sheet_is_named_failed_with_a_bold_frozen_header_and_sized_columns(
    tmp_path: Path
) -> None:
    rows = [["email", "content.text", "_row"], ["a@example.com", "y" * 500, "2"]]
    write_failed_xlsx(write_failed_csv(tmp_path / "failed.csv", rows), tmp_path / "failed.xlsx")
    book = openpyxl.load_workbook(tmp_path / "failed.xlsx")
    sheet = book["failed"]
    assert sheet.freeze_panes == "A2"
    assert [c.font.b for c in sheet[1]] == [True, True, True]
    assert not any(c.font.b for c in sheet[2])
    widths = [sheet.column_dimensions[letter].width for letter in "ABC"]
    assert widths[0] == len("a@example.com") + 2
    assert widths[1] == 60  # capped: a long cell does not make a screen-wide column
    assert widths[2] == 8


# --- writing safely -----------------------------------------------------------------------------


def test_a_write_that_fails_leaves_no_half_file_and_keeps_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_failed_csv(tmp_path / "failed.csv", [["email", "_row"], ["x", "2"]])
    target = tmp_path / "failed.xlsx"

    class Crashing(openpyxl.Workbook):
        def save(self, filename: Any) -> None:
            Path(filename).write_bytes(b"PK\x03\x04 half a zip")
            raise OSError("disk full")

    monkeypatch.setattr(xlsx_report, "Workbook", Crashing)
    # The half-written sheet is ended there and then, not with an "Exception ignored" later.
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(OSError, match="disk full"):
        write_failed_xlsx(source, target)
    gc.collect()
    assert unraisable == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed.csv"]

    target.write_bytes(b"the earlier one")
    with pytest.raises(OSError, match="disk full"):
        write_failed_xlsx(source, target)
    assert target.read_bytes() == b"the earlier one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed.csv", "failed.xlsx"]


def test_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    def peak(rows: int) -> int:
        lines = [["phone", "name", "note", "_row", "_error_text"]] + [
            [str(79_000_000_000 + i), f"Имя {i}", f"note {i}" * 3, str(i + 2),
             f"row {i + 2}: not a phone number; write it with the country code"]
            for i in range(rows)]
        source = write_failed_csv(tmp_path / f"failed{rows}.csv", lines)
        del lines
        tracemalloc.start()
        try:
            write_failed_xlsx(source, tmp_path / f"failed{rows}.xlsx")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(500), peak(10_000)
    assert large < small * 1.5, (small, large)
