"""`batch-engage init-config`: a starter config that, unedited, dry-runs its input."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import click
import openpyxl
import pytest

from batch_engage.cli import run
from batch_engage.status import ExitStatus

from .conftest import SAMPLES, CliRun, read_summary, write_csv

SAMPLE_FILES = ["customers.csv", "clients_cp1251.csv", "phones.xlsx", "attachments.csv"]
COMPARED = ("rows", "blank", "outcomes", "errors", "skipped", "failed")


def copy_sample(name: str, tmp_path: Path) -> Path:
    """The sample (and its files/ folder) in a folder of its own, without its config."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / name, folder / name)
    shutil.copytree(SAMPLES / "files", folder / "files")
    return folder / name


def counts(out: Path) -> dict[str, Any]:
    summary = read_summary(out)
    return {key: summary[key] for key in COMPARED}


def config_of(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text("utf-8"))


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_the_unedited_config_dry_runs_the_sample_as_its_own_config_does(
    name: str, invoke: CliRun, tmp_path: Path
) -> None:
    data = copy_sample(name, tmp_path)
    made = invoke("init-config", data)
    assert made.exit_code == 0, made.output
    config = data.with_suffix(".toml")  # the default: beside INPUT
    assert f"Wrote {config}" in made.output
    assert f"batch-engage run {data} --config {config} --dry-run" in made.output

    ours = invoke("run", data, "--config", config, "--dry-run", "--out", tmp_path / "ours")
    theirs = invoke("run", SAMPLES / name, "--config", SAMPLES / data.with_suffix(".toml").name,
                    "--dry-run", "--out", tmp_path / "theirs")
    assert ours.exit_code == theirs.exit_code, ours.output
    assert counts(tmp_path / "ours") == counts(tmp_path / "theirs")
    assert read_summary(tmp_path / "ours")["options"]["workflow_id"] == 0


