"""`--log-file`: JSON lines that account for every row, and never hold the token."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_engage import Matching, RunControl, RunOptions, Secret, run, run_async
from batch_engage.mock_server import MockConfig, serve_in_thread
from batch_engage.runlog import mask
from batch_engage.sender import REFUSAL_ERRORS, Answer
from batch_engage.status import ExitStatus

from .conftest import MOCK_TOKEN, CliRun, read_csv, read_summary, token_env, write_csv
from .test_job import STOPPED_AT_ONCE, workbook

OK = Answer(200, b'{"error": 0, "error_text": "ok"}')
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|\+00:00)")
LEVELS = {"ok": "info", "valid": "info", "skipped": "info", "unsent": "warning"}


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, each a JSON object with a UTC time stamp and an event."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is cut off"
    lines = [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]
    for line in lines:
        assert TS.fullmatch(line["ts"]), line
        assert datetime.fromisoformat(line["ts"]).utcoffset() == timedelta(0)
        assert line["level"] in ("info", "warning", "error"), line
        assert isinstance(line["event"], str)
    stamps = [datetime.fromisoformat(line["ts"]) for line in lines]
    assert stamps == sorted(stamps), "lines are written as their events happen"
    return lines


def events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == event]


def passes(lines: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The lines of each pass of a run: from its start (or resume) line on."""
    found: list[list[dict[str, Any]]] = []
    for line in lines:
        if line["event"] in ("start", "resume"):
            found.append([])
        found[-1].append(line)
    return found


def reported(out: Path) -> dict[int, tuple[str, str, int]]:
    """Each row's outcome, reason and tries, as the reports give them."""
    rows = {int(r["row"]): ("ok", "", int(r["attempts"]))
            for r in read_csv(out / "success.csv")}
    for r in read_csv(out / "failed.csv"):
        rows[int(r["_row"])] = (r["_stage"], r["_error"], int(r["_attempts"]))
    for r in read_csv(out / "skipped.csv"):
        rows[int(r["_row"])] = ("skipped", r["_reason"], 0)
    return rows


def logged(rows: list[dict[str, Any]]) -> dict[int, tuple[str, str, int]]:
    """The last outcome logged for each row."""
    return {r["row"]: (r["outcome"], r.get("reason", ""), r.get("attempts", 0)) for r in rows}


def check_row_levels(rows: list[dict[str, Any]]) -> None:
    for line in rows:
        assert line["level"] == LEVELS.get(line["outcome"], "error"), line


def sending(data: Path, out: Path, log: Path, **changes: Any) -> RunOptions:
    fields: dict[str, Any] = {"input": data, "workflow_id": 1,
                              "api_url": "http://unused.invalid", "token": Secret("t"),
                              "rate_per_second": 0, "max_in_flight": 1, "out": out,
                              "log_file": log}
    return RunOptions(**{**fields, **changes})


# --- the acceptance run: a faulty server, every row once --------------------------------------


def faulty_input(tmp_path: Path) -> tuple[Path, list[str]]:
    """300 rows: valid emails, an invalid one every 37th row, a duplicate every 50th."""
    cells = []
    for i in range(300):
        if i % 37 == 36:
            cells.append(f"customer {i} at example.org")
        elif i % 50 == 49:
            cells.append(cells[i - 10])
        else:
            cells.append(f"Customer.{i}@Example{i % 4}.com")
    return write_csv(tmp_path / "in.csv", "email\n" + "".join(c + "\n" for c in cells)), cells


