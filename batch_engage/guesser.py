"""Guess what each column of a spreadsheet is, from its header and its first values.

``init-config`` writes the guess as a starter config, and the web page shows it as the
mapping to start from. The guess only ever names columns the mapper understands, never gives
two columns the same role (the mapper refuses that), and leaves a column it cannot place
ignored rather than sending data nobody asked for.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import phonenumbers
from phonenumbers import CountryCodeSource

from .mapper import Mapper, Request
from .options import Matching, RunOptions
from .reader import ExcelTable, Record, TextTable, open_table

ROLES = ("email", "phone", "profile_id", "field_value", "custom_request", "resource_id",
         "attach", "content", "subscription_filter", "ignore")
IDENTIFIER_ROLES = ("email", "phone", "profile_id", "field_value", "custom_request")
IGNORED = "_ignored"
"""The rename target of an ignored column: the mapper skips a ``_`` column silently."""
SAMPLE_ROWS = 50
"""How many data rows a caller should pass: enough to judge, quick to read."""

# The identifier roles in the order the suggested matching prefers them.
_MATCHING_BY_ROLE = {
    "email": Matching.EMAIL,
    "phone": Matching.PHONE,
    "profile_id": Matching.PROFILE_ID,
    "custom_request": Matching.CUSTOM_REQUEST,
    "field_value": Matching.CUSTOM,
}

# Header names people give each column, in English and Russian, and what batch-engage calls
# it. Matched after _normal(): case, spaces, punctuation and "ё" do not matter, so "E-mail",
# "e_mail" and "EMAIL" are one name. Only whole names match ("Почтовый индекс" is no "почта").
_KNOWN_NAMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("email", "e-mail", (
        "email", "e-mail", "mail", "emails", "email address", "e-mail address", "mail address",
        "электронная почта", "эл. почта", "почта", "e-mail адрес", "email адрес", "адрес почты",
        "адрес электронной почты", "адрес эл. почты", "электронный адрес", "емейл", "имейл",
        "мейл", "емэйл", "эл. адрес")),
    ("phone", "phone number", (
        "phone", "phones", "mobile", "mobile phone", "mobile number", "cell", "cell phone",
        "cellphone", "telephone", "tel", "phone number", "telephone number", "contact phone",
        "msisdn", "телефон", "тел", "тел.", "мобильный", "мобильный телефон", "моб. телефон",
        "моб", "номер телефона", "№ телефона", "номер мобильного", "номер мобильного телефона",
        "сотовый", "сотовый телефон", "контактный телефон", "телефон клиента")),
    ("profile_id", "profile id", (
        "profile id", "customer id", "client id", "user id", "customer number", "client number",
        "id клиента", "ид клиента", "id профиля", "ид профиля", "идентификатор клиента",
        "идентификатор профиля", "код клиента", "номер клиента")),
    ("resource_id", "resource id", ("resource id", "id ресурса", "ид ресурса")),
    ("attach", "attached files", (
        "attachment", "attachments", "file", "files", "attached file", "attached files",
        "вложение", "вложения", "файл", "файлы")),
    ("content.first_name", "first name", (
        "first name", "given name", "forename", "имя", "имя клиента")),
    ("content.last_name", "last name", ("last name", "surname", "family name", "фамилия")),
    ("content.middle_name", "middle name", ("middle name", "patronymic", "отчество")),
    ("content.name", "full name", (
        "name", "full name", "customer name", "client name", "contact name", "фио", "ф.и.о.",
        "полное имя", "имя и фамилия", "фамилия имя отчество")),
    ("content.salutation", "salutation", ("salutation", "обращение")),
    ("content.gender", "gender", ("gender", "sex", "пол")),
    ("content.birthday", "birthday", (
        "birthday", "birth date", "date of birth", "dob", "дата рождения", "день рождения")),
    ("content.age", "age", ("age", "возраст")),
    ("content.city", "city", ("city", "town", "город", "населенный пункт")),
    ("content.region", "region", ("region", "регион", "область")),
    ("content.country", "country", ("country", "страна")),
    ("content.address", "postal address", (
        "address", "postal address", "street address", "адрес", "почтовый адрес")),
    ("content.zip", "postal code", (
        "zip", "zip code", "postcode", "postal code", "индекс", "почтовый индекс")),
    ("content.company", "company", (
        "company", "company name", "organization", "organisation", "компания", "организация",
        "название компании")),
    ("content.position", "job title", ("job title", "position", "должность")),
    ("content.promo_code", "promo code", (
        "promo code", "promo", "coupon", "coupon code", "discount code", "voucher",
        "промокод", "промо-код", "купон")),
    ("content.discount", "discount", ("discount", "скидка", "размер скидки")),
    ("content.order_id", "order number", (
        "order", "order id", "order number", "order no", "заказ", "номер заказа")),
    ("content.order_total", "order total", (
        "order total", "order amount", "amount", "total", "сумма", "сумма заказа")),
    ("content.order_date", "order date", ("order date", "дата заказа")),
    ("content.product", "product", ("product", "product name", "item", "товар", "продукт")),
    ("content.balance", "balance", ("balance", "баланс")),
    ("content.bonus_points", "bonus points", (
        "points", "bonus", "bonuses", "bonus points", "loyalty points", "бонусы", "баллы",
        "бонусные баллы")),
    ("content.card_number", "card number", (
        "card", "card number", "loyalty card", "карта", "номер карты", "бонусная карта")),
    ("content.registration_date", "registration date", (
        "registration date", "signup date", "sign-up date", "дата регистрации")),
    ("content.language", "language", ("language", "lang", "язык")),
    ("content.manager", "manager", ("manager", "account manager", "менеджер")),
    ("content.store", "store", ("store", "shop", "магазин")),
    ("content.segment", "segment", ("segment", "сегмент")),
    ("content.status", "status", ("status", "статус")),
    ("content.link", "link", ("link", "url", "ссылка")),
)


def _normal(header: str) -> str:
    """A header as compared with known names: letters and digits only, case folded."""
    return "".join(c for c in header.casefold().replace("ё", "е") if c.isalnum())


def _index_known() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for target, what, names in _KNOWN_NAMES:
        for name in names:
            key = _normal(name)
            if index.setdefault(key, (target, what)) != (target, what):
                raise AssertionError(f"{name!r} is listed for {index[key][0]} and {target}")
    return index


KNOWN_NAMES = _index_known()
"""Normalized header name -> (name batch-engage understands, what it means in words)."""

_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE_SHAPE = re.compile(r"\+?[0-9][0-9 ().\-]*")
_NON_DIGIT = re.compile(r"\D")
# A number written without "+" counts as a phone, when the header does not say so, only
# with at least this many digits: short numbers (ids, sums) are too often valid somewhere.
_MIN_BARE_PHONE_DIGITS = 10
# Numbers tried for a phone column's region, and regions then checked against all of them.
_REGION_SAMPLE = 20
_REGION_CANDIDATES = 10


@dataclass(frozen=True)
class ColumnGuess:
    header: str
    """The header as read (stripped)."""
    role: str
    """One of ROLES."""
    key: str
    """For "content"/"subscription_filter": the KEY (e.g. "first_name"); else ""."""
    reason: str
    """Why, in words, e.g. "header 'Эл. почта' means e-mail"."""

    @property
    def name(self) -> str:
        """The column name batch-engage understands ("email", "content.first_name"), or
        IGNORED for an ignored column."""
        if self.role in ("content", "subscription_filter"):
            return f"{self.role}.{self.key}"
        return IGNORED if self.role == "ignore" else self.role


@dataclass(frozen=True)
class Guess:
    columns: list[ColumnGuess]
    """One per header, in order."""
    matching: Matching
    """The suggested matching mode."""
    phone_region: str | None
    """The suggested --phone-region when phones are written without "+", else None."""

    def renames(self) -> dict[str, str]:
        """The [columns] table: header -> name batch-engage understands, only for headers
        the mapper would not read that way by itself."""
        renames: dict[str, str] = {}
        for column in self.columns:
            if not column.header or column.header.startswith("_"):
                continue  # the mapper ignores these by itself
            as_is = Mapper.role(column.header.casefold())
            if column.role == "ignore":
                if as_is is not None:
                    renames[column.header] = IGNORED
            elif as_is != Mapper.role(column.name.casefold()):
                renames[column.header] = column.name
        return renames

    @property
    def identifier(self) -> ColumnGuess | None:
        """The column the suggested matching reads, if the file has one."""
        return next((c for c in self.columns if c.role in IDENTIFIER_ROLES), None)


@dataclass
class _Column:
    """A column being judged: what it would be on its own, before columns compete."""

    index: int
    header: str
    name: str | None
    """What it would be called for batch-engage; None: ignored."""
    reason: str
    rank: int = 9
    """How sure: 0 the mapper's own name, 1 a known header name, 2 its values."""
    score: int = 0
    """Values that fit the role: picks between columns that compete for it."""
    region: str | None = None
    """For a phone column: the region that makes its numbers without "+" valid."""

    @property
    def role(self) -> str:
        if self.name is None:
            return "ignore"
        role = Mapper.role(self.name.casefold())
        assert role is not None, self.name
        return role.split(".", 1)[0] if "." in role else role

    def drop(self, reason: str) -> None:
        self.name, self.reason = None, reason


