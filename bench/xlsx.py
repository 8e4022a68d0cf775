"""The ``xlsx`` section: XLSX readers on an Excel-like workbook, each in a process of its own.

The workbook is written straight as its OOXML parts (a shared strings table and number
formats as Excel writes them), 10 columns; it is cached under ``bench/data/``. Each reader
runs in a fresh process started through ``bench.spawn``, so its peak RSS is its own:

- ``pandas.read_excel(engine="openpyxl")``;
- openpyxl ``load_workbook(read_only=True)``, every cell's value and number_format;
- python-calamine, values only (it holds the whole sheet);
- batch-engage's reader: ``open_table(path)``, then every record;
- the whole CLI dry run, matched by customer id (target: under 300 MB).

``seconds`` is the read alone (imports done, workbook not yet opened) for the readers and the
whole process for the CLI. ``python -m bench.xlsx read KIND PATH`` is the child's side.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench import summary
from bench.common import DATA, git_head, id_config, measure, put_section

# Bump when the workbook's contents change, so cached files are remade.
GENERATOR_VERSION = 1
RESULTS = Path(__file__).with_name("RESULTS.md")
SOURCES = Path(__file__).parent.parent / "batch_engage"
SECTION_TITLE = "## XLSX readers"
# A baseline whose estimated time on a file is longer than this is skipped there.
SLOW_SECONDS = 180.0
# A reader that takes longer than this is stopped (a hang, not a slow reader).
TIMEOUT_SECONDS = 1800.0

HEADERS = ("content.customer_id", "content.email", "content.name", "content.city",
           "content.phone", "content.zip", "content.balance", "content.share",
           "content.signup", "content.score")
CITIES = ("Москва", "Санкт-Петербург", "Новосибирск", "Екатеринбург", "Казань", "Berlin",
          "Paris", "London", "New York", "São Paulo", "Tokyo", "Rostov & Don")
# cellXfs: 0 General, 1 zip "00000" (custom 164), 2 "#,##0.00" (built-in 4), 3 "0%" (built-in
# 9), 4 "yyyy-mm-dd" (custom 165). Excel lists only custom formats under numFmts.
FORMATS = {"zip": "00000", "balance": "#,##0.00", "share": "0%", "signup": "yyyy-mm-dd"}
SERIAL_1980 = 29221  # 1980-01-01 in the 1900 date system

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _num(value: float) -> str:
    """A number as Excel writes it in <v>: shortest round-trip text, no '.0' on whole ones."""
    return repr(value).removesuffix(".0")


def expected_row(i: int) -> dict[str, object]:
    """Data row I (0-based; sheet row I + 2) as Python values, for checking readers."""
    return {
        "content.customer_id": f"{i:08d}",
        "content.email": f"c{i}@example{i % 97}.com",
        "content.name": f"Name {i}",
        "content.city": CITIES[i % len(CITIES)],
        "content.phone": 79000000000 + i,
        "content.zip": i * 7919 % 100000,
        "content.balance": i * 104729 % 10_000_000 / 100,
        "content.share": i % 101 / 100,
        "content.signup": dt.date(1980, 1, 1) + dt.timedelta(days=i % 9000),
        "content.score": i % 100_000 / 7,
    }


def _sheet_chunks(rows: int, chunk: int = 8192) -> Iterator[bytes]:
    """sheet1.xml's <row> elements. Shared strings are numbered by first appearance, as
    Excel numbers them: the 10 headers, then per row its id, email and name, and its city the
    first time that city appears."""
    cities = len(CITIES)
    first_city_rows = min(rows, cities)
    for start in range(0, rows, chunk):
        parts: list[str] = []
        append = parts.append
        for i in range(start, min(rows, start + chunk)):
            r = i + 2
            if i < first_city_rows:
                s = 10 + 4 * i
                city = s + 3
            else:
                s = 10 + 4 * first_city_rows + 3 * (i - first_city_rows)
                city = 10 + 4 * (i % cities) + 3
            append(
                f'<row r="{r}" spans="1:10">'
                f'<c r="A{r}" t="s"><v>{s}</v></c>'
                f'<c r="B{r}" t="s"><v>{s + 1}</v></c>'
                f'<c r="C{r}" t="s"><v>{s + 2}</v></c>'
                f'<c r="D{r}" t="s"><v>{city}</v></c>'
                f'<c r="E{r}"><v>{79000000000 + i}</v></c>'
                f'<c r="F{r}" s="1"><v>{i * 7919 % 100000}</v></c>'
                f'<c r="G{r}" s="2"><v>{_num(i * 104729 % 10_000_000 / 100)}</v></c>'
                f'<c r="H{r}" s="3"><v>{_num(i % 101 / 100)}</v></c>'
                f'<c r="I{r}" s="4"><v>{SERIAL_1980 + i % 9000}</v></c>'
                f'<c r="J{r}"><v>{_num(i % 100_000 / 7)}</v></c></row>')
        yield "".join(parts).encode("ascii")


def _shared_string_chunks(rows: int, chunk: int = 8192) -> Iterator[bytes]:
    cities = [_xml_text(c) for c in CITIES]
    first_city_rows = min(rows, len(cities))
    yield "".join(f"<si><t>{h}</t></si>" for h in HEADERS).encode()
    for start in range(0, rows, chunk):
        parts: list[str] = []
        append = parts.append
        for i in range(start, min(rows, start + chunk)):
            append(f"<si><t>{i:08d}</t></si><si><t>c{i}@example{i % 97}.com</t></si>"
                   f"<si><t>Name {i}</t></si>")
            if i < first_city_rows:
                append(f"<si><t>{cities[i]}</t></si>")
        yield "".join(parts).encode()


def _styles() -> str:
    return (
        f'{_DECL}<styleSheet xmlns="{_MAIN_NS}">'
        f'<numFmts count="2"><numFmt numFmtId="164" formatCode="{FORMATS["zip"]}"/>'
        f'<numFmt numFmtId="165" formatCode="{FORMATS["signup"]}"/></numFmts>'
        '<fonts count="1"><font><sz val="11"/><color theme="1"/><name val="Calibri"/>'
        '<family val="2"/><scheme val="minor"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        '</cellStyleXfs>'
        '<cellXfs count="5"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '<xf numFmtId="4" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '<xf numFmtId="9" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '</cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        '<dxfs count="0"/><tableStyles count="0" defaultTableStyle="TableStyleMedium2"'
        ' defaultPivotStyle="PivotStyleLight16"/></styleSheet>')


def _small_parts(rows: int) -> dict[str, str]:
    ct = "application/vnd.openxmlformats-officedocument"
    doc_rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    return {
        "[Content_Types].xml": (
            f'{_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.spreadsheetml.sheet.main'
            '+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.spreadsheetml.'
            'worksheet+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{ct}.spreadsheetml.styles+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.spreadsheetml.'
            'sharedStrings+xml"/>'
            '<Override PartName="/docProps/core.xml" ContentType="application/vnd.'
            'openxmlformats-package.core-properties+xml"/>'
            f'<Override PartName="/docProps/app.xml" ContentType="{ct}.extended-properties+xml"'
            '/></Types>'),
        "_rels/.rels": (
            f'{_DECL}<Relationships xmlns="{_PKG_REL_NS}">'
            f'<Relationship Id="rId3" Type="{doc_rel}/extended-properties" '
            'Target="docProps/app.xml"/>'
            '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/'
            'relationships/metadata/core-properties" Target="docProps/core.xml"/>'
            f'<Relationship Id="rId1" Type="{doc_rel}/officeDocument" Target="xl/workbook.xml"/>'
            '</Relationships>'),
        "xl/workbook.xml": (
            f'{_DECL}<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}">'
            '<workbookPr defaultThemeVersion="164011"/>'
            '<bookViews><workbookView xWindow="0" yWindow="0" windowWidth="28800" '
            'windowHeight="12300"/></bookViews>'
            '<sheets><sheet name="Customers" sheetId="1" r:id="rId1"/></sheets>'
            '<calcPr calcId="191029"/></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            f'{_DECL}<Relationships xmlns="{_PKG_REL_NS}">'
            f'<Relationship Id="rId3" Type="{doc_rel}/sharedStrings" Target="sharedStrings.xml"/>'
            f'<Relationship Id="rId2" Type="{doc_rel}/styles" Target="styles.xml"/>'
            f'<Relationship Id="rId1" Type="{doc_rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            '</Relationships>'),
        "xl/styles.xml": _styles(),
        "docProps/core.xml": (
            f'{_DECL}<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/'
            'metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:dcterms="http://purl.org/dc/terms/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<dc:creator>batch-engage bench</dc:creator>'
            '<dcterms:created xsi:type="dcterms:W3CDTF">2024-01-01T00:00:00Z</dcterms:created>'
            '</cp:coreProperties>'),
        "docProps/app.xml": (
            f'{_DECL}<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
            f'extended-properties"><Application>Microsoft Excel</Application>'
            f'<TitlesOfParts><vt:vector xmlns:vt="http://schemas.openxmlformats.org/officeDocument'
            f'/2006/docPropsVTypes" size="1" baseType="lpstr"><vt:lpstr>Customers</vt:lpstr>'
            f'</vt:vector></TitlesOfParts><!-- {rows} data rows --></Properties>'),
    }


def write_workbook(path: Path, rows: int) -> None:
    """An Excel-like workbook: a header row and ROWS data rows (see ``expected_row``)."""
    if not 0 <= rows <= 1_048_575:
        raise ValueError(f"a sheet holds 1 to 1,048,576 rows, header included; asked {rows}")
    small = _small_parts(rows)
    last_ref = f"J{rows + 1}"
    cities = min(rows, len(CITIES))
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name in ("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml",
                     "xl/_rels/workbook.xml.rels"):
            zf.writestr(name, small[name])
        with zf.open("xl/worksheets/sheet1.xml", "w") as f:
            f.write(
                f'{_DECL}<worksheet xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}">'
                f'<dimension ref="A1:{last_ref}"/><sheetViews><sheetView tabSelected="1" '
                'workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/>'
                '<cols><col min="1" max="10" width="18" customWidth="1"/></cols>'
                '<sheetData><row r="1" spans="1:10">'.encode())
            f.write("".join(f'<c r="{chr(65 + k)}1" t="s"><v>{k}</v></c>'
                            for k in range(len(HEADERS))).encode() + b"</row>")
            for chunk in _sheet_chunks(rows):
                f.write(chunk)
            f.write(b'</sheetData><pageMargins left="0.7" right="0.7" top="0.75" '
                    b'bottom="0.75" header="0.3" footer="0.3"/></worksheet>')
        zf.writestr("xl/styles.xml", small["xl/styles.xml"])
        with zf.open("xl/sharedStrings.xml", "w") as f:
            f.write(f'{_DECL}<sst xmlns="{_MAIN_NS}" count="{10 + 4 * rows}" '
                    f'uniqueCount="{10 + 3 * rows + cities}">'.encode())
            for chunk in _shared_string_chunks(rows):
                f.write(chunk)
            f.write(b"</sst>")
        zf.writestr("docProps/core.xml", small["docProps/core.xml"])
        zf.writestr("docProps/app.xml", small["docProps/app.xml"])
    os.replace(tmp, path)


def workbook(rows: int) -> Path:
    """The cached workbook of ROWS data rows, written first if missing."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"profiles-v{GENERATOR_VERSION}-{rows}.xlsx"
    if not path.exists():
        start = time.perf_counter()
        write_workbook(path, rows)
        print(f"wrote {path.name} ({rows:,} data rows, {path.stat().st_size / 2**20:.0f} MB) "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def check_workbook(rows: int = 40) -> None:
    """Write a small workbook; read it back with openpyxl and python-calamine, or exit."""
    import openpyxl  # noqa: PLC0415  (the bench process stays small until needed)
    import python_calamine  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.xlsx"
        write_workbook(path, rows)
        book = openpyxl.load_workbook(path)
        sheet = book.active
        assert sheet is not None
        got = [[c.value for c in row] for row in sheet.iter_rows()]
        formats = [c.number_format for c in sheet[2]]
        values = python_calamine.CalamineWorkbook.from_path(str(path)) \
            .get_sheet_by_index(0).to_python()
    problems = []
    if got[0] != list(HEADERS) or values[0] != list(HEADERS):
        problems.append(f"headers: openpyxl {got[0]}, calamine {values[0]}")
    if formats != ["General"] * 5 + list(FORMATS.values()) + ["General"]:
        problems.append(f"openpyxl number formats {formats}")
    for i in range(rows):
        want = expected_row(i)
        signup = want["content.signup"]
        assert isinstance(signup, dt.date)
        want_openpyxl = [*list(want.values())[:8], dt.datetime.combine(signup, dt.time()),
                         want["content.score"]]
        if got[i + 1] != want_openpyxl:
            problems.append(f"openpyxl row {i + 2}: {got[i + 1]} != {want_openpyxl}")
        # calamine gives whole floats for General integers and a date for the date cell.
        want_calamine = [float(v) if isinstance(v, int | float) else v
                         for v in want.values()]
        if [float(v) if isinstance(v, int) else v for v in values[i + 1]] != want_calamine:
            problems.append(f"calamine row {i + 2}: {values[i + 1]} != {want_calamine}")
    if len(got) != rows + 1 or len(values) != rows + 1:
        problems.append(f"rows: openpyxl {len(got)}, calamine {len(values)}, want {rows + 1}")
    if problems:
        sys.exit("the generated workbook does not read back:\n  " + "\n  ".join(problems[:5]))


# --- the child's side: one reader, one file ---------------------------------------------------


def _hwm_bytes() -> int:
    """This process's peak RSS so far (VmHWM)."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


def _read_pandas(path: Path) -> Callable[[], dict[str, object]]:
    import pandas as pd  # noqa: PLC0415

    def read() -> dict[str, object]:
        return {"rows": len(pd.read_excel(path, engine="openpyxl"))}
    return read


def _read_openpyxl(path: Path) -> Callable[[], dict[str, object]]:
    import openpyxl  # noqa: PLC0415

    def read() -> dict[str, object]:
        book = openpyxl.load_workbook(path, read_only=True)
        rows = filled = 0
        try:
            for row in book.worksheets[0].iter_rows():
                rows += 1
                for cell in row:
                    if cell.value is not None and cell.number_format:
                        filled += 1
        finally:
            book.close()
        return {"rows": rows - 1, "cells": filled}
    return read


def _read_calamine(path: Path) -> Callable[[], dict[str, object]]:
    import python_calamine  # noqa: PLC0415

    def read() -> dict[str, object]:
        book = python_calamine.CalamineWorkbook.from_path(str(path))
        values = book.get_sheet_by_index(0).to_python()
        return {"rows": len(values) - 1, "cells": sum(len(r) for r in values)}
    return read


def _read_batch_engage(path: Path) -> Callable[[], dict[str, object]]:
    from batch_engage.reader import open_table  # noqa: PLC0415  (may be mid-rewrite)

    def read() -> dict[str, object]:
        table = open_table(path)
        rows = cells = 0
        sample: list[str] = []  # sheet row 3: data row 1, the first with no zeros
        try:
            for record in table.records():
                if rows == 1:
                    sample = [*record.cells, *record.extra]
                rows += 1
                cells += len(record.cells)
        finally:
            table.close()
        return {"rows": rows, "cells": cells, "sample": sample}
    return read


READERS: dict[str, Callable[[Path], Callable[[], dict[str, object]]]] = {
    "pandas": _read_pandas,
    "openpyxl": _read_openpyxl,
    "calamine": _read_calamine,
    "batch-engage": _read_batch_engage,
}
LABELS = {
    "pandas": 'pandas.read_excel(engine="openpyxl")',
    "openpyxl": "openpyxl read_only, value+number_format",
    "calamine": "python-calamine to_python()",
    "batch-engage": "batch-engage open_table().records()",
    "cli": "batch-engage CLI dry run (whole process)",
}


def child_main(argv: list[str]) -> None:
    """``read KIND PATH``: one JSON line with rows, seconds and the RSS before reading."""
    if len(argv) != 3 or argv[0] != "read" or argv[1] not in READERS:
        sys.exit(f"usage: python -m bench.xlsx read {{{','.join(READERS)}}} PATH")
    read = READERS[argv[1]](Path(argv[2]))
    start_rss = _hwm_bytes()
    start = time.perf_counter()
    figures = read()
    seconds = time.perf_counter() - start
    print(json.dumps({**figures, "seconds": seconds, "start_rss": start_rss}))


# --- the parent's side -------------------------------------------------------------------------


def source_digest() -> str:
    """A fingerprint of batch_engage/*.py as they are on disk now (edits included)."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.rglob("*.py")):
        digest.update(str(path.relative_to(SOURCES)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class Row:
    kind: str
    rows: int
    source: str = ""
    """batch_engage's source digest when the measurement started (its own rows only)."""
    seconds: float | None = None
    peak_bytes: int | None = None
    start_rss: int | None = None
    note: str = ""
    figures: dict[str, object] | None = None

    @property
    def ok(self) -> bool:
        return self.seconds is not None


def _failure(done_stderr: str, returncode: int, timed_out: bool) -> str:
    if timed_out:
        return f"stopped after {TIMEOUT_SECONDS:.0f} s"
    lines = [line for line in done_stderr.strip().splitlines() if line.strip()]
    return f"FAILED (exit {returncode}): {lines[-1] if lines else 'no message'}"


def measure_reader(kind: str, path: Path, rows: int) -> Row:
    done = measure([sys.executable, "-m", "bench.xlsx", "read", kind, str(path)],
                   timeout=TIMEOUT_SECONDS, capture=True)
    row = Row(kind, rows)
    if done.returncode != 0 or done.timed_out:
        row.note = _failure(done.stderr, done.returncode, done.timed_out)
        return row
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    seconds, start_rss = figures.pop("seconds"), figures.pop("start_rss")
    assert isinstance(seconds, float)
    assert isinstance(start_rss, int)
    row.seconds, row.peak_bytes, row.start_rss, row.figures = (
        seconds, done.peak_bytes, start_rss, figures)
    if figures["rows"] != rows:
        row.note = f"read {figures['rows']:,} rows, not {rows:,}"
    return row


def measure_cli(path: Path, rows: int, stamp: str) -> Row:
    out = DATA / f"out-xlsx-readers-{rows}-{stamp}"
    done = measure([sys.executable, "-m", "batch_engage", "run", str(path), "-w", "1",
                    "--matching", "custom", "--field-name", "customer_id",
                    "--config", str(id_config()), "--dry-run", "-q", "--out", str(out)],
                   timeout=TIMEOUT_SECONDS, capture=True)
    row = Row("cli", rows)
    if done.returncode not in (0, 1) or done.timed_out:
        row.note = _failure(done.stderr, done.returncode, done.timed_out)
        return row
    row.seconds, row.peak_bytes = done.seconds, done.peak_bytes
    try:
        outcomes = json.loads((out / "summary.json").read_text("utf-8"))["outcomes"]
    except (OSError, ValueError, KeyError) as e:
        row.note = f"no readable summary.json ({e})"
    else:
        if outcomes != {"valid": rows}:
            row.note = f"outcomes {outcomes}, expected {{'valid': {rows}}}"
    shutil.rmtree(out, ignore_errors=True)  # requests.jsonl: ~0.3 KB per row
    return row


def measure_file(rows: int, stamp: str, estimates: dict[str, float]) -> list[Row]:
    """Every reader on the workbook of ROWS rows. ESTIMATES: seconds per row measured on a
    smaller file, to skip baselines that would take more than SLOW_SECONDS here."""
    path = workbook(rows)
    table: list[Row] = []
    for kind in ("pandas", "openpyxl", "calamine", "batch-engage"):
        guess = estimates.get(kind, 0.0) * rows
        if kind in ("pandas", "openpyxl") and guess > SLOW_SECONDS:
            table.append(Row(kind, rows, note=f"skipped: about {guess:.0f} s by the "
                                              "smaller file's rate"))
            continue
        print(f"  {rows:,} rows: {LABELS[kind]} ...", flush=True)
        before = source_digest()
        table.append(measure_reader(kind, path, rows))
        if kind == "batch-engage":
            _stamp_source(table[-1], before)
    print(f"  {rows:,} rows: {LABELS['cli']} ...", flush=True)
    before = source_digest()
    table.append(measure_cli(path, rows, stamp))
    _stamp_source(table[-1], before)
    return table


def _stamp_source(row: Row, before: str) -> None:
    row.source = before
    after = source_digest()
    if after != before:
        row.note = "; ".join(filter(None, [row.note, f"batch_engage/ changed while it ran "
                                                     f"({before} -> {after})"]))


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.0f}"


def table_lines(rows: list[Row]) -> list[list[str]]:
    """Header and one line per measurement: the cells of the table, as text."""
    lines = [["rows", "reader", "seconds", "rows/s", "peak RSS MB", "RSS before read MB",
              "pandas time / this", "note"]]
    for row in rows:
        pandas = next((r for r in rows if r.kind == "pandas" and r.rows == row.rows and r.ok),
                      None)
        ratio = ""
        if row.ok and pandas is not None and pandas.seconds and row.seconds:
            ratio = f"{pandas.seconds / row.seconds:.1f}x"
        lines.append([
            f"{row.rows:,}", LABELS[row.kind],
            "" if row.seconds is None else f"{row.seconds:.2f}",
            "" if row.seconds is None else f"{row.rows / row.seconds:,.0f}",
            _mb(row.peak_bytes), _mb(row.start_rss), ratio, row.note])
    return lines


def format_text(lines: list[list[str]]) -> str:
    widths = [max(len(line[k]) for line in lines) for k in range(len(lines[0]))]
    right = {0, 2, 3, 4, 5, 6}
    return "\n".join(
        "  ".join(cell.rjust(w) if k in right else cell.ljust(w)
                  for k, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
        for line in lines)


def format_markdown(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |",
           "|" + "|".join("---:" if k in {0, 2, 3, 4, 5, 6} else "---"
                          for k in range(len(lines[0]))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines[1:]]
    return "\n".join(out)


def _versions() -> str:
    names = ("batch-engage", "pandas", "openpyxl", "python-calamine", "numpy")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def machine_header() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    return "\n".join([
        "# Benchmark results",
        "",
        "Written by `python -m bench` (see `bench/__main__.py`); each section is replaced by",
        "the latest run of its section. Figures are noisy: the machine may be busy with other",
        "work, and each figure is one run.",
        "",
        f"- `nproc`: {len(os.sched_getaffinity(0))}",
        f"- CPU: {model.group(1).strip() if model else platform.processor() or 'unknown'}",
        f"- memory: {int(mem.group(1)) / 2**20:.1f} GiB" if mem else "- memory: unknown",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- libraries: {_versions()}",
        "",
    ])


def write_results(markdown_table: str, notes: list[str], when: dt.datetime,
                  path: Path = RESULTS) -> None:
    """Put the "XLSX readers" section in PATH, replacing the one already there."""
    load = os.getloadavg()
    section = "\n".join([
        SECTION_TITLE,
        "",
        f"{when:%Y-%m-%d %H:%M} (local time); load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {len(os.sched_getaffinity(0))} CPUs; "
        f"{_versions()}.",
        "Command: `python -m bench xlsx` (sizes: `--xlsx-rows`, `--xlsx-max-rows`).",
        "",
        "Each reader runs once, in a process of its own; peak RSS is that process's",
        "(`ru_maxrss`), imports included. `seconds` is the read alone for the readers and the",
        "whole process for the CLI; `RSS before read` is the peak after the imports.",
        "",
        markdown_table,
        "",
        *[f"- {note}" for note in notes],
        "",
    ])
    put_section(path, SECTION_TITLE, section, machine_header())


def bench_xlsx(rows: int, max_rows: int, stamp: str) -> None:
    """The section: both files, one table, RESULTS.md. MAX_ROWS 0 skips the big file."""
    check_workbook()
    sizes = sorted({n for n in (rows, max_rows) if n > 0})
    print(f"XLSX readers, {len(HEADERS)} columns, "
          + " and ".join(f"{n:,}" for n in sizes) + " data rows (noisy: one run each)",
          flush=True)
    table: list[Row] = []
    estimates: dict[str, float] = {}
    for n in sizes:
        measured = measure_file(n, stamp, estimates)
        table += measured
        for row in measured:
            if row.ok and row.seconds is not None:
                estimates[row.kind] = row.seconds / n
    notes = []
    sources = list(dict.fromkeys(r.source for r in table if r.source))  # in run order
    notes.append(f"batch_engage sources measured (sha256 of batch_engage/*.py, first 12): "
                 f"{', '.join(sources) or 'none'}; git HEAD {git_head()}"
                 + ("; THE BATCH-ENGAGE ROWS MIX SOURCE VERSIONS" if len(sources) > 1 else ""))
    sampled = False
    for n in sizes:
        by_kind = {r.kind: r for r in table if r.rows == n}
        pandas, ours, cli = by_kind["pandas"], by_kind["batch-engage"], by_kind["cli"]
        if pandas.ok and ours.ok and pandas.seconds and ours.seconds:
            notes.append(f"{n:,} rows: pandas.read_excel takes "
                         f"{pandas.seconds / ours.seconds:.1f}x batch-engage's reader's time "
                         "(target: at least 5x on 100,000 rows)")
        if cli.ok and cli.peak_bytes is not None and n == sizes[-1]:
            summary.add(f"XLSX dry run, {n:,} rows x {len(HEADERS)} columns: peak RSS",
                        f"{_mb(cli.peak_bytes)} MB", "pandas.read_excel: "
                        + (f"{_mb(pandas.peak_bytes)} MB" if pandas.peak_bytes else "skipped"),
                        f"{cli.peak_bytes / pandas.peak_bytes:.2f}x" if pandas.peak_bytes
                        else "", "under 300 MB", cli.peak_bytes < 300 * 2**20)
        if cli.ok and cli.peak_bytes is not None:
            notes.append(f"{n:,} rows: the CLI dry run peaks at {_mb(cli.peak_bytes)} MB "
                         f"(target: under 300 MB on 1,048,576 rows with the header)")
        if not ours.ok:
            notes.append(f"{n:,} rows: batch-engage's reader {ours.note}")
        if ours.figures and ours.figures.get("sample") and not sampled:
            sampled = True
            notes.append(f"batch-engage's reader, sheet row 3 as read: "
                         f"{ours.figures['sample']}")
    lines = table_lines(table)
    print(format_text(lines))
    for note in notes:
        print(f"  {note}")
    write_results(format_markdown(lines), notes, dt.datetime.now())
    print(f"  (written to {RESULTS})")


if __name__ == "__main__":
    child_main(sys.argv[1:])
