"""Turn one input row into the JSON body of one ``workflows/start`` request, or say why not."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from .attachments import MAX_BODY_BYTES, AttachmentError, AttachmentFolder, encode_file
from .duplicates import FirstRows
from .errors import InputFileError, UsageError
from .options import Matching, RunOptions
from .reader import EXCEL_SUFFIXES, Record

# The column that carries the identifier for each matching mode.
IDENTIFIER_COLUMN = {
    Matching.EMAIL: "email",
    Matching.PHONE: "phone",
    Matching.PROFILE_ID: "profile_id",
    Matching.CUSTOM: "field_value",
    Matching.CUSTOM_REQUEST: "custom_request",
}
_CONTENT_PREFIXES = ("content.", "apicontent.")
_FILTER_PREFIX = "subscription_filter."
# Plain ASCII addresses, the great majority, are checked by this strict subset of what
# email-validator accepts (a property test holds the two together); the rest go to
# email-validator, which is exact but costs ~100 us a call: most of a million-row dry run.
# A domain label may not have "--" as its third and fourth characters (reserved for IDNA).
_PLAIN_EMAIL = re.compile(
    r"(?=.{6,254}$)(?=[^@]{1,64}@)(?!.*[xX][nN]--)"
    r"[A-Za-z0-9_%+-]{1,64}(?:\.[A-Za-z0-9_%+-]{1,64})*"
    r"@(?:(?![A-Za-z0-9-]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?!(?:" + "|".join(sorted(SPECIAL_USE_DOMAIN_NAMES)) + r")$)[A-Za-z]{2,63}"
)
# The same test in two parts, the domain's answer kept: a file repeats a few domains, and a
# dry run spent a tenth of its time in the whole pattern. A property test holds plain_email
# to _PLAIN_EMAIL.
_PLAIN_LOCAL = re.compile(r"(?!.*[xX][nN]--)[A-Za-z0-9_%+-]{1,64}(?:\.[A-Za-z0-9_%+-]{1,64})*")
_PLAIN_DOMAIN = re.compile(
    r"(?!.*[xX][nN]--)(?:(?![A-Za-z0-9-]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?!(?:" + "|".join(sorted(SPECIAL_USE_DOMAIN_NAMES)) + r")$)[A-Za-z]{2,63}"
)
_DOMAINS_KEPT = 10_000
_plain_domains: dict[str, bool] = {}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "1", "yes", "y", "да"})
_FALSE = frozenset({"false", "0", "no", "n", "нет"})


class Request(NamedTuple):  # a tuple: one is made for every row, so it is made cheaply
    row: int
    identifier: str
    """The identifier as sent (an E.164 phone, a trimmed email...), for success.csv."""
    body: bytes
    """The UTF-8 JSON body, token included."""
    key: str
    """The identifier as duplicates and the ledger judge it (``identity``)."""


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    stage: str
    """``validation`` or ``duplicate``."""
    error: str
    """A short code that groups errors in summary.json, e.g. ``invalid_phone``."""
    text: str
    """What is wrong, in which row and column, and how to fix it."""


class _Invalid(Exception):
    def __init__(self, code: str, column: str, message: str) -> None:
        self.code, self.column, self.message = code, column, message


def show(value: str, limit: int = 60) -> str:
    """A cell value quoted for a message, cut short if long."""
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return "'" + value.replace("\n", "\\n") + "'"


def plain_email(text: str) -> bool:
    """``_PLAIN_EMAIL.fullmatch(text)``, faster."""
    local, _, domain = text.rpartition("@")
    if not (6 <= len(text) <= 254 and 0 < len(local) <= 64):
        return False
    plain = _plain_domains.get(domain)
    if plain is None:
        plain = _PLAIN_DOMAIN.fullmatch(domain) is not None
        if len(_plain_domains) < _DOMAINS_KEPT:
            _plain_domains[domain] = plain
    return plain and _PLAIN_LOCAL.fullmatch(local) is not None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # json.loads takes NaN and Infinity


_JSON_CELL = json.JSONDecoder(parse_constant=_not_json)


def parse_json_cell(text: str) -> Any:
    """A cell whose whole text is a JSON array or object becomes that JSON; else the text."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            value = _JSON_CELL.decode(stripped)
        except ValueError:
            return text
        if isinstance(value, list | dict):
            return value
    return text