def guess_columns(headers: list[str], rows: list[list[str]]) -> Guess:
    """Guess every column of a file from its headers and a sample of its data rows (about
    SAMPLE_ROWS, cells as the reader gives them)."""
    stripped = [h.strip() for h in headers]
    seen = Counter(h.casefold() for h in stripped if h and not h.startswith("_"))
    columns = []
    for index, header in enumerate(stripped):
        values = [v.strip() for row in rows if index < len(row) and (v := row[index]).strip()]
        if seen[header.casefold()] > 1:
            column = _Column(index, header, None,
                             f"{seen[header.casefold()]} columns are headed {header!r}, and a "
                             "config cannot tell them apart, so none is sent; give them "
                             "different headers in the file")
        else:
            column = _judge(index, header, values)
        columns.append(column)

    matching, identifier = _choose_identifier(columns)
    _one_per_role(columns)
    _one_per_path(columns)
    region = identifier.region if identifier is not None and identifier.role == "phone" else None
    return Guess(
        columns=[ColumnGuess(c.header, c.role,
                             c.name.split(".", 1)[1] if c.name and "." in c.name else "",
                             c.reason) for c in columns],
        matching=matching,
        phone_region=region,
    )


def _judge(index: int, header: str, values: list[str]) -> _Column:
    """One column on its own: its header first, then its values."""
    if header.startswith("_"):
        return _Column(index, header, None, "a name starting with '_' is never sent (the "
                                            "report columns of batch-engage are named so)")
    if not header:
        return _Column(index, header, None, "the column has no header, so it is not sent")
    own = Mapper.role(header.casefold())
    if own is not None:
        if own.startswith(("content.", "subscription_filter.")) and not all(
                header.split(".", 1)[1].split(".")):
            return _Column(index, header, None,
                           f"{header!r} has an empty part after a '.', which the mapper "
                           "refuses; fix the header to send it")
        column = _Column(index, header, header, "batch-engage's own column name", rank=0)
    elif (known := KNOWN_NAMES.get(_normal(header))) is not None:
        column = _Column(index, header, known[0], f"header {header!r} means {known[1]}", rank=1)
    else:
        column = _Column(index, header, None,
                         f"{header!r} is not a name batch-engage knows, so it is not sent")
    if column.name is None or column.role in ("email", "phone"):
        _judge_values(column, values)
    return column


