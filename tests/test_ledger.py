"""The ledger shared by runs (--ledger): nightly imports that never engage anyone twice."""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from batch_engage import Matching, RunControl, RunOptions, Secret, UsageError, run
from batch_engage import ledger as ledger_module
from batch_engage.journal import JOURNAL_NAME
from batch_engage.ledger import Ledger, Writes, describe, forget
from batch_engage.mapper import Request
from batch_engage.mock_server import MockConfig, serve_in_thread
from batch_engage.sender import Answer, Unanswered
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, CliRun, read_csv, read_requests, token_env, write_csv
from .test_job import stopping_after

OK = Answer(200, b'{"error": 0, "error_text": "ok"}')
DAY = 86_400.0

Transport = Callable[[bytes], Awaitable[Answer]]


def emails(path: Path, *cells: str) -> Path:
    return write_csv(path, "email\n" + "".join(c + "\n" for c in cells))


def nightly(data: Path, out: Path, ledger: Path, **changes: Any) -> RunOptions:
    fields: dict[str, Any] = {
        "input": data, "workflow_id": 1, "api_url": "http://unused.invalid",
        "token": Secret("t"), "rate_per_second": 0, "max_in_flight": 4, "out": out,
        "ledger": ledger}
    return RunOptions(**{**fields, **changes})


def recording(sent: list[str], key: str = "email") -> Transport:
    async def transport(body: bytes) -> Answer:
        sent.append(json.loads(body)[key])
        return OK
    return transport


def skipped_rows(out: Path) -> list[dict[str, str]]:
    return read_csv(out / "skipped.csv")


# --- acceptance 1: two nights, new rows, --ledger-days ----------------------------------------


def lookup(ledger: Ledger, keys: list[str]) -> dict[str, ledger_module.Entry]:
    """What a send's look-up finds for ``keys`` (a send looks up in its own process)."""
    looked = ledger.ask(list(keys), counting=False)
    assert looked is not None
    return ledger.entries(looked[1])


def test_the_second_night_sends_nothing_then_only_the_new_rows_then_all_after_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "engaged.sqlite"
    people = [f"p{i}@example.com" for i in range(20)]
    data = emails(tmp_path / "export.csv", *people)
    first: list[str] = []
    summary = run(nightly(data, tmp_path / "night1", ledger), transport=recording(first))
    assert sorted(first) == sorted(people)
    assert summary.outcomes == Counter({"ok": 20})

    again: list[str] = []
    summary = run(nightly(data, tmp_path / "night2", ledger), transport=recording(again))
    assert again == []
    assert summary.failed == 0
    assert summary.outcomes == Counter()
    assert summary.skipped == Counter({"already_engaged": 20})
    skipped = skipped_rows(tmp_path / "night2")
    assert [int(r["_row"]) for r in skipped] == list(range(2, 22))
    assert {r["_reason"] for r in skipped} == {"already_engaged"}
    assert skipped[0]["email"] == "p0@example.com"
    assert skipped[0]["_detail"].startswith(
        f"engaged by the run in {(tmp_path / 'night1').absolute()} at 20")

    new = [f"new{i}@example.com" for i in range(5)]
    grown = emails(tmp_path / "export.csv", *people[:10], *new, *people[10:])
    third: list[str] = []
    summary = run(nightly(grown, tmp_path / "night3", ledger), transport=recording(third))
    assert third == new
    assert summary.skipped == Counter({"already_engaged": 20})

    # Two days on, engagements of the last three days still count; of the last day, not.
    later = time.time() + 2 * DAY
    monkeypatch.setattr(ledger_module, "now", lambda: later)
    within: list[str] = []
    run(nightly(grown, tmp_path / "night3b", ledger, ledger_days=3),
        transport=recording(within))
    assert within == []
    fourth: list[str] = []
    run(nightly(grown, tmp_path / "night4", ledger, ledger_days=1), transport=recording(fourth))
    assert sorted(fourth) == sorted(people + new)
    # ...and recorded anew: the next night within the window sends nothing.
    fifth: list[str] = []
    run(nightly(grown, tmp_path / "night5", ledger, ledger_days=1), transport=recording(fifth))
    assert fifth == []