def test_a_faulty_run_logs_every_row_once_with_its_outcome_and_never_the_token(
    invoke: CliRun, tmp_path: Path
) -> None:
    data, cells = faulty_input(tmp_path)
    out, log = tmp_path / "out", tmp_path / "logs" / "run.jsonl"
    log.parent.mkdir()
    token = "tok-" + "9f3b" * 8
    config = MockConfig(token=token, fail_rate=0.2, drop_rate=0.05, seed=7)
    with serve_in_thread(config) as mock:
        result = invoke("run", data, "-w", "3", "--rate", "0", "--concurrency", "8",
                        "--max-attempts", "2", "--out", out, "--log-file", log,
                        env=token_env(mock.url, token))
    assert result.exit_code == ExitStatus.ROWS_FAILED, result.output
    summary = read_summary(out)
    assert summary["outcomes"]["validation"] == 8
    assert summary["outcomes"]["duplicate"] == 6
    assert summary["outcomes"].get("http", 0) + summary["outcomes"].get("network", 0) > 0, (
        "some rows gave up after their tries")

    lines = read_log(log)
    assert [line["event"] for line in lines[:1] + lines[-1:]] == ["start", "finish"]
    assert {line["run"] for line in lines} == {str(out)}
    assert lines[0]["options"]["max_attempts"] == 2
    assert lines[-1]["outcomes"] == summary["outcomes"]
    assert lines[-1]["level"] == "warning"  # rows failed

    rows = events(lines, "row")
    assert sorted(line["row"] for line in rows) == list(range(2, 302)), (
        "every data row is in exactly one row line")
    assert logged(rows) == reported(out)
    assert Counter(line["outcome"] for line in rows) == summary["outcomes"]
    check_row_levels(rows)
    for line in rows:
        cell = cells[line["row"] - 2]
        if "@" in cell:
            assert line["identifier"] == "***@" + cell.split("@")[1]

    retries = events(lines, "retry")
    assert Counter(line["reason"] for line in retries) == summary["retries"]
    assert {line["reason"] for line in retries} == {"http_503", "disconnected"}
    for line in retries:
        assert line["level"] == "warning"
        assert line["attempt"] == 1  # two tries each: one retry at most
        assert 0 <= line["delay"] <= 0.5
        assert line["unanswered"] is (line["reason"] == "disconnected")
        assert line["identifier"] == "***@" + cells[line["row"] - 2].split("@")[1]

    text = log.read_text("utf-8")
    assert token not in text
    assert set(re.findall(r"(.)@", text)) == {"*"}, "an email's local part is in the log"
    for cell in cells:
        assert cell.split("@")[0] not in text


# --- stops and resumes -----------------------------------------------------------------------




def test_a_stopped_run_logs_the_stop_and_its_unsent_rows_and_a_resume_appends(
    tmp_path: Path
) -> None:
    data, out, log = workbook(tmp_path, STOPPED_AT_ONCE), tmp_path / "out", tmp_path / "log"
    sent: list[str] = []
    refused = Answer(401, b'{"error": 401, "error_text": "token"}')

    async def refusing_a(body: bytes) -> Answer:
        email = json.loads(body)["email"]
        sent.append(email)
        return refused if email == "a@example.com" else OK

    summary = run(sending(data, out, log), transport=refusing_a)
    assert summary.outcomes == {"unsent": 7}
    first = read_log(log)
    (stop,) = events(first, "stop")
    assert (stop["level"], stop["message"]) == ("warning", f"{REFUSAL_ERRORS[401]} (HTTP 401)")
    rows = events(first, "row")
    unsent = [r for r in rows if r["outcome"] == "unsent"]
    assert first.index(stop) < first.index(unsent[0]), "the stop is logged as it happens"
    assert logged(rows) == {
        2: ("unsent", "api_401", 1), 3: ("unsent", "", 0), 4: ("skipped", "hidden_in_sheet", 0),
        5: ("unsent", "", 0), 6: ("unsent", "", 0), 7: ("unsent", "", 0),
        9: ("skipped", "hidden_in_sheet", 0), 10: ("unsent", "", 0), 12: ("unsent", "", 0)}
    assert len(rows) == 9
    check_row_levels(rows)
    assert first[-1]["event"] == "finish"
    assert first[-1]["stopped"] == summary.stopped

    run(sending(data, out, log, resume=True), transport=refusing_a)  # refused again
    run(sending(data, out, log, resume=True), transport=lambda body: _ok(sent, body))
    lines = read_log(log)
    assert lines[:len(first)] == first, "a resume appends"
    one, two, three = passes(lines)
    assert [p[0]["event"] for p in (one, two, three)] == ["start", "resume", "resume"]
    assert three[0]["options"]["resume"] is True
    assert logged(events(three, "row")) == {
        **dict.fromkeys((2, 3, 5, 6, 7, 10, 12), ("ok", "", 1)),
        4: ("skipped", "hidden_in_sheet", 0), 9: ("skipped", "hidden_in_sheet", 0)}
    assert logged(events(lines, "row")) == reported(out)


async def _ok(sent: list[str], body: bytes) -> Answer:
    sent.append(json.loads(body)["email"])
    return OK


