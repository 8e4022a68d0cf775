"""What a run is asked to do: the options, the secret token and the TOML config file."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import UsageError


class Matching(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    PROFILE_ID = "profile_id"
    CUSTOM = "custom"
    CUSTOM_REQUEST = "custom_request"


class Secret:
    """Holds the API token so that printing, logging or a traceback shows ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RunOptions:
    """Everything one run needs; the CLI and library callers build the same object."""

    input: Path
    workflow_id: int | None = None
    api_url: str | None = None
    token: Secret | None = None
    matching: Matching = Matching.EMAIL
    field_name: str | None = None
    resource_id: int | None = None
    phone_region: str | None = None
    content: tuple[tuple[str, str], ...] = ()
    attach: tuple[Path, ...] = ()
    attach_dir: Path | None = None
    rate_per_second: float = 10.0
    max_in_flight: int = 8
    max_attempts: int = 5
    timeout_seconds: float = 30.0
    out: Path | None = None
    sheet: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    allow_duplicates: bool = False
    include_hidden_rows: bool = False
    """Also send rows hidden in the sheet (by a filter or by hand)."""
    dry_run: bool = False
    quiet: bool = False
    verify_tls: bool = True
    """Check the API's TLS certificate; off only for a test server, on the user's word."""
    resume: bool = False
    """Continue the run in ``out``: finished rows are not sent again."""
    resend_uncertain: bool = False
    """With ``resume``: also send rows whose request was on its way when the run was killed."""
    row_limit: int | None = None
    """Send only the first N valid rows (a test send); the rest are left unsent."""
    ledger: Path | None = None
    """An SQLite file shared by runs: profiles it holds as engaged in this workflow are not
    sent again (skipped.csv, ``already_engaged``); each engagement is recorded there."""
    ledger_days: float | None = None
    """Only the ledger's engagements within this many days count."""
    min_rows: int | None = None
    max_rows: int | None = None
    """Refuse an input with fewer or more data rows (a guard for unattended runs)."""
    log_file: Path | None = None
    """Append the run's events to this file as JSON lines (see ``runlog``); it may change
    on ``--resume``."""

    def __post_init__(self) -> None:
        if self.workflow_id is None:
            raise UsageError("a workflow id is required: pass -w/--workflow-id (the scenario id)")
        if self.matching is Matching.CUSTOM and not self.field_name:
            raise UsageError(
                "--matching custom needs --field-name, the profile field to match on "
                "(e.g. --field-name CRM_ID); the values come from the field_value column"
            )
        if self.field_name and self.matching is not Matching.CUSTOM:
            raise UsageError("--field-name only works with --matching custom")
        if self.resend_uncertain and not (self.resume or self.ledger):
            raise UsageError("--resend-uncertain only works with --resume (the run's own "
                             "uncertain rows) or --ledger (those of earlier runs)")
        if self.ledger_days is not None and (
                not math.isfinite(self.ledger_days) or self.ledger_days <= 0):
            raise UsageError(f"--ledger-days {self.ledger_days:g} is not a number of days; "
                             "give e.g. --ledger-days 30")
        if self.ledger_days is not None and self.ledger is None:
            raise UsageError("--ledger-days only works with --ledger PATH, the ledger file")
        for name, limit in (("--min-rows", self.min_rows), ("--max-rows", self.max_rows)):
            if limit is not None and limit < 0:
                raise UsageError(f"{name} {limit} is not a number of rows; give 0 or more")
        if (self.min_rows is not None and self.max_rows is not None
                and self.min_rows > self.max_rows):
            raise UsageError(f"--min-rows {self.min_rows} is more than --max-rows "
                             f"{self.max_rows}: no file could pass; swap them")
        if not math.isfinite(self.rate_per_second) or self.rate_per_second < 0:
            raise UsageError(f"--rate {self.rate_per_second} is not a number of requests a "
                             "second; give e.g. --rate 10, or --rate 0 for no limit")
        if self.row_limit is not None and self.row_limit < 1:
            raise UsageError(f"a test send needs at least 1 row, not {self.row_limit}")
        if self.resume and (self.out is None or self.dry_run):
            raise UsageError("--resume needs --out, the run folder to continue, and no --dry-run")
        if not self.dry_run:
            if self.workflow_id <= 0:
                raise UsageError(
                    f"workflow id {self.workflow_id} is not a scenario's id (0 is the "
                    "placeholder `batch-engage init-config` writes): put your scenario's id "
                    "in the config (workflow_id = 12) or pass -w 12")
            if not self.api_url:
                raise UsageError(
                    "an API URL is required: pass --api-url or set BATCH_ENGAGE_API_URL"
                )
            url = urlsplit(self.api_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise UsageError(
                    f"--api-url {self.api_url!r} is not a web address; write it in full, "
                    "e.g. https://your-account.example.com"
                )
            if self.token is None:
                raise UsageError(
                    "an API token is required: set the BATCH_ENGAGE_TOKEN environment "
                    "variable or pass --token-file PATH (a file that holds only the token)"
                )

    def fixed(self) -> dict[str, Any]:
        """What decides which request each row becomes: stored with a run's journal, and
        the same on ``--resume`` (paths made absolute, so a resume may start elsewhere)."""
        return {
            "workflow_id": self.workflow_id,
            "api_url": self.api_url,
            "matching": self.matching.value,
            "field_name": self.field_name,
            "resource_id": self.resource_id,
            "phone_region": self.phone_region,
            "content": [list(pair) for pair in self.content],
            "attach": [str(p.absolute()) for p in self.attach],
            "attach_dir": str((self.attach_dir or self.input.parent).absolute()),
            "sheet": self.sheet,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "columns": self.columns,
            "allow_duplicates": self.allow_duplicates,
            "include_hidden_rows": self.include_hidden_rows,
            "ledger": str(self.ledger.absolute()) if self.ledger else None,
            "ledger_days": self.ledger_days,
        }

    def public(self) -> dict[str, Any]:
        """The options as plain JSON values, for summary.json; the token is left out.
        Content and paths are shown as the user gave them."""
        return {
            "input": str(self.input),
            **self.fixed(),
            "content": dict(self.content),
            "attach": [str(p) for p in self.attach],
            "attach_dir": str(self.attach_dir) if self.attach_dir else None,
            "rate": self.rate_per_second,
            "concurrency": self.max_in_flight,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout_seconds,
            "dry_run": self.dry_run,
            "verify_tls": self.verify_tls,
            "resume": self.resume,
            "resend_uncertain": self.resend_uncertain,
            "row_limit": self.row_limit,
            "ledger": str(self.ledger) if self.ledger else None,
            "min_rows": self.min_rows,
            "max_rows": self.max_rows,
            "log_file": str(self.log_file) if self.log_file else None,
        }


# Config keys that name files: they are taken relative to the config file's folder, so a
# config works the same from cron, a shell in another folder, or an Airflow task.
_PATH_KEYS = frozenset({"attach", "attach_dir", "token_file", "ledger", "log_file"})


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    options: dict[str, Any]
    """Option values keyed by their CLI parameter name (``workflow_id``, ``phone_region``...)."""
    columns: dict[str, str]
    """The ``[columns]`` table: input header -> column name batch-engage understands."""


def load_config(path: Path, known_options: frozenset[str]) -> ConfigFile:
    """Read a TOML config; refuse unknown keys so a typo never silently does nothing."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UsageError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None

    columns_raw = data.pop("columns", {})
    if not isinstance(columns_raw, dict) or not all(
        isinstance(v, str) for v in columns_raw.values()
    ):
        raise UsageError(
            f'config file {path}: [columns] must map header names to names, e.g. "E-mail" = "email"'
        )
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "token":
            raise UsageError(
                f"config file {path} holds a token: remove it and set BATCH_ENGAGE_TOKEN or "
                "token_file instead, so the secret does not travel with the config"
            )
        if name not in known_options:
            raise UsageError(
                f"config file {path}: unknown option {key!r}; known options are "
                + ", ".join(sorted(known_options))
            )
        options[name] = _relative_to(path, key, value) if name in _PATH_KEYS else value
    return ConfigFile(path=path, options=options, columns=dict(columns_raw))


def _relative_to(config: Path, key: str, value: Any) -> str | list[str]:
    """Paths in a config are relative to its folder, wherever the run starts."""
    if isinstance(value, str):
        return str(config.parent / value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [str(config.parent / v) for v in value]
    # A number would reach the OS as a file descriptor (7 is some open file, 0 is stdin).
    example = {"attach": "terms.pdf", "attach_dir": "files", "token_file": "token.txt",
               "ledger": "engaged.sqlite", "log_file": "batch-engage.jsonl"}[
        key.replace("-", "_")]
    raise UsageError(
        f'config file {config}: {key} must be a path in quotes, e.g. {key} = "{example}"'
        + (' or a list of them, e.g. attach = ["terms.pdf", "logo.png"]'
           if key == "attach" else ""))


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def toml_value(value: Any) -> str:
    """A TOML value (or quoted key), for the few types a config holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + "".join(
        _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
        for c in str(value)) + '"'