def test_russian_headers_of_the_cp1251_sample_are_mapped(invoke: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "clients.toml"
    assert invoke("init-config", SAMPLES / "clients_cp1251.csv", "-o", out).exit_code == 0
    config = config_of(out)
    assert config["columns"] == {
        "Электронная почта": "email", "Имя": "content.first_name", "Город": "content.city",
        "Промокод": "content.promo_code", "Дата рождения": "content.birthday"}
    assert (config["matching"], config["encoding"], config["delimiter"]) == (
        "email", "cp1251", ";")
    assert "sheet" not in config


def test_a_phone_workbook_gets_its_region_and_sheet(invoke: CliRun, tmp_path: Path) -> None:
    out = tmp_path / "phones.toml"
    assert invoke("init-config", SAMPLES / "phones.xlsx", "-o", out).exit_code == 0
    config = config_of(out)
    assert (config["matching"], config["phone_region"], config["sheet"]) == (
        "phone", "RU", "Customers")
    assert "encoding" not in config
    assert "delimiter" not in config


def test_attach_dir_is_the_folder_beside_the_input_that_holds_the_files(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = copy_sample("attachments.csv", tmp_path)
    invoke("init-config", data)
    assert config_of(data.with_suffix(".toml"))["attach_dir"] == "files"  # beside INPUT
    elsewhere = tmp_path / "configs" / "a.toml"
    elsewhere.parent.mkdir()
    invoke("init-config", data, "-o", elsewhere)
    assert config_of(elsewhere)["attach_dir"] == str((data.parent / "files").resolve())
    # Files in the input's own folder: the default already holds them.
    write_csv(tmp_path / "in" / "b.csv", "profile_id,attach\n1,files/US.txt\n")
    invoke("init-config", tmp_path / "in" / "b.csv")
    assert "attach_dir" not in config_of(tmp_path / "in" / "b.toml")


def test_an_existing_config_is_kept_unless_forced(invoke: CliRun, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "E-mail\na@b.co\n")
    config = tmp_path / "in.toml"
    config.write_text("workflow_id = 7\n", "utf-8")
    refused = invoke("init-config", data)
    assert refused.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "already exists; pass --force to overwrite it" in refused.output
    assert config.read_text("utf-8") == "workflow_id = 7\n"
    forced = invoke("init-config", data, "--force")
    assert forced.exit_code == 0
    assert config_of(config)["columns"] == {"E-mail": "email"}


@pytest.mark.parametrize(("args", "message"), [
    (["missing.csv"], "input file missing.csv does not exist"),
    (["{data}", "-o", "{data}"], "is INPUT itself"),
    (["{data}", "-o", "{tmp}/no/such/folder/x.toml"], "cannot write"),
    (["{data}", "--sheet", "One"], "--sheet only applies to Excel files"),
    (["{data}", "--encoding", "klingon"], "unknown encoding 'klingon'"),
])
def test_errors_exit_2_and_say_how_to_fix(
    args: list[str], message: str, invoke: CliRun, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@b.co\n")
    result = invoke("init-config", *[a.format(data=data, tmp=tmp_path) for a in args])
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert message in result.output
    assert not (tmp_path / "in.toml").exists()


def test_reading_options_are_honoured_and_written(invoke: CliRun, tmp_path: Path) -> None:
    text = write_csv(tmp_path / "in.csv", "E-mail|First name\na@b.fr|Zoë\n", "cp1252")
    assert invoke("init-config", text, "--encoding", "cp1252", "--delimiter", "pipe"
                  ).exit_code == 0
    config = config_of(tmp_path / "in.toml")
    assert (config["encoding"], config["delimiter"]) == ("cp1252", "|")
    assert config["columns"] == {"E-mail": "email", "First name": "content.first_name"}

    wb = openpyxl.Workbook()
    first = wb.active
    assert first is not None
    first.append(["Notes"])
    wb.create_sheet("Clients").append(["Телефон", "Фамилия"])
    wb["Clients"].append(["+79001234567", "Иванов"])
    wb.save(tmp_path / "book.xlsx")
    assert invoke("init-config", tmp_path / "book.xlsx", "--sheet", "Clients").exit_code == 0
    config = config_of(tmp_path / "book.toml")
    assert (config["sheet"], config["matching"]) == ("Clients", "phone")
    assert config["columns"] == {"Телефон": "phone", "Фамилия": "content.last_name"}


def test_unplaced_headers_stay_as_commented_lines(invoke: CliRun, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "Email,Notes,phone,_row\na@b.co,VIP,+79001234567,2\n")
    invoke("init-config", data)
    text = (tmp_path / "in.toml").read_text("utf-8")
    assert "\n# \"Notes\"  # 'Notes' is not a name batch-engage knows, so it is not sent\n" in text
    assert '\n"phone" = "_ignored"  # ' in text  # the mapper would read it: left out
    assert "\n# \"_row\"  # a name starting with '_' is never sent" in text
    assert config_of(tmp_path / "in.toml")["columns"] == {"Email": "email", "phone": "_ignored"}
    result = invoke("run", data, "--config", tmp_path / "in.toml", "--dry-run",
                    "--out", tmp_path / "o")
    assert result.exit_code == 0
    assert "these columns are ignored: 'Notes'" in result.stderr


def test_every_other_run_option_is_a_commented_line_that_works_uncommented(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@b.co\n")
    invoke("init-config", data)
    text = (tmp_path / "in.toml").read_text("utf-8")
    head, _columns = text.split("\n[columns]\n")
    active = set(tomllib.loads(head))
    assert active == {"workflow_id", "matching", "encoding", "delimiter"}
    commented = re.findall(r"^# ([a-z_]+) = (.*)$", head, re.MULTILINE)
    options = {p.name for p in run.params if isinstance(p, click.Option)}
    # For a text file, the workbook options do not apply; --config cannot name itself.
    assert {name for name, _ in commented} == options - active - {
        "config", "sheet", "include_hidden_rows"}
    uncommented = tomllib.loads("\n".join(f"{n} = {v}" for n, v in commented))
    assert uncommented["rate"] == 10.0
    assert uncommented["allow_duplicates"] is False
    assert uncommented["content"] == ["promo_code=SPRING"]


def test_headers_any_text_make_valid_toml(invoke: CliRun, tmp_path: Path) -> None:
    headers = ['content.say "hi"', "content.a\\b", "content.tab\there", "Имя", "Имя", "email",
               "x = 1 # [columns]"]
    lines = [",".join('"' + h.replace('"', '""') + '"' for h in headers),
             "Ann,b,c,d,e,a@b.co,f"]
    data = write_csv(tmp_path / "in.csv", "\n".join(lines) + "\n")
    assert invoke("init-config", data).exit_code == 0
    config = config_of(tmp_path / "in.toml")
    assert config["columns"] == {h: h for h in [*headers[:3], "email"]}
    result = invoke("run", data, "--config", tmp_path / "in.toml", "--dry-run",
                    "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    body = (tmp_path / "o" / "requests.jsonl").read_text("utf-8")
    assert '"say \\"hi\\"":"Ann"' in body
    assert '"a\\\\b":"b"' in body


def test_no_identifier_is_a_warning_and_a_dry_run_says_what_to_do(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "in.csv", "Notes,Город\nx,Москва\n")
    made = invoke("init-config", data)
    assert made.exit_code == 0
    assert "warning: no column looks like an e-mail, phone or profile id" in made.stderr
    result = invoke("run", data, "--config", tmp_path / "in.toml", "--dry-run",
                    "--out", tmp_path / "o")
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "needs a column named 'email'" in result.output


def test_a_custom_matching_file_gets_a_field_name_to_replace(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "in.csv", "field_value,Имя\nC-1,Ann\n")
    invoke("init-config", data)
    config = config_of(tmp_path / "in.toml")
    assert (config["matching"], config["field_name"]) == ("custom", "REPLACE_ME")
    result = invoke("run", data, "--config", tmp_path / "in.toml", "--dry-run",
                    "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