def test_a_resume_logs_only_the_rows_it_decides_so_each_engagement_is_logged_once(
    tmp_path: Path
) -> None:
    """Stopped from its control after 3 rows; the resume sends the other 5 and does not log
    the 3 engaged rows again. A crash is logged as the run's error."""
    data = write_csv(tmp_path / "in.csv", "email\n" + "".join(
        f"p{i}@example.com\n" for i in range(8)) + "bad\n")
    out, log = tmp_path / "out", tmp_path / "log"
    control = RunControl()
    sent: list[str] = []

    async def stopping(body: bytes) -> Answer:
        sent.append(json.loads(body)["email"])
        if len(sent) == 3:
            control.stop("stopped from the page")
        return OK

    run(sending(data, out, log), transport=stopping, control=control)
    first = read_log(log)
    assert events(first, "stop")[0]["message"] == "stopped from the page"
    assert Counter(r["outcome"] for r in events(first, "row")) == {"ok": 3, "unsent": 6}

    async def crashing(body: bytes) -> Answer:
        if json.loads(body)["email"] == "p5@example.com":
            raise RuntimeError("the process died here")
        return OK

    with pytest.raises(RuntimeError):
        run(sending(data, out, log, resume=True), transport=crashing)
    second = read_log(log)[len(first):]
    assert (second[-1]["event"], second[-1]["level"], second[-1]["message"]) == (
        "error", "error", "unexpected error: RuntimeError")

    run(sending(data, out, log, resume=True), transport=lambda body: _ok(sent, body))
    lines = read_log(log)
    third = passes(lines)[-1]
    # Row 7 (p5) was on its way at the crash: this pass decides it is uncertain.
    assert logged(events(third, "row")) == {
        7: ("uncertain", "uncertain", 1), 8: ("ok", "", 1), 9: ("ok", "", 1),
        10: ("validation", "invalid_email", 0)}
    assert logged(events(lines, "row")) == reported(out)
    oks = [r["row"] for r in events(lines, "row") if r["outcome"] == "ok"]
    assert sorted(oks) == sorted(int(r["row"]) for r in read_csv(out / "success.csv"))


# --- what a line may show --------------------------------------------------------------------


@pytest.mark.parametrize(("identifier", "shown"), [
    ("John.Smith@Example.com", "***@Example.com"),
    (" a@b@mail.example ", "***@mail.example"),
    ("+79001234567", "***4567"),
    ("+7 900 123-45-67", "***4567"),
    ("CRM-000123", "***0123"),
    ("42", "***2"),
    ("", "***"),
])
def test_identifiers_show_only_the_domain_or_the_last_digits(identifier: str, shown: str
                                                             ) -> None:
    assert mask(identifier) == shown


def test_a_dry_run_logs_valid_and_invalid_rows_with_phones_masked(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv",
                     "phone\n+79001234567\n8 900 765-43-21\n+79001234567\n12\n")
    log = tmp_path / "log"
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out",
                   matching=Matching.PHONE, phone_region="RU", log_file=log))
    lines = read_log(log)
    assert [line["event"] for line in lines] == ["start", "row", "row", "row", "row", "finish"]
    assert lines[0]["options"]["dry_run"] is True
    assert [(r["row"], r["identifier"], r["outcome"], r.get("reason")) for r in lines[1:5]] == [
        (2, "***4567", "valid", None), (3, "***4321", "valid", None),
        (4, "***4567", "duplicate", "duplicate"), (5, "***2", "validation", "invalid_phone")]
    text = log.read_text("utf-8")
    for phone in ("9001234567", "900 765-43-21", "9007654321"):
        assert phone not in text


def test_custom_requests_are_logged_without_an_identifier(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv",
                     'custom_request\n"{""email"": ""secret@example.com""}"\nnot json\n')
    log = tmp_path / "log"
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out",
                   matching=Matching.CUSTOM_REQUEST, log_file=log))
    rows = events(read_log(log), "row")
    assert [(r["row"], r["outcome"]) for r in rows] == [(2, "valid"), (3, "validation")]
    assert not any("identifier" in r for r in rows)
    assert "secret" not in log.read_text("utf-8")


