"""Stream the rows of a CSV/TSV/TXT or XLSX/XLSM file as the text the user sees in each cell."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple, Protocol

from charset_normalizer import from_bytes

from .errors import InputFileError

if TYPE_CHECKING:
    from .xlsx import Row, Sheet, Workbook

TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
EXCEL_SUFFIXES = frozenset({".xlsx", ".xlsm"})
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# Enough text to see the encoding and a few dozen rows, small enough to read at every start.
_SAMPLE_BYTES = 64 * 1024
# The csv module's default cell limit (128 KB) would make one long template text a
# file-level error; a cell this long is read, and the row fails on the API's 10 MB body
# limit instead. Longer than this, it is nearly always a quote that never closes.
MAX_CELL_CHARS = 64 * 1024 * 1024
# A cell may legitimately be large (JSON content): the request size limit judges it. Beyond
# this, csv refuses the file, which the message explains as a quote that never closes.
csv.field_size_limit(MAX_CELL_CHARS)
# batch-engage's own reports end with these; reading a report back ignores them.
REPORT_COLUMNS = ("_row", "_stage", "_error", "_error_text", "_attempts")
SKIPPED_COLUMNS = ("_row", "_reason", "_detail")
_UNDECODED = re.compile("[\udc80-\udcff]")
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Excel-safety prefix that reporter adds to cells; stripped again when a report is read back.
FORMULA_GUARD = "'"


class Record(NamedTuple):  # a tuple: one is made for every row, so it is made cheaply
    number: int
    """The row number the spreadsheet shows (the header is row 1 for a file that starts there)."""
    cells: list[str]
    """One text per header column, "" for an empty or missing cell."""
    extra: list[str]
    """Non-empty cells to the right of the last header column (a ragged row)."""
    hidden: bool = False
    """Hidden in the sheet (by a filter or by hand): not sent unless asked."""
    errors: tuple[int, ...] = ()
    """Columns whose cell shows an Excel error (#N/A...); the cell holds that text."""


class Table(Protocol):
    path: Path
    headers: list[str]
    description: str

    def records(self) -> Iterator[Record]: ...

    def estimate_rows(self) -> int:
        """About how many rows follow the header, cheaply, for a progress bar's total."""
        ...

    def row_bound(self) -> int:
        """A number of data rows the table surely does not exceed, found without parsing
        every row (``--max-rows`` needs it before anything is sent)."""
        ...

    def close(self) -> None: ...


def open_table(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
) -> Table:
    """Open INPUT by its suffix. Raises InputFileError with a fix for anything unreadable."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputFileError(f"input file {path} does not exist; check its name and folder")
    if path.is_dir():
        raise InputFileError(f"input {path} is a folder; give the path of a CSV or Excel file")
    if suffix in TEXT_SUFFIXES:
        if sheet is not None:
            raise InputFileError(f"--sheet only applies to Excel files, and {path.name} is text")
        return TextTable(path, encoding=encoding, delimiter=delimiter)
    if suffix in EXCEL_SUFFIXES:
        if encoding is not None or delimiter is not None:
            raise InputFileError(
                f"--encoding and --delimiter only apply to text files, and {path.name} is Excel"
            )
        return ExcelTable(path, sheet=sheet)
    if suffix in {".xls", ".ods", ".xlsb", ".numbers"}:
        raise InputFileError(
            f"{path.name}: {suffix} files are not read; open it in your spreadsheet program and "
            "save it as .xlsx (Excel Workbook) or .csv (CSV UTF-8)"
        )
    raise InputFileError(
        f"{path.name}: unknown file type {suffix or '(no suffix)'}; batch-engage reads "
        ".csv, .tsv, .txt, .xlsx and .xlsm"
    )


def _clean_headers(headers: list[str]) -> list[str]:
    if headers:
        headers[0] = headers[0].removeprefix("\ufeff")
    # Excel often counts formatted but empty columns as used; they carry no header.
    while headers and not headers[-1].strip():
        headers.pop()
    return headers


def _is_own_report(headers: list[str]) -> bool:
    return any(h.strip().casefold() == "_row" for h in headers)


def _record(number: int, row: list[str], width: int, unguard: bool) -> Record:
    if unguard:
        row = [c[1:] if c.startswith(FORMULA_GUARD) else c for c in row]
    if len(row) < width:
        row.extend([""] * (width - len(row)))
        return Record(number, row, [])
    if len(row) == width:
        return Record(number, row, [])
    return Record(number, row[:width], [c for c in row[width:] if c.strip()])


# --- text files ------------------------------------------------------------------------------


def detect_encoding(sample: bytes, at_eof: bool, name: str = "the file") -> str:
    """Name the codec of a text file from its first bytes."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        # UTF-16 without a BOM puts a zero byte beside every ASCII character.
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) > len(odd) * 0.3 and even.count(0) == 0:
            return "utf-16-le"
        if even.count(0) > len(even) * 0.3 and odd.count(0) == 0:
            return "utf-16-be"
        if sample.count(0) <= max(1, len(sample) // 1000):
            # A stray zero in a text file: name its line, so it can be found and deleted.
            line = sample[:sample.index(0)].count(b"\n") + 1
            raise InputFileError(
                f"line {line} of {name} holds a NUL (zero) byte, which text never has: the "
                "file is damaged there; delete that character in a text editor, or export "
                "the sheet again")
        raise InputFileError(
            f"{name} holds binary data, not text; export the sheet as CSV (CSV UTF-8) or "
            "save it as .xlsx"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=at_eof)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    best = from_bytes(sample, cp_isolation=["cp1251", "cp1252"]).best()
    if best is None:
        raise InputFileError(
            "cannot tell the text encoding; pass --encoding (utf-8, cp1251 or cp1252), "
            "or save the file as CSV UTF-8"
        )
    return str(best.encoding)


def detect_delimiter(lines: list[str], preferred: str | None) -> str:
    """Pick the delimiter that splits the header into most columns and the rows consistently.

    Only the four delimiters spreadsheets export are candidates, so a one-column file of
    emails is never split on a letter.
    """
    best: tuple[float, int, int] | None = None
    chosen = preferred or ","
    for delim in DELIMITERS:
        rows = [r for r in csv.reader(lines, delimiter=delim) if any(c.strip() for c in r)]
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        body = rows[1:] or rows
        consistent = sum(len(r) == width for r in body) / len(body)
        score = (consistent, width, delim == preferred)
        if best is None or score > best:
            best, chosen = score, delim
    return chosen


class _Shapes:
    """What the file's rows look like, column by column, from the lines of its first 64 KB:
    so that text a stray quote swallowed can be recognised as rows of the file."""

    def __init__(self, lines: list[str], delimiter: str, width: int) -> None:
        self.width = width
        self.delimiter = delimiter
        # The sample's records, and where a stray quote garbled them, its lines one by one
        # (records win where both tell a column).
        self.telling = self._learn((self._fields(line) for line in lines), exact=False) | (
            self._learn(csv.reader(lines, delimiter=delimiter), exact=True))

    def _learn(self, rows: Iterable[list[str]], *, exact: bool) -> dict[int, str]:
        """The columns where most filled cells have a shape that text rarely has."""
        counts: list[dict[str, int]] = [{} for _ in range(self.width)]
        seen_rows = 0
        for fields in rows:
            if len(fields) != self.width if exact else len(fields) < 2:
                continue
            seen_rows += 1
            for i, cell in enumerate(fields[:self.width]):
                shape = _shape(cell)
                counts[i][shape] = counts[i].get(shape, 0) + 1
        telling: dict[int, str] = {}
        if seen_rows < 3:  # too few to tell anything
            return telling
        for i, seen in enumerate(counts):
            filled = sum(n for shape, n in seen.items() if shape != "empty")
            if filled < 3:  # one number in a column of blanks says nothing of the next cell
                continue
            # Text is almost never an email, so a third of the cells are enough (the lines
            # of multi-line cells fill the rest); numbers must be most of them.
            emails = seen.get("email", 0)
            if emails > 0.5 * filled or (emails >= 3 and 3 * emails >= filled):
                telling[i] = "email"
            elif seen.get("number", 0) > 0.5 * filled:
                telling[i] = "number"
        return telling

    def _fields(self, line: str) -> list[str]:
        return next(csv.reader([line], delimiter=self.delimiter), [])

    def _matches(self, fields: list[str], shapes: tuple[str, ...] = ("email", "number")
                 ) -> bool:
        filled = [i for i in self.telling if i < len(fields) and fields[i].strip()]
        matched = [i for i in filled if _shape(fields[i]) == self.telling[i]]
        # An email where emails go is a row whatever one other cell holds (a typo in a
        # number column must not hide the row); numbers alone must be most of the evidence.
        if "email" in shapes and any(self.telling[i] == "email" for i in matched):
            return True
        return "number" in shapes and bool(matched) and 2 * len(matched) > len(filled)

    def is_row(self, line: str) -> bool:
        """A whole line that reads as a row of this file."""
        fields = self._fields(line)
        if len(fields) != self.width or self.width < 2:
            return False
        return self._matches(fields) or (not self.telling and self.width >= 3)

    def starts_row(self, line: str, *, sure: bool) -> bool:
        """The start of a row, cut off where a quote closed in it. Unless ``sure`` (the row
        has the wrong number of cells), only an email where emails go counts: a number
        starts many a genuine line of text (``12345, Springfield``)."""
        fields = self._fields(line)
        return len(fields) >= 2 and self._matches(
            fields[:-1], ("email", "number") if sure else ("email",))


_NUMBER = re.compile(r"[+-]?[0-9][0-9 ,.]*")
_EMAIL_SHAPE = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+")


def _shape(cell: str) -> str:
    text = cell.strip()
    if not text:
        return "empty"
    if _EMAIL_SHAPE.fullmatch(text):
        return "email"
    if _NUMBER.fullmatch(text):
        return "number"
    return "text"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SEP_LINE = re.compile(r"\ufeff?sep=(.)\r?\n?", re.IGNORECASE)
_BAD_TEXT = re.compile("[\x00\udc80-\udcff]")


class TextTable:
    def __init__(self, path: Path, *, encoding: str | None, delimiter: str | None) -> None:
        self.path = path
        with path.open("rb") as raw:
            sample = raw.read(_SAMPLE_BYTES)
            at_eof = not raw.read(1)
        if not sample.strip():
            raise InputFileError(f"{path.name} is empty; it needs a header row and data rows")
        _check_not_binary(path, sample)
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise InputFileError(
                    f"unknown encoding {encoding!r}; use e.g. utf-8, cp1251 or cp1252"
                ) from None
        self.encoding = encoding or detect_encoding(sample, at_eof, path.name)
        text = sample.decode(self.encoding, errors="replace")
        # Not str.splitlines: it also breaks on characters like U+0085 that csv keeps in cells.
        lines = io.StringIO(text, newline="").readlines()
        if not at_eof and len(lines) > 1:
            lines.pop()  # probably cut in the middle
        if delimiter is not None and len(delimiter) != 1:
            raise InputFileError(
                f"--delimiter must be one character, not {delimiter!r}; e.g. ';' or tab"
            )
        # Excel's "sep=;" first line names the delimiter; Excel shows it as no row at all.
        sep = _SEP_LINE.fullmatch(lines[0]) if lines else None
        if sep:
            lines.pop(0)
        preferred = "\t" if path.suffix.lower() == ".tsv" else None
        self.delimiter = delimiter or (sep.group(1) if sep else None) or detect_delimiter(
            lines, preferred)
        # Undecodable bytes become lone surrogates, so the row holding them can be named;
        # a strict decoder fails a whole read-ahead chunk away from the row.
        self._file: IO[str] = path.open(
            encoding=self.encoding, errors="surrogateescape", newline=""
        )
        self._eof = False
        # Lines as a text editor numbers them count the sep= line; rows, as Excel, do not.
        self._sep_lines = 1 if sep else 0
        if sep:
            self._file.readline()
        self._reader = csv.reader(self._lines(), delimiter=self.delimiter)
        self._number = 0
        try:
            # Blank lines before the header are skipped; row numbers still count them.
            for header_row in self._reader:
                self._number += 1
                self._check_text(header_row, self._number)
                if any(c.strip() for c in header_row):
                    break
            else:
                header_row = []
        except (UnicodeDecodeError, csv.Error) as e:  # reading the row, before it counts
            self.close()
            raise self._read_error(e, self._number + 1) from None
        except InputFileError:
            self.close()
            raise
        self.headers = _clean_headers(header_row)
        if not self.headers:
            self.close()
            raise InputFileError(f"{path.name} has no header row; the first row must name columns")
        self._unguard = _is_own_report(self.headers)
        if self._unguard:
            self.headers = [h.removeprefix(FORMULA_GUARD) for h in self.headers]
        body = lines[self._number:] if len(lines) > self._number else []
        self._shapes = _Shapes(body, self.delimiter, len(self.headers))
        name = DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))
        self.description = f"text, {self.encoding}, {name}-separated"

    def _lines(self) -> Iterator[str]:
        """The file's lines for csv, noting when they run out: a row that csv finishes
        only then holds a quote that never closed."""
        yield from self._file
        self._eof = True

    def _check_text(self, row: list[str], number: int) -> None:
        joined = "".join(row)
        if _BAD_TEXT.search(joined) is None:
            return
        if "\x00" in joined:
            raise InputFileError(
                f"line {self._reader.line_num + self._sep_lines} of {self.path.name} holds a "
                "NUL (zero) byte, which text never has: the file is damaged there; delete "
                "that character in a text editor, or export the sheet again")
        raise self._read_error(UnicodeDecodeError(self.encoding, b"", 0, 1, "undecodable"),
                               number)

    def records(self) -> Iterator[Record]:
        width = len(self.headers)
        number = self._number
        reader = self._reader
        line = reader.line_num
        try:
            for row in reader:
                number += 1
                if _BAD_TEXT.search("".join(row)):
                    self._check_text(row, number)
                if reader.line_num - line > 1 or self._eof:
                    self._check_quotes(row, line + 1 + self._sep_lines, width)
                line = reader.line_num
                yield _record(number, row, width, self._unguard)
        except (UnicodeDecodeError, csv.Error) as e:
            raise self._read_error(e, number + 1) from None  # reading the row, before it counts

    def _check_quotes(self, row: list[str], first_line: int, width: int) -> None:
        """A row that spans lines: refuse it when a quote swallowed what reads as rows."""
        opened = first_line
        for index, cell in enumerate(row):
            parts = _LINE_BREAK.split(cell)
            if len(parts) > 1:
                runaway = self._eof and index == len(row) - 1
                if not runaway:
                    # A quote that closed in the next row's text leaves this row with
                    # the wrong number of cells; a genuine multi-line cell does not.
                    runaway = any(self._shapes.is_row(p) for p in parts[1:]) or (
                        self._shapes.starts_row(parts[-1], sure=len(row) != width))
                if runaway:
                    # A cell cut off at the end of the file ends with that last line break.
                    swallowed = len(_LINE_BREAK.findall(cell.rstrip("\r\n")))
                    self._runaway(opened, index, swallowed)
            opened += len(parts) - 1

    def _runaway(self, line: int, index: int, swallowed: int) -> None:
        column = self.headers[index] if index < len(self.headers) else f"#{index + 1}"
        how = ("never closes, so the rest of the file" if self._eof
               else "closes only after what reads as rows of the file, so those")
        raise InputFileError(
            f"line {line} of {self.path.name}, column {column!r}: a quote (\") opens this "
            f"cell and {how} ({swallowed:,} more lines) would be read as one cell; remove "
            'the stray quote, or if the cell really is quoted, close it and write any quote '
            'inside it twice (""); then run it again')

    def estimate_rows(self) -> int:
        # Counting line ends reads the file at disk speed; a cell holding a line break
        # makes the estimate a little high, which a progress bar can live with.
        newline = "\n".encode(self.encoding.removesuffix("-sig"))
        if newline != b"\n":  # UTF-16: count whole code units, not stray bytes
            text = self.path.read_bytes().decode(self.encoding, errors="replace")
            return max(0, text.rstrip("\r\n").count("\n"))
        lines, last = 0, b""
        with self.path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk
        return max(0, lines - (1 if last.endswith(b"\n") else 0))

    def row_bound(self) -> int:
        # Every row ends a line; blank lines, a sep= line and multi-line cells only add.
        return self.estimate_rows()

    def _read_error(self, error: Exception, number: int) -> InputFileError:
        if isinstance(error, UnicodeDecodeError):
            other = "cp1251" if self.encoding.startswith("utf") else "utf-8"
            return InputFileError(
                f"row {number}: the text is not valid {self.encoding}; "
                f"try --encoding {other}, or save the file as CSV UTF-8"
            )
        if "field larger than field limit" in str(error):
            return InputFileError(
                f"row {number}: a cell runs on for more than {MAX_CELL_CHARS // 2**20} MB; "
                f'most often a quote (") opens in or before row {number} and never closes: '
                "check that row in a text editor"
            )
        return InputFileError(f"row {number}: the file cannot be read as a table ({error})")

    def close(self) -> None:
        self._file.close()