def test_the_cli_exits_0_when_every_row_was_engaged_before(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = emails(tmp_path / "export.csv", "a@example.com", "b@example.com")
    ledger = tmp_path / "engaged.sqlite"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        args = (data, "-w", "7", "--ledger", ledger, "-q")
        first = invoke("run", *args, "--out", tmp_path / "n1", env=token_env(mock.url))
        second = invoke("run", *args, "--out", tmp_path / "n2", env=token_env(mock.url))
        assert mock.stats.accepted == Counter({"a@example.com": 1, "b@example.com": 1})
    assert first.exit_code == ExitStatus.SUCCESS, first.output
    assert second.exit_code == ExitStatus.SUCCESS, second.output
    assert "engaged before, skipped:       2" in second.stdout
    assert "Requests: 0 sent" in second.stdout


def test_the_printed_rerun_of_failed_csv_keeps_the_ledger_and_passes_the_row_guard(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = emails(tmp_path / "export.csv", *(f"k{i}@example.com" for i in range(30)))
    ledger = tmp_path / "engaged.sqlite"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, unknown_rate=0.3, seed=3)) as mock:
        night = invoke("run", data, "-w", "7", "--ledger", ledger, "--min-rows", "10",
                       "--rate", "0", "-q", "--out", tmp_path / "n1", env=token_env(mock.url))
    assert night.exit_code == ExitStatus.ROWS_FAILED, night.output
    printed = shlex.split(night.stdout.split("then send them again:\n")[1].splitlines()[0])
    assert printed[printed.index("--ledger") + 1] == str(ledger)
    assert printed[printed.index("--min-rows") + 1] == "0"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as fixed:
        printed[printed.index("--api-url") + 1] = fixed.url
        again = invoke(*printed[1:], "-q", "--out", tmp_path / "fix", env=token_env(fixed.url))
        assert again.exit_code == ExitStatus.SUCCESS, again.output
        resent = set(fixed.stats.accepted)
        assert resent == {r["email"] for r in read_csv(tmp_path / "n1" / "failed.csv")}
        # The next night knows them all: the fixed rows were recorded in the same ledger.
        next_night = invoke("run", data, "-w", "7", "--ledger", ledger, "-q", "--out",
                            tmp_path / "n2", env=token_env(fixed.url))
        assert next_night.exit_code == ExitStatus.SUCCESS
        assert fixed.stats.accepted == Counter(dict.fromkeys(resent, 1))


# --- what counts as the same profile ----------------------------------------------------------


def test_another_workflow_or_kind_of_identifier_is_not_skipped_and_emails_ignore_case(
    tmp_path: Path
) -> None:
    ledger = tmp_path / "l.sqlite"
    run(nightly(emails(tmp_path / "a.csv", "john.doe@example.com"), tmp_path / "a", ledger),
        transport=recording([]))
    sent: list[str] = []
    again = emails(tmp_path / "b.csv", "JOHN.DOE@Example.com", "new@example.com")
    summary = run(nightly(again, tmp_path / "b", ledger), transport=recording(sent))
    assert sent == ["new@example.com"]
    assert summary.skipped == Counter({"already_engaged": 1})
    other: list[str] = []
    run(nightly(again, tmp_path / "c", ledger, workflow_id=2), transport=recording(other))
    assert other == ["JOHN.DOE@Example.com", "new@example.com"]
    ids = write_csv(tmp_path / "d.csv", "profile_id\njohn.doe@example.com\n")
    by_id: list[str] = []
    run(nightly(ids, tmp_path / "d", ledger, matching=Matching.PROFILE_ID),
        transport=recording(by_id, "profile_id"))
    assert by_id == ["john.doe@example.com"]


def test_a_failed_row_is_not_recorded_and_is_sent_again_the_next_night(tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "a@example.com", "gone@example.com")

    async def gone(body: bytes) -> Answer:
        if b"gone@" in body:
            return Answer(200, b'{"error": 404, "error_text": "no such profile"}')
        return OK

    run(nightly(data, tmp_path / "n1", ledger), transport=gone)
    sent: list[str] = []
    run(nightly(data, tmp_path / "n2", ledger), transport=recording(sent))
    assert sent == ["gone@example.com"]


def test_a_test_send_then_the_full_send_through_one_ledger(tmp_path: Path) -> None:
    """The page's Test send, then Send: the second skips whom the first engaged."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", *(f"k{i}@example.com" for i in range(5)))
    run(nightly(data, tmp_path / "test", ledger, row_limit=2), transport=recording([]))
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "all", ledger), transport=recording(sent))
    assert sent == ["k2@example.com", "k3@example.com", "k4@example.com"]
    assert summary.skipped == Counter({"already_engaged": 2})


def test_a_stopped_ledger_run_resumes_and_the_next_night_sends_no_one_again(
    tmp_path: Path
) -> None:
    ledger = tmp_path / "l.sqlite"
    people = [f"k{i}@example.com" for i in range(10)]
    data = emails(tmp_path / "in.csv", *people)
    control = RunControl()
    sent: list[str] = []
    first = run(nightly(data, tmp_path / "out", ledger, max_in_flight=1),
                transport=stopping_after(3, control, sent), control=control)
    assert first.stopped is not None
    assert len(sent) == 3
    rest: list[str] = []
    resumed = run(nightly(data, tmp_path / "out", ledger, resume=True),
                  transport=recording(rest))
    assert sorted(sent + rest) == sorted(people)  # the run's own rows are not "engaged before"
    assert resumed.outcomes == Counter({"ok": 10})
    again: list[str] = []
    run(nightly(data, tmp_path / "next", ledger), transport=recording(again))
    assert again == []


@pytest.mark.parametrize("limit", [None, 3])
def test_a_run_that_stops_early_counts_the_rows_read_ahead_for_a_look_up_as_unsent(
    tmp_path: Path, limit: int | None
) -> None:
    """A stop (or a test send's limit) while a batch of rows waits for the ledger's
    answer: those rows were read, not sent, and must still be counted."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", *(f"k{i}@example.com" for i in range(50)))
    control = RunControl()
    sent: list[str] = []
    sends = limit or 20  # rows 17-32 are one batch: a stop after row 21 leaves some unread

    async def stopping(body: bytes) -> Answer:
        sent.append(json.loads(body)["email"])
        if len(sent) == sends and limit is None:
            control.stop("stopped from the page")
        return OK

    summary = run(nightly(data, tmp_path / "out", ledger, max_in_flight=1, row_limit=limit),
                  transport=stopping, control=control)
    assert len(sent) == sends
    assert summary.rows == 50
    assert summary.outcomes == Counter({"ok": sends, "unsent": 50 - sends})