def test_429s_log_a_slow_down_and_their_retries(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\nb@example.com\n")
    log = tmp_path / "log"
    answers = iter([Answer(429, b""), OK, OK])

    async def busy_once(body: bytes) -> Answer:
        return next(answers)

    run(sending(data, tmp_path / "out", log, rate_per_second=8), transport=busy_once)
    lines = read_log(log)
    (slow,) = events(lines, "slow_down")
    assert (slow["level"], slow["reason"], slow["rate"]) == ("warning", "http_429", 4.0)
    (retry,) = events(lines, "retry")
    assert (retry["row"], retry["attempt"], retry["reason"], retry["unanswered"]) == (
        2, 1, "http_429", False)
    assert lines.index(slow) < lines.index(retry)


def test_a_burst_of_429s_logs_one_slow_down_a_line_per_change_of_rate(tmp_path: Path) -> None:
    """The rate is halved at most once a second: the second 429 of a burst changes nothing,
    and the log says only what changed."""
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\nb@example.com\n")
    log = tmp_path / "log"
    answers = iter([Answer(429, b""), Answer(429, b""), OK, OK])

    async def busy_twice(body: bytes) -> Answer:
        return next(answers)

    run(sending(data, tmp_path / "out", log, rate_per_second=8), transport=busy_twice)
    lines = read_log(log)
    assert [line["rate"] for line in events(lines, "slow_down")] == [4.0]
    assert len(events(lines, "retry")) == 2


def test_a_run_on_the_callers_loop_logs_too(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    log = tmp_path / "log"
    asyncio.run(run_async(sending(data, tmp_path / "out", log),
                          transport=lambda body: _ok([], body)))
    assert [(line["event"], line.get("outcome")) for line in read_log(log)] == [
        ("start", None), ("row", "ok"), ("finish", None)]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_cancelled(sending(data, tmp_path / "out2", log)))
    assert read_log(log)[-1]["message"] == "unexpected error: CancelledError"


async def _cancelled(options: RunOptions) -> None:
    """A web page's run, cancelled while its request is on the wire."""
    on_the_wire = asyncio.Event()

    async def hanging(body: bytes) -> Answer:
        on_the_wire.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    task = asyncio.create_task(run_async(options, transport=hanging))
    await on_the_wire.wait()
    task.cancel()
    await task


def test_the_runs_warnings_are_logged(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email,Notes\na@example.com,x\n")
    log = tmp_path / "log"
    warnings: list[str] = []
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out",
                   log_file=log), on_warning=warnings.append)
    assert [w["message"] for w in events(read_log(log), "warning")] == warnings
    assert warnings == ["these columns are ignored: 'Notes'"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_log_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    warnings: list[str] = []
    summary = run(sending(data, tmp_path / "out", Path("/dev/full")),
                  transport=lambda body: _ok([], body), on_warning=warnings.append)
    assert summary.outcomes == {"ok": 1}
    assert warnings == ["the --log-file /dev/full could not be written (No space left on "
                        "device); the run goes on without it"]


# --- the command line ------------------------------------------------------------------------


def test_the_option_works_end_to_end_and_a_resume_command_keeps_it(
    invoke: CliRun, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\nb@example.com\n")
    out, log = tmp_path / "out", tmp_path / "run.jsonl"
    config = MockConfig(token=MOCK_TOKEN)
    with serve_in_thread(config) as mock:
        result = invoke("run", data, "-w", "1", "--out", out, "--log-file", log,
                        env={**token_env(mock.url), "BATCH_ENGAGE_TOKEN": "wrong-token"})
    assert result.exit_code == ExitStatus.STOPPED
    assert (f"To send the rest: batch-engage run {data} --out {out} --resume "
            f"--log-file {log}") in result.stderr
    lines = read_log(log)
    assert [line["event"] for line in lines] == ["start", "stop", "row", "row", "finish"]
    assert "wrong-token" not in log.read_text("utf-8")
    assert read_summary(out)["options"]["log_file"] == str(log)


def test_a_config_names_the_log_relative_to_itself(invoke: CliRun, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "nightly.toml"
    config.write_text('workflow_id = 1\nlog_file = "nightly.jsonl"\n', "utf-8")
    result = invoke("run", data, "--config", config, "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == ExitStatus.SUCCESS, result.output
    assert [line["event"] for line in read_log(tmp_path / "etc" / "nightly.jsonl")] == [
        "start", "row", "finish"]


@pytest.mark.parametrize("where", ["in.csv/run.jsonl", "."])
def test_a_log_file_that_cannot_be_opened_is_a_usage_error_before_anything_is_sent(
    invoke: CliRun, tmp_path: Path, where: str
) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    log, out = tmp_path / where, tmp_path / "out"
    with serve_in_thread(MockConfig(token=MOCK_TOKEN)) as mock:
        result = invoke("run", data, "-w", "1", "--out", out, "--log-file", log,
                        env=token_env(mock.url))
    assert result.exit_code == ExitStatus.USAGE_OR_INPUT_ERROR
    assert str(log) in result.stderr
    assert mock.stats.received == 0
    assert not out.exists()


def test_a_log_files_folder_is_made_as_the_ledgers_is(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    log = tmp_path / "logs" / "nightly" / "run.jsonl"
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out",
                   log_file=log))
    assert [line["event"] for line in read_log(log)] == ["start", "row", "finish"]


def test_without_a_log_file_nothing_is_logged(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    summary = run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out"))
    assert summary.options["log_file"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out"]


def test_time_stamps_are_utc_with_milliseconds(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", "email\na@example.com\n")
    before = datetime.now(UTC)
    run(RunOptions(input=data, workflow_id=1, dry_run=True, out=tmp_path / "out",
                   log_file=tmp_path / "log"))
    for line in read_log(tmp_path / "log"):
        stamp = datetime.fromisoformat(line["ts"])
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
