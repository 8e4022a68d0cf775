"""Property tests: any row maps to a valid JSON body holding exactly the mapped fields,
or is rejected with a message naming its row; any answer from the server gets a verdict;
nothing crashes."""

from __future__ import annotations

import asyncio
import csv
import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batch_engage.errors import InputFileError
from batch_engage.job import run
from batch_engage.limiter import RateLimiter
from batch_engage.mapper import (
    _PLAIN_EMAIL,
    IDENTIFIER_COLUMN,
    Mapper,
    Request,
    RowError,
    parse_json_cell,
    plain_email,
)
from batch_engage.options import Matching, RunOptions
from batch_engage.reader import Record
from batch_engage.sender import (
    Answer,
    Result,
    RetryPolicy,
    Sender,
    Verdict,
    _api_fields,
    judge,
    parse_retry_after,
)

HEADERS = ["email", "content.a", "content.b.c", "resource_id", "subscription_filter.not_strict",
           "ignored"]
ERROR_CODES = {"missing_value", "invalid_email", "invalid_resource_id", "invalid_boolean",
               "duplicate", "extra_cells", "body_too_large"}

emails = st.one_of(st.emails().map(str), st.text(max_size=30))
cells = st.one_of(st.text(max_size=40), st.just(""), st.just('["x", 1]'), st.just('{"k": "v"}'))
ints = st.one_of(st.integers(-10, 10**6).map(str), st.text(max_size=5), st.just(""))
bools = st.sampled_from(["", "true", "FALSE", "1", "no", "maybe"])
rows = st.lists(st.tuples(emails, cells, cells, ints, bools, st.text(max_size=10)),
                min_size=1, max_size=20)


def expected_content(a: str, bc: str) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if a.strip():
        content["a"] = parse_json_cell(a)
    if bc.strip():
        content["b"] = {"c": parse_json_cell(bc)}
    return content


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_rows_map_to_exact_bodies_or_row_errors(data: list[tuple[str, ...]]) -> None:
    options = RunOptions(input=Path("in.csv"), workflow_id=5, dry_run=True)
    mapper = Mapper(HEADERS, options, "***", lambda _: None)
    sent: set[str] = set()
    for number, row in enumerate(data, start=2):
        result = mapper.map(Record(number, list(row), []))
        email, a, bc, resource, not_strict, _ = row
        # What is wrong with the row, judged here without the mapper: a row with nothing
        # wrong must be sent, a row with something wrong must say which thing.
        wrong = set()
        if not email.strip():
            wrong.add("missing_value")
        else:
            try:
                validate_email(email.strip(), check_deliverability=False)
            except EmailNotValidError:
                wrong.add("invalid_email")
        if resource.strip() and not re.fullmatch(r"[+-]?[0-9]+", resource.strip()):
            wrong.add("invalid_resource_id")
        if not_strict.strip() and not_strict.strip().casefold() not in (
                "true", "false", "1", "0", "yes", "no", "y", "n", "да", "нет"):
            wrong.add("invalid_boolean")
        if not wrong and email.strip().casefold() in sent:
            wrong.add("duplicate")
        if isinstance(result, RowError):
            assert result.row == number
            assert result.error in wrong, (row, result)
            assert result.text.startswith(f"row {number}")
            continue
        assert wrong == set(), (row, wrong)
        assert isinstance(result, Request)
        sent.add(email.strip().casefold())
        body = json.loads(result.body)
        expected: dict[str, Any] = {"token": "***", "id": 5, "matching": "email",
                                    "email": email.strip()}
        if resource.strip():
            expected["resource_id"] = int(resource)
        if not_strict.strip():
            expected["subscription_filter"] = {
                "not_strict": not_strict.strip().casefold() in ("true", "1", "yes", "y", "да")}
        content = expected_content(a, bc)
        if content:
            expected["content"] = content
        assert body == expected


GOOD_IDENTIFIER = {Matching.EMAIL: "good@example.com", Matching.PHONE: "+79001234567",
                   Matching.PROFILE_ID: "12345", Matching.CUSTOM: "x-1",
                   Matching.CUSTOM_REQUEST: '{"email": "good@example.com"}'}
printable = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                    max_size=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(headers=st.lists(printable, min_size=1, max_size=6),
       body=st.lists(st.lists(printable, max_size=7), max_size=8),
       matching=st.sampled_from(list(Matching)))
def test_any_csv_gives_reports_or_a_file_error(
    tmp_path_factory: Any, headers: list[str], body: list[list[str]], matching: Matching
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "in.csv"
    # Row 2 is valid whatever the other columns are: it must be sent.
    good = [GOOD_IDENTIFIER[matching]] + [""] * len(headers)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[IDENTIFIER_COLUMN[matching], *headers], good, *body])
    options = RunOptions(input=path, workflow_id=1, dry_run=True, matching=matching,
                         field_name="x" if matching is Matching.CUSTOM else None,
                         out=folder / "out")
    try:
        summary = run(options)
    except InputFileError as e:
        message = str(e)
        assert message.strip()
        return
    valid = (folder / "out" / "requests.jsonl").read_text("utf-8").split("\n")[:-1]
    with (folder / "out" / "failed.csv").open(encoding="utf-8-sig", newline="") as f:
        failed = list(csv.reader(f))[1:]
    for line in valid:
        assert set(json.loads(line)) == {"row", "body"}
    assert json.loads(valid[0])["row"] == 2, failed[:1]
    assert len(valid) + len(failed) == summary.rows
    rows_seen = sorted([json.loads(v)["row"] for v in valid] + [int(r[-5]) for r in failed])
    assert len(set(rows_seen)) == len(rows_seen)