def _judge_values(column: _Column, values: list[str]) -> None:
    """Count the values that fit an email or phone role; name an unplaced column by them."""
    if not values:
        return
    if column.name is None or column.role == "email":
        emails = sum(1 for v in values if _EMAIL_SHAPE.fullmatch(v))
        column.score = emails
        if column.name is None and emails * 2 > len(values):
            column.name, column.rank = "email", 2
            column.reason = f"{emails} of {len(values)} values are e-mail addresses"
            return
    if column.name is None or column.role == "phone":
        bare_digits = None if column.name else _MIN_BARE_PHONE_DIGITS
        shaped = sum(1 for v in values if v.startswith("+") or _bare(v, bare_digits))
        if column.name is None and shaped * 2 <= len(values):
            return  # cannot be a majority of phones: spare the costly look
        region = suggest_phone_region(values, bare_digits)
        phones = _count_phones(values, region, bare_digits)
        if column.name is None and phones * 2 > len(values):
            column.name, column.rank = "phone", 2
            column.reason = f"{phones} of {len(values)} values are phone numbers"
        if column.role == "phone":
            column.score, column.region = phones, region


def _choose_identifier(columns: list[_Column]) -> tuple[Matching, _Column | None]:
    """The one column the suggested matching reads; other identifiers are not sent."""
    candidates = [c for c in columns if c.role in IDENTIFIER_ROLES]
    chosen = None
    matching = Matching.EMAIL
    for role, mode in _MATCHING_BY_ROLE.items():
        group = [c for c in candidates if c.role == role]
        if group:
            chosen = min(group, key=lambda c: (c.rank, -c.score, c.index))
            matching = mode
            break
    for column in candidates:
        if column is chosen:
            continue
        assert chosen is not None
        hint = (f"; to send it with each row, write content.{column.role}"
                if column.role in ("email", "phone", "profile_id") else "")
        column.drop(f"{column.reason}, but profiles are matched by column {chosen.header!r}, "
                    f"so it is not sent{hint}")
    return matching, chosen