def _check_not_binary(path: Path, sample: bytes) -> None:
    """A workbook given a text suffix: say what it is, not that it is 'binary'."""
    if sample.startswith(_ZIP_MAGIC):
        raise InputFileError(
            f"{path.name} is an Excel workbook (.xlsx) or another Zip archive, not a text "
            f"file; rename it to {path.stem}.xlsx and run it again")
    if sample.startswith(_OLE_MAGIC):
        raise InputFileError(
            f"{path.name} is an Excel 97-2003 workbook (.xls) or a password-protected one, "
            "not a text file; open it in Excel and save it as .xlsx (Excel Workbook) or as "
            ".csv (CSV UTF-8)")


# --- Excel files -----------------------------------------------------------------------------


def _sheet_list(book: Workbook) -> str:
    return ", ".join(repr(s.name) + (" (hidden)" if s.hidden else "") for s in book.sheets)


def _not_a_workbook(path: Path) -> InputFileError | None:
    """Name what a file with an Excel suffix really is, when it is not a workbook."""
    with path.open("rb") as raw:
        head = raw.read(_SAMPLE_BYTES)
    if head.startswith(_ZIP_MAGIC):
        return None
    if head.startswith(_OLE_MAGIC):
        if _is_encrypted(path):
            return InputFileError(
                f"{path.name} is password-protected; save a copy without a password "
                "(File > Info > Protect Workbook) and use that")
        return InputFileError(
            f"{path.name} is an Excel 97-2003 workbook (.xls) with an {path.suffix} name; "
            "open it in Excel and save it as .xlsx (Excel Workbook)")
    if not head.strip():
        return InputFileError(f"{path.name} is empty; it needs a header row and data rows")
    if b"\x00" not in head[:4096] or head.startswith(
            (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return InputFileError(
            f"{path.name} is a text file (CSV or similar), not an Excel workbook; "
            f"rename it to {path.stem}.csv and run it again")
    return InputFileError(
        f"{path.name} is not an Excel workbook (it does not start like one); open it in "
        "Excel and save it as .xlsx, or export the sheet as CSV")


def _is_encrypted(path: Path) -> bool:
    """An encrypted OOXML file is an OLE container with an EncryptionInfo stream."""
    marker = "EncryptionInfo".encode("utf-16-le")
    with path.open("rb") as raw:
        tail = b""
        while chunk := raw.read(1 << 20):
            if marker in tail + chunk:
                return True
            tail = chunk[-len(marker):]
    return False


class ExcelTable:
    def __init__(self, path: Path, *, sheet: str | None) -> None:
        # Imported here: a text file's run does not pay for the workbook reader.
        from .xlsx import Workbook, WorkbookError  # noqa: PLC0415
        self.path = path
        problem = _not_a_workbook(path)
        if problem is not None:
            raise problem
        try:
            self._book = Workbook(path)
        except WorkbookError as e:
            raise InputFileError(
                f"{path.name} cannot be opened as an Excel workbook: {e}; open it in Excel "
                "and save it again as .xlsx, or export the sheet as CSV") from None
        try:
            self._sheet = self._choose(sheet)
            self._rows: Generator[Row] = self._book.rows(self._sheet)
            self.headers: list[str] = []
            self._header_number = 0
            # The header is the first row with any text (sheets often start with empty rows).
            for row in self._rows:
                self.headers = _clean_headers(list(row.cells))
                if self.headers:
                    self._header_number = row.number
                    break
            # A table that starts right of column A: its columns start where its header does.
            self._offset = next((i for i, h in enumerate(self.headers) if h.strip()), 0)
            self.headers = self.headers[self._offset:]
            if not self.headers:
                others = [s for s in self._book.sheets
                          if s is not self._sheet and not s.chart]
                hint = ("; pick another sheet with --sheet: " + ", ".join(
                    repr(s.name) for s in others)) if others else (
                    "; put the header in its first row and the data below it")
                raise InputFileError(
                    f"sheet {self._sheet.name!r} of {path.name} is empty{hint}")
        # Here the row generator, if made, has ended: closing the book closes the file.
        except WorkbookError as e:
            self._book.close()
            raise InputFileError(f"{path.name}: {e}; open it in Excel and save it again"
                                 ) from None
        except InputFileError:
            self._book.close()
            raise
        self._unguard = _is_own_report(self.headers)
        if self._unguard:
            self.headers = [h.removeprefix(FORMULA_GUARD) for h in self.headers]
        self.description = f"Excel, sheet {self._sheet.name!r}"
        self.sheet = self._sheet.name
        self.sheets = [s.name for s in self._book.sheets if not s.chart]
        """The sheets of rows one may choose (a web page's sheet select)."""

    def _choose(self, name: str | None) -> Sheet:
        book = self._book
        if not book.sheets:
            raise InputFileError(f"{self.path.name} has no worksheets")
        if name is None:
            # The first sheet a user sees: hidden ones are skipped, as Excel's tabs do.
            chosen = next((s for s in book.sheets if not s.hidden), book.sheets[0])
        else:
            found = [s for s in book.sheets if s.name == name] or [
                s for s in book.sheets if s.name.casefold() == name.strip().casefold()]
            if not found:
                raise InputFileError(
                    f"{self.path.name} has no sheet named {name!r}; its sheets are: "
                    + _sheet_list(book))
            chosen = found[0]
        if chosen.chart:
            tables = [s for s in book.sheets if not s.chart]
            hint = ("pick a sheet of rows with --sheet: " + ", ".join(
                repr(s.name) for s in tables)) if tables else "it has no sheet of rows"
            raise InputFileError(
                f"sheet {chosen.name!r} of {self.path.name} is a chart, not a table; {hint}")
        return chosen

    def records(self) -> Iterator[Record]:
        from .xlsx import WorkbookError  # noqa: PLC0415  (see __init__)
        width = len(self.headers)
        unguard = self._unguard
        offset = self._offset
        try:
            for row in self._rows:
                cells = row.cells
                lead: list[str] = []
                if offset:
                    lead = [c for c in cells[:offset] if c.strip()]
                    cells = cells[offset:]
                record = _record(row.number, cells, width, unguard)
                if row.hidden or row.errors or lead:
                    record = Record(record.number, record.cells, lead + record.extra,
                                    row.hidden,
                                    tuple(i - offset for i in row.errors
                                          if offset <= i < offset + width))
                yield record
        except WorkbookError as e:
            raise InputFileError(f"{self.path.name}: {e}; open it in Excel and save it again"
                                 ) from None

    def estimate_rows(self) -> int:
        return max(0, self._book.estimate_rows(self._sheet) - self._header_number)

    def row_bound(self) -> int:
        # The dimension may be missing or wrong (some writers put A1): count the rows.
        return max(0, self._book.count_rows(self._sheet) - 1)

    def close(self) -> None:
        # A sheet's open stream keeps the file open after the zip is closed: a run that stops
        # before the last row must end the row generator (and its stream) itself.
        self._rows.close()
        self._book.close()
