"""Stream the rows of an .xlsx/.xlsm workbook as Excel shows them, in bounded memory.

The sheet XML is read one chunk at a time, so a sheet of a million rows never sits in
memory: rows of the sheet's usual shape are matched with one pattern each, other cells with
a pattern per cell, and anything else (namespace prefixes, rich text...) goes through the
standard library's expat. Shared strings of a big workbook are kept as one UTF-8 buffer
with an offset per string. Each number goes through its cell's number format (``numfmt``);
error cells, hidden rows and hidden sheets are reported as such. Why not a library:
calamine holds the whole sheet and knows neither formats nor hidden rows, and openpyxl's
read-only mode is about 6x slower (bench/RESULTS.md).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import zipfile
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, Protocol, Self
from xml.etree import ElementTree
from xml.parsers import expat

from .numfmt import builtin_code, compile_format, general

_MAIN = ("http://schemas.openxmlformats.org/spreadsheetml/2006/main",
         "http://purl.oclc.org/ooxml/spreadsheetml/main")
_REL_NS = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
           "http://purl.oclc.org/ooxml/officeDocument/relationships")
_PKG_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_CHUNK = 1 << 16
_SMALL_STRINGS_BYTES = 32 * 2**20
_MEMO_SIZE = 32768
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


class Row(NamedTuple):  # a tuple: made for every row, so made cheaply
    number: int
    cells: list[str]
    hidden: bool
    errors: tuple[int, ...]
    """Indexes of the cells that show an Excel error (#N/A...)."""


def _local(name: str) -> str:
    """A tag's name without its namespace, as ElementTree (``{ns}c``) or expat (``x:c``)
    writes it."""
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _expat(start: Callable[[str, dict[str, str]], None], end: Callable[[str], None],
           data: Callable[[str], None]) -> expat.XMLParserType:
    """A parser without namespace processing: names are compared by their local part, so
    a prefix (``<x:row>``), even one a lone row does not declare, is no error."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    return parser


def _unescape(text: str) -> str:
    """Excel writes control characters as ``_x000D_``; ``_x005F_`` escapes the underscore."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "_x" in text else text


class StringTable(Protocol):
    def __getitem__(self, index: int, /) -> str: ...

    def __len__(self) -> int: ...


class SharedStrings:
    """Every shared string in one UTF-8 buffer and an offset per string: a million unique
    strings cost about their bytes plus 8 each, not a Python object each."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")

    def append(self, text: str) -> None:
        self._blob += text.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        start = self._ends[index - 1] if index else 0
        return self._blob[start:self._ends[index]].decode("utf-8", "surrogatepass")


def _chunks(stream: IO[bytes], head: bytes) -> Iterator[bytes]:
    """The first bytes, already read to look at, then the rest of the stream."""
    yield head
    while chunk := stream.read(_CHUNK):
        yield chunk


_SI = re.compile(r'<si>(?:<t(?: xml:space="preserve")?>([^<]*)</t>|(.*?))</si>|<si/>',
                 re.DOTALL)
_RICH_TEXT = re.compile(r"<(?:\w+:)?t(?:\s[^>]*)?>([^<]*)</(?:\w+:)?t>")
_PHONETIC = re.compile(r"<(?:\w+:)?rPh\b.*?</(?:\w+:)?rPh>", re.DOTALL)
_PLAIN_SST = re.compile(r'<sst\b[^>]*\bxmlns="(?:' + "|".join(
    re.escape(ns) for ns in _MAIN) + ')"')


def _read_shared_strings(stream: IO[bytes], store: list[str] | SharedStrings
                         ) -> StringTable:
    head = stream.read(_CHUNK)
    if _PLAIN_SST.search(head.decode("utf-8", "replace")) is None or b"<!" in head:
        return _parse_shared_strings(_chunks(stream, head), store)
    add = store.append
    pending = b""
    for chunk in _chunks(stream, head):
        data = pending + chunk
        # Up to the end of the last whole string: a long one spans many chunks.
        ends = (data.rfind(b"</si>"), data.rfind(b"<si/>"))
        cut = max(ends) + 5 if max(ends) >= 0 else 0
        if not cut:
            pending = data
            continue
        pending = data[cut:]
        for plain, rich in _SI.findall(data[:cut].decode("utf-8", "surrogateescape")):
            # Runs of rich text are joined; phonetic guides (furigana) are not the value.
            if rich:  # each run is unescaped alone: "_" + "x0041_" is not "A"
                runs = _RICH_TEXT.findall(_PHONETIC.sub("", rich))
                add("".join(_unescape(_xml_text(run)) for run in runs))
            elif "&" in plain or "\r" in plain or "_x" in plain:
                add(_unescape(_xml_text(plain)))
            else:
                add(plain)
    return store


def _parse_shared_strings(chunks: Iterable[bytes], store: list[str] | SharedStrings
                          ) -> StringTable:
    """Any shape of the table (namespace prefixes...), through expat."""
    strings = store
    parts: list[str] = []
    run_start = 0  # where the current <t> began in parts: each run is unescaped alone
    depth_rph = 0
    collecting = False

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal depth_rph, collecting, run_start
        local = _local(name)
        if local == "t":
            collecting = depth_rph == 0
            run_start = len(parts)
        elif local == "rPh":  # phonetic guide text (furigana) is not part of the value
            depth_rph += 1
        elif local == "si":
            parts.clear()

    def end(name: str) -> None:
        nonlocal depth_rph, collecting
        local = _local(name)
        if local == "t":
            if collecting:
                parts[run_start:] = [_unescape("".join(parts[run_start:]))]
            collecting = False
        elif local == "rPh":
            depth_rph -= 1
        elif local == "si":
            strings.append("".join(parts))

    def data(text: str) -> None:
        if collecting:
            parts.append(text)

    parser = _expat(start, end, data)
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except expat.ExpatError as e:
        raise WorkbookError(f"its XML is damaged ({expat.errors.messages[e.code]})") from None
    return strings


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
        self._strings: StringTable | None = None

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

    def shared_strings(self) -> StringTable:
        if self._strings is None:
            if self._strings_part and self._strings_part in self._zip.namelist():
                size = self._zip.getinfo(self._strings_part).file_size
                # A Python string each is fastest to look up, and fine for a table of up
                # to tens of MB; a bigger one (millions of unique emails) goes in one buffer.
                store: list[str] | SharedStrings = (
                    [] if size < _SMALL_STRINGS_BYTES else SharedStrings())
                with self._zip.open(self._strings_part) as stream:
                    self._strings = _read_shared_strings(stream, store)
            else:
                self._strings = []
        return self._strings

    def estimate_rows(self, sheet: Sheet) -> int:
        """The last row number the sheet declares (its ``dimension``), or 0."""
        with self._zip.open(sheet.part) as stream:
            head = stream.read(4096)
        match = _DIMENSION.search(head)
        return int(match.group(1)) if match else 0

    def count_rows(self, sheet: Sheet) -> int:
        """How many row elements the sheet holds, without reading their cells: at least its
        number of rows with data, whatever its ``dimension`` claims."""
        count, tail = 0, b""
        with self._zip.open(sheet.part) as stream:
            while chunk := stream.read(1 << 20):
                # A tag cut in two by the chunk boundary is found in the joined tail.
                text = tail + chunk
                count += len(_ROW_TAG.findall(text))
                tail = text[-16:]
                count -= len(_ROW_TAG.findall(tail))
        return count + len(_ROW_TAG.findall(tail))

    def rows(self, sheet: Sheet) -> Generator[Row]:
        """Every row element of the sheet in order, with the text each cell shows."""
        return _sheet_rows(self, sheet)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# The shape Excel (and openpyxl, LibreOffice...) writes rows and cells in. A row whose text
# these do not match cell by cell, to its last character, goes to expat instead.
_ROW_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row[\s/>]")
_ROW_NUMBER = re.compile(r'\br="(\d+)"')
_ROW_HIDDEN = re.compile(r'\bhidden="(?:1|true)"')
_CELL = re.compile(
    r'<c r="([A-Z]{1,3})\d+"(?: s="(\d+)")?(?: t="(\w+)")?(?: (?:cm|vm|ph)="\d+")*'
    r"(?:/>|>(?:<f\b[^>]*/>|<f\b[^>]*>[^<]*</f>)?"
    r'(?:(?:<v>|<is><t(?: xml:space="preserve")?>)([^<]*)(?:</v>|</t></is>))?</c>)')
# Cells, or (last group) a row's tags or any other text; other text in a row makes it not
# the usual shape. Few groups: findall makes a tuple of them for every cell.
_TOKENS = re.compile(_CELL.pattern + r"|(<row\b[^>]*>|</row>|[^<]+|<)")
# Column letters by index, to check a cell's place cheaply: up to ZZZ and one more, so that
# any row the cell pattern accepts has its next place in the list.
_LETTERS: list[str] = []
_PLAIN_ROOT = re.compile(
    r'<worksheet\b[^>]*\bxmlns="(?:' + "|".join(re.escape(ns) for ns in _MAIN) + ')"')


_LETTERS.extend(column_letter(i) for i in range(column_index("ZZZ") + 2))


_REFERENCE = re.compile(r"&(?:#([0-9]+)|#x([0-9A-Fa-f]+)|(amp|lt|gt|quot|apos));")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _reference(m: re.Match[str]) -> str:
    if m[1]:
        return chr(int(m[1]))
    if m[2]:
        return chr(int(m[2], 16))
    return _NAMED[m[3]]


def _xml_text(text: str) -> str:
    """What an XML parser makes of character data: line ends as \\n, references resolved
    (in that order: &#13; is a CR that stays one)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "&" in text:
        text = _REFERENCE.sub(_reference, text)
    return text


def _sheet_rows(book: Workbook, sheet: Sheet) -> Generator[Row]:
    """Every row of a sheet with the text each cell shows.

    Rows in the usual shape are matched by regular expressions, several times faster than
    an XML parser's callbacks; anything else (namespace prefixes, rich text, comments...)
    goes through expat, row by row or for the whole sheet.
    """
    convert = _Converter(book)
    with book._zip.open(sheet.part) as stream:
        head = stream.read(_CHUNK)
        plain = _PLAIN_ROOT.search(head.decode("utf-8", "replace")) is not None and (
            b"<!DOCTYPE" not in head and b"<!ENTITY" not in head)
        try:
            if plain:
                yield from _matched_rows(stream, head, convert, sheet)
            else:
                yield from _parsed_rows(_chunks(stream, head), convert, sheet)
        except zipfile.BadZipFile as e:
            raise WorkbookError(f"the Zip archive inside is damaged ({e})") from None


def _matched_rows(stream: IO[bytes], head: bytes, convert: _Converter,
                  sheet: Sheet) -> Iterator[Row]:
    number = 0
    pending = b""
    for chunk in _chunks(stream, head):
        data = pending + chunk
        cut = data.rfind(b"</row>")
        if cut < 0:
            pending = data
            continue
        cut += len(b"</row>")
        pending = data[cut:]
        for row in _checked_rows(data[:cut], number, convert, sheet):
            number = row.number
            yield row
    # What follows the last </row>: rows written as <row r="9"/>, then the sheet's end.
    yield from _checked_rows(pending, number, convert, sheet)


def _checked_rows(data: bytes, number: int, convert: _Converter, sheet: Sheet) -> list[Row]:
    try:
        block = data.decode("utf-8", "surrogateescape")
        if convert.template is None:
            found = _SIMPLE_ROW.search(block)
            if found is not None:
                convert.template = _Template(found.group(1), convert)
        if convert.template is not None and convert.template.pattern is not None:
            return _templated_rows(block, number, convert, sheet)
        return _rows_in(block, number, convert, sheet)
    except (ValueError, IndexError):  # a string index that is no number, or out of range
        raise WorkbookError(f"sheet {sheet.name!r} has a cell that cannot be read after "
                            f"row {number}") from None


# A row of plain cells (a value, perhaps a style, a shared string or a number), A onwards.
_SIMPLE_ROW = re.compile(
    r'<row r="\d+"[^>]*>((?:<c r="[A-Z]{1,3}\d+"(?: s="\d+")?(?: t="[sn]")?><v>[^<]+</v></c>)+)'
    r"</row>")
_RELEARN_LIMIT = 16
_SIMPLE_CELL = re.compile(r'<c r="([A-Z]{1,3})\d+"((?: s="(\d+)")?(?: t="([sn])")?)><v>')


class _Template:
    """The shape of a sheet's usual row, learnt from its first plain one: each column's
    style and type. Rows of that shape (nearly all, in a sheet exported from a database)
    are matched whole, one match per row, each column converted by its own function; any
    other row goes to ``_rows_in``."""

    def __init__(self, cells: str, convert: _Converter) -> None:
        parts = [r'<row r="(\d+)"([^>]*)>']
        self.columns: list[Callable[[str], str]] = []
        for index, cell in enumerate(_SIMPLE_CELL.finditer(cells)):
            letters, attributes, style, kind = cell.groups()
            if letters != _LETTERS[index]:  # cells must start at A, one after the other
                self.pattern: re.Pattern[str] | None = None
                return
            parts.append(f'<c r="{letters}\\d+"{re.escape(attributes)}><v>([^<]+)</v></c>')
            self.columns.append(convert.column(style or "", kind or "n"))
        parts.append("</row>")
        self.pattern = re.compile("".join(parts))


def _templated_rows(block: str, number: int, convert: _Converter, sheet: Sheet
                    ) -> list[Row]:
    template = convert.template
    assert template is not None
    assert template.pattern is not None
    match = template.pattern.match
    columns = template.columns
    done: list[Row] = []
    position = 0
    end = len(block)
    while position < end:
        found = match(block, position)
        if found is not None:
            values = found.groups()
            number = int(values[0])
            attributes = values[1]
            hidden = "hidden" in attributes and _ROW_HIDDEN.search(attributes) is not None
            done.append(Row(number, [show(value) for show, value in zip(
                columns, values[2:], strict=True)], hidden, ()))
            position = found.end()
            continue
        plain = _SIMPLE_ROW.match(block, position)
        if plain is not None and convert.relearn():
            # Another plain shape (after the header row, say): learn it, and try again.
            fresh = _Template(plain.group(1), convert)
            if fresh.pattern is not None:
                convert.template = template = fresh
                match, columns = fresh.pattern.match, fresh.columns
                continue
        # Not that shape: this row (and what comes before it) the general way.
        close = block.find("</row>", position)
        stop = end if close < 0 else close + len("</row>")
        for row in _rows_in(block[position:stop], number, convert, sheet):
            number = row.number
            done.append(row)
        position = stop
    return done


def _rows_in(block: str, number: int, convert: _Converter, sheet: Sheet) -> list[Row]:
    """The rows in a run of whole ``<row>`` elements. One findall splits it into row tags,
    cells and anything else; a row holding anything else is not in the usual shape, and
    then expat reads the block. This loop runs for every cell of the sheet: names are bound
    locally and numbers in General are shown inline."""
    shows = convert.shows
    memos = convert.memos
    texts = convert.texts
    strings = convert.strings
    letters_at = _LETTERS
    first = number
    done: list[Row] = []
    cells: list[str] = []
    errors: list[int] = []
    hidden = in_row = False
    for letters, style, kind, raw, other in _TOKENS.findall(block):
        if letters:
            in_place = letters == letters_at[len(cells)]
            column = len(cells) if in_place else column_index(letters)
            if not kind or kind == "n":
                memo = memos.get(style)
                if not raw:
                    value = ""
                elif memo is not None:
                    # Formatted numbers repeat (dates, prices, percentages): show each once.
                    value = memo.get(raw, "")
                    if not value:
                        try:
                            value = shows[style](float(raw))
                        except ValueError:  # text in a number cell: other programs do that
                            value = raw
                        if len(memo) < _MEMO_SIZE:
                            memo[raw] = value
                elif raw.isdigit() and len(raw) < 16:
                    value = raw  # inline, as in _general_text: the commonest cell of all
                else:
                    value = _general_text(raw)
            elif kind == "s":
                value = strings[int(raw)] if raw else ""
                if style in texts:
                    value = texts[style](value)
            elif kind == "inlineStr":
                value = _unescape(_xml_text(raw))
                if style in texts:
                    value = texts[style](value)
            else:
                value = convert.other(kind, _xml_text(raw), int(style or 0)) if raw else ""
                if kind == "e":
                    errors.append(column)
            if in_place:
                cells.append(value)
            elif column >= len(cells):
                cells.extend([""] * (column - len(cells)))
                cells.append(value)
            else:
                cells[column] = value
        elif other == "</row>":
            done.append(Row(number, cells, hidden, tuple(errors)))
            in_row = False
        elif other.startswith("<row"):
            found = _ROW_NUMBER.search(other)
            number = int(found.group(1)) if found else number + 1
            hidden = _ROW_HIDDEN.search(other) is not None
            cells = []
            errors = []
            if other.endswith("/>"):
                done.append(Row(number, cells, hidden, ()))
            else:
                in_row = True
        elif in_row:
            # Not the usual shape (rich text, whitespace, another attribute order...).
            rows = block[block.find("<row"):]
            return list(_parsed_rows([f"<rows>{rows}</rows>".encode(
                "utf-8", "surrogateescape")], convert, sheet, first))
    return done


def _general_text(raw: str) -> str:
    """A number in General as Excel shows it."""
    if raw.isdigit() and len(raw) < 16:
        return raw  # a whole number: its digits are what Excel shows
    try:
        return general(float(raw))
    except ValueError:  # text in a number cell: other programs write such files
        return raw.strip()


class _Converter:
    """A cell's stored value and style as the text Excel shows."""

    def __init__(self, book: Workbook) -> None:
        self.strings = book.shared_strings()
        self._shows = book._shows
        self._texts = book._texts
        self._styles = len(book._shows)
        # By the style's text as written in the sheet (s="3"), for the matched rows.
        self.shows = {str(i): show for i, show in enumerate(book._shows) if show is not None}
        self.texts = {str(i): text for i, text in enumerate(book._texts) if text is not None}
        self.memos: dict[str, dict[str, str]] = {style: {} for style in self.shows}
        self.template: _Template | None = None
        self._relearnt = 0

    def relearn(self) -> bool:
        """Whether the template may change again: a sheet whose rows keep changing shape
        would spend more on compiling patterns than they save."""
        self._relearnt += 1
        return self._relearnt <= _RELEARN_LIMIT

    def column(self, style: str, kind: str) -> Callable[[str], str]:
        """How a template's column shows its value: a shared string or a number."""
        if kind == "s":
            strings = self.strings
            text = self.texts.get(style)
            if text is None:
                return lambda raw: strings[int(raw)]
            return lambda raw: text(strings[int(raw)])
        show = self.shows.get(style)
        if show is None:
            return _general_text
        memo = self.memos[style]

        def formatted(raw: str) -> str:
            # Formatted numbers repeat (dates, prices, percentages): show each once.
            value = memo.get(raw)
            if value is None:
                try:
                    value = show(float(raw))
                except ValueError:
                    value = raw
                if len(memo) < _MEMO_SIZE:
                    memo[raw] = value
            return value
        return formatted

    def number(self, raw: str, style: int) -> str:
        show = self._shows[style] if style < self._styles else None
        if show is None:
            return _general_text(raw)
        try:
            return show(float(raw))
        except ValueError:  # text in a number cell: other programs write such files
            return raw.strip()

    def text(self, value: str, style: int) -> str:
        show_text = self._texts[style] if style < self._styles else None
        return value if show_text is None else show_text(value)

    def other(self, kind: str, raw: str, style: int) -> str:
        """Cells of any type but a number (``t="s"``, ``"str"``, ``"b"``, ``"e"``...)."""
        if kind == "s":
            return self.text(self.strings[int(raw)], style)
        if kind == "str":  # a formula's text result
            return self.text(_unescape(raw), style)
        if kind == "b":
            return "TRUE" if raw.strip() in {"1", "true"} else "FALSE"
        if kind == "d":
            return _iso_date(raw)
        return raw  # an error (#N/A...), or a type Excel does not write


def _parsed_rows(chunks: Iterable[bytes], convert: _Converter, sheet: Sheet,
                 number: int = 0) -> Iterator[Row]:
    """The rows of XML in any shape, through expat."""
    done: list[Row] = []
    text: list[str] = []
    cells: list[str] = []
    errors: list[int] = []
    column = style = phonetic = 0
    hidden = collecting = False
    kind = "n"
    names: dict[str, str] = {}
    run_start = 0  # where the current <t> began in text: each run is unescaped alone

    def local(name: str) -> str:
        found = names.get(name)
        if found is None:
            found = names[name] = _local(name)
        return found

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal number, hidden, cells, errors, column, kind, style, collecting, phonetic, \
            run_start
        tag = local(name)
        if tag == "c":
            ref = attrs.get("r")
            if ref:
                column = column_index(ref.rstrip("0123456789"))
            kind = attrs.get("t", "n")
            s = attrs.get("s")
            style = int(s) if s else 0
            text.clear()
        elif tag == "v" or (tag == "t" and not phonetic):
            run_start = len(text)
            # Runs of rich text (several <t>) add up; the cell's start cleared the text.
            collecting = True
        elif tag == "row":
            r = attrs.get("r")
            number = int(r) if r else number + 1
            hidden = attrs.get("hidden", "0") in {"1", "true"}
            cells = []
            errors = []
            column = 0
        elif tag == "rPh":  # phonetic guide text (furigana) is not part of the value
            phonetic += 1

    def end(name: str) -> None:
        nonlocal column, collecting, phonetic
        tag = local(name)
        if tag in {"v", "t"}:
            if collecting and tag == "t":
                text[run_start:] = [_unescape("".join(text[run_start:]))]
            collecting = False
        elif tag == "c":
            raw = "".join(text)
            if not raw:
                value = ""
            elif kind == "n":
                value = convert.number(raw, style)
            else:
                value = (convert.text(raw, style) if kind == "inlineStr"
                         else convert.other(kind, raw, style))
                if kind == "e":
                    errors.append(column)
            if column == len(cells):
                cells.append(value)
            elif column > len(cells):
                cells.extend([""] * (column - len(cells)))
                cells.append(value)
            else:  # out of order: Excel never writes it so, other programs might
                cells[column] = value
            column += 1
        elif tag == "row":
            done.append(Row(number, cells, hidden, tuple(errors)))
        elif tag == "rPh":
            phonetic -= 1

    def data(chunk: str) -> None:
        if collecting:
            text.append(chunk)

    parser = _expat(start, end, data)
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
            yield from done
            done.clear()
        parser.Parse(b"", True)
    except expat.ExpatError as e:
        raise WorkbookError(
            f"sheet {sheet.name!r} is damaged near row {number + 1} "
            f"({expat.errors.messages[e.code]})") from None
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
