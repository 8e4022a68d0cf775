"""20,000 rows through a faulty, rate-limited mock server: nothing lost, nothing sent twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_engage.mock_server import MockConfig, serve_in_thread
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, CliRun, read_csv, read_summary, token_env, write_csv

ROWS = 20_000


@pytest.mark.slow
@pytest.mark.timeout(600)  # 20,000 rows at the mock's 200 a second take about 2.5 minutes
def test_twenty_thousand_rows_against_faults_and_a_rate_limit(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "big.csv", "email,content.n\n" + "".join(
        f"person{i}@example.com,{i}\n" for i in range(ROWS)))
    out = tmp_path / "out"
    config = MockConfig(token=MOCK_TOKEN, fail_rate=0.1, rate_limit=200, unknown_rate=0.05,
                        seed=20)
    with serve_in_thread(config) as mock:
        result = invoke("run", data, "-w", "7", "--rate", "500", "--concurrency", "32",
                        "--out", out, env=token_env(mock.url))
    assert result.exit_code == ExitStatus.ROWS_FAILED, result.output

    success = read_csv(out / "success.csv")
    failed = read_csv(out / "failed.csv")
    rows = [int(r["row"]) for r in success] + [int(r["_row"]) for r in failed]
    assert sorted(rows) == list(range(2, ROWS + 2))  # every row exactly once

    # What the server accepted is exactly success.csv: no row engaged twice, none missing.
    assert mock.stats.accepted == {r["email"]: 1 for r in success}

    # Failures are unknown profiles or rows out of tries, nothing else.
    unknown = [r for r in failed if r["_error"] == "api_440"]
    out_of_tries = [r for r in failed if r["_error"] != "api_440"]
    assert all(r["_stage"] == "api" for r in unknown)
    assert all(r["_attempts"] == "5" and r["_error"] in ("http_503", "http_429")
               for r in out_of_tries)
    # The server said "no such profile" once per such row: a final answer is not retried
    # (earlier tries of the same row may have met a 503 or a 429).
    assert len(unknown) == mock.stats.answers["unknown_profile"]
    assert 0.03 * ROWS < len(unknown) < 0.07 * ROWS

    summary = read_summary(out)
    assert summary["outcomes"] == {"ok": len(success), "api": len(unknown),
                                   **({"http": len(out_of_tries)} if out_of_tries else {})}
    assert summary["requests_sent"] == mock.stats.received
    assert sum(summary["retries"].values()) == summary["requests_sent"] - ROWS
