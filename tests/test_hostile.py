"""Hostile and strange input files, through the CLI against the mock server: a clear message,
the right exit code, and for file-level problems nothing sent at all."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import msoffcrypto
import openpyxl
import pytest

from batch_engage.mock_server import MockConfig, serve_in_thread
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, CliRun, read_csv, read_summary, token_env

Make = Callable[[Path], Path]


def text(name: str, content: str | bytes) -> Make:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path
    return make


def workbook(rows: list[list[object]], name: str = "in.xlsx",
             edit: Callable[[openpyxl.Workbook], None] | None = None) -> Make:
    def make(folder: Path) -> Path:
        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        sheet.title = "Customers"
        for row in rows:
            sheet.append(row)
        if edit is not None:
            edit(book)
        path = folder / name
        book.save(path)
        return path
    return make


def with_cached_values(make: Make, values: list[str]) -> Make:
    """openpyxl writes formulas without the value Excel caches beside them; add them."""
    def patched(folder: Path) -> Path:
        path = make(folder)
        with zipfile.ZipFile(path) as old:
            parts = {n: old.read(n) for n in old.namelist()}
        sheet = parts["xl/worksheets/sheet1.xml"].decode()
        for value in values:
            sheet = sheet.replace("<v />", f"<v>{value}</v>", 1)
        parts["xl/worksheets/sheet1.xml"] = sheet.encode()
        with zipfile.ZipFile(path, "w") as new:
            for name, data in parts.items():
                new.writestr(name, data)
        return path
    return patched


def encrypted(make: Make) -> Make:
    def locked(folder: Path) -> Path:
        plain = make(folder)
        sealed = io.BytesIO()
        with plain.open("rb") as f:
            msoffcrypto.OfficeFile(f).encrypt("secret", sealed)
        plain.write_bytes(sealed.getvalue())
        return plain
    return locked


def merge(book: openpyxl.Workbook) -> None:
    sheet = book.active
    assert sheet is not None
    sheet.merge_cells("A2:A3")


FILE_LEVEL = [
    ("empty file", text("in.csv", b""), [], "in.csv is empty"),
    ("header only", text("in.csv", "email,content.name\n"), [], "has a header but no data rows"),
    ("binary garbage named .csv", text("in.csv", bytes(range(256)) * 40), [],
     "in.csv holds binary data, not text"),
    ("corrupt .xlsx", text("in.xlsx", b"PK\x03\x04" + bytes(500)), [],
     "cannot be opened as an Excel workbook"),
    ("password-protected .xlsx", encrypted(workbook([["email"], ["a@b.co"]])), [],
     "is password-protected; save a copy without a password"),
    (".xls", text("in.xls", b"\xd0\xcf\x11\xe0"), [], "save it as .xlsx"),
    (".ods", text("in.ods", b"PK\x03\x04"), [], "save it as .xlsx"),
    ("unknown --sheet", workbook([["email"], ["a@b.co"]]), ["--sheet", "Sheet9"],
     "has no sheet named 'Sheet9'; its sheets are: 'Customers'"),
    ("duplicate header names", text("in.csv", "email,Email\na@b.co,c@d.co\n"), [],
     "column A 'email' and column B 'Email' are both 'email'; remove or rename one"),
    ("no identifier column", text("in.csv", "mail\na@b.co\n"), [],
     "needs a column named 'email'"),
]


@pytest.mark.parametrize(("make", "args", "message"), [c[1:] for c in FILE_LEVEL],
                         ids=[c[0] for c in FILE_LEVEL])
def test_file_level_problems_exit_2_and_send_nothing(
    invoke: CliRun, tmp_path: Path, make: Make, args: list[str], message: str
) -> None:
    path = make(tmp_path)
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        result = invoke("run", path, "-w", "1", "--out", tmp_path / "out", *args,
                        env=token_env(mock.url))
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR, result.output
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output
    assert mock.stats.received == 0


def send(invoke: CliRun, tmp_path: Path, path: Path, *args: str
         ) -> tuple[int, str, list[dict[str, str]], list[dict[str, str]], int]:
    out = tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        result = invoke("run", path, "-w", "1", "--rate", "0", "--out", out, *args,
                        env=token_env(mock.url))
    assert "Traceback" not in result.output
    return (result.exit_code, result.stderr + result.stdout, read_csv(out / "success.csv"),
            read_csv(out / "failed.csv"), mock.stats.received)


def test_a_50_mb_cell_fails_its_row_only(invoke: CliRun, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("email,content.story\na@b.co,short\nc@d.co,")
        f.write("x" * (50 * 2**20))
        f.write("\ne@f.co,short\n")
    code, _output, success, failed, received = send(invoke, tmp_path, path)
    assert code == ExitStatus.ROWS_FAILED
    assert sorted((r["row"] for r in success), key=int) == ["2", "4"]
    assert [(r["_row"], r["_error"]) for r in failed] == [("3", "body_too_large")]
    assert "10 MB" in failed[0]["_error_text"]
    assert received == 2


def test_ten_thousand_columns(invoke: CliRun, tmp_path: Path) -> None:
    headers = ["email"] + [f"col{i}" for i in range(9_999)]
    rows = [",".join(["a@b.co"] + ["v"] * 9_999), ",".join(["c@d.co"] + [""] * 9_999)]
    path = text("in.csv", ",".join(headers) + "\n" + "\n".join(rows) + "\n")(tmp_path)
    code, output, _success, failed, received = send(invoke, tmp_path, path)
    assert code == ExitStatus.SUCCESS
    assert received == 2
    assert "these columns are ignored: 'col0', 'col1'" in output
    assert len(failed) == 0
    assert list(read_csv(tmp_path / "out" / "failed.csv")) == []


def test_ragged_rows(invoke: CliRun, tmp_path: Path) -> None:
    path = text("in.csv", "email,content.a,content.b\na@b.co\nc@d.co,1,2,3,4\ne@f.co,1,2\n")(
        tmp_path)
    code, _output, success, failed, _received = send(invoke, tmp_path, path)
    assert code == ExitStatus.ROWS_FAILED
    # fewer cells: the rest are empty
    assert sorted((r["row"] for r in success), key=int) == ["2", "4"]
    assert [(r["_row"], r["_error"]) for r in failed] == [("3", "extra_cells")]
    assert "row 3" in failed[0]["_error_text"]


def test_empty_header_names_are_ignored_with_a_warning(invoke: CliRun, tmp_path: Path) -> None:
    path = text("in.csv", "email,,content.a,\na@b.co,x,1,\n")(tmp_path)
    code, output, _success, _, received = send(invoke, tmp_path, path)
    assert code == ExitStatus.SUCCESS
    assert "#2 (no header)" in output
    assert received == 1


def test_xlsx_formula_cells_send_their_cached_values(invoke: CliRun, tmp_path: Path) -> None:
    make = with_cached_values(
        workbook([["email", "content.total", "content.label"],
                  ["a@b.co", "=1+2", '="VIP-"&"7"']]), ["3", "VIP-7"])
    out = tmp_path / "dry"
    result = invoke("run", make(tmp_path), "-w", "1", "--dry-run", "--out", out)
    assert result.exit_code == ExitStatus.SUCCESS, result.output
    body = (out / "requests.jsonl").read_text("utf-8")
    assert '"content":{"total":"3","label":"VIP-7"}' in body


def test_xlsx_merged_cells_leave_the_other_rows_empty(invoke: CliRun, tmp_path: Path) -> None:
    make = workbook([["email", "content.a"], ["a@b.co", "1"], [None, "2"]], edit=merge)
    code, _output, success, failed, _received = send(invoke, tmp_path, make(tmp_path))
    assert code == ExitStatus.ROWS_FAILED
    assert [r["row"] for r in success] == ["2"]
    assert [(r["_row"], r["_error"]) for r in failed] == [("3", "missing_value")]
    assert "row 3, column email: the email is empty" in failed[0]["_error_text"]


def test_xlsx_trailing_empty_rows_and_columns(invoke: CliRun, tmp_path: Path) -> None:
    def pad(book: openpyxl.Workbook) -> None:
        sheet = book.active
        assert sheet is not None
        sheet.cell(row=40, column=30).value = " "  # "used" far away, as Excel leaves it
        sheet.cell(row=41, column=1).number_format = "0.00"

    make = workbook([["email", "content.a", None, None], ["a@b.co", 1, None, None]], edit=pad)
    code, output, _success, _failed, received = send(invoke, tmp_path, make(tmp_path))
    assert code == ExitStatus.SUCCESS, output
    assert received == 1
    summary = read_summary(tmp_path / "out")
    assert summary["rows"] == 1
    # Rows 40 and 41 are in the sheet with nothing to show; rows 3-39 are not in it at all.
    assert summary["blank"] == 2


ESCAPES = [
    ("../outside.txt", "attachment_outside_dir"),
    ("/etc/hostname", "attachment_outside_dir"),
    ("link.txt", "attachment_outside_dir"),
    ("missing.pdf", "attachment_missing"),
    ("big.bin", "attachment_too_large"),
]


def test_attachments_that_escape_are_missing_or_too_big_fail_their_rows(
    invoke: CliRun, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "ok.txt").write_text("hello", "utf-8")
    (tmp_path / "outside.txt").write_text("secret", "utf-8")
    (files / "link.txt").symlink_to(tmp_path / "outside.txt")
    (files / "big.bin").write_bytes(bytes(11 * 2**20))
    lines = ["profile_id,attach", "p1,ok.txt"] + [f"p{i},{p}" for i, (p, _) in
                                                  enumerate(ESCAPES, start=2)]
    path = text("in.csv", "\n".join(lines) + "\n")(tmp_path)
    code, _output, success, failed, received = send(
        invoke, tmp_path, path, "--matching", "profile_id", "--attach-dir", str(files))
    assert code == ExitStatus.ROWS_FAILED
    assert [r["profile_id"] for r in success] == ["p1"]
    assert [r["_error"] for r in failed] == [code for _, code in ESCAPES]
    assert received == 1


def filtered(book: openpyxl.Workbook) -> None:
    """As Excel saves a sheet filtered to one city: the other rows are hidden."""
    sheet = book.active
    assert sheet is not None
    sheet.auto_filter.ref = "A1:B6"
    for row in (3, 5):
        sheet.row_dimensions[row].hidden = True


FILTERED = workbook([["email", "content.city"], ["a@b.co", "Moscow"], ["c@d.co", "Kazan"],
                     ["e@f.co", "Moscow"], ["g@h.co", "Omsk"], ["i@j.co", "Moscow"]],
                    edit=filtered)


def test_a_filtered_sheet_sends_only_the_visible_rows(invoke: CliRun, tmp_path: Path) -> None:
    code, output, success, failed, received = send(invoke, tmp_path, FILTERED(tmp_path))
    assert code == ExitStatus.SUCCESS, output
    assert received == 3
    assert sorted((r["row"] for r in success), key=int) == ["2", "4", "6"]
    assert failed == []
    skipped = read_csv(tmp_path / "out" / "skipped.csv")
    assert [(r["_row"], r["email"], r["_reason"]) for r in skipped] == [
        ("3", "c@d.co", "hidden_in_sheet"), ("5", "g@h.co", "hidden_in_sheet")]
    assert ("warning: rows hidden in the sheet (by a filter or by hand) were not sent: 2; "
            "they are listed in skipped.csv. Unhide them, or run with --include-hidden-rows "
            "to send them too") in output
    assert "  hidden, in skipped.csv:        2\n" in output
    summary = read_summary(tmp_path / "out")
    assert summary["skipped"] == {"hidden_in_sheet": 2}
    assert summary["failed"] == 0


def test_include_hidden_rows_sends_them_all(invoke: CliRun, tmp_path: Path) -> None:
    code, output, success, _failed, received = send(
        invoke, tmp_path, FILTERED(tmp_path), "--include-hidden-rows")
    assert code == ExitStatus.SUCCESS, output
    assert received == 5
    assert sorted((r["row"] for r in success), key=int) == ["2", "3", "4", "5", "6"]
    assert read_csv(tmp_path / "out" / "skipped.csv") == []
