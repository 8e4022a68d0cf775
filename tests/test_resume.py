"""Crash-safe runs: kills, Ctrl-C and SIGTERM, --resume, and one run per folder.

The kill tests start real `batch-engage run` processes against the real mock server and
judge them by the server's own count of what it accepted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from batch_engage import RunOptions, Secret, run
from batch_engage.journal import JOURNAL_NAME, RunLock
from batch_engage.mock_server import Fault, MockConfig, MockStats, RunningMock, serve_in_thread
from batch_engage.sender import Answer
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, CliRun, read_csv, read_summary, token_env, write_csv

ROWS = 300
CONCURRENCY = 8


def emails(tmp_path: Path, rows: int = ROWS) -> Path:
    # Row 5 is invalid on purpose: it must stay in failed.csv once, whatever happens.
    cells = [f"k{i}@example.com" if i != 3 else "not-an-email" for i in range(rows)]
    return write_csv(tmp_path / "in.csv", "email\n" + "".join(c + "\n" for c in cells))


def start(data: Path, out: Path, mock: RunningMock, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batch_engage", "run", str(data), "-w", "1", "--api-url",
         mock.url, "--rate", "200", "--concurrency", str(CONCURRENCY), "--out", str(out),
         *extra],
        env={**os.environ, "BATCH_ENGAGE_TOKEN": MOCK_TOKEN},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop_at(process: subprocess.Popen[str], stats: MockStats, received: int,
            signum: int) -> tuple[int, str, str]:
    """Send ``signum`` once the server has received ``received`` requests (or the run ended)."""
    deadline = time.monotonic() + 30
    while stats.received < received and process.poll() is None:
        assert time.monotonic() < deadline, "the run never got that far"
        time.sleep(0.001)
    if process.poll() is None:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def check_every_row_once(out: Path, stats: MockStats, rows: int = ROWS,
                         resent: frozenset[str] = frozenset()) -> list[str]:
    """Reports hold every row once; the server engaged each succeeded row exactly once
    (``resent``: uncertain rows sent again on purpose, which may make it twice).

    Returns the uncertain rows' identifiers: the server may have engaged those 0 or 1 times.
    """
    success = read_csv(out / "success.csv")
    failed = read_csv(out / "failed.csv")
    numbers = [int(r["row"]) for r in success] + [int(r["_row"]) for r in failed]
    assert sorted(numbers) == list(range(2, rows + 2))
    uncertain = [r["email"] for r in failed if r["_stage"] == "uncertain"]
    assert [r["email"] for r in failed if r["_stage"] not in ("uncertain",)] == ["not-an-email"]
    for row in success:
        assert stats.accepted[row["email"]] == 1 or (
            row["email"] in resent and stats.accepted[row["email"]] == 2), row
    assert all(stats.accepted[e] <= 1 for e in uncertain)
    engaged = {r["email"] for r in success} | set(uncertain)
    assert set(stats.accepted) <= engaged
    return uncertain


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_points_then_resume_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    # The first rows, the last rows, and two points in between, in an order of the seed's.
    points = [1, ROWS - 3, rnd.randint(2, ROWS - 4), rnd.randint(2, ROWS - 4)]
    rnd.shuffle(points)
    data, out = emails(tmp_path), tmp_path / "out"
    kills = 0
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=20)) as mock:
        code, _, _ = stop_at(start(data, out, mock), mock.stats, points[0], signal.SIGKILL)
        kills += code == -signal.SIGKILL
        for point in points[1:]:
            already = mock.stats.received
            code, _, _ = stop_at(start(data, out, mock, "--resume"), mock.stats,
                                   already + point // 4, signal.SIGKILL)
            kills += code == -signal.SIGKILL
        finish = start(data, out, mock, "--resume")
        stdout, _ = finish.communicate(timeout=60)
        code = finish.returncode
        uncertain = check_every_row_once(out, mock.stats)
    assert code == ExitStatus.ROWS_FAILED, stdout
    assert kills >= 1
    assert len(uncertain) <= CONCURRENCY * kills
    summary = read_summary(out)
    assert summary["rows"] == ROWS
    assert "unsent" not in summary["outcomes"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly_and_resume_finishes(
    tmp_path: Path, signum: int
) -> None:
    data, out = emails(tmp_path), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=20)) as mock:
        code, stdout, err = stop_at(start(data, out, mock), mock.stats, 100, signum)
        assert code == ExitStatus.STOPPED, stdout + err
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        assert f"Stopped: interrupted ({name})" in err
        resume = f"batch-engage run {data} --out {out} --resume"
        assert f"To send the rest: {resume}" in err
        summary = read_summary(out)
        assert summary["outcomes"].get("uncertain", 0) == 0
        assert summary["outcomes"]["unsent"] > 0
        first_pass = summary["requests_sent"]

        finish = start(data, out, mock, "--resume")
        stdout, err = finish.communicate(timeout=60)
        assert finish.returncode == ExitStatus.ROWS_FAILED, stdout + err  # row 5
        assert check_every_row_once(out, mock.stats) == []
    summary = read_summary(out)
    assert summary["requests_sent"] == mock.stats.received > first_pass


def test_a_second_ctrl_c_cuts_requests_off_and_they_become_uncertain(tmp_path: Path) -> None:
    data, out = emails(tmp_path), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=200)) as mock:
        process = start(data, out, mock, "--rate", "0")
        while mock.stats.received < CONCURRENCY:
            time.sleep(0.001)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == ExitStatus.STOPPED, err
        uncertain = [r["email"] for r in read_csv(out / "failed.csv")
                     if r["_stage"] == "uncertain"]
        assert 1 <= len(uncertain) <= CONCURRENCY

        # Left alone on resume: reported again, not sent.
        again = start(data, out, mock, "--resume")
        again.communicate(timeout=60)
        assert sorted(check_every_row_once(out, mock.stats)) == sorted(uncertain)

        # Sent when asked for.
        sent = start(data, out, mock, "--resume", "--resend-uncertain")
        sent.communicate(timeout=60)
        assert sent.returncode == ExitStatus.ROWS_FAILED
        # The cut-off requests had reached this server, so resending engages them twice:
        # the user's call, which is why it takes --resend-uncertain.
        assert check_every_row_once(out, mock.stats, resent=frozenset(uncertain)) == []


def run_once(invoke: CliRun, data: Path, out: Path, mock: RunningMock, *extra: str,
             token: str = MOCK_TOKEN) -> tuple[int, str, str]:
    result = invoke("run", data, "-w", "1", "--rate", "0", "--out", out, *extra,
                    env=token_env(mock.url, token))
    return result.exit_code, result.stdout, result.stderr


def test_a_rejected_token_then_resume_with_the_right_one(
    invoke: CliRun, tmp_path: Path
) -> None:
    data, out = emails(tmp_path, 40), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        code, _, err = run_once(invoke, data, out, mock, token="wrong-one")
        assert code == ExitStatus.STOPPED
        assert f"To send the rest: batch-engage run {data} --out {out} --resume" in err
        resumed = invoke("run", data, "--out", out, "--resume", env=token_env(mock.url))
        assert resumed.exit_code == ExitStatus.ROWS_FAILED
        check_every_row_once(out, mock.stats, rows=40)
    assert read_summary(out)["outcomes"] == {"ok": 39, "validation": 1}


def test_resuming_a_finished_run_sends_nothing_and_says_so(
    invoke: CliRun, tmp_path: Path
) -> None:
    data, out = emails(tmp_path, 20), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        assert run_once(invoke, data, out, mock)[0] == ExitStatus.ROWS_FAILED
        before = report_lines(out)
        received = mock.stats.received
        code, stdout, _ = run_once(invoke, data, out, mock, "--resume")
        assert mock.stats.received == received
    assert code == ExitStatus.ROWS_FAILED
    assert "Nothing was left to send: every row already had its result." in stdout
    assert report_lines(out) == before


def report_lines(out: Path) -> tuple[list[bytes], list[bytes]]:
    """success.csv's and failed.csv's lines, sorted: a run writes its rows as the answers
    come, which need not be row order; a resume writes them again in row order."""
    return (sorted((out / "success.csv").read_bytes().splitlines(keepends=True)),
            sorted((out / "failed.csv").read_bytes().splitlines(keepends=True)))


def test_resume_refuses_an_edited_file_and_changed_options(
    invoke: CliRun, tmp_path: Path
) -> None:
    data, out = emails(tmp_path, 20), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        run_once(invoke, data, out, mock)
        received = mock.stats.received
        data.write_text(data.read_text("utf-8") + "new@example.com\n", "utf-8")
        code, _, err = run_once(invoke, data, out, mock, "--resume")
        assert code == ExitStatus.USAGE_OR_INPUT_ERROR
        assert "is not the file this run started with" in err

        # The same size, one address fixed: only the content tells it apart.
        emails(tmp_path, 20)
        data.write_text(data.read_text("utf-8").replace("k7@", "x7@"), "utf-8")
        code, _, err = run_once(invoke, data, out, mock, "--resume")
        assert code == ExitStatus.USAGE_OR_INPUT_ERROR
        assert "is not the file this run started with" in err

        emails(tmp_path, 20)  # the original again
        result = invoke("run", data, "--out", out, "--resume", "--matching", "profile_id",
                        env=token_env(mock.url))
        assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
        assert "--matching was 'email', now 'profile_id'" in result.stderr
        assert "only --rate, --concurrency, --max-attempts, --timeout and -q" in result.stderr

        result = invoke("run", data, "--out", tmp_path / "elsewhere", "--resume",
                        env=token_env(mock.url))
        assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
        assert "there is no run to resume in" in result.stderr
        assert mock.stats.received == received


def test_one_run_per_folder(invoke: CliRun, tmp_path: Path) -> None:
    """While one process holds the folder, neither a new run nor a resume may use it."""
    data, out = emails(tmp_path, 20), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        # A stopped run to resume: the token was refused.
        assert run_once(invoke, data, out, mock, token="wrong")[0] == ExitStatus.STOPPED
        journal = (out / JOURNAL_NAME).read_bytes()
        received = mock.stats.received
        with RunLock(out):
            for extra in [(), ("--resume",)]:
                code, _, err = run_once(invoke, data, out, mock, *extra)
                assert code == ExitStatus.USAGE_OR_INPUT_ERROR
                assert f"process {os.getpid()}) is using the run folder {out}" in err
        assert mock.stats.received == received
        assert (out / JOURNAL_NAME).read_bytes() == journal
        # Once it is let go, the resume goes ahead.
        assert run_once(invoke, data, out, mock, "--resume")[0] == ExitStatus.ROWS_FAILED


def test_two_processes_on_one_folder_the_second_is_refused(tmp_path: Path) -> None:
    data, out = emails(tmp_path), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN, latency_ms=20)) as mock:
        first = start(data, out, mock, "--rate", "30")  # 10 s: the others start meanwhile
        try:
            while mock.stats.received < 10:
                time.sleep(0.001)
            for extra in [(), ("--resume",)]:
                second = start(data, out, mock, *extra)
                _, err = second.communicate(timeout=30)
                assert second.returncode == ExitStatus.USAGE_OR_INPUT_ERROR, err
                assert "is using the run folder" in err
        finally:
            first.communicate(timeout=60)
        assert first.returncode == ExitStatus.ROWS_FAILED
        assert check_every_row_once(out, mock.stats) == []
    assert Counter(mock.stats.accepted.values()) == {1: ROWS - 1}


def test_each_row_is_on_disk_as_sending_before_its_request_leaves(tmp_path: Path) -> None:
    """The transport looks into the journal (a separate connection, as after a kill)."""
    out = tmp_path / "out"
    seen: list[tuple[int, str]] = []

    async def check(body: bytes) -> Answer:
        email = json.loads(body)["email"]
        with closing(sqlite3.connect(out / JOURNAL_NAME)) as db:
            seen.append(db.execute("SELECT row, state FROM rows WHERE identifier = ?",
                                   (email,)).fetchone())
        return Answer(200, b'{"error": 0, "error_text": "ok"}')

    options = RunOptions(input=emails(tmp_path, 50), workflow_id=1,
                         api_url="http://unused.invalid", token=Secret("t"),
                         rate_per_second=0, max_in_flight=4, out=out)
    run(options, transport=check)
    assert len(seen) == 49
    assert {state for _, state in seen} == {"sending"}
    with closing(sqlite3.connect(out / JOURNAL_NAME)) as db:
        assert dict(db.execute("SELECT state, count(*) FROM rows GROUP BY state")) == {"ok": 49}


def test_resume_never_resends_rows_that_ended_with_an_answer_or_without_one(
    invoke: CliRun, tmp_path: Path
) -> None:
    """Rows that ended ``api``, ``http`` or ``network`` are final: the API may have acted on
    them (a cut-off or unreadable answer, a dropped connection), so a resume reports them
    again and sends nothing."""
    faults = {1: Fault.API_ERROR, 2: Fault.TRUNCATED, 3: Fault.CUT_OFF, 4: Fault.DROP,
              5: Fault.SERVER_ERROR}
    data, out = emails(tmp_path, 10), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN), script=faults.get) as mock:
        # One at a time and one try each, so request N is row N's (row 5 is invalid).
        code, _, _ = run_once(invoke, data, out, mock, "--concurrency", "1",
                              "--max-attempts", "1")
        assert code == ExitStatus.ROWS_FAILED
        ended = {r["email"]: (r["_stage"], r["_error"]) for r in read_csv(out / "failed.csv")}
        assert ended == {
            "k0@example.com": ("api", "api_440"),
            "k1@example.com": ("http", "unreadable_answer"),
            "k2@example.com": ("http", "answer_cut_off"),
            "not-an-email": ("validation", "invalid_email"),
            "k4@example.com": ("network", "disconnected"),
            "k5@example.com": ("http", "http_503"),
        }
        received = mock.stats.received
        before = sorted(read_csv(out / "failed.csv"), key=lambda r: int(r["_row"]))
        code, stdout, _ = run_once(invoke, data, out, mock, "--resume")
        assert mock.stats.received == received
    assert code == ExitStatus.ROWS_FAILED
    assert "Nothing was left to send" in stdout
    assert read_csv(out / "failed.csv") == before  # the same rows, now in row order


def test_a_kill_while_a_retry_is_on_its_way_leaves_that_row_uncertain(tmp_path: Path) -> None:
    """Each try is marked ``sending`` before it leaves, not just the first: the API may act
    on a retry, and a resume after a kill must not send it a third time."""
    data, out = emails(tmp_path, 20), tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN),
                         script=lambda n: Fault.SERVER_ERROR if n == 1 else None) as mock:
        process = start(data, out, mock, "--concurrency", "1", "--rate", "0")

        def kill_at_the_retry(body: dict[str, object]) -> None:
            if body["email"] == "k0@example.com":
                os.kill(process.pid, signal.SIGKILL)

        # Row 2's first try gets 503. While it waits to retry, the next rows are sent, and
        # their marks put on disk that row 2 is not on its way. Its retry is engaged, then
        # the run is killed before the answer reaches it.
        mock.server.on_accept = kill_at_the_retry
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
        mock.server.on_accept = None
        finish = start(data, out, mock, "--resume")
        _, err = finish.communicate(timeout=60)
        assert finish.returncode == ExitStatus.ROWS_FAILED, err
        assert check_every_row_once(out, mock.stats, rows=20) == ["k0@example.com"]
    assert mock.stats.accepted["k0@example.com"] == 1
