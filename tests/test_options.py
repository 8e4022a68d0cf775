from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from batch_engage.errors import UsageError
from batch_engage.options import Matching, RunOptions, Secret, load_config

KNOWN = frozenset({"workflow_id", "api_url", "attach", "attach_dir", "token_file", "content",
                   "ledger", "log_file"})


def config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "job.toml"
    if isinstance(text, str):
        path.write_text(text, "utf-8")
    else:
        path.write_bytes(text)
    return path


def refusal(path: Path, known: frozenset[str] = KNOWN) -> str:
    with pytest.raises(UsageError) as caught:
        load_config(path, known)
    return str(caught.value)


def test_a_secret_shows_only_stars() -> None:
    secret = Secret("t0ken")
    assert (str(secret), repr(secret), f"{secret}") == ("***", "Secret('***')", "***")
    assert secret.reveal() == "t0ken"


def test_secrets_compare_and_hash_by_their_value() -> None:
    assert Secret("a") == Secret("a")
    assert hash(Secret("a")) == hash(Secret("a"))
    assert Secret("a") != Secret("b")
    # Distinct tokens must not all land in one hash bucket.
    assert hash(Secret("a")) != hash(Secret("b"))
    # A secret is never equal to its plain text, so a comparison cannot leak it by accident.
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_options_are_read_with_dashes_or_underscores(tmp_path: Path) -> None:
    path = config(tmp_path, 'workflow-id = 31\napi_url = "https://x.example.com"\n'
                            '[columns]\n"E-mail" = "email"\n')
    loaded = load_config(path, KNOWN)
    assert loaded.path == path
    assert loaded.options == {"workflow_id": 31, "api_url": "https://x.example.com"}
    assert loaded.columns == {"E-mail": "email"}


def test_a_config_saved_with_a_bom_is_read(tmp_path: Path) -> None:
    # Windows Notepad writes one.
    path = config(tmp_path, "\ufeffworkflow_id = 7\n".encode())
    assert load_config(path, KNOWN).options == {"workflow_id": 7}


def test_paths_are_taken_relative_to_the_config_folder(tmp_path: Path) -> None:
    path = config(tmp_path, 'attach = ["terms.pdf", "/srv/logo.png"]\nattach_dir = "files"\n'
                            'token_file = "secret/token"\ncontent = { banner = "a/b" }\n')
    assert load_config(path, KNOWN).options == {
        "attach": [str(tmp_path / "terms.pdf"), "/srv/logo.png"],
        "attach_dir": str(tmp_path / "files"),
        "token_file": str(tmp_path / "secret" / "token"),
        "content": {"banner": "a/b"},
    }


@pytest.mark.parametrize(("text", "message"), [
    ('attach = ["terms.pdf", 7]\n',
     'attach must be a path in quotes, e.g. attach = "terms.pdf" or a list of them, '
     'e.g. attach = ["terms.pdf", "logo.png"]'),
    ("attach_dir = 5\n", 'attach_dir must be a path in quotes, e.g. attach_dir = "files"'),
    ("token-file = 0\n", 'token-file must be a path in quotes, e.g. token-file = "token.txt"'),
    ("ledger = 1\n", 'ledger must be a path in quotes, e.g. ledger = "engaged.sqlite"'),
    ("log_file = true\n",
     'log_file must be a path in quotes, e.g. log_file = "batch-engage.jsonl"'),
])
def test_a_path_option_that_is_no_text_is_refused(tmp_path: Path, text: str, message: str) -> None:
    """A number would reach the OS as a file descriptor (0 is stdin): refused, not crashed."""
    path = config(tmp_path, text)
    assert refusal(path) == f"config file {path}: {message}"


def test_a_missing_config_file_says_why_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert refusal(path) == f"cannot read config file {path}: No such file or directory"


def test_a_config_not_in_utf8_says_how_to_save_it(tmp_path: Path) -> None:
    path = config(tmp_path, 'content = { city = "Montréal" }\n'.encode("cp1252"))
    assert refusal(path) == f"config file {path} is not UTF-8 text; save it as UTF-8"


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = config(tmp_path, "workflow_id = 1\napi_url = \n")
    text = refusal(path)
    # The rest is tomllib's own wording, which may change between Python versions.
    assert text.startswith(f"config file {path} is not valid TOML: ")
    assert "line 2" in text


@pytest.mark.parametrize(
    "columns",
    ['columns = "email"\n', '[columns]\n"E-mail" = "email"\n"Id" = 5\n'],
    ids=["not a table", "a value not text"],
)
def test_columns_must_map_header_names_to_names(tmp_path: Path, columns: str) -> None:
    path = config(tmp_path, columns)
    assert refusal(path) == (
        f'config file {path}: [columns] must map header names to names, e.g. "E-mail" = "email"'
    )