def test_with_allow_duplicates_a_repeat_of_a_row_this_run_engaged_is_sent_again(
    tmp_path: Path
) -> None:
    """The ledger stops earlier runs' engagements, not the repeats a user asked for."""
    ledger = tmp_path / "l.sqlite"
    people = [f"k{i}@example.com" for i in range(1500)]
    data = emails(tmp_path / "in.csv", *people, people[0])  # far apart: looked up later
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "out", ledger, allow_duplicates=True),
                  transport=recording(sent))
    assert sent.count(people[0]) == 2
    assert summary.outcomes == Counter({"ok": 1501})


def test_a_dry_run_counts_whom_the_ledger_holds_and_leaves_no_ledger_behind(
    tmp_path: Path
) -> None:
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "a@example.com", "b@example.com", "c@example.com")
    dry = RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "dry0",
                     ledger=ledger)
    assert run(dry).outcomes == Counter({"valid": 3})
    assert not ledger.exists()  # a dry run only reads it
    run(nightly(data, tmp_path / "n1", ledger, row_limit=2), transport=recording([]))
    summary = run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "dry",
                             ledger=ledger))
    assert summary.outcomes == Counter({"valid": 1})
    assert summary.skipped == Counter({"already_engaged": 2})
    assert [r["row"] for r in read_requests(tmp_path / "dry")] == [4]


# --- a kill: what the next night makes of the rows that were on their way ---------------------


def _killed_run(tmp_path: Path, states: dict[str, str]) -> tuple[Path, Path]:
    """A ledger and a run folder as a kill leaves them: each email's journal row in the given
    state, its ledger entry ``sending`` (both committed before the request left)."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", *states)
    run(nightly(data, tmp_path / "killed", ledger), transport=recording([]))
    with closing(sqlite3.connect(tmp_path / "killed" / JOURNAL_NAME)) as db, db:
        for email, state in states.items():
            db.execute("UPDATE rows SET state = ? WHERE identifier = ?", (state, email))
        db.execute("DELETE FROM rows WHERE state = 'gone'")
    with closing(sqlite3.connect(ledger)) as db, db:
        db.execute("UPDATE entries SET state = 'sending'")
    return data, ledger


def test_the_next_night_asks_the_killed_runs_journal_what_became_of_each_row(
    tmp_path: Path
) -> None:
    data, ledger = _killed_run(tmp_path, {
        "sending@example.com": "sending",    # on its way at the kill: unknown
        "uncertain@example.com": "uncertain",  # a resume already said so
        "ok@example.com": "ok",              # answered, but the ledger's commit was cut off
        "failed@example.com": "api",         # the API refused it: no engagement
        "retry@example.com": "gone",         # to be tried again: no engagement
    })
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "next", ledger), transport=recording(sent))
    assert sorted(sent) == ["failed@example.com", "retry@example.com"]
    assert summary.outcomes == Counter({"ok": 2, "uncertain": 2})
    failed = read_csv(tmp_path / "next" / "failed.csv")
    assert [(r["email"], r["_stage"]) for r in failed] == [
        ("sending@example.com", "uncertain"), ("uncertain@example.com", "uncertain")]
    assert failed[0]["_error_text"].startswith(
        f"the run in {(tmp_path / 'killed').absolute()} was stopped at 20")
    assert failed[0]["_error_text"].endswith(
        "check in the account, and if it was not, send it again with --resend-uncertain "
        "(failed.csv with the same --ledger will do)")
    skipped = skipped_rows(tmp_path / "next")
    assert [r["email"] for r in skipped] == ["ok@example.com"]
    assert skipped[0]["_detail"].startswith("engaged by the run in ")
    # The user checked the account and says: send them.
    resent: list[str] = []
    run(nightly(data, tmp_path / "resend", ledger, resend_uncertain=True),
        transport=recording(resent))
    assert sorted(resent) == ["sending@example.com", "uncertain@example.com"]


def test_a_dry_run_asks_the_killed_runs_journal_too(tmp_path: Path) -> None:
    """Check's counts after a kill match what the next night will do: the journal's word on
    each row that was on its way, listed in the dry run's reports as that night would."""
    data, ledger = _killed_run(tmp_path, {
        "sending@example.com": "sending",
        "ok@example.com": "ok",
        "failed@example.com": "api",
        "plain@example.com": "gone",
    })
    summary = run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "dry",
                             ledger=ledger))
    assert summary.outcomes == Counter({"valid": 2, "uncertain": 1})
    assert summary.skipped == Counter({"already_engaged": 1})
    assert [r["body"]["email"] for r in read_requests(tmp_path / "dry")] == [
        "failed@example.com", "plain@example.com"]
    assert [r["email"] for r in read_csv(tmp_path / "dry" / "failed.csv")] == [
        "sending@example.com"]


