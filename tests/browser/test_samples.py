"""Flow 1: each sample through the page, upload to Done, against the CLI and the mock API.

samples/attachments.csv names files of samples/files/ in its ``attach`` column: the page
gets them through its "Attachment files" input, as a marketer adds them.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ..conftest import SAMPLES
from .conftest import (
    Shots,
    StartMock,
    StartServer,
    batch_engage,
    check,
    counts,
    download,
    fill,
    read_json,
    read_report,
    send,
    upload,
    wait_done,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# What a sample's config sets that a guess from the headers cannot know, by field label.
_FIELDS = {"workflow_id": "Workflow id", "resource_id": "Resource id",
           "phone_region": "Phone region"}
# The encoding "What was read" names, for a text file.
_ENCODINGS = {"customers.csv": "UTF-8", "clients_cp1251.csv": "Windows-1251 (Cyrillic)",
              "attachments.csv": "UTF-8"}


def _problems(report: Path) -> list[tuple[str, str, str]]:
    return [(r["_row"], r["_stage"], r["_error"]) for r in read_report(report)]


def add_attachments(page: Page, folder: Path, shot: Shots | None) -> None:
    """Add every file of ``folder`` with the page's "Attachment files" input."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    section = page.get_by_role("region", name="Attachment files")
    expect(section).to_be_visible()  # shown because a column was guessed as attachments
    section.get_by_label("Attachment files").set_input_files(files)
    section.get_by_role("button", name="Add files").click()
    listed = section.get_by_role("listitem")
    expect(listed).to_have_count(len(files))
    names = sorted(p.name for p in files)
    assert sorted(listed.all_inner_texts()) == names
    if shot:
        shot(page, "12-attachments")


@pytest.mark.parametrize("name", ["customers.csv", "clients_cp1251.csv", "phones.xlsx",
                                  "attachments.csv"])
def test_sample_from_upload_to_done(name: str, page: Page, start_mock: StartMock,
                                    start_server: StartServer, shot: Shots,
                                    tmp_path: Path) -> None:
    sample = SAMPLES / name
    config_path = sample.with_suffix(".toml")
    config = tomllib.loads(config_path.read_text("utf-8"))
    # What the CLI makes of the same file with the sample's config.
    dry = tmp_path / "dry-run"
    cli = batch_engage("run", sample, "--config", config_path, "--dry-run", "--out", dry, "-q",
                       cwd=tmp_path)
    assert cli.returncode in (0, 1), cli.stderr
    expected = read_json(dry / "summary.json")
    bodies = [json.loads(line)["body"]
              for line in (dry / "requests.jsonl").read_text("utf-8").splitlines()]
    identifiers = [body[body["matching"]] for body in bodies]
    assert identifiers, "a sample with no valid row tests nothing"

    mock = start_mock()
    server = start_server(mock)
    steps = shot if name == "customers.csv" else None
    upload(page, server, sample, steps)
    if name in _ENCODINGS:
        fact = page.locator("dl div").filter(has=page.locator("dt", has_text="Encoding"))
        expect(fact.locator("dd")).to_have_text(_ENCODINGS[name])
    if "attach_dir" in config:
        add_attachments(page, config_path.parent / config["attach_dir"], shot)
    expect(page.get_by_label("Matching")).to_have_value(config.get("matching", "email"))
    expect(page.get_by_label("Custom field name")).to_be_hidden()  # for Custom field only
    fill(page, {label: str(config[key]) for key, label in _FIELDS.items() if key in config})
    if steps:
        steps(page, "02-mapping")
    shown = check(page)
    if steps:
        steps(page, "03-check")
    assert {k: shown[k] for k in ("valid", "invalid", "duplicate", "hidden")} == {
        "valid": expected["outcomes"].get("valid", 0),
        "invalid": expected["outcomes"].get("validation", 0),
        "duplicate": expected["outcomes"].get("duplicate", 0),
        "hidden": expected["skipped"].get("hidden_in_sheet", 0),
    }
    # The guessed mapping makes the very requests the sample's config makes.
    examples = page.get_by_role("region", name="Example requests").locator("pre")
    assert [json.loads(text) for text in examples.all_inner_texts()] == bodies[:3]

    run_id = send(page, steps)
    wait_done(page)
    if steps:
        steps(page, "06-done")

    folder = server.run_folder(run_id)
    links = page.get_by_role("list").filter(has=page.get_by_role("link", name="summary.json"))
    names = links.get_by_role("link").all_inner_texts()
    required = {"success.csv", "failed.csv", "summary.json", "mapping.toml"}
    if sample.suffix == ".xlsx":
        required.add("failed.xlsx")
    assert required <= set(names), names
    for link in names:
        assert download(page, link) == (folder / link).read_bytes(), link

    assert _problems(folder / "failed.csv") == _problems(dry / "failed.csv")
    summary = read_json(folder / "summary.json")
    stats = mock.stats()
    assert stats["accepted"] == dict.fromkeys(identifiers, 1)
    assert stats["accepted_twice"] == []
    assert stats["accepted_total"] == summary["outcomes"]["ok"] == counts(page)["ok"]
