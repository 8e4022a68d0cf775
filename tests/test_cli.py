"""Each reading and mapping option through the real CLI: exit code and what the user sees."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import click
import openpyxl
import pytest

import batch_engage
from batch_engage.cli import cli
from batch_engage.status import ExitStatus

from .conftest import SAMPLES, CliRun, read_requests, read_summary, write_csv


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "in.csv", "email,content.name\na@b.co,Ann\nc@d.co,Bob\n")


def dry(invoke: CliRun, tmp_path: Path, *args: str | Path) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    result = invoke("run", *args, "--dry-run", "--out", out)
    return result.exit_code, result.output, out


def test_all_valid_exits_0(invoke: CliRun, tmp_path: Path, emails: Path) -> None:
    code, output, out = dry(invoke, tmp_path, emails, "-w", "12")
    assert code == ExitStatus.SUCCESS
    assert "2 rows" in output
    assert "valid, would be sent:          2" in output
    assert [r["row"] for r in read_requests(out)] == [2, 3]
    summary = read_summary(out)
    assert summary["outcomes"] == {"valid": 2}
    assert summary["options"]["workflow_id"] == 12
    assert (out / "failed.csv").read_text("utf-8-sig").splitlines() == [
        "email,content.name,_row,_stage,_error,_error_text,_attempts"
    ]


def test_some_invalid_exits_1_and_names_row(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email\na@b.co\nnope\n")
    code, output, out = dry(invoke, tmp_path, path, "-w", "1")
    assert code == ExitStatus.ROWS_FAILED
    assert "row 3, column email: 'nope' is not an email address" in output
    assert "failed.csv" in output
    failed = (out / "failed.csv").read_text("utf-8-sig").splitlines()
    assert failed[1].startswith("nope,3,validation,invalid_email,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "-w", "1"], "input file missing.csv does not exist"),
        (["{csv}"], "a workflow id is required: pass -w/--workflow-id"),
        (["{csv}", "-w", "1", "--matching", "phone"], "needs a column named 'phone'"),
        (["{csv}", "-w", "x"], "'x' is not a valid integer"),
        (["{csv}", "-w", "1", "--matching", "custom"], "--matching custom needs --field-name"),
        (["{csv}", "-w", "1", "--phone-region", "Russia"], "not a two-letter country code"),
        (["{csv}", "-w", "1", "--content", "novalue"], "is not KEY=VALUE"),
        (["{csv}", "-w", "1", "--delimiter", "ab"], "is not one character"),
        (["{csv}", "-w", "1", "--encoding", "klingon"], "unknown encoding 'klingon'"),
        (["{csv}", "-w", "1", "--sheet", "S"], "--sheet only applies to Excel files"),
        (["{csv}", "-w", "1", "--attach", "nope.pdf"],
         "--attach nope.pdf: file 'nope.pdf' was not found"),
    ],
)
@pytest.mark.parametrize("verbose", [False, True], ids=["", "-v"])
def test_usage_and_file_errors_exit_2(
    invoke: CliRun, tmp_path: Path, emails: Path, args: list[str], message: str, verbose: bool
) -> None:
    """-v adds a traceback, never another exit code: a scheduler reads the code."""
    extra = ["-v"] if verbose else []
    code, output, out = dry(invoke, tmp_path, *[a.format(csv=emails) for a in args], *extra)
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert message in output
    assert not out.exists()


def test_v_shows_the_traceback_of_an_input_error_and_still_exits_2(
    invoke: CliRun, tmp_path: Path
) -> None:
    result = invoke("run", tmp_path / "missing.csv", "-w", "1", "--dry-run", "-v")
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("missing.csv does not exist; check its name and folder")


def test_header_only_file_exits_2_and_creates_nothing(invoke: CliRun, tmp_path: Path) -> None:
    code, output, out = dry(invoke, tmp_path, write_csv(tmp_path / "h.csv", "email\n\n"), "-w", "1")
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "has a header but no data rows" in output
    assert not out.exists()


def test_sending_needs_url_and_token(invoke: CliRun, emails: Path) -> None:
    result = invoke("run", emails, "-w", "1")
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "an API URL is required: pass --api-url or set BATCH_ENGAGE_API_URL" in result.output
    result = invoke("run", emails, "-w", "1", "--api-url", "http://127.0.0.1:9")
    assert "an API token is required: set the BATCH_ENGAGE_TOKEN" in result.output


def test_out_folder_with_files_is_refused(invoke: CliRun, tmp_path: Path, emails: Path) -> None:
    assert dry(invoke, tmp_path, emails, "-w", "1")[0] == 0
    code, output, _ = dry(invoke, tmp_path, emails, "-w", "1")
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "already holds a run; to continue it add --resume" in output


def test_encoding_and_delimiter_overrides(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email|content.city\na@b.co|Zürich\n", "cp1252")
    code, output, out = dry(invoke, tmp_path, path, "-w", "1", "--encoding", "cp1252",
                            "--delimiter", "pipe")
    assert code == 0, output
    assert "text, cp1252, pipe-separated" in output
    assert read_requests(out)[0]["body"]["content"] == {"city": "Zürich"}


def test_undecodable_text_suggests_encoding(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email,content.name\na@b.co,Иван\n", "cp1251")
    code, output, _ = dry(invoke, tmp_path, path, "-w", "1", "--encoding", "utf-8")
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "row 2: the text is not valid utf-8; try --encoding cp1251" in output


def test_sheet_option(invoke: CliRun, tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    first = wb.active
    assert first is not None
    first.append(["notes"])
    wb.create_sheet("Send").append(["email"])
    wb["Send"].append(["a@b.co"])
    wb.save(tmp_path / "in.xlsx")
    code, output, _ = dry(invoke, tmp_path, tmp_path / "in.xlsx", "-w", "1", "--sheet", "Send")
    assert code == 0, output
    assert "Excel, sheet 'Send'" in output
    code, output, _ = dry(invoke, tmp_path, tmp_path / "in.xlsx", "-w", "1", "--sheet", "Nope")
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "no sheet named 'Nope'; its sheets are: 'Sheet', 'Send'" in output


@pytest.mark.parametrize(
    ("header", "cell", "args", "expected"),
    [
        ("email", "a@b.co", [], {"matching": "email", "email": "a@b.co"}),
        ("phone", "8 (900) 123-45-67", ["--matching", "phone", "--phone-region", "ru"],
         {"matching": "phone", "phone": "+79001234567"}),
        ("profile_id", "5a74876369d42613b31947b8", ["--matching", "profile_id"],
         {"matching": "profile_id", "profile_id": "5a74876369d42613b31947b8"}),
        ("field_value", "123420", ["--matching", "custom", "--field-name", "CRM_ID"],
         {"matching": "custom", "field_name": "CRM_ID", "field_value": "123420"}),
        ("custom_request", '"{""vip"": true}"', ["--matching", "custom_request"],
         {"custom_request": {"vip": True}}),
    ],
)
def test_matching_modes(
    invoke: CliRun, tmp_path: Path, header: str, cell: str, args: list[str],
    expected: dict[str, object],
) -> None:
    path = write_csv(tmp_path / "in.csv", f"{header}\n{cell}\n")
    code, output, out = dry(invoke, tmp_path, path, "-w", "7", *args)
    assert code == 0, output
    assert read_requests(out)[0]["body"] == {"token": "***", "id": 7, **expected}


def test_resource_id_content_and_attach(invoke: CliRun, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("A")
    (tmp_path / "terms.txt").write_text("T")
    path = write_csv(tmp_path / "in.csv", "email,resource_id,attach\na@b.co,,a.txt\nc@d.co,3,\n")
    code, output, out = dry(invoke, tmp_path, path, "-w", "1", "--resource-id", "24",
                            "--content", "promo=SPRING", "--content", "order.n=[1,2]",
                            "--attach", tmp_path / "terms.txt", "--attach-dir", files)
    assert code == 0, output
    first, second = (r["body"] for r in read_requests(out))
    assert first["resource_id"] == 24
    assert second["resource_id"] == 3
    assert first["content"] == {"promo": "SPRING", "order": {"n": [1, 2]}}
    assert [a["name"] for a in first["attach"]] == ["terms.txt", "a.txt"]
    assert [a["name"] for a in second["attach"]] == ["terms.txt"]


def test_attach_dir_defaults_to_input_folder(invoke: CliRun, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A")
    path = write_csv(tmp_path / "in.csv", "email,attach\na@b.co,a.txt\nc@d.co,../x.txt\n")
    code, output, out = dry(invoke, tmp_path, path, "-w", "1")
    assert code == ExitStatus.ROWS_FAILED
    assert read_requests(out)[0]["body"]["attach"][0]["name"] == "a.txt"
    assert "row 3, column attach: '../x.txt' is outside the attachment folder" in output


def test_duplicates_skipped_unless_allowed(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email\na@b.co\nA@B.CO\n")
    code, output, out = dry(invoke, tmp_path, path, "-w", "1")
    assert code == ExitStatus.ROWS_FAILED
    assert "duplicate, skipped:            1" in output
    assert "'A@B.CO' repeats row 2" in output
    code, _, out = dry(invoke, tmp_path / "again", path, "-w", "1", "--allow-duplicates")
    assert code == 0
    assert len(read_requests(out)) == 2


def test_config_options_and_column_renames(invoke: CliRun, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.txt").write_text("F")
    path = write_csv(tmp_path / "in.csv", "E-mail;Имя;attach\na@b.co;Иван;f.txt\n")
    config = tmp_path / "job.toml"
    config.write_text(
        'workflow-id = 31\nresource_id = 5\nattach_dir = "files"\n'
        'content = { source = "crm" }\n'
        '[columns]\n"e-mail" = "email"\n"ИМЯ" = "content.first_name"\n', "utf-8")
    code, output, out = dry(invoke, tmp_path, path, "--config", config)
    assert code == 0, output
    assert read_requests(out)[0]["body"] == {
        "token": "***", "id": 31, "matching": "email", "email": "a@b.co", "resource_id": 5,
        "content": {"source": "crm", "first_name": "Иван"},
        "attach": [{"data": "data:text/plain;base64,Rg==", "name": "f.txt"}],
    }


def test_precedence_cli_over_env_over_config(
    invoke: CliRun, tmp_path: Path, emails: Path
) -> None:
    config = tmp_path / "job.toml"
    config.write_text('workflow_id = 1\napi_url = "http://config"\n')
    result = invoke("run", emails, "--config", config, "--dry-run", "--out", tmp_path / "a",
                    env={"BATCH_ENGAGE_API_URL": "http://env"})
    assert result.exit_code == 0
    assert read_summary(tmp_path / "a")["options"]["api_url"] == "http://env"
    invoke("run", emails, "--config", config, "--dry-run", "--out", tmp_path / "b",
           "--api-url", "http://cli", "-w", "2", env={"BATCH_ENGAGE_API_URL": "http://env"})
    options = read_summary(tmp_path / "b")["options"]
    assert (options["api_url"], options["workflow_id"]) == ("http://cli", 2)
    invoke("run", emails, "--config", config, "--dry-run", "--out", tmp_path / "c")
    assert read_summary(tmp_path / "c")["options"]["api_url"] == "http://config"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workflow_id = 1\ncolour = 2\n", "unknown option 'colour'"),
        ('token = "abc"\n', "holds a token"),
        ("workflow_id = \n", "is not valid TOML"),
    ],
)
def test_bad_config_exits_2(
    invoke: CliRun, tmp_path: Path, emails: Path, text: str, message: str
) -> None:
    config = tmp_path / "job.toml"
    config.write_text(text)
    code, output, _ = dry(invoke, tmp_path, emails, "--config", config)
    assert code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert message in output
    assert "abc" not in output


def test_report_cells_are_excel_safe_and_round_trip(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv",
                     'email,content.code\nbad1,"=HYPERLINK(""http://x"",""y"")"\n'
                     "bad2,+7900\nbad3,-1\nbad4,@SUM(A1)\nbad5,'quoted\n")
    code, _, out = dry(invoke, tmp_path, path, "-w", "1")
    assert code == ExitStatus.ROWS_FAILED
    text = (out / "failed.csv").read_text("utf-8-sig")
    for guarded in ["'=HYPERLINK", "'+7900", "'-1", "'@SUM(A1)", "''quoted"]:
        assert f",{guarded}" in text or f'"{guarded}' in text
    # The report read back gives the original values.
    again = tmp_path / "again"
    invoke("run", out / "failed.csv", "-w", "1", "--dry-run", "--out", again)
    # Read back, every value is the original again, so the same report comes out.
    assert (again / "failed.csv").read_text("utf-8-sig") == text


def test_fixed_failed_csv_runs_again(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email,content.code\nok@b.co,=1\nbad,=2\n")
    _, _, out = dry(invoke, tmp_path, path, "-w", "1")
    failed = out / "failed.csv"
    failed.write_text(failed.read_text("utf-8-sig").replace("bad,", "fixed@b.co,"), "utf-8-sig")
    code, output, again = dry(invoke, tmp_path / "2", failed, "-w", "1")
    assert code == 0, output
    assert read_requests(again)[0] == {
        "row": 2, "body": {"token": "***", "id": 1, "matching": "email",
                           "email": "fixed@b.co", "content": {"code": "=2"}},
    }
    assert "ignored" not in output  # the _-columns are expected, not a surprise


def test_blank_rows_counted_not_failed(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email,x\na@b.co,1\n,\n , \nc@d.co,2\n,\n")
    code, output, out = dry(invoke, tmp_path, path, "-w", "1")
    assert code == 0
    assert "2 rows, 3 blank rows skipped" in output
    assert [r["row"] for r in read_requests(out)] == [2, 5]
    assert read_summary(out)["blank"] == 3


def test_warnings_go_to_stderr(invoke: CliRun, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "email,notes\na@b.co,x\n")
    result = invoke("run", path, "-w", "1", "--dry-run", "--out", tmp_path / "o")
    assert "warning: these columns are ignored: 'notes'" in result.stderr
    assert "warning:" not in result.stdout


def test_demo_runs_every_sample(invoke: CliRun, tmp_path: Path) -> None:
    result = invoke("demo", "--samples", SAMPLES, "--out", tmp_path)
    assert result.exit_code == ExitStatus.ROWS_FAILED  # the samples hold invalid rows on purpose
    for stem in ["attachments", "clients_cp1251", "customers", "phones"]:
        assert f"$ batch-engage run {SAMPLES / stem}." in result.output
        assert (tmp_path / stem / "summary.json").exists()


def test_version_and_short_help(invoke: CliRun) -> None:
    assert invoke("--version").output.strip() == f"batch-engage, version {batch_engage.__version__}"
    assert "Usage: batch-engage run [OPTIONS] INPUT" in invoke("run", "-h").output


def _commands() -> list[click.Command]:
    assert isinstance(cli, click.Group)
    return [cli, *cli.commands.values()]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: c.name or "")
def test_every_command_and_option_has_help(command: click.Command) -> None:
    assert command.help, f"{command.name} has no help"
    assert "batch-engage" in command.help, "the help needs a runnable example"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{command.name} {param.opts} has no help"


def test_exports_are_honest() -> None:
    for name in batch_engage.__all__:
        assert hasattr(batch_engage, name), name
    public = {
        n for n in dir(batch_engage)
        if not n.startswith("_") and not isinstance(getattr(batch_engage, n), ModuleType)
    } - {"annotations"}
    assert public <= set(batch_engage.__all__), public - set(batch_engage.__all__)