def test_a_token_in_the_config_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = config(tmp_path, 'workflow_id = 1\ntoken = "s3cr3t"\n')
    assert refusal(path) == (
        f"config file {path} holds a token: remove it and set BATCH_ENGAGE_TOKEN or "
        "token_file instead, so the secret does not travel with the config"
    )


def test_an_unknown_option_lists_the_known_ones(tmp_path: Path) -> None:
    path = config(tmp_path, "workflow_id = 1\ncolour = 2\n")
    assert refusal(path, frozenset({"workflow_id", "api_url"})) == (
        f"config file {path}: unknown option 'colour'; known options are api_url, workflow_id"
    )


def run_options(tmp_path: Path, **kw: Any) -> RunOptions:
    kw.setdefault("workflow_id", 12)
    kw.setdefault("api_url", "https://api.example.com")
    kw.setdefault("token", Secret("t0ken"))
    return RunOptions(input=tmp_path / "in.csv", **kw)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workflow_id": None},
         "a workflow id is required: pass -w/--workflow-id (the scenario id)"),
        ({"matching": Matching.CUSTOM},
         "--matching custom needs --field-name, the profile field to match on "
         "(e.g. --field-name CRM_ID); the values come from the field_value column"),
        ({"matching": Matching.CUSTOM, "field_name": ""},
         "--matching custom needs --field-name, the profile field to match on "
         "(e.g. --field-name CRM_ID); the values come from the field_value column"),
        ({"field_name": "CRM_ID"}, "--field-name only works with --matching custom"),
        ({"resend_uncertain": True}, "--resend-uncertain only works with --resume (the "
         "run's own uncertain rows) or --ledger (those of earlier runs)"),
        ({"ledger_days": 3}, "--ledger-days only works with --ledger PATH, the ledger file"),
        ({"ledger": Path("l.sqlite"), "ledger_days": 0},
         "--ledger-days 0 is not a number of days; give e.g. --ledger-days 30"),
        ({"min_rows": -1}, "--min-rows -1 is not a number of rows; give 0 or more"),
        ({"min_rows": 5, "max_rows": 4},
         "--min-rows 5 is more than --max-rows 4: no file could pass; swap them"),
        ({"resume": True}, "--resume needs --out, the run folder to continue, and no --dry-run"),
        ({"resume": True, "out": Path("runs/a"), "dry_run": True},
         "--resume needs --out, the run folder to continue, and no --dry-run"),
        ({"api_url": None}, "an API URL is required: pass --api-url or set BATCH_ENGAGE_API_URL"),
        ({"api_url": ""}, "an API URL is required: pass --api-url or set BATCH_ENGAGE_API_URL"),
        ({"api_url": "api.example.com"},
         "--api-url 'api.example.com' is not a web address; write it in full, "
         "e.g. https://your-account.example.com"),
        ({"api_url": "ftp://api.example.com"},
         "--api-url 'ftp://api.example.com' is not a web address; write it in full, "
         "e.g. https://your-account.example.com"),
        ({"api_url": "https://"},
         "--api-url 'https://' is not a web address; write it in full, "
         "e.g. https://your-account.example.com"),
        ({"token": None},
         "an API token is required: set the BATCH_ENGAGE_TOKEN environment variable or pass "
         "--token-file PATH (a file that holds only the token)"),
    ],
    ids=["no workflow", "custom without field", "custom with empty field", "field not custom",
         "resend without resume", "ledger days without ledger", "zero ledger days",
         "negative min rows", "min above max", "resume without out", "resume dry run", "no url",
         "empty url", "url without scheme", "ftp url", "url without host", "no token"],
)
def test_options_that_cannot_work_say_how_to_fix_them(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        run_options(tmp_path, **options)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "options",
    [
        {"api_url": "http://localhost:8080"},
        {"matching": Matching.CUSTOM, "field_name": "CRM_ID"},
        {"resume": True, "out": Path("runs/a")},
        {"resume": True, "resend_uncertain": True, "out": Path("runs/a")},
        # A dry run sends nothing, so it needs neither an API nor a token.
        {"dry_run": True, "api_url": None, "token": None},
        {"dry_run": True, "api_url": "not checked", "token": None},
    ],
    ids=["http url", "custom with field", "resume", "resume resend", "dry run",
         "dry run bad url"],
)
def test_options_that_can_work_are_accepted(tmp_path: Path, options: dict[str, Any]) -> None:
    assert run_options(tmp_path, **options).input == tmp_path / "in.csv"