def test_an_engagement_stays_one_when_its_run_folder_is_gone(tmp_path: Path) -> None:
    """An ``ok`` entry is the ledger's own word: the run's journal is not asked, nor needed
    (run folders get cleaned up; the ledger is what lasts)."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "a@example.com")
    run(nightly(data, tmp_path / "old", ledger), transport=recording([]))
    shutil.rmtree(tmp_path / "old")
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "new", ledger), transport=recording(sent))
    assert sent == []
    assert summary.skipped == Counter({"already_engaged": 1})


def test_the_log_file_tells_each_row_the_ledger_skipped(tmp_path: Path) -> None:
    ledger, log = tmp_path / "l.sqlite", tmp_path / "run.jsonl"
    data = emails(tmp_path / "in.csv", "a@example.com", "b@example.com")
    run(nightly(data, tmp_path / "n1", ledger, row_limit=1), transport=recording([]))
    run(nightly(data, tmp_path / "n2", ledger, log_file=log), transport=recording([]))
    rows = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert [(r["row"], r["outcome"], r.get("reason")) for r in rows if r["event"] == "row"] == [
        (2, "skipped", "already_engaged"), (3, "ok", None)]


def test_a_row_that_failed_without_a_whole_answer_is_uncertain_the_next_night(
    tmp_path: Path
) -> None:
    """No answer, or one that broke off: the API may have engaged the profile all the same,
    so the next night asks first (uncertain) instead of sending it again."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "timeout@example.com", "cut@example.com",
                  "refused@example.com", "ok@example.com")

    async def faulty(body: bytes) -> Answer:
        if b"timeout@" in body:
            raise Unanswered("timeout", "no answer within --timeout 30 s", maybe_sent=True)
        if b"cut@" in body:
            return Answer(200, b"", cut_off=True)
        if b"refused@" in body:
            return Answer(200, b'{"error": 404, "error_text": "no such profile"}')
        return OK

    first = run(nightly(data, tmp_path / "n1", ledger, max_attempts=1), transport=faulty)
    assert first.outcomes == Counter({"network": 1, "http": 1, "api": 1, "ok": 1})
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "n2", ledger), transport=recording(sent))
    assert sent == ["refused@example.com"]
    assert summary.outcomes == Counter({"uncertain": 2, "ok": 1})
    assert summary.skipped == Counter({"already_engaged": 1})


def test_a_run_folder_that_is_gone_leaves_its_rows_uncertain(tmp_path: Path) -> None:
    data, ledger = _killed_run(tmp_path, {"a@example.com": "ok"})
    (tmp_path / "killed" / JOURNAL_NAME).unlink()
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "next", ledger), transport=recording(sent))
    assert sent == []
    assert summary.outcomes == Counter({"uncertain": 1})


