"""The fault matrix: the real mock server misbehaves on purpose, request by request.

For each fault: every row ends in exactly one report with the right stage and error, and the
server's own count shows no profile engaged twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batch_engage.mock_server import Fault, MockConfig, MockStats, Script, serve_in_thread
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, CliRun, read_csv, read_summary, token_env, write_csv

ROWS = 20


@dataclass
class Outcome:
    code: int
    output: str
    success: list[dict[str, str]]
    failed: list[dict[str, str]]
    summary: dict[str, Any]
    stats: MockStats


def first(n: int, fault: Fault) -> Script:
    """The first ``n`` requests meet ``fault``."""
    return lambda number: fault if number <= n else None


def run_against(invoke: CliRun, tmp_path: Path, script: Script | None, *args: str,
                rows: int = ROWS, outage: tuple[int, float] | None = None) -> Outcome:
    data = write_csv(tmp_path / "in.csv", "email\n" + "".join(
        f"f{i}@example.com\n" for i in range(rows)))
    out = tmp_path / "out"
    config = MockConfig(token=MOCK_TOKEN, slow_seconds=1.5)
    with serve_in_thread(config, script=script) as mock:
        if outage is not None:
            at, seconds = outage
            def script_with_outage(number: int) -> Fault | None:
                if number == at:
                    mock.outage(seconds)
                return None
            mock.server.script = script_with_outage
        result = invoke("run", data, "-w", "1", "--rate", "0", "--concurrency", "4",
                        "--out", out, *args, env=token_env(mock.url))
    outcome = Outcome(result.exit_code, result.stdout + result.stderr,
                      read_csv(out / "success.csv"), read_csv(out / "failed.csv"),
                      read_summary(out), mock.stats)
    numbers = [int(r["row"]) for r in outcome.success] + [int(r["_row"]) for r in outcome.failed]
    assert sorted(numbers) == list(range(2, rows + 2)), "a row is lost or reported twice"
    assert all(n == 1 for n in mock.stats.accepted.values()), "a profile engaged twice"
    for row in outcome.success:
        assert mock.stats.accepted[row["email"]] == 1
    assert "Traceback" not in outcome.output
    return outcome


@pytest.mark.parametrize(("fault", "reason"), [
    (Fault.SERVER_ERROR, "http_503"),
    (Fault.HTML_ERROR, "http_502"),
    # Each waits out Retry-After: 1 s twelve times over (about 11 s).
    pytest.param(Fault.TOO_MANY, "http_429", marks=pytest.mark.slow),
    pytest.param(Fault.TOO_MANY_DATE, "http_429", marks=pytest.mark.slow),
    (Fault.DROP, "disconnected"),
])
def test_bursts_of_retryable_faults_are_survived(
    invoke: CliRun, tmp_path: Path, fault: Fault, reason: str
) -> None:
    got = run_against(invoke, tmp_path, first(12, fault), "--max-attempts", "8")
    assert got.code == ExitStatus.SUCCESS, got.output
    assert len(got.success) == ROWS
    assert got.summary["retries"] == {reason: 12}
    assert got.summary["retries_unanswered"] == (12 if fault is Fault.DROP else 0)
    assert f"retries: {reason} 12" in got.output


def test_answers_slower_than_the_timeout_are_retried_and_counted_unanswered(
    invoke: CliRun, tmp_path: Path
) -> None:
    got = run_against(invoke, tmp_path, first(3, Fault.SLOW), "--timeout", "0.5")
    assert got.code == ExitStatus.SUCCESS
    assert got.summary["retries"] == {"timeout": 3}
    assert got.summary["retries_unanswered"] == 3
    assert "3 after no answer: the API may have acted on those" in got.output


@pytest.mark.parametrize(("fault", "stage", "error", "acted"), [
    (Fault.CUT_OFF, "http", "answer_cut_off", True),
    (Fault.TRUNCATED, "http", "unreadable_answer", True),
    (Fault.HTML_OK, "http", "unreadable_answer", False),
    (Fault.API_ERROR, "api", "api_440", False),
])
def test_answers_that_may_have_acted_are_final(
    invoke: CliRun, tmp_path: Path, fault: Fault, stage: str, error: str, acted: bool
) -> None:
    got = run_against(invoke, tmp_path, first(3, fault))
    assert got.code == ExitStatus.ROWS_FAILED
    assert len(got.success) == ROWS - 3
    assert {(r["_stage"], r["_error"], r["_attempts"]) for r in got.failed} == {
        (stage, error, "1")}
    assert got.summary["retries"] == {}
    assert sum(got.stats.accepted.values()) == ROWS - 3 + (3 if acted else 0)


@pytest.mark.slow
def test_the_server_going_away_for_ten_seconds(invoke: CliRun, tmp_path: Path) -> None:
    got = run_against(invoke, tmp_path, None, "--max-attempts", "10", "--rate", "10",
                      rows=40, outage=(5, 10.0))
    assert got.code == ExitStatus.SUCCESS, got.output
    assert len(got.success) == 40
    reasons = set(got.summary["retries"])
    assert reasons & {"connect_failed", "disconnected"}, got.summary["retries"]