def test_fixed_options_are_plain_json_with_absolute_paths(tmp_path: Path) -> None:
    options = run_options(
        tmp_path, matching=Matching.PHONE, resource_id=24, phone_region="RU",
        content=(("promo", "SPRING"), ("order.currency", "RUB")), attach=(Path("terms.pdf"),),
        sheet="Лист1", encoding="cp1251", delimiter=";", columns={"E-mail": "phone"},
        allow_duplicates=True, include_hidden_rows=True, rate_per_second=2.5, row_limit=3,
        ledger=Path("engaged.sqlite"), ledger_days=30, min_rows=1, max_rows=9,
        log_file=Path("logs/nightly.jsonl"),
    )
    # Not the log file: a resume may log elsewhere.
    fixed = {
        "workflow_id": 12, "api_url": "https://api.example.com", "matching": "phone",
        "field_name": None, "resource_id": 24, "phone_region": "RU",
        "content": [["promo", "SPRING"], ["order.currency", "RUB"]],
        "attach": [str(Path.cwd() / "terms.pdf")], "attach_dir": str(tmp_path),
        "sheet": "Лист1", "encoding": "cp1251", "delimiter": ";",
        "columns": {"E-mail": "phone"}, "allow_duplicates": True, "include_hidden_rows": True,
        "ledger": str(Path.cwd() / "engaged.sqlite"), "ledger_days": 30,
    }
    assert options.fixed() == fixed
    # summary.json shows what the user wrote, and the sending options; never the token.
    assert options.public() == {
        "input": str(tmp_path / "in.csv"), **fixed,
        "content": {"promo": "SPRING", "order.currency": "RUB"},
        "attach": ["terms.pdf"], "attach_dir": None,
        "rate": 2.5, "concurrency": 8, "max_attempts": 5, "timeout": 30.0,
        "dry_run": False, "verify_tls": True, "resume": False, "resend_uncertain": False,
        "row_limit": 3, "ledger": "engaged.sqlite", "min_rows": 1, "max_rows": 9,
        "log_file": "logs/nightly.jsonl",
    }


def test_an_attach_dir_is_made_absolute_for_the_journal_and_shown_as_given(
    tmp_path: Path,
) -> None:
    options = run_options(tmp_path, attach_dir=Path("files"), max_in_flight=3, max_attempts=2,
                          timeout_seconds=4.5, dry_run=True, verify_tls=False)
    assert options.fixed()["attach_dir"] == str(Path.cwd() / "files")
    public = options.public()
    assert (public["attach_dir"], public["concurrency"], public["max_attempts"],
            public["timeout"], public["dry_run"], public["verify_tls"]) == (
        "files", 3, 2, 4.5, True, False
    )


@pytest.mark.parametrize("rate", [math.nan, math.inf, -1.0])
def test_a_rate_that_is_no_number_of_requests_is_refused(tmp_path: Path, rate: float) -> None:
    """nan and inf pass click's FloatRange(min=0), then crashed the limiter's arithmetic."""
    with pytest.raises(UsageError) as caught:
        RunOptions(input=tmp_path / "in.csv", workflow_id=1, dry_run=True, rate_per_second=rate)
    assert str(caught.value) == (f"--rate {rate} is not a number of requests a second; give "
                                 "e.g. --rate 10, or --rate 0 for no limit")


@pytest.mark.parametrize("workflow_id", [0, -3])
def test_a_placeholder_workflow_id_may_dry_run_but_never_send(workflow_id: int) -> None:
    RunOptions(input=Path("in.csv"), workflow_id=workflow_id, dry_run=True)
    with pytest.raises(UsageError) as refused:
        RunOptions(input=Path("in.csv"), workflow_id=workflow_id, api_url="https://x.example",
                   token=Secret("t"))
    assert str(refused.value) == (
        f"workflow id {workflow_id} is not a scenario's id (0 is the placeholder "
        "`batch-engage init-config` writes): put your scenario's id in the config "
        "(workflow_id = 12) or pass -w 12")
    RunOptions(input=Path("in.csv"), workflow_id=1, api_url="https://x.example",
               token=Secret("t"))


def test_a_test_send_takes_one_row_or_more() -> None:
    RunOptions(input=Path("in.csv"), workflow_id=1, dry_run=True, row_limit=1)
    with pytest.raises(UsageError, match="a test send needs at least 1 row, not 0"):
        RunOptions(input=Path("in.csv"), workflow_id=1, dry_run=True, row_limit=0)