def test_a_ledger_that_lost_a_killed_runs_last_commits_gets_them_back_from_its_journal(
    tmp_path: Path
) -> None:
    """The ledger is not synced at each commit (the journal is): a power loss may take its
    last commits, but the run is still marked open there, so the next opener replays it."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "a@example.com", "b@example.com", "c@example.com")

    async def gone(body: bytes) -> Answer:
        if b"c@" in body:
            return Answer(200, b'{"error": 404, "error_text": "no such profile"}')
        return OK

    run(nightly(data, tmp_path / "lost", ledger), transport=gone)
    with closing(sqlite3.connect(ledger)) as db, db:
        assert db.execute("SELECT open FROM runs").fetchall() == [(0,)]  # closed cleanly
        db.execute("DELETE FROM entries")  # what a power loss may leave
        db.execute("UPDATE runs SET open = 1")
        db.execute("INSERT INTO entries VALUES (1, 'email', 'c@example.com', 'sending', 1, 4, 0)")
    sent: list[str] = []
    summary = run(nightly(data, tmp_path / "next", ledger), transport=recording(sent))
    assert sent == ["c@example.com"]  # it failed there: its stale claim is dropped
    assert summary.skipped == Counter({"already_engaged": 2})
    with closing(sqlite3.connect(ledger)) as db:
        assert db.execute("SELECT open FROM runs ORDER BY id").fetchall() == [(0,), (0,)]


def test_a_replay_restores_each_kind_of_row_of_the_open_runs_journal(tmp_path: Path) -> None:
    """What a replay makes of the journal: engaged when it was, at the journal's time; on its
    way, or a failure that may have engaged, as unknown; a plain failure as nothing. Matched
    by a custom field, whose name makes the kind."""
    ledger = tmp_path / "l.sqlite"
    data = write_csv(tmp_path / "in.csv", "field_value\nC1\nC2\nC3\nC4\n")
    sent: list[str] = []
    options = {"matching": Matching.CUSTOM, "field_name": "CRM_ID"}
    run(nightly(data, tmp_path / "killed", ledger, **options),
        transport=recording(sent, "field_value"))
    with closing(sqlite3.connect(tmp_path / "killed" / JOURNAL_NAME)) as db, db:
        db.execute("UPDATE rows SET completed_at = '2026-01-02T03:04:05.000+00:00' "
                   "WHERE row = 2")
        db.execute("UPDATE rows SET state = 'sending' WHERE row = 3")
        db.execute("UPDATE rows SET state = 'network', error = 'timeout' WHERE row = 4")
        db.execute("UPDATE rows SET state = 'api', error = 'api_404' WHERE row = 5")
    with closing(sqlite3.connect(ledger)) as db, db:
        db.execute("DELETE FROM entries")  # what a power loss may leave
        db.execute("UPDATE runs SET open = 1")
    again: list[str] = []
    summary = run(nightly(data, tmp_path / "next", ledger, **options),
                  transport=recording(again, "field_value"))
    assert again == ["C4"]
    assert summary.outcomes == Counter({"uncertain": 2, "ok": 1})
    assert skipped_rows(tmp_path / "next")[0]["_detail"] == (
        f"engaged by the run in {(tmp_path / 'killed').absolute()} at 2026-01-02T03:04:05+00:00")
    with closing(sqlite3.connect(ledger)) as db:
        assert db.execute("SELECT DISTINCT kind FROM entries").fetchall() == [
            ("custom:CRM_ID",)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_points_then_the_next_night_engages_no_one_twice(
    tmp_path: Path, seed: int
) -> None:
    """Acceptance 2: real processes killed mid-run, judged by the mock server's counts."""
    rows, concurrency = 300, 8
    data = emails(tmp_path / "in.csv", *(f"k{i}@example.com" for i in range(rows)))
    ledger = tmp_path / "l.sqlite"
    rnd = random.Random(seed)

    def night(out: Path, url: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "batch_engage", "run", str(data), "-w", "1",
             "--api-url", url, "--rate", "200", "--concurrency", str(concurrency),
             "--ledger", str(ledger), "--out", str(out), "-q"],
            env={**os.environ, "BATCH_ENGAGE_TOKEN": MOCK_TOKEN},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=20)) as mock:
        kills = 0
        for night_number in range(3):
            process = night(tmp_path / f"night{night_number}", mock.url)
            at = mock.stats.received + rnd.randint(1, rows // 3)
            deadline = time.monotonic() + 30
            while mock.stats.received < at and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.001)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
            kills += process.returncode == -signal.SIGKILL
        final = night(tmp_path / "final", mock.url)
        _, stderr = final.communicate(timeout=60)
        accepted = Counter(mock.stats.accepted)
    assert kills >= 1
    assert max(accepted.values()) == 1, "a profile was engaged twice"
    assert final.returncode in (ExitStatus.SUCCESS, ExitStatus.ROWS_FAILED), stderr
    out = tmp_path / "final"
    success = read_csv(out / "success.csv")
    failed = read_csv(out / "failed.csv")
    skipped = skipped_rows(out)
    numbers = ([int(r["row"]) for r in success] + [int(r["_row"]) for r in failed]
               + [int(r["_row"]) for r in skipped])
    assert sorted(numbers) == list(range(2, rows + 2))  # every row once
    uncertain = {r["email"] for r in failed if r["_stage"] == "uncertain"}
    assert len(uncertain) == len(failed)
    assert len(uncertain) <= concurrency * kills
    # Rows the final night sent were engaged by no earlier night; the rest were, or may be.
    assert all(accepted[r["email"]] == 1 for r in success)
    assert {r["email"] for r in skipped} | uncertain | {r["email"] for r in success} == set(
        accepted) | uncertain


def test_a_request_not_acted_on_frees_its_claim_and_its_retry_claims_again(
    tmp_path: Path
) -> None:
    """A 503 (``forget``): the claim is dropped in one commit and made again by the retry's
    ``sending`` in a later one; the row ends engaged."""
    path = tmp_path / "l.sqlite"
    a = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "a")
    a.expect(2, "x@example.com", None)
    assert a.commit([(2, "sending", "")]) == {}
    a.commit([(2, None, "")])
    assert lookup(a, ["x@example.com"]) == {}
    assert a.commit([(2, "sending", "")]) == {}
    a.commit([(2, "ok", "")])
    entry = lookup(a, ["x@example.com"])["x@example.com"]
    assert (entry.state, entry.row) == ("ok", 2)
    a.close()


def engaged_by_another_run(path: Path, run: Path, key: str) -> None:
    other = Ledger(path, workflow_id=1, kind="email", days=None, run=run)
    other.expect(9, key, None)
    other.commit([(9, "sending", "")])
    other.commit([(9, "ok", "")])
    other.close()