def _one_per_role(columns: list[_Column]) -> None:
    """resource_id and attach: one column each; the surest keeps it."""
    for role in ("resource_id", "attach"):
        group = sorted((c for c in columns if c.role == role), key=lambda c: (c.rank, c.index))
        for column in group[1:]:
            column.drop(f"{column.reason}, but column {group[0].header!r} is the {role} "
                        "already, so it is not sent")


def _one_per_path(columns: list[_Column]) -> None:
    """content.KEY and subscription_filter.KEY: a key is set once, and never both as a
    value and as an object of nested keys (content.order beside content.order.total)."""
    taken: dict[tuple[str, ...], _Column] = {}
    for column in sorted(columns, key=lambda c: (c.rank, c.index)):
        if column.name is None or column.role not in ("content", "subscription_filter"):
            continue
        path = (column.role, *column.name.casefold().split(".", 1)[1].split("."))
        clash = next((other for p, other in taken.items()
                      if p[:len(path)] == path or path[:len(p)] == p), None)
        if clash is not None:
            column.drop(f"{column.reason}, but {clash.name} is already set by column "
                        f"{clash.header!r}, so it is not sent")
            continue
        taken[path] = column


# --- phones -----------------------------------------------------------------------------------


@cache
def _phone_mapper(region: str | None) -> Mapper:
    """The run's own check of a phone, so that the dry run agrees with the guess."""
    options = RunOptions(input=Path("guess.csv"), workflow_id=0, matching=Matching.PHONE,
                         phone_region=region, dry_run=True, allow_duplicates=True)
    return Mapper(["phone"], options, token="", on_warning=lambda _message: None)


def _is_phone(value: str, region: str | None) -> bool:
    return isinstance(_phone_mapper(region).map(Record(2, [value], [])), Request)


def _bare(value: str, min_digits: int | None) -> bool:
    """A number written without "+" that may be a phone."""
    if value.startswith("+") or not _PHONE_SHAPE.fullmatch(value):
        return False
    return min_digits is None or len(_NON_DIGIT.sub("", value)) >= min_digits


def _count_phones(values: list[str], region: str | None, bare_digits: int | None) -> int:
    return sum(1 for v in values
               if (v.startswith("+") or (region is not None and _bare(v, bare_digits)))
               and _PHONE_SHAPE.fullmatch(v) and _is_phone(v, region))


@cache
def _regions_by_prefix() -> list[tuple[str, str, str | None]]:
    """(region, country calling code, national trunk prefix) for every region."""
    return [(region, str(phonenumbers.country_code_for_region(region)),
             phonenumbers.ndd_prefix_for_region(region, True) or None)
            for region in sorted(phonenumbers.SUPPORTED_REGIONS)]


