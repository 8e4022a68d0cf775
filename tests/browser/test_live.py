"""Flows 6 and 7: one run watched from two tabs (and from none); a test send, then the rest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .conftest import (
    Shots,
    StartMock,
    StartServer,
    check,
    counts,
    fill,
    live_done,
    read_report,
    send,
    upload,
    wait_done,
    wait_live_done,
    wait_until,
    write_emails,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_two_tabs_see_the_same_progress_and_closing_them_does_not_stop_the_run(
        context: BrowserContext, page: Page, start_mock: StartMock,
        start_server: StartServer, tmp_path: Path) -> None:
    emails = write_emails(tmp_path / "list.csv", 40)
    mock = start_mock()
    server = start_server(mock)
    upload(page, server, tmp_path / "list.csv")
    fill(page, {"Workflow id": "12", "Rate": "5"})  # 8 s for the whole list
    check(page)
    run_id = send(page)
    second = context.new_page()
    second.goto(page.url)
    tabs = (page, second)
    for tab in tabs:
        expect(tab.get_by_role("heading", name="Progress")).to_be_visible()
        expect(tab.locator("[data-field=done]")).to_contain_text("of 40 rows")
    start = max(live_done(tab) for tab in tabs)
    for tab in tabs:  # the counter moves in both, pushed by the server
        wait_live_done(tab, start + 3)

    page.close()
    second.close()
    assert server.api(f"/api/runs/{run_id}")["status"] == "sending"
    wait_until("finished", lambda: server.api(f"/api/runs/{run_id}")["status"] == "finished")
    stats = mock.stats()
    assert stats["accepted"] == dict.fromkeys(emails, 1)
    assert server.api(f"/api/runs/{run_id}")["summary"]["outcomes"]["ok"] == 40


def test_test_send_then_send_skips_the_rows_it_engaged(page: Page, start_mock: StartMock,
                                                       start_server: StartServer,
                                                       shot: Shots, tmp_path: Path) -> None:
    emails = write_emails(tmp_path / "list.csv", 12)
    mock = start_mock()
    server = start_server(mock)
    upload_id = upload(page, server, tmp_path / "list.csv")
    fill(page, {"Workflow id": "12"})
    assert check(page)["valid"] == 12
    page.get_by_label("Rows to test").fill("3")
    page.get_by_role("button", name="Test send").click()
    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    test_id = page.url.rsplit("/", 1)[1]
    wait_done(page)
    assert mock.stats()["accepted"] == dict.fromkeys(emails[:3], 1)

    # Back on the upload, its mapping as in its last Check: check again, send the rest.
    page.get_by_role("link", name="send the whole file").click()
    page.wait_for_url(re.compile(rf"/uploads/{upload_id}$"))
    expect(page.get_by_label("Workflow id")).to_have_value("12")
    shown = check(page)
    assert (shown["valid"], shown["engaged"]) == (9, 3)  # valid: the rows left to send
    shot(page, "11-check-after-test-send")
    run_id = send(page)
    assert run_id != test_id
    wait_done(page)

    stats = mock.stats()
    assert stats["accepted"] == dict.fromkeys(emails, 1)
    assert stats["accepted_twice"] == []
    assert counts(page)["ok"] == 9
    skipped = read_report(server.run_folder(run_id) / "skipped.csv")
    assert [(r["email"], r["_reason"]) for r in skipped] == [
        (email, "already_engaged") for email in emails[:3]]