def test_a_claim_over_an_entry_seen_at_the_look_up_replaces_it_as_on_its_way(
    tmp_path: Path
) -> None:
    """A claim over the entry its look-up saw (in a run: an engagement older than
    --ledger-days) goes the careful way, as an entry was there; a failure frees it again."""
    path = tmp_path / "l.sqlite"
    engaged_by_another_run(path, tmp_path / "b", "x@example.com")
    a = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "a")
    seen = lookup(a, ["x@example.com"])["x@example.com"]
    a.expect(2, "x@example.com", seen)
    assert a.commit([(2, "sending", "")]) == {}
    entry = lookup(a, ["x@example.com"])["x@example.com"]
    assert (entry.state, entry.run, entry.row) == ("sending", tmp_path / "a", 2)
    a.commit([(2, "api", "")])
    assert lookup(a, ["x@example.com"]) == {}
    a.close()


class _FailingWrites:
    """The ledger's commit connection, with its writes failing (a full disk)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        self._db.close()


def test_a_run_whose_commit_failed_is_left_open_for_the_next_run_to_replay(
    tmp_path: Path
) -> None:
    path = tmp_path / "l.sqlite"
    a = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "a")
    a.expect(2, "x@example.com", None)
    assert a.commit([(2, "sending", "")]) == {}  # opens the commit connection
    assert a._commit_db is not None
    a._commit_db = _FailingWrites(a._commit_db)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        a.commit([(2, "ok", "")])
    a.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT open FROM runs WHERE folder = ?",
                          (str(tmp_path / "a"),)).fetchone() == (1,)


def test_a_claim_whose_write_fails_while_judged_rolls_back_and_raises_that_failure(
    tmp_path: Path
) -> None:
    path = tmp_path / "l.sqlite"
    engaged_by_another_run(path, tmp_path / "b", "x@example.com")
    a = Ledger(path, workflow_id=1, kind="email", days=1, run=tmp_path / "a")
    a.expect(3, "y@example.com", None)
    assert a.commit([(3, "sending", "")]) == {}  # opens the commit connection
    assert a._commit_db is not None
    real = a._commit_db
    a._commit_db = _FailingWrites(real)  # type: ignore[assignment]
    a.expect(2, "x@example.com", lookup(a, ["x@example.com"])["x@example.com"])
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        a.commit([(2, "sending", "")])  # held at its look-up: judged under the write lock
    assert not real.in_transaction
    a.close()


def test_claims_on_profiles_nobody_held_take_no_write_lock_before_their_one_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a claim on a profile some entry held at its look-up is judged one by one, under
    the write lock that two runs at once contend for."""
    path = tmp_path / "l.sqlite"
    b = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "b")
    b.expect(9, "z@example.com", None)
    b.commit([(9, "sending", "")])
    b.close()  # killed, say: its claim stays, its journal is gone
    judged: list[list[int]] = []
    claim = Ledger._claim

    def judging(ledger: Ledger, db: sqlite3.Connection,
                claims: list[tuple[int, str, Any]], at: float) -> dict[int, str]:
        judged.append([row for row, _, _ in claims])
        return claim(ledger, db, claims, at)

    monkeypatch.setattr(Ledger, "_claim", judging)
    a = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "a")
    a.expect(2, "x@example.com", None)
    a.expect(3, "y@example.com", None)
    assert a.commit([(2, "sending", ""), (3, "sending", "")]) == {}
    assert judged == []
    a.expect(4, "z@example.com", lookup(a, ["z@example.com"])["z@example.com"])
    assert a.commit([(4, "sending", "")]) == {}  # over b's claim, as seen at the look-up
    assert judged == [[4]]
    a.close()


def test_a_commit_waits_for_another_run_s_lock_only_as_long_as_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long enough for another run's commit, not for ever: past it, the commit fails."""
    monkeypatch.setattr(ledger_module, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "l.sqlite"
    a = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "a")
    a.expect(2, "x@example.com", None)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another run, writing
    released = threading.Timer(2.0, other.execute, ("COMMIT",))
    released.start()
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            a.commit([(2, "sending", "")])
    finally:
        released.join()
        other.close()
        a.close()


# --- two runs at once on one ledger -----------------------------------------------------------


def test_a_claim_another_run_won_meanwhile_is_refused_and_names_that_run(
    tmp_path: Path
) -> None:
    path = tmp_path / "l.sqlite"
    a = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "a")
    b = Ledger(path, workflow_id=1, kind="email", days=None, run=tmp_path / "b")
    assert lookup(a, ["x@example.com"]) == lookup(b, ["x@example.com"]) == {}
    a.expect(2, "x@example.com", None)
    b.expect(5, "x@example.com", None)
    assert b.commit([(5, "sending", "")]) == {}
    refused = a.commit([(2, "sending", "")])
    assert list(refused) == [2]
    assert refused[2].startswith(
        f"the run in {tmp_path / 'b'} was sending to this profile at the same time")
    # b's failure frees the profile; a claim made on what a saw then still loses to a change.
    b.commit([(5, "api", "")])
    assert lookup(a, ["x@example.com"]) == {}
    a.expect(2, "x@example.com", None)
    assert a.commit([(2, "sending", "")]) == {}
    a.commit([(2, "ok", "")])
    entry = lookup(b, ["x@example.com"])["x@example.com"]
    assert (entry.state, entry.run) == ("ok", tmp_path / "a")
    a.close()
    b.close()


