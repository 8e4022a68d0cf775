"""Each input-file message says what the file is, which row or column, and the fix: the exact
texts, through the CLI (issue 9, point 9)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest
from openpyxl.chart import BarChart

from batch_engage.status import ExitStatus

from .conftest import CliRun, read_csv, read_requests

Make = Callable[[Path], Path]


def dry(invoke: CliRun, path: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    result = invoke("run", path, "-w", "1", "--dry-run", "--out", tmp_path / "out", *args)
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr


def book(path: Path, sheets: dict[str, list[list[object]]], chart: bool = False) -> Path:
    wb = openpyxl.Workbook()
    wb.remove(wb.worksheets[0])
    if chart:
        wb.create_chartsheet("Chart1").add_chart(BarChart())
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


def test_a_csv_named_xlsx_is_called_a_text_file(invoke: CliRun, tmp_path: Path) -> None:
    path = tmp_path / "customers.xlsx"
    path.write_text("email\na@b.co\n", "utf-8")
    assert dry(invoke, path, tmp_path) == (
        ExitStatus.USAGE_OR_INPUT_ERROR,
        "Error: customers.xlsx is a text file (CSV or similar), not an Excel workbook; "
        "rename it to customers.csv and run it again\n")


def test_an_xlsx_named_csv_is_called_a_workbook(invoke: CliRun, tmp_path: Path) -> None:
    path = book(tmp_path / "x.xlsx", {"S": [["email"], ["a@b.co"]]}).rename(
        tmp_path / "customers.csv")
    assert dry(invoke, path, tmp_path) == (
        ExitStatus.USAGE_OR_INPUT_ERROR,
        "Error: customers.csv is an Excel workbook (.xlsx) or another Zip archive, not a "
        "text file; rename it to customers.xlsx and run it again\n")


def test_one_nul_byte_names_its_line(invoke: CliRun, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"email,content.a\na@b.co,1\nc@d.co,2\x00\ne@f.co,3\n")
    assert dry(invoke, path, tmp_path) == (
        ExitStatus.USAGE_OR_INPUT_ERROR,
        "Error: line 3 of in.csv holds a NUL (zero) byte, which text never has: the file is "
        "damaged there; delete that character in a text editor, or export the sheet again\n")


def test_a_nul_byte_past_the_first_64_kb_names_its_line(invoke: CliRun, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"email\n" + b"a@b.co\n" * 20_000 + b"c@d\x00.co\n")
    code, stderr = dry(invoke, path, tmp_path)
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert stderr.startswith("Error: line 20002 of in.csv holds a NUL (zero) byte")


def test_an_empty_first_sheet_lists_the_others(invoke: CliRun, tmp_path: Path) -> None:
    path = book(tmp_path / "in.xlsx", {"Notes": [], "Customers": [["email"], ["a@b.co"]]})
    assert dry(invoke, path, tmp_path) == (
        ExitStatus.USAGE_OR_INPUT_ERROR,
        "Error: sheet 'Notes' of in.xlsx is empty; pick another sheet with --sheet: "
        "'Customers'\n")


def test_a_chart_first_lists_the_sheets_of_rows(invoke: CliRun, tmp_path: Path) -> None:
    path = book(tmp_path / "in.xlsx", {"Customers": [["email"], ["a@b.co"]]}, chart=True)
    assert dry(invoke, path, tmp_path) == (
        ExitStatus.USAGE_OR_INPUT_ERROR,
        "Error: sheet 'Chart1' of in.xlsx is a chart, not a table; pick a sheet of rows with "
        "--sheet: 'Customers'\n")
    code, _ = dry(invoke, path, tmp_path, "--sheet", "Customers")
    assert code == ExitStatus.SUCCESS


def test_workbook_cells_right_of_the_header_get_workbook_advice(
    invoke: CliRun, tmp_path: Path
) -> None:
    path = book(tmp_path / "in.xlsx", {"S": [["email", "content.a"], ["a@b.co", "1", "x"]]})
    code, _ = dry(invoke, path, tmp_path)
    assert code == ExitStatus.ROWS_FAILED
    assert read_csv(tmp_path / "out" / "failed.csv")[0]["_error_text"] == (
        "row 2: has 1 filled cell(s) to the right of column B, the last one with a header "
        "('x'); add a header above them in row 1, or clear them")


def test_duplicate_headers_are_named_by_letter(invoke: CliRun, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("name,email,city,E-Mail\nAnn,a@b.co,X,c@d.co\n", "utf-8")
    assert dry(invoke, path, tmp_path, "--config", _renames(tmp_path)) == (
        ExitStatus.USAGE_OR_INPUT_ERROR,
        "Error: column B 'email' and column D 'E-Mail' (renamed to 'email') are both "
        "'email'; remove or rename one\n")


def _renames(tmp_path: Path) -> str:
    config = tmp_path / "c.toml"
    config.write_text('[columns]\n"E-Mail" = "email"\n', "utf-8")
    return str(config)


@pytest.mark.parametrize("sep", [";", "|"])
def test_excels_sep_line_sets_the_delimiter(invoke: CliRun, tmp_path: Path, sep: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"sep={sep}\nemail{sep}content.note\na@b.co{sep}x, y\n", "utf-8")
    code, _ = dry(invoke, path, tmp_path)
    assert code == ExitStatus.SUCCESS
    body = read_requests(tmp_path / "out")[0]
    assert body["row"] == 2  # Excel shows no row for the sep= line
    assert body["body"]["content"] == {"note": "x, y"}


def test_blank_lines_before_the_header_are_skipped_and_counted(
    invoke: CliRun, tmp_path: Path
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("\n,,\n\nemail,content.a\na@b.co,1\n", "utf-8")
    code, _ = dry(invoke, path, tmp_path)
    assert code == ExitStatus.SUCCESS
    assert [r["row"] for r in read_requests(tmp_path / "out")] == [5]


def test_a_failed_csv_header_that_looks_like_a_formula_round_trips(
    invoke: CliRun, tmp_path: Path
) -> None:
    """A header such as ``-1.2`` (seen in real workbooks) is guarded with ' in failed.csv,
    and read back without it."""
    path = tmp_path / "in.csv"
    path.write_text("email,-1.2\nbad,x\n", "utf-8")
    code, _ = dry(invoke, path, tmp_path)
    assert code == ExitStatus.ROWS_FAILED
    failed = tmp_path / "out" / "failed.csv"
    text = failed.read_text("utf-8-sig")
    assert text.splitlines()[0] == "email,'-1.2,_row,_stage,_error,_error_text,_attempts"
    failed.write_text(text.replace("bad", "c@d.co"), "utf-8-sig")
    result = invoke("run", failed, "-w", "1", "--dry-run", "--out", tmp_path / "again")
    assert result.exit_code == ExitStatus.SUCCESS, result.output
    assert "warning: these columns are ignored: '-1.2'\n" in result.stderr
    again = (tmp_path / "again" / "failed.csv").read_text("utf-8-sig")
    assert again.splitlines()[0] == "email,'-1.2,_row,_stage,_error,_error_text,_attempts"