def encode_body(body: dict[str, Any]) -> bytes:
    """A request's compact UTF-8 JSON. orjson takes a twentieth of json's time, most of a
    dry run's per-row work (bench/RESULTS.md); json only for what orjson refuses: an
    integer over 64 bits in a JSON cell."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def identity(matching: Matching, identifier: str) -> str:
    """An identifier as sent, as duplicates are judged: emails regardless of case (the API
    matches them so), a custom request by its JSON value, the rest exactly. An earlier run's
    engagements are looked up the same way."""
    if matching is Matching.EMAIL:
        folded = identifier.casefold()
        # Most emails are written folded already: the run's duplicate check, which keeps a
        # key per row, then holds the row's own string, not a copy (a DataFrame's live on).
        return identifier if folded == identifier else folded
    if matching is Matching.CUSTOM_REQUEST:
        return json.dumps(parse_json_cell(identifier), sort_keys=True, ensure_ascii=False)
    return identifier


def parse_bool(text: str) -> bool | None:
    folded = text.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    return None


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _check_paths(paths: list[tuple[tuple[str, ...], str]], what: str) -> None:
    """Refuse ``content.a`` beside ``content.a.b``: a key cannot be both text and an object."""
    seen: dict[tuple[str, ...], str] = {}
    for path, source in paths:
        if path in seen:
            raise InputFileError(
                f"{source} and {seen[path]} both set {what}.{'.'.join(path)}; keep one"
            )
        seen[path] = source
    for path, source in paths:
        for n in range(1, len(path)):
            if path[:n] in seen:
                raise InputFileError(
                    f"{source} nests inside {seen[path[:n]]}, which is a single value; "
                    f"rename one of them (e.g. {what}.{'.'.join(path[:n])}_text)"
                )


class Mapper:
    """Built once per run from the header row; ``map`` is then called for every row."""

    def __init__(
        self,
        headers: list[str],
        options: RunOptions,
        token: str,
        on_warning: Callable[[str], None],
        *,
        spill_folder: Path | None = None,
    ) -> None:
        """``spill_folder`` (the run's) holds the duplicate check's file on a large input;
        None: a temporary file. ``close`` deletes it."""
        self.options = options
        self.matching = options.matching
        self.identifier_column = IDENTIFIER_COLUMN[options.matching]
        self._token = token
        self._phone_region = options.phone_region.upper() if options.phone_region else None
        if self.matching is Matching.PHONE:  # phonenumbers takes 13 ms to import
            from .phones import e164  # noqa: PLC0415

            self._e164 = e164
        self._seen = None if options.allow_duplicates else FirstRows(spill_folder)
        attach_dir = options.attach_dir or options.input.parent
        self._folder = AttachmentFolder(attach_dir)
        self._fixed_attach = [self._load_fixed(p) for p in options.attach]

        renames = {k.strip().casefold(): v.strip() for k, v in options.columns.items()}
        identifier: tuple[int, str] | None = None
        self._resource: tuple[int, str] | None = None
        self._attach: tuple[int, str] | None = None
        self._content: list[tuple[int, str | None, tuple[str, ...]]] = []
        """Column, its key when not nested (the common case, set without a walk), path."""
        self._filter: list[tuple[int, str, str]] = []
        claimed: dict[str, tuple[int, str]] = {}
        self._used: dict[int, str] = {}
        """The columns that are sent, by index, with their labels for messages."""
        self._workbook = options.input.suffix.lower() in EXCEL_SUFFIXES
        content_paths = [((k,) if "." not in k else tuple(k.split(".")), f"--content {k}")
                         for k, _ in options.content]
        filter_paths: list[tuple[tuple[str, ...], str]] = []
        ignored: list[str] = []

        for index, header in enumerate(headers):
            name = renames.get(header.strip().casefold(), header.strip())
            key = name.casefold()
            where = f"column {header.strip()!r}" if name == header.strip() else (
                f"column {header.strip()!r} (renamed to {name!r})"
            )
            label = header.strip() or f"#{index + 1}"
            if key.startswith("_"):
                continue
            if not key:
                ignored.append(f"#{index + 1} (no header)")
                continue
            role = self.role(key)
            if role is None:
                ignored.append(repr(header.strip()))
                continue
            if role in claimed:
                # (The workbook reader's module, imported only here, costs a CSV's start.)
                from .xlsx import column_letter  # noqa: PLC0415
                first, first_where = claimed[role]
                raise InputFileError(
                    f"column {column_letter(first)} {first_where.removeprefix('column ')} and "
                    f"column {column_letter(index)} {where.removeprefix('column ')} are both "
                    f"{role!r}; remove or rename one")
            claimed[role] = (index, where)
            self._used[index] = label
            if role == self.identifier_column:
                identifier = (index, label)
            elif role == "resource_id":
                self._resource = (index, label)
            elif role == "attach":
                self._attach = (index, label)
            elif role.startswith("content."):
                path = tuple(name.split(".", 1)[1].split("."))
                if not all(path):
                    raise InputFileError(f"{where}: a content key cannot have an empty part")
                content_paths.append((path, where))
                self._content.append((index, path[0] if len(path) == 1 else None, path))
            elif role.startswith(_FILTER_PREFIX):
                field = name.split(".", 1)[1]
                filter_paths.append(((field,), where))
                self._filter.append((index, label, field))
            else:
                ignored.append(f"{header.strip()!r} (not used with --matching {self.matching})")
                del self._used[index]

        if identifier is None:
            raise InputFileError(
                f"--matching {self.matching} needs a column named {self.identifier_column!r}, "
                f"and the file has none (its columns: {', '.join(repr(h) for h in headers)}); "
                "rename the header, or map it in the config's [columns] table, e.g. "
                f'"E-mail" = "{self.identifier_column}"'
            )
        self._identifier = identifier
        _check_paths(content_paths, "content")
        _check_paths(filter_paths, "subscription_filter")
        if self._filter and self.matching is Matching.CUSTOM_REQUEST:
            on_warning("subscription_filter columns are not used with custom_request; "
                       "the API ignores them, so they are not sent")
            for index, _, _ in self._filter:
                del self._used[index]
            self._filter = []
        if ignored:
            on_warning("these columns are ignored: " + ", ".join(ignored))
        self._fixed_content: dict[str, Any] = {}
        for key, value in options.content:
            _set_path(self._fixed_content, tuple(key.split(".")), parse_json_cell(value))

    def close(self) -> None:
        if self._seen is not None:
            self._seen.close()

    @property
    def identifier_index(self) -> int:
        """The identifier's column: a --log-file line masks its cell, valid or not."""
        return self._identifier[0]

    @staticmethod
    def role(key: str) -> str | None:
        """What a column name (casefolded) means to the mapper, or None: ignored. The
        column guesser asks too, so that its guesses mean what a run will do."""
        if key in ("email", "phone", "profile_id", "field_value", "custom_request",
                   "resource_id", "attach"):
            return key
        for prefix in _CONTENT_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                return "content." + key[len(prefix):]
        if key.startswith(_FILTER_PREFIX) and len(key) > len(_FILTER_PREFIX):
            return key
        return None

    def _load_fixed(self, path: Path) -> dict[str, str]:
        try:
            return encode_file(path, path.name)
        except AttachmentError as e:
            raise UsageError(f"--attach {path}: {e.message}") from None

    def map(self, record: Record) -> Request | RowError:
        row = record.number
        try:
            if record.extra:
                raise _Invalid("extra_cells", "", self._extra_message(record))
            if record.errors:
                self._check_errors(record)
            identifier, dedup_key, body = self._build(record.cells)
        except _Invalid as e:
            where = f"row {row}, column {e.column}" if e.column else f"row {row}"
            return RowError(row, "validation", e.code, f"{where}: {e.message}")
        data = encode_body(body)
        if len(data) > MAX_BODY_BYTES:
            return RowError(
                row, "validation", "body_too_large",
                f"row {row}: the request would be {len(data) / 2**20:.1f} MB, over the API's "
                f"{MAX_BODY_BYTES // 2**20} MB limit; shorten the content or attach smaller files",
            )
        # Only a row that will be sent claims its identifier: an invalid one before a fixed
        # copy of it must not make the fixed one a duplicate.
        if self._seen is not None:
            first = self._seen.first(dedup_key, row)
            if first != row:
                return RowError(
                    row, "duplicate", "duplicate",
                    f"row {row}, column {self._identifier[1]}: "
                    f"{show(identifier)} repeats row {first}, so it was not sent again; "
                    "pass --allow-duplicates to send every row",
                )
        return Request(row, identifier, data, dedup_key)

    def _extra_message(self, record: Record) -> str:
        from .xlsx import column_letter  # noqa: PLC0415  (as in __init__: rarely needed)
        values = ", ".join(show(c, 30) for c in record.extra[:3])
        width = len(record.cells)
        if self._workbook:
            return (f"has {len(record.extra)} filled cell(s) to the right of column "
                    f"{column_letter(width - 1)}, the last one with a header ({values}); "
                    "add a header above them in row 1, or clear them")
        return (f"has {len(record.extra)} more filled cell(s) than the header has columns "
                f"({values}); a value probably holds an unquoted delimiter: quote it, or "
                "add a header for the extra column")

    def _check_errors(self, record: Record) -> None:
        """An error cell in a column that is sent makes the row invalid; elsewhere it is
        as good as empty."""
        for index in record.errors:
            label = self._used.get(index)
            if label is not None:
                raise _Invalid(
                    "cell_error", label,
                    f"the cell shows the Excel error {record.cells[index]}, not a value; fix "
                    "the formula or the data it uses, save the workbook and run it again")

    def _build(self, cells: list[str]) -> tuple[str, str, dict[str, Any]]:
        index, column = self._identifier
        raw = cells[index]
        body: dict[str, Any] = {"token": self._token, "id": self.options.workflow_id}
        identifier, dedup_key = self._identify(raw, column, body)

        if self._resource is not None and (text := cells[self._resource[0]].strip()):
            body["resource_id"] = int(text) if _INTEGER.fullmatch(text) else self._integer(
                cells[self._resource[0]], self._resource[1])
        elif self.options.resource_id is not None:
            body["resource_id"] = self.options.resource_id

        if self._filter:
            subscription: dict[str, Any] = {}
            for i, col, field in self._filter:
                text = cells[i]
                if not text.strip():
                    continue
                if field == "not_strict":
                    flag = parse_bool(text)
                    if flag is None:
                        raise _Invalid("invalid_boolean", col,
                                       f"{show(text)} is not true or false; write true or false")
                    subscription[field] = flag
                else:
                    subscription[field] = text.strip()
            if subscription:
                body["subscription_filter"] = subscription

        content = json.loads(json.dumps(self._fixed_content)) if self._fixed_content else {}
        for i, key, path in self._content:  # every row's cells: kept to the bare steps
            text = cells[i]
            stripped = text.strip()
            if stripped:
                value = parse_json_cell(text) if stripped[0] in "[{" else text
                if key is None:
                    _set_path(content, path, value)
                else:
                    content[key] = value
        if content:
            body["content"] = content

        attach = self._fixed_attach
        if self._attach is not None:
            attach = list(attach)
            for written in cells[self._attach[0]].split("|"):
                if written.strip():
                    try:
                        attach.append(self._folder.load(written.strip()))
                    except AttachmentError as e:
                        raise _Invalid(e.code, self._attach[1], e.message) from None
        if attach:
            body["attach"] = attach
        return identifier, dedup_key, body

    def _identify(self, raw: str, column: str, body: dict[str, Any]) -> tuple[str, str]:
        """Validate the identifier cell, put it into ``body``; return it as sent and its key."""
        text = raw.strip()
        if not text:
            raise _Invalid("missing_value", column,
                           f"the {self.identifier_column} is empty; fill it in or delete the row")
        mode = self.matching
        if mode is Matching.EMAIL:
            if not plain_email(text):
                try:
                    validate_email(text, check_deliverability=False)
                except EmailNotValidError as e:
                    raise _Invalid("invalid_email", column,
                                   f"{show(raw)} is not an email address ({e}); correct it"
                                   ) from None
            body["matching"] = "email"
            body["email"] = text
            return text, identity(mode, text)
        if mode is Matching.PHONE:
            phone = self._phone(raw, column)
            body["matching"] = "phone"
            body["phone"] = phone
            return phone, phone
        if mode is Matching.PROFILE_ID:
            body["matching"] = "profile_id"
            body["profile_id"] = text
            return text, text
        if mode is Matching.CUSTOM:
            body["matching"] = "custom"
            body["field_name"] = self.options.field_name
            body["field_value"] = text
            return text, text
        value = parse_json_cell(text)
        if not isinstance(value, dict):
            raise _Invalid("invalid_json", column,
                           f"{show(raw)} is not a JSON object; write it as "
                           '{"field": "value"} with double quotes')
        body["custom_request"] = value
        return text, json.dumps(value, sort_keys=True, ensure_ascii=False)

    def _phone(self, raw: str, column: str) -> str:
        phone = self._e164(raw, self._phone_region)
        if phone is None:
            fix = ("write it with the country code, e.g. +79001234567"
                   + ("" if self._phone_region else ", or pass --phone-region RU"))
            region = f" in region {self._phone_region}" if self._phone_region else ""
            raise _Invalid("invalid_phone", column,
                           f"{show(raw)} is not a phone number{region}; {fix}")
        return phone

    @staticmethod
    def _integer(text: str, column: str) -> int:
        if not _INTEGER.fullmatch(text.strip()):
            raise _Invalid("invalid_resource_id", column,
                           f"{show(text)} is not a whole number; write the resource id as "
                           "digits, e.g. 24")
        return int(text.strip())