def test_a_refused_claim_ends_the_row_in_skipped_csv_without_a_request(tmp_path: Path) -> None:
    """Another run claims the profile between this run's look-up and its claim."""
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "a@example.com", "b@example.com")
    other = Ledger(ledger, workflow_id=1, kind="email", days=None, run=tmp_path / "other")
    original = Ledger.writes
    other_claimed: list[bool] = []

    def other_claims_first(ledger: Ledger, changes: Iterable[tuple[int, str | None, str]]
                           ) -> Writes | None:
        changes = list(changes)
        if ledger is not other and (3, "sending", "") in changes and not other_claimed:
            other_claimed.append(True)
            other.expect(9, "b@example.com", None)
            assert other.commit([(9, "sending", "")]) == {}
        return original(ledger, changes)

    sent: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Ledger, "writes", other_claims_first)
        summary = run(nightly(data, tmp_path / "out", ledger, max_in_flight=1),
                      transport=recording(sent))
    other.close()
    assert sent == ["a@example.com"]
    assert summary.outcomes == Counter({"ok": 1})
    assert summary.skipped == Counter({"already_engaged": 1})
    skipped = skipped_rows(tmp_path / "out")
    assert skipped[0]["_detail"].startswith(
        f"the run in {tmp_path / 'other'} was sending to this profile at the same time")


@pytest.mark.slow
def test_two_processes_at_once_on_one_ledger_engage_each_profile_once(tmp_path: Path) -> None:
    rows = 400
    data = emails(tmp_path / "in.csv", *(f"k{i}@example.com" for i in range(rows)))
    ledger = tmp_path / "l.sqlite"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=5)) as mock:
        processes = [subprocess.Popen(
            [sys.executable, "-m", "batch_engage", "run", str(data), "-w", "1", "--api-url",
             mock.url, "--rate", "0", "--concurrency", "8", "--ledger", str(ledger),
             "--out", str(tmp_path / name), "-q"],
            env={**os.environ, "BATCH_ENGAGE_TOKEN": MOCK_TOKEN},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "ab"]
        results = [p.communicate(timeout=120) for p in processes]
        accepted = Counter(mock.stats.accepted)
    assert [p.returncode for p in processes] == [0, 0], results
    assert len(accepted) == rows
    assert max(accepted.values()) == 1
    sent = [len(read_csv(tmp_path / n / "success.csv")) for n in "ab"]
    skipped = [len(skipped_rows(tmp_path / n)) for n in "ab"]
    assert sum(sent) == rows
    assert [s + k for s, k in zip(sent, skipped, strict=True)] == [rows, rows]


# --- guards -----------------------------------------------------------------------------------


def test_min_rows_refuses_a_header_only_export_and_max_rows_a_runaway_one(
    invoke: CliRun, tmp_path: Path
) -> None:
    empty = write_csv(tmp_path / "empty.csv", "email\n")
    big = emails(tmp_path / "big.csv", *(f"k{i}@example.com" for i in range(5000)))
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        low = invoke("run", empty, "-w", "1", "--min-rows", "1", "--out", tmp_path / "a",
                     env=token_env(mock.url))
        high = invoke("run", big, "-w", "1", "--max-rows", "1000", "--out", tmp_path / "b",
                      env=token_env(mock.url))
        assert mock.stats.received == 0
    assert low.exit_code == high.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert "empty.csv has 0 data rows, fewer than --min-rows 1, so nothing was sent" in (
        low.stderr)
    assert ("big.csv has more data rows than --max-rows 1,000 allows (it has at least 1,001; "
            "about 5,000), so nothing was sent") in high.stderr
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("rows", "low", "high", "refused"), [
    (3, 3, 3, False), (3, 4, None, True), (3, None, 2, True), (3, 0, 3, False),
])
def test_the_limits_are_inclusive_and_blank_lines_are_not_rows(
    tmp_path: Path, rows: int, low: int | None, high: int | None, refused: bool
) -> None:
    # Blank lines make the quick count too high: the rows are then counted for real.
    data = write_csv(tmp_path / "in.csv", "email\n" + "".join(
        f"k{i}@example.com\n\n\n" for i in range(rows)))
    options = RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out",
                         min_rows=low, max_rows=high)
    if refused:
        with pytest.raises(Exception, match="so nothing was sent"):
            run(options)
    else:
        assert run(options).outcomes == Counter({"valid": rows})


def test_a_workbook_is_counted_by_its_rows_not_its_dimension(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["email"])
    for i in range(30):
        sheet.append([f"k{i}@example.com"])
    path = tmp_path / "in.xlsx"
    book.save(path)
    with pytest.raises(Exception, match="at least 11; about 30"):
        run(RunOptions(input=path, workflow_id=1, dry_run=True, out=tmp_path / "a",
                       max_rows=10))
    assert run(RunOptions(input=path, workflow_id=1, dry_run=True, out=tmp_path / "b",
                          max_rows=30)).outcomes == Counter({"valid": 30})


# --- batch-engage ledger ----------------------------------------------------------------------