def suggest_phone_region(values: Sequence[str], min_digits: int | None = None) -> str | None:
    """The --phone-region that makes most phones written without "+" valid, or None.

    A region counts only where a number shows it: one written with its country code but no
    "+" (79001234567), or with its trunk prefix (89001234567 in Russia, 030... in Germany),
    or a "+" number of that country. Any region would do less well: some (Luxembourg) accept
    nearly every run of digits. Numbers are checked by the mapper, as the dry run will.
    """
    evidence: Counter[str] = Counter()
    bare = [v.strip() for v in values if _bare(v.strip(), min_digits)]
    if not bare:
        return None
    # A few numbers show the country as well as many: each is tried in ~100 regions.
    plus = [v.strip() for v in values if v.strip().startswith("+")][:_REGION_SAMPLE]
    for value in plus:
        try:
            number = phonenumbers.parse(value)
        except phonenumbers.NumberParseException:
            continue
        region = phonenumbers.region_code_for_number(number)
        if region and phonenumbers.is_valid_number(number):
            evidence[region] += 1
    for value in bare[:_REGION_SAMPLE]:
        digits = _NON_DIGIT.sub("", value)
        for region, code, trunk in _regions_by_prefix():
            if not (digits.startswith(code) or (trunk and digits.startswith(trunk))):
                continue
            try:
                number = phonenumbers.parse(value, region, keep_raw_input=True)
            except phonenumbers.NumberParseException:
                continue
            if not phonenumbers.is_valid_number(number):
                continue
            national = phonenumbers.national_significant_number(number)
            if (number.country_code_source == CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN
                    or len(national) < len(digits)):
                evidence[region] += 1
    if not evidence:
        return None
    def main(region: str) -> bool:
        """The region a calling code is first of (RU for +7, US for +1)."""
        calling = phonenumbers.country_code_for_region(region)
        return phonenumbers.region_code_for_country_code(calling) == region

    scored: list[tuple[tuple[int, int, bool], int, str]] = []
    most = max(evidence.values())
    # The regions the numbers show most, the main one of a calling code first among equals.
    ranked = sorted(evidence.items(), key=lambda item: (-item[1], not main(item[0]), item[0]))
    for region, seen in ranked[:_REGION_CANDIDATES]:
        if seen * 2 < most:
            break
        valid = sum(1 for v in bare if _is_phone(v, region))
        if valid:
            scored.append(((valid, seen, main(region)),
                           phonenumbers.country_code_for_region(region), region))
    if not scored:
        return None
    scored.sort(reverse=True)
    (valid, seen, _main), calling, region = scored[0]
    # Two countries that fit equally well: the file does not say which, so neither is guessed.
    if any(fit[:2] == (valid, seen) and other != calling for fit, other, _ in scored[1:]):
        return None
    return region


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The start of a file, as the guess needs it, and how it was read."""

    headers: list[str]
    rows: list[list[str]]
    """Up to SAMPLE_ROWS data rows that a run would send: blank and hidden rows left out."""
    description: str
    """As summary.json puts it, e.g. "text, cp1251, semicolon-separated"."""
    encoding: str | None = None
    """Text files: the encoding, as given or detected."""
    delimiter: str | None = None
    """Text files: the delimiter, as given or detected."""
    sheet: str | None = None
    """Workbooks: the sheet read."""


def read_sample(path: Path, *, encoding: str | None = None, delimiter: str | None = None,
                sheet: str | None = None, rows: int = SAMPLE_ROWS) -> Sample:
    """Read the header and the first data rows of INPUT with the run's own reader.

    Raises InputFileError, with a fix, for a file the run would refuse.
    """
    table = open_table(path, encoding=encoding, delimiter=delimiter, sheet=sheet)
    try:
        sample: list[list[str]] = []
        # Hidden and blank rows are passed over, not without end.
        for seen, record in enumerate(table.records()):
            if not record.hidden and any(c.strip() for c in record.cells):
                sample.append(record.cells)
            if len(sample) >= rows or seen >= rows * 20:
                break
    finally:
        table.close()
    if isinstance(table, TextTable):
        return Sample(table.headers, sample, table.description,
                      encoding=table.encoding, delimiter=table.delimiter)
    if isinstance(table, ExcelTable):
        return Sample(table.headers, sample, table.description, sheet=table.sheet)
    return Sample(table.headers, sample, table.description)


# --- attachments ------------------------------------------------------------------------------


def find_attach_dir(folder: Path, written: Sequence[str], max_folders: int = 100) -> Path | None:
    """The folder the ``attach`` paths of a file point into, when it is not ``folder``
    itself (the default) but a folder inside it, as ``files/`` beside the input: the one
    holding most of the files written. None when ``folder`` holds as many, or none does."""
    paths = [p.strip() for cell in written for p in cell.split("|") if p.strip()]
    if not paths:
        return None

    def found(root: Path) -> int:
        root = root.resolve()
        count = 0
        for path in paths:
            try:
                full = (root / path).resolve()
            except (OSError, ValueError):
                continue
            if full.is_relative_to(root) and full.is_file():
                count += 1
        return count

    best, best_count = None, found(folder)
    try:
        inside = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    for sub in inside[:max_folders]:
        count = found(sub)
        if count > best_count:
            best, best_count = sub, count
    return best
