"""failed.xlsx: the finished failed.csv as a workbook, for a run whose input was a workbook."""

from __future__ import annotations

import contextlib
import csv
import os
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from .reader import MAX_CELL_CHARS

SHEET_TITLE = "failed"
# Column widths come from the header and this many rows: enough to see what a column holds,
# few enough to hold while the sheet's columns (which precede its rows) are written.
_WIDTH_SAMPLE_ROWS = 100
_MIN_WIDTH, _MAX_WIDTH = 8, 60
# Characters XML cannot hold, and the carriage return, which an XML reader turns into a line
# feed: a workbook holds them as _xHHHH_ (ECMA-376 ST_Xstring), as Excel writes them.
_CONTROL = "\x00-\x08\x0b-\x1f\ufffe\uffff"
# ... and an underscore whose escaped continuation reads as such an escape is written _x005F_,
# so that batch-engage's reader (and Excel) read it back as the underscore it was.
_NEEDS_ESCAPE = re.compile(f"[{_CONTROL}]|_(?=x[0-9A-Fa-f]{{4}}[_{_CONTROL}])")
# openpyxl makes a text that starts with "=" a formula and "#N/A" an error, and cuts a text
# after Excel's 32,767 characters; such cells are written as text cells by hand.
_EXCEL_CELL_CHARS = 32767


def write_failed_xlsx(failed_csv: Path, xlsx: Path) -> None:
    """Write ``xlsx`` with the cells of ``failed_csv`` (a finished failed.csv), row by row.

    One sheet, "failed"; every cell a text cell holding exactly the text of the CSV's cell,
    the leading ``'`` of the formula guard included: batch-engage removes it again when it
    reads a report back (the ``_row`` column marks one), from a workbook as from a CSV, and
    in Excel the cell stays text when it is edited. The header is bold and stays in view.
    Memory does not grow with the rows; the workbook appears under its name only complete.
    """
    tmp = xlsx.with_name(xlsx.name + ".tmp")
    book = Workbook(write_only=True)
    sheet = book.create_sheet(SHEET_TITLE)
    try:
        # Cells longer than csv's default limit are read, as the reader reads them.
        csv.field_size_limit(max(csv.field_size_limit(), MAX_CELL_CHARS))
        with failed_csv.open(encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f)
            header = next(rows, [])
            first = list(islice(rows, _WIDTH_SAMPLE_ROWS))
            _set_widths(sheet, header, first)
            sheet.freeze_panes = "A2"
            bold = Font(bold=True)
            cells = [_text_cell(sheet, _escape(text)) for text in header]
            for cell in cells:
                cell.font = bold
            sheet.append(cells)
            for row in first:
                sheet.append(_cells(sheet, row))
            del first
            for row in rows:
                sheet.append(_cells(sheet, row))
        book.save(tmp)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())  # on disk before it takes the name
        tmp.replace(xlsx)
    except BaseException:
        if not sheet.closed:
            # Ends the sheet's row writer now, not in an "exception ignored" at garbage
            # collection; openpyxl removes its temporary file of rows when the process exits.
            with contextlib.suppress(Exception):
                sheet.close()
        tmp.unlink(missing_ok=True)
        raise


def _escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return _NEEDS_ESCAPE.sub(lambda m: f"_x{ord(m.group()[0]):04X}_", text)


def _cells(sheet: WriteOnlyWorksheet, row: list[str]) -> Iterator[str | Cell | None]:
    for cell in row:
        if not cell:
            yield None  # no cell at all: read as empty, as a missing cell of a CSV row is
            continue
        text = _escape(cell)
        # A plain text is the cheap way (openpyxl reuses one cell for it); the rest by hand.
        if text[0] in ("=", "#") or len(text) > _EXCEL_CELL_CHARS:
            yield _text_cell(sheet, text)
        else:
            yield text


def _text_cell(sheet: WriteOnlyWorksheet, text: str) -> Cell:
    cell = WriteOnlyCell(sheet)
    # Set as it is: openpyxl's value setter would make "=1+1" a formula and cut a long text.
    # Excel holds at most 32,767 characters in a cell; batch-engage reads longer ones whole.
    cell._value = text  # type: ignore[attr-defined]
    cell.data_type = "s"
    return cell


def _set_widths(sheet: WriteOnlyWorksheet, header: list[str], rows: list[list[str]]) -> None:
    for index, title in enumerate(header):
        longest = max(
            (_shown_width(row[index]) for row in rows if index < len(row)), default=0)
        width = min(max(_shown_width(title), longest) + 2, _MAX_WIDTH)
        # A write-only sheet has its column dimensions (Worksheet's), which the stubs leave out.
        columns = sheet.column_dimensions  # type: ignore[attr-defined]
        columns[get_column_letter(index + 1)].width = max(width, _MIN_WIDTH)


def _shown_width(text: str) -> int:
    # The longest line of a cell is what its column has to show.
    return max((len(line) for line in text[:4096].splitlines()), default=0)