def test_the_ledger_command_shows_counts_per_workflow_and_forgets_one(
    invoke: CliRun, tmp_path: Path
) -> None:
    ledger = tmp_path / "l.sqlite"
    data = emails(tmp_path / "in.csv", "a@example.com", "b@example.com", "c@example.com")
    run(nightly(data, tmp_path / "w1", ledger), transport=recording([]))
    run(nightly(data, tmp_path / "w2", ledger, workflow_id=2, row_limit=1),
        transport=recording([]))
    counts = describe(ledger)
    assert [(c.workflow_id, c.kind, c.engaged, c.uncertain, c.latest_run) for c in counts] == [
        (1, "email", 3, 0, (tmp_path / "w1").absolute()),
        (2, "email", 1, 0, (tmp_path / "w2").absolute())]
    shown = invoke("ledger", ledger)
    assert shown.exit_code == 0, shown.output
    assert str((tmp_path / "w2").absolute()) in shown.stdout
    gone = invoke("ledger", ledger, "--forget", "-w", "1")
    assert gone.exit_code == 0, gone.output
    assert "Forgot 3 engagements of workflow 1" in gone.stdout
    assert forget(ledger, 1) == 0
    sent: list[str] = []
    run(nightly(data, tmp_path / "again", ledger), transport=recording(sent))
    assert len(sent) == 3
    missing = invoke("ledger", tmp_path / "nope.sqlite")
    assert missing.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert missing.stderr == (f"Error: there is no ledger at {tmp_path / 'nope.sqlite'}; check "
                              "the path (a run creates it with --ledger)\n")


def test_a_file_that_is_not_a_ledger_is_a_usage_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.sqlite", "not a database at all, just text\n" * 20)
    data = emails(tmp_path / "in.csv", "a@example.com")
    with pytest.raises(UsageError) as caught:
        run(nightly(data, tmp_path / "out", path), transport=recording([]))
    assert str(caught.value) == (
        f"--ledger {path} cannot be used as a ledger (file is not a database); give the path "
        "of a ledger file, or a new file name to start one")


@pytest.mark.parametrize("counting", [False, True], ids=["send", "dry run"])
def test_look_ups_are_batched_and_the_batches_grow_from_one_row(tmp_path: Path,
                                                                counting: bool) -> None:
    """The first request does not wait for a batch of rows to be read."""
    ledger = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=None,
                    run=tmp_path / "a")
    ledger.expect(7, "k7@example.com", None)
    ledger.commit([(7, "sending", "")])
    sizes: list[int] = []
    ask = ledger.ask

    def sized(identifiers: list[str | None], *, counting: bool) -> Any:
        sizes.append(len(identifiers))
        return ask(identifiers, counting=counting)

    ledger.ask = sized  # type: ignore[method-assign]
    items = iter([(i, _request(i)) for i in range(2000)])
    out = list(ledger_module.LookedUp(items, ledger, counting=counting))
    ledger.close()
    assert [i for i, _, _ in out] == list(range(2000))
    assert [i for i, _, entry in out if entry is not None] == [7]
    assert sizes[:4] == [1, 2, 4, 8]
    assert max(sizes) == ledger_module.LOOKUP_BATCH
    assert sum(sizes) == 2000


@pytest.mark.parametrize("counting", [False, True], ids=["send", "dry run"])
def test_look_ups_run_a_batch_ahead_and_every_row_read_is_handed_out_or_ahead(
    tmp_path: Path, counting: bool
) -> None:
    """The next batch is on its way while one is handed out (a dry run's looker has time to
    answer it), and a run that stops counts every row read and not handed out as unsent."""
    ledger = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=None,
                    run=tmp_path / "a")
    read: list[int] = []

    def source() -> Iterator[tuple[int, Request]]:
        for i in range(100):
            read.append(i)
            yield i, _request(i)

    rows = ledger_module.LookedUp(source(), ledger, counting=counting)
    handing = iter(rows)
    handed = [next(handing)[0] for _ in range(5)]
    ahead = rows.ahead()
    ledger.close()
    assert handed == [0, 1, 2, 3, 4]
    assert len(read) == 15  # batches of 1, 2, 4 handed out or ready, and 8 on its way
    assert handed + ahead == read


def _request(i: int) -> Request:
    return Request(i + 2, f"k{i}@example.com", b"{}", f"k{i}@example.com")


def test_an_entry_exactly_ledger_days_old_still_counts(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The window includes its edge, in a run's look-up and in a dry run's count alike."""
    monkeypatch.setattr(ledger_module, "now", lambda: 1_000_000.0)
    first = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=1,
                   run=tmp_path / "a")
    first.expect(2, "x@example.com", None)
    first.commit([(2, "sending", "")])
    first.commit([(2, "ok", "")])
    first.close()
    monkeypatch.setattr(ledger_module, "now", lambda: 1_000_000.0 + 86_400)
    later = Ledger(tmp_path / "l.sqlite", workflow_id=1, kind="email", days=1, run=None)
    try:
        assert lookup(later, ["x@example.com"])["x@example.com"].counts
        [(_, _, counted)] = ledger_module.LookedUp(
            iter([(2, Request(2, "x@example.com", b"{}", "x@example.com"))]), later,
            counting=True)
        assert counted is ledger_module.COUNTED
    finally:
        later.close()
