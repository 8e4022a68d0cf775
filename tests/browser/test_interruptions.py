"""Flows 2-4: a run stopped from the page, by a killed server, by a refused token; then
resumed from the page. Every valid row is engaged exactly once, whatever happened."""

from __future__ import annotations

import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import (
    TOKEN,
    Shots,
    StartMock,
    StartServer,
    check,
    counts,
    fill,
    read_report,
    send,
    upload,
    wait_done,
    wait_live_done,
    wait_stopped,
    wait_until,
    write_emails,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_stop_then_resume_engages_every_row_once(page: Page, start_mock: StartMock,
                                                 start_server: StartServer, shot: Shots,
                                                 tmp_path: Path) -> None:
    emails = write_emails(tmp_path / "list.csv", 30)
    mock = start_mock()
    server = start_server(mock)
    upload(page, server, tmp_path / "list.csv")
    fill(page, {"Workflow id": "12", "Rate": "5"})  # 6 s for the whole list
    assert check(page)["valid"] == 30
    run_id = send(page)
    wait_live_done(page, 8)  # long enough for a speed and a time left
    shot(page, "05-progress")
    page.get_by_role("button", name="Stop").click()
    wait_stopped(page)
    expect(page.get_by_text("You stopped this run.")).to_be_visible()
    shot(page, "08-stopped")
    stopped_at = mock.stats()["accepted_total"]
    assert 8 <= stopped_at < 30
    time.sleep(1.0)  # a run that went on would send 5 more in this second
    assert mock.stats()["accepted_total"] == stopped_at
    assert server.api(f"/api/runs/{run_id}")["status"] == "stopped"

    page.get_by_role("button", name="Resume").click()
    wait_done(page)
    stats = mock.stats()
    assert stats["accepted"] == dict.fromkeys(emails, 1)
    assert stats["accepted_twice"] == []
    assert counts(page)["ok"] == 30
    assert server.api(f"/api/runs/{run_id}")["status"] == "finished"


def _in_flight(journal: Path, scratch: Path) -> dict[int, str]:
    """Rows the journal holds as on their way (row -> identifier), read from a copy so the
    resume finds the folder exactly as the kill left it."""
    scratch.mkdir()
    for part in journal.parent.glob(journal.name + "*"):  # the database and its WAL
        shutil.copy(part, scratch / part.name)
    with closing(sqlite3.connect(scratch / journal.name)) as db:
        rows = db.execute("SELECT row, identifier FROM rows WHERE state = 'sending'").fetchall()
    return {int(row): str(identifier) for row, identifier in rows}


def test_server_killed_mid_run_then_resumed(page: Page, start_mock: StartMock,
                                            start_server: StartServer, shot: Shots,
                                            tmp_path: Path) -> None:
    emails = write_emails(tmp_path / "list.csv", 40)
    mock = start_mock("--latency-ms", "1000")  # 4 requests always on their way
    server = start_server(mock)
    upload(page, server, tmp_path / "list.csv")
    fill(page, {"Workflow id": "12", "Concurrency": "4"})
    assert check(page)["valid"] == 40
    run_id = send(page)
    wait_until("10 rows engaged", lambda: mock.stats()["accepted_total"] >= 10)
    server.kill()
    folder = server.run_folder(run_id)
    in_flight = _in_flight(folder / "journal.sqlite", tmp_path / "journal-at-kill")
    assert 1 <= len(in_flight) <= 4, in_flight
    time.sleep(1.5)  # the mock finishes what reached it, answering a closed connection
    accepted_at_kill = mock.stats()["accepted"]
    assert 10 <= sum(accepted_at_kill.values()) < 40

    server.start()  # a new port and key, the same data folder
    page.goto(server.url)
    page.get_by_role("link", name="Runs", exact=True).click()
    stopped = page.get_by_role("row").filter(has=page.get_by_role("link", name="Resume"))
    expect(stopped).to_have_count(1)
    expect(stopped).to_contain_text("stopped")
    shot(page, "07-runs")
    assert [(r["id"], r["status"]) for r in server.api("/api/runs")] == [(run_id, "stopped")]
    stopped.get_by_role("link", name="Resume").click()
    expect(page.get_by_role("alert")).to_contain_text("This run did not finish")
    shot(page, "13-server-killed")
    page.get_by_role("button", name="Resume").click()
    wait_done(page)

    # The rows on their way at the kill are uncertain: reported, never sent again.
    failed = read_report(folder / "failed.csv")
    uncertain = {int(r["_row"]): r["email"] for r in failed if r["_stage"] == "uncertain"}
    assert uncertain == in_flight
    assert len(failed) == len(uncertain)
    stats = mock.stats()
    assert stats["accepted_twice"] == []
    for email in uncertain.values():
        assert stats["accepted"].get(email, 0) == accepted_at_kill.get(email, 0) <= 1, email
    others = [e for e in emails if e not in uncertain.values()]
    assert {e: stats["accepted"].get(e) for e in others} == dict.fromkeys(others, 1)
    assert sorted(r["email"] for r in read_report(folder / "success.csv")) == others
    assert server.api(f"/api/runs/{run_id}")["status"] == "finished"


def test_refused_token_then_fixed_and_resumed(page: Page, start_mock: StartMock,
                                              start_server: StartServer, shot: Shots,
                                              tmp_path: Path) -> None:
    emails = write_emails(tmp_path / "list.csv", 8)
    mock = start_mock()
    server = start_server(mock, token="not-the-token")
    upload(page, server, tmp_path / "list.csv")
    fill(page, {"Workflow id": "12"})
    assert check(page)["valid"] == 8
    run_id = send(page)
    wait_stopped(page)
    shot(page, "09-token-refused")
    message = page.get_by_role("alert")
    expect(message).to_contain_text("The API refused the token")
    expect(message).to_contain_text(str(server.token_file))  # where the right one goes
    assert mock.stats()["accepted_total"] == 0
    assert server.api(f"/api/runs/{run_id}")["status"] == "stopped"

    server.set_token(TOKEN)  # no restart: the page reads the file at each run
    page.get_by_role("button", name="Resume").click()
    wait_done(page)
    stats = mock.stats()
    assert stats["accepted"] == dict.fromkeys(emails, 1)
    assert stats["accepted_twice"] == []
    assert counts(page)["ok"] == 8
