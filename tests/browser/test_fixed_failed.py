"""Flow 5: a run with invalid rows; its failed.csv, fixed, uploaded again: the page offers the
earlier run's mapping, and only the fixed rows are sent."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ..conftest import SAMPLES
from .conftest import (
    Shots,
    StartMock,
    StartServer,
    check,
    download,
    fill,
    send,
    upload,
    wait_done,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_EMAIL_ERRORS = {"invalid_email", "missing_value"}


@pytest.mark.parametrize("duplicate", [
    pytest.param("deleted", id="duplicate-row-deleted"),
    # Left in, the duplicate is skipped as already engaged by the run the file came from.
    pytest.param("kept", id="duplicate-row-kept"),
])
def test_fixed_failed_csv_gets_the_earlier_mapping_and_sends_only_fixed_rows(
        duplicate: str, page: Page, start_mock: StartMock, start_server: StartServer,
        shot: Shots, tmp_path: Path) -> None:
    mock = start_mock()
    server = start_server(mock)
    upload(page, server, SAMPLES / "customers.csv")
    fill(page, {"Workflow id": "12", "Resource id": "7"})
    assert check(page)["invalid"] > 0
    send(page)
    wait_done(page)
    engaged_first = mock.stats()["accepted"]

    # The marketer fixes the broken emails in failed.csv. A duplicate needs no fix: its
    # profile was engaged by the row it repeats; the marketer deletes that row, or leaves it
    # (the note under Done says only the fixed rows are sent). Other rows stay broken.
    text = download(page, "failed.csv").decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames is not None
    rows, fixed = [], []
    for row in reader:
        if row["_stage"] == "duplicate" and duplicate == "deleted":
            continue
        if row["_error"] in _EMAIL_ERRORS:
            row["email"] = f"fixed-row{row['_row']}@shop-mail.ru"
            fixed.append(row["email"])
        rows.append(row)
    assert fixed, "customers.csv has rows with broken emails"
    path = tmp_path / "failed.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as file:
        writer = csv.DictWriter(file, reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)

    upload(page, server, path)
    expect(page.get_by_text("This looks like a fixed")).to_be_visible()
    expect(page.get_by_label("Workflow id")).to_have_value("12")
    expect(page.get_by_label("Resource id")).to_have_value("7")
    if duplicate == "deleted":
        shot(page, "10-fixed-failed-mapping")
    shown = check(page)
    send(page)
    wait_done(page)

    stats = mock.stats()
    engaged_now = {k: n - engaged_first.get(k, 0) for k, n in stats["accepted"].items()
                   if n != engaged_first.get(k, 0)}
    assert engaged_now == dict.fromkeys(fixed, 1)
    assert stats["accepted_twice"] == []
    # As Check said: the fixed rows valid, the duplicate left in already engaged.
    left_in = sum(row["_stage"] == "duplicate" for row in rows)
    assert left_in == (duplicate == "kept")
    assert (shown["valid"], shown["invalid"], shown.get("engaged", 0)) == (
        len(fixed), len(rows) - len(fixed) - left_in, left_in)
