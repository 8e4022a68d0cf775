"""Stream the rows of an .xlsx/.xlsm workbook as Excel shows them, in bounded memory.

The sheet XML is read with the standard library's expat, one chunk at a time, so a sheet of
a million rows never sits in memory; shared strings are kept as one UTF-8 buffer with an
offset per string. Each number goes through its cell's number format (``numfmt``); error
cells, hidden rows and hidden sheets are reported as such. Why not a library: calamine holds
the whole sheet and knows neither formats nor hidden rows, and openpyxl's read-only mode is
about 5x slower (bench/RESULTS.md).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import zipfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from xml.etree import ElementTree
from xml.parsers import expat

from .numfmt import builtin_code, compile_format, general

_MAIN = ("http://schemas.openxmlformats.org/spreadsheetml/2006/main",
         "http://purl.oclc.org/ooxml/spreadsheetml/main")
_REL_NS = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
           "http://purl.oclc.org/ooxml/officeDocument/relationships")
_PKG_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_CHUNK = 1 << 16
ERROR_TEXTS = frozenset({"#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!",
                         "#GETTING_DATA", "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!",
                         "#CONNECT!", "#BUSY!", "#UNKNOWN!"})
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\s+ref=\"[A-Z]*\d*:?[A-Z]*(\d+)\"")


class WorkbookError(Exception):
    """The file cannot be read as a workbook; the text says why."""


@dataclass(frozen=True, slots=True)
class Sheet:
    name: str
    part: str
    """The sheet's XML file inside the archive."""
    hidden: bool
    chart: bool
    """A chart sheet (or a dialog or macro sheet): it has no rows."""


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    cells: list[str]
    hidden: bool
    errors: tuple[int, ...]
    """Indexes of the cells that show an Excel error (#N/A...)."""


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _unescape(text: str) -> str:
    """Excel writes control characters as ``_x000D_``; ``_x005F_`` escapes the underscore."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "_x" in text else text


class SharedStrings:
    """Every shared string in one UTF-8 buffer and an offset per string: a million unique
    strings cost about their bytes plus 8 each, not a Python object each."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")

    def add(self, text: str) -> None:
        self._blob += text.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        start = self._ends[index - 1] if index else 0
        return self._blob[start:self._ends[index]].decode("utf-8", "surrogatepass")


def _read_shared_strings(stream: IO[bytes]) -> SharedStrings:
    strings = SharedStrings()
    parts: list[str] = []
    depth_rph = 0
    collecting = False

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal depth_rph, collecting
        local = _local(name)
        if local == "t":
            collecting = depth_rph == 0
        elif local == "rPh":  # phonetic guide text (furigana) is not part of the value
            depth_rph += 1
        elif local == "si":
            parts.clear()

    def end(name: str) -> None:
        nonlocal depth_rph, collecting
        local = _local(name)
        if local == "t":
            collecting = False
        elif local == "rPh":
            depth_rph -= 1
        elif local == "si":
            strings.add(_unescape("".join(parts)))

    def data(text: str) -> None:
        if collecting:
            parts.append(text)

    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    _feed(parser, stream)
    return strings


def _feed(parser: expat.XMLParserType, stream: IO[bytes]) -> None:
    try:
        while chunk := stream.read(_CHUNK):
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except expat.ExpatError as e:
        raise WorkbookError(f"its XML is damaged ({expat.errors.messages[e.code]})") from None


_COLUMNS: dict[str, int] = {}


def column_index(letters: str) -> int:
    """``A`` is 0, ``AB`` is 27."""
    index = _COLUMNS.get(letters)
    if index is None:
        index = 0
        for ch in letters.upper():
            index = index * 26 + ord(ch) - 64
        index -= 1
        _COLUMNS[letters] = index
    return index