# Addresses one slip away from valid: dots doubled or at either end of the local part,
# hyphens at the ends of labels, empty labels, numeric or one-letter top-level domains,
# punycode, special-use names. Random text almost never has the shape to get this close.
near_miss_emails = st.builds(
    "{}@{}.{}".format,
    st.text(alphabet="ab.+_-", min_size=1, max_size=6),
    st.text(alphabet="ab.-0", min_size=1, max_size=8),
    st.sampled_from(["com", "ru", "c", "c0m", "123", "xn--p1ai", "local", "test", "co-"]),
)


email_like = st.one_of(st.from_regex(_PLAIN_EMAIL, fullmatch=True), st.emails().map(str),
                       near_miss_emails, st.text(alphabet="ab.-_@+xXnN0\n", max_size=30))


@settings(max_examples=400, deadline=None)
@given(email_like)
@example("a..b@example.com")
@example(".anna@example.com")
@example("anna.@example.com")
@example("_@00--0.com")  # found by near_miss_emails: "??--" labels are reserved,
@example("_@0---0.com")  # whatever the first two characters
def test_plain_email_fast_path_only_accepts_what_email_validator_accepts(text: str) -> None:
    if _PLAIN_EMAIL.fullmatch(text):
        validate_email(text, check_deliverability=False)


@settings(max_examples=600, deadline=None)
@given(email_like)
@example("a@b@example.com")
@example("xn--a@example.com")
@example("ax@n--b.com")
@example("anna@example.com\n")
@example("a" * 32 + "." + "a" * 32 + "@example.com")  # a local part of 65
def test_plain_email_is_the_pattern_in_two_parts(text: str) -> None:
    assert plain_email(text) == (_PLAIN_EMAIL.fullmatch(text) is not None)


@settings(max_examples=300, deadline=None)
@given(near_miss_emails)
def test_near_miss_emails_are_judged_as_email_validator_judges_them(text: str) -> None:
    """The fast path and the slow one agree on every address close to the edge."""
    options = RunOptions(input=Path("in.csv"), workflow_id=5, dry_run=True)
    result = Mapper(["email"], options, "***", lambda _: None).map(Record(2, [text], []))
    try:
        validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        assert isinstance(result, RowError)
        assert result.error == "invalid_email"
    else:
        assert isinstance(result, Request)


# --- answers from the server: whatever comes back, a verdict, never a crash --------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
api_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"error": json_values, "error_text": json_values}).map(
        lambda d: json.dumps(d).encode()),
    st.builds(lambda e, t: json.dumps({"error": e, "error_text": t}).encode(),
              st.integers(-5, 1000), st.text()),
)
answers = st.builds(Answer, st.integers(100, 599), api_bodies,
                    st.none() | st.text(max_size=40), st.booleans())


def expected_verdict(answer: Answer) -> Verdict:
    """SPEC's rules for an answer, in the order they apply."""
    if answer.status in (429, 500, 502, 503, 504):
        return Verdict.RETRY  # "not now", even when the line broke
    if answer.cut_off:
        return Verdict.FAILED  # it had begun to answer, so it may have acted
    fields = _api_fields(answer.body)
    error = None if fields is None else fields[0]
    if error in (401, 402, 403) or answer.status in (401, 403):
        return Verdict.REFUSED
    if error == 0 and 200 <= answer.status < 300:
        return Verdict.OK
    return Verdict.FAILED


@given(st.one_of(answers, st.builds(
    Answer, st.sampled_from([200, 201, 401, 403, 429, 500, 502, 503, 504]),
    st.sampled_from([0, 401, 402, 403, 440]).map(
        lambda e: json.dumps({"error": e, "error_text": "t"}).encode()),
    st.none(), st.booleans())))
def test_any_answer_gets_the_verdict_the_rules_give(answer: Answer) -> None:
    judgement = judge(answer)
    assert judgement.verdict is expected_verdict(answer)
    if judgement.verdict is Verdict.OK:
        assert (judgement.stage, judgement.error) == ("", "")
    else:
        assert judgement.stage in ("api", "http")
        assert judgement.error
        assert judgement.text


@given(st.text(max_size=60))
def test_any_retry_after_is_a_delay_or_nothing(value: str) -> None:
    delay = parse_retry_after(value, datetime.now(UTC))
    assert delay is None or delay >= 0


NOW = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)


@given(st.integers(0, 10**6), st.sampled_from(["{}", " {} ", "{}.0", "{}.5"]))
def test_retry_after_in_seconds_is_that_many_seconds(seconds: int, form: str) -> None:
    value = form.format(seconds)
    assert parse_retry_after(value, NOW) == float(value)


@given(st.integers(-86400, 86400))
def test_retry_after_as_a_date_is_the_time_until_then(offset: int) -> None:
    when = format_datetime(NOW + timedelta(seconds=offset), usegmt=True)
    assert parse_retry_after(when, NOW) == max(0, offset)


@settings(max_examples=50, deadline=None)
@given(st.lists(answers, min_size=1, max_size=6))
def test_a_row_meets_any_answers_and_ends_in_one_known_outcome(script: list[Answer]) -> None:
    calls = 0

    async def transport(_body: bytes) -> Answer:
        nonlocal calls
        calls += 1
        return script[min(calls, len(script)) - 1]

    async def main() -> Result:
        sender = Sender(transport, limiter=RateLimiter(0), max_in_flight=1,
                        policy=RetryPolicy(max_attempts=4, base_delay_seconds=0,
                                           max_retry_after_seconds=0))
        return await sender.send(Request(2, "a@b.co", b"{}", "a@b.co"))

    result = asyncio.run(main())
    assert result.outcome in {"ok", "api", "http", "network", "unsent"}
    assert 1 <= result.attempts <= 4
    assert result.attempts == calls
