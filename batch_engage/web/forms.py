"""The mapping form: what the page shows for each column, and the Mapping it posts back."""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import MultiDictProxy

from ..guesser import Guess
from ..options import Matching
from .store import Mapping

# The roles a column may have, as the select shows them.
ROLES = (
    ("email", "Email (identifier)"),
    ("phone", "Phone (identifier)"),
    ("profile_id", "Profile id (identifier)"),
    ("field_value", "Custom field value (identifier)"),
    ("custom_request", "Custom request (JSON)"),
    ("content", "Content"),
    ("subscription_filter", "Subscription filter"),
    ("resource_id", "Resource id"),
    ("attach", "Attachment"),
    ("ignore", "Ignore"),
)
MATCHINGS = (
    (Matching.EMAIL, "Email"),
    (Matching.PHONE, "Phone"),
    (Matching.PROFILE_ID, "Profile id"),
    (Matching.CUSTOM, "Custom field"),
    (Matching.CUSTOM_REQUEST, "Custom request"),
)
_KEYED = ("content", "subscription_filter")
IGNORED = "_ignored"
_KEY = re.compile(r"[^\w.]+")


class FormError(ValueError):
    """A field the marketer must fix; the message names it."""


@dataclass(frozen=True)
class ColumnRow:
    index: int
    header: str
    role: str
    key: str
    reason: str


def slug(header: str) -> str:
    """A content key from a header: ``First name`` -> ``first_name``."""
    return _KEY.sub("_", header.strip().casefold()).strip("_") or "value"


def role_of(name: str) -> tuple[str, str]:
    """What a ``[columns]`` name means as a role and key (the reverse of ``column_name``)."""
    key = name.strip().casefold()
    for prefix in ("content.", "apicontent."):
        if key.startswith(prefix):
            return "content", name.strip()[len(prefix):]
    if key.startswith("subscription_filter."):
        return "subscription_filter", name.strip()[len("subscription_filter."):]
    if key in dict(ROLES) and key not in _KEYED:
        return key, ""
    return "ignore", ""


def column_name(role: str, key: str) -> str:
    if role == "content":
        return f"content.{key}"
    if role == "subscription_filter":
        return f"subscription_filter.{key}"
    return IGNORED if role == "ignore" else role


def rows_from_guess(guess: Guess) -> list[ColumnRow]:
    rows = []
    for index, column in enumerate(guess.columns):
        key = column.key or (slug(column.header) if column.role in _KEYED else "")
        rows.append(ColumnRow(index, column.header, column.role, key, column.reason))
    return rows


def rows_from_mapping(headers: list[str], mapping: Mapping, reason: str) -> list[ColumnRow]:
    renames = {h.strip().casefold(): n for h, n in mapping.columns.items()}
    rows = []
    for index, header in enumerate(headers):
        if header.strip().startswith("_"):
            continue  # a report's own columns: never sent
        role, key = role_of(renames.get(header.strip().casefold(), header))
        rows.append(ColumnRow(index, header.strip(), role, key, reason))
    return rows


def _integer(form: MultiDictProxy[str], name: str, label: str, *, required: bool = False,
             low: int | None = None) -> int | None:
    text = form.get(name, "").strip().replace(",", "").replace(" ", "")
    if not text:
        if required:
            raise FormError(f"{label} is required: the number of the scenario in your account")
        return None
    if not re.fullmatch(r"[0-9]+", text) or (low is not None and int(text) < low):
        raise FormError(f"{label} must be a whole number"
                        + (f" of at least {low}" if low is not None else "")
                        + f", not {text!r}")
    return int(text)


def parse_mapping(form: MultiDictProxy[str], headers: list[str], *, max_rate: float,
                  max_concurrency: int) -> Mapping:
    """The posted mapping form as a Mapping; raises FormError naming the field to fix."""
    workflow_id = _integer(form, "workflow_id", "Workflow id", required=True, low=1)
    assert workflow_id is not None
    try:
        matching = Matching(form.get("matching", "email"))
    except ValueError:
        raise FormError("Matching must be one of the five modes") from None
    columns: dict[str, str] = {}
    for index, header in enumerate(headers):
        role = form.get(f"role_{index}")
        if role is None:
            continue  # not shown (a report's own _ columns)
        if role not in dict(ROLES):
            raise FormError(f"column {header!r}: unknown role {role!r}")
        key = form.get(f"key_{index}", "").strip()
        if role in _KEYED and not key:
            raise FormError(f"column {header!r}: give the {role} key it fills "
                            "(e.g. first_name for {apicontent.first_name})")
        name = column_name(role, key)
        if name.casefold() != header.strip().casefold():
            columns[header.strip()] = name
    content = []
    for number, line in enumerate(form.get("content", "").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise FormError(f"Constant content, line {number}: {line.strip()!r} is not "
                            "KEY=VALUE; write e.g. promo_code=SPRING")
        content.append((key.strip(), value.strip()))
    rate_text = form.get("rate", "").strip() or f"{max_rate:g}"
    try:
        rate = float(rate_text)
    except ValueError:
        raise FormError(f"Rate must be a number of requests a second, not {rate_text!r}"
                        ) from None
    if max_rate and not 0 < rate <= max_rate:
        raise FormError(f"Rate must be above 0 and at most {max_rate:g} requests a second "
                        "(the server's limit, batch-engage serve --rate)")
    if not max_rate and not rate >= 0:
        raise FormError("Rate must be a number of requests a second, or 0 for no limit")
    concurrency = _integer(form, "concurrency", "Concurrency", low=1) or max_concurrency
    if concurrency > max_concurrency:
        raise FormError(f"Concurrency must be at most {max_concurrency} (the server's limit, "
                        "batch-engage serve --concurrency)")
    field_name = form.get("field_name", "").strip() or None
    region = form.get("phone_region", "").strip().upper() or None
    if region is not None and not re.fullmatch(r"[A-Z]{2}", region):
        raise FormError(f"Phone region must be a two-letter country code such as RU or US, "
                        f"not {region!r}")
    return Mapping(
        workflow_id=workflow_id, matching=matching, columns=columns,
        field_name=field_name if matching is Matching.CUSTOM else None,
        resource_id=_integer(form, "resource_id", "Resource id"),
        phone_region=region, content=tuple(content), sheet=form.get("sheet") or None,
        rate=rate, concurrency=concurrency,
    )