def column_letter(index: int) -> str:
    """0 is ``A``, 27 is ``AB``."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


class Workbook:
    """An open .xlsx/.xlsm file: its sheets, and the rows of one of them on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise WorkbookError(f"the Zip archive inside is damaged ({e})") from None
        try:
            self._open()
        except (KeyError, ElementTree.ParseError, ValueError, zipfile.BadZipFile,
                OSError) as e:
            self._zip.close()
            raise WorkbookError(f"it is damaged or not an Excel workbook ({e})") from None
        except WorkbookError:
            self._zip.close()
            raise
        self._strings: SharedStrings | None = None

    def _open(self) -> None:
        names = set(self._zip.namelist())
        book_part = "xl/workbook.xml"
        if "_rels/.rels" in names:
            for rel in ElementTree.fromstring(self._zip.read("_rels/.rels")):
                if rel.get("Type", "").endswith("/officeDocument"):
                    book_part = rel.get("Target", book_part).lstrip("/")
        if book_part not in names:
            raise WorkbookError("it holds no workbook (no xl/workbook.xml): it may be a "
                                "Word or OpenDocument file renamed")
        base = posixpath.dirname(book_part)
        rels_part = posixpath.join(base, "_rels", posixpath.basename(book_part) + ".rels")
        targets: dict[str, tuple[str, str]] = {}
        self._styles_part = self._strings_part = ""
        for rel in ElementTree.fromstring(self._zip.read(rels_part)):
            target = rel.get("Target", "")
            part = target.lstrip("/") if target.startswith("/") else posixpath.normpath(
                posixpath.join(base, target))
            kind = rel.get("Type", "").rsplit("/", 1)[-1]
            targets[rel.get("Id", "")] = (part, kind)
            if kind == "styles":
                self._styles_part = part
            elif kind == "sharedStrings":
                self._strings_part = part
        book = ElementTree.fromstring(self._zip.read(book_part))
        self.date1904 = False
        self.sheets: list[Sheet] = []
        for element in book.iter():
            local = _local(element.tag)
            if local == "workbookPr":
                self.date1904 = element.get("date1904", "").lower() in ("1", "true")
            elif local == "sheet":
                rid = next((element.get(f"{{{ns}}}id") for ns in _REL_NS
                            if element.get(f"{{{ns}}}id")), "")
                part, kind = targets.get(rid or "", ("", ""))
                self.sheets.append(Sheet(
                    name=element.get("name", ""), part=part,
                    hidden=element.get("state", "visible") != "visible",
                    chart=kind != "worksheet" or part not in names,
                ))
        self._read_styles()

    def _read_styles(self) -> None:
        """For each cell style index: how a number shows (None: General), and how text
        shows (None: as it is; a format with an @ section may add text around it)."""
        self._shows: list[Callable[[float], str] | None] = []
        self._texts: list[Callable[[str], str] | None] = []
        if not self._styles_part or self._styles_part not in self._zip.namelist():
            return
        styles = ElementTree.fromstring(self._zip.read(self._styles_part))
        codes: dict[int, str] = {}
        for element in styles:
            local = _local(element.tag)
            if local == "numFmts":
                for fmt in element:
                    codes[int(fmt.get("numFmtId", "0"))] = fmt.get("formatCode", "General")
            elif local == "cellXfs":
                for xf in element:
                    format_id = int(xf.get("numFmtId", "0"))
                    code = codes.get(format_id) or builtin_code(format_id)
                    number_format = compile_format(code, self.date1904)
                    self._shows.append(None if number_format.show is general
                                       else number_format.show)
                    self._texts.append(number_format.show_text
                                       if "@" in code and code.strip() != "@" else None)

    def shared_strings(self) -> SharedStrings:
        if self._strings is None:
            if self._strings_part and self._strings_part in self._zip.namelist():
                with self._zip.open(self._strings_part) as stream:
                    self._strings = _read_shared_strings(stream)
            else:
                self._strings = SharedStrings()
        return self._strings

    def estimate_rows(self, sheet: Sheet) -> int:
        """The last row number the sheet declares (its ``dimension``), or 0."""
        with self._zip.open(sheet.part) as stream:
            head = stream.read(4096)
        match = _DIMENSION.search(head)
        return int(match.group(1)) if match else 0

    def rows(self, sheet: Sheet) -> Iterator[Row]:
        """Every row element of the sheet in order, with the text each cell shows."""
        return _sheet_rows(self, sheet)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _sheet_rows(book: Workbook, sheet: Sheet) -> Iterator[Row]:
    """The expat handlers for one sheet, as closures over plain locals: they run for every
    cell of a million-row sheet, and attribute look-ups would double their cost."""
    strings = book.shared_strings()
    shows = book._shows
    texts = book._texts
    styles = len(shows)
    done: list[Row] = []
    text: list[str] = []
    cells: list[str] = []
    errors: list[int] = []
    number = column = style = phonetic = 0
    hidden = collecting = False
    kind = "n"
    names = {f"{ns}}}{local}": local for ns in _MAIN
             for local in ("row", "c", "v", "t", "rPh")}

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal number, hidden, cells, errors, column, kind, style, collecting, phonetic
        local = names.get(name)
        if local == "c":
            ref = attrs.get("r")
            if ref:
                column = column_index(ref.rstrip("0123456789"))
            kind = attrs.get("t", "n")
            s = attrs.get("s")
            style = int(s) if s else 0
            text.clear()
        elif local == "v" or (local == "t" and not phonetic):
            # Runs of rich text (several <t>) add up; the cell's start cleared the text.
            collecting = True
        elif local == "row":
            r = attrs.get("r")
            number = int(r) if r else number + 1
            hidden = attrs.get("hidden", "0") in ("1", "true")
            cells = []
            errors = []
            column = 0
        elif local == "rPh":  # phonetic guide text (furigana) is not part of the value
            phonetic += 1

    def end(name: str) -> None:
        nonlocal column, collecting, phonetic
        local = names.get(name)
        if local in {"v", "t"}:
            collecting = False
        elif local == "c":
            raw = "".join(text)
            if kind == "n":
                show = shows[style] if style < styles else None
                if not raw:
                    value = ""
                elif show is not None:
                    value = show(float(raw))
                elif len(raw) < 16 and "." not in raw and "E" not in raw and "e" not in raw:
                    value = raw  # a whole number in General: its digits are what Excel shows
                else:
                    value = general(float(raw))
            elif kind in {"s", "inlineStr", "str"}:
                value = (strings[int(raw)] if raw else "") if kind == "s" else _unescape(raw)
                show_text = texts[style] if style < styles else None
                if show_text is not None:
                    value = show_text(value)
            elif kind == "b":
                value = "TRUE" if raw.strip() in ("1", "true") else "FALSE"
            elif kind == "e":
                value = raw
                errors.append(column)
            elif kind == "d":
                value = _iso_date(raw)
            else:
                value = raw
            if column == len(cells):
                cells.append(value)
            elif column > len(cells):
                cells.extend([""] * (column - len(cells)))
                cells.append(value)
            else:  # out of order: Excel never writes it so, other programs might
                cells[column] = value
            column += 1
        elif local == "row":
            done.append(Row(number, cells, hidden, tuple(errors)))
        elif local == "rPh":
            phonetic -= 1

    def data(chunk: str) -> None:
        if collecting:
            text.append(chunk)

    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    with book._zip.open(sheet.part) as stream:
        try:
            while chunk := stream.read(_CHUNK):
                parser.Parse(chunk, False)
                if done:
                    yield from done
                    done.clear()
            parser.Parse(b"", True)
        except expat.ExpatError as e:
            raise WorkbookError(
                f"sheet {sheet.name!r} is damaged near row {number + 1} "
                f"({expat.errors.messages[e.code]})") from None
        except zipfile.BadZipFile as e:
            raise WorkbookError(f"the Zip archive inside is damaged ({e})") from None
    yield from done


def _iso_date(text: str) -> str:
    """A ``t="d"`` cell (strict Open XML) holds an ISO 8601 date already."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().removesuffix("Z"))
    except ValueError:
        return text
    if moment.time() == dt.time(0):
        return moment.date().isoformat()
    return moment.isoformat(timespec="seconds")
