"""The column guesser: header names in English and Russian, values, and a guess the mapper takes."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from batch_engage.guesser import (
    IDENTIFIER_ROLES,
    IGNORED,
    KNOWN_NAMES,
    Guess,
    find_attach_dir,
    guess_columns,
    read_sample,
    suggest_phone_region,
)
from batch_engage.mapper import Mapper
from batch_engage.options import Matching, RunOptions

from .conftest import write_csv


def one(header: str, *values: str) -> str:
    """What a file of one column is guessed to be: the name batch-engage understands."""
    return guess_columns([header], [[v] for v in values]).columns[0].name


def mapper_for(guess: Guess, headers: list[str], tmp_path: Path) -> list[str]:
    """Build the run's mapper from the guess as a config would; return its warnings."""
    warnings: list[str] = []
    options = RunOptions(
        input=tmp_path / "in.csv", workflow_id=1, matching=guess.matching,
        field_name="CRM_ID" if guess.matching is Matching.CUSTOM else None,
        phone_region=guess.phone_region, columns=guess.renames(), dry_run=True)
    Mapper(headers, options, token="", on_warning=warnings.append)
    return warnings


@pytest.mark.parametrize(("header", "name"), [
    ("E-mail", "email"), ("Email address", "email"), ("e-mail address", "email"),
    ("Mail", "email"), ("Phone number", "phone"), ("Mobile", "phone"), ("Cell", "phone"),
    ("Telephone", "phone"), ("Customer ID", "profile_id"), ("Client id", "profile_id"),
    ("Profile ID", "profile_id"), ("First name", "content.first_name"),
    ("Last name", "content.last_name"), ("Surname", "content.last_name"),
    ("City", "content.city"), ("Promo code", "content.promo_code"),
    ("Date of birth", "content.birthday"), ("Birthday", "content.birthday"),
    ("Name", "content.name"), ("Full name", "content.name"), ("Company", "content.company"),
    ("Discount", "content.discount"), ("Order number", "content.order_id"),
    ("Attachments", "attach"), ("Resource ID", "resource_id"),
])
def test_english_header_names(header: str, name: str) -> None:
    assert one(header) == name


@pytest.mark.parametrize(("header", "name"), [
    ("Эл. почта", "email"), ("Электронная почта", "email"), ("Почта", "email"),
    ("E-mail адрес", "email"), ("Адрес электронной почты", "email"), ("Телефон", "phone"),
    ("Мобильный", "phone"), ("Моб. телефон", "phone"), ("Номер телефона", "phone"),
    ("Сотовый", "phone"), ("№ телефона", "phone"), ("ID клиента", "profile_id"),
    ("Ид клиента", "profile_id"), ("ID профиля", "profile_id"),
    ("Имя", "content.first_name"), ("Фамилия", "content.last_name"),
    ("Отчество", "content.middle_name"), ("ФИО", "content.name"), ("Ф.И.О.", "content.name"),
    ("Город", "content.city"), ("Промокод", "content.promo_code"),
    ("Дата рождения", "content.birthday"), ("Компания", "content.company"),
    ("Скидка", "content.discount"), ("Номер заказа", "content.order_id"),
])
def test_russian_header_names(header: str, name: str) -> None:
    assert one(header) == name


@pytest.mark.parametrize(("header", "name"), [
    ("  E_MAIL ", "email"), ("ЭЛ.ПОЧТА", "email"), ("Дата  рождения", "content.birthday"),
    ("Номер телефона:", "phone"), ("first-name", "content.first_name"),
    ("Населённый пункт", "content.city"), ("PROMO_CODE", "content.promo_code"),
])
def test_names_ignore_case_spaces_punctuation_and_yo(header: str, name: str) -> None:
    assert one(header) == name


def test_reason_names_the_header_and_its_meaning() -> None:
    column = guess_columns(["Эл. почта"], []).columns[0]
    assert column.header == "Эл. почта"
    assert column.reason == "header 'Эл. почта' means e-mail"


def test_known_names_are_whole_names_only() -> None:
    # "Почтовый индекс" holds "почт", yet it is a postal code, not an e-mail.
    assert one("Почтовый индекс") == "content.zip"
    assert one("Email opt-in") == IGNORED


@pytest.mark.parametrize(("header", "role", "key"), [
    ("email", "email", ""), (" EMAIL ", "email", ""), ("phone", "phone", ""),
    ("profile_id", "profile_id", ""), ("resource_id", "resource_id", ""),
    ("attach", "attach", ""), ("content.Promo", "content", "Promo"),
    ("apicontent.order.total", "content", "order.total"),
    ("subscription_filter.not_strict", "subscription_filter", "not_strict"),
    ("Content.first_name", "content", "first_name"),
])
def test_the_mappers_own_names_keep_their_meaning(header: str, role: str, key: str) -> None:
    guess = guess_columns([header], [])
    column = guess.columns[0]
    assert (column.header, column.role, column.key) == (header.strip(), role, key)
    assert guess.renames() == {}  # the mapper reads them so without help


def test_renames_are_only_what_the_mapper_would_not_read_by_itself(tmp_path: Path) -> None:
    headers = ["Электронная почта", "Имя", "content.city", "Промокод", "Notes"]
    guess = guess_columns(headers, [["a@b.ru", "Иван", "Москва", "X", "n"]])
    assert guess.renames() == {
        "Электронная почта": "email", "Имя": "content.first_name", "Промокод": "content.promo_code"}
    assert [c.role for c in guess.columns] == ["email", "content", "content", "content", "ignore"]
    assert [c.key for c in guess.columns] == ["", "first_name", "city", "promo_code", ""]
    assert mapper_for(guess, headers, tmp_path) == ["these columns are ignored: 'Notes'"]


def test_a_column_of_phones_is_a_phone_column_whatever_its_header() -> None:
    rows = [["8 916 123-45-67", "Иван"], ["89261112233", "Олег"], ["+7 903 765 43 21", "Анна"],
            ["79001234567", ""], ["", "Нет телефона"]]
    guess = guess_columns(["Колонка 3", "Имя"], rows)
    column = guess.columns[0]
    assert (column.role, column.reason) == ("phone", "4 of 4 values are phone numbers")
    assert guess.matching is Matching.PHONE
    assert guess.phone_region == "RU"
    assert guess.renames() == {"Колонка 3": "phone", "Имя": "content.first_name"}


def test_a_column_of_emails_is_an_email_column_whatever_its_header() -> None:
    rows = [["a@b.co", "1"], ["Olga.K@mail.ru", "2"], ["not an email", "3"], ["x@y.org", "4"]]
    guess = guess_columns(["contact", "n"], rows)
    column = guess.columns[0]
    assert (column.role, column.reason) == ("email", "3 of 4 values are e-mail addresses")
    assert guess.matching is Matching.EMAIL
    assert guess.renames() == {"contact": "email"}


def test_values_decide_only_by_a_majority() -> None:
    assert one("contact", "a@b.co", "no", "none") == IGNORED
    assert one("Колонка 3", "+79001234567", "n/a", "-") == IGNORED
    assert one("Колонка 3", "+79001234567", "+0000000", "+1 000") == IGNORED  # look, are not
    assert one("Колонка 3", "+79001234567", "+79001234568", "+1 000") == "phone"


@pytest.mark.parametrize("values", [
    ("03999315", "00012345", "04440001"),     # ids with zeros in front
    ("1250.5", "0", "99999.99"),              # sums
    ("1990-01-15", "1985-07-02", "2001-12-31"),  # dates
    ("8900123", "8900124", "8900125"),        # too short to be sure without a header
    ("19031511", "12469530", "12895446"),     # order numbers, which Bermuda would take
])
def test_numbers_that_are_not_phones_stay_unplaced(values: tuple[str, ...]) -> None:
    assert one("Колонка 7", *values) == IGNORED


def test_an_unknown_header_is_ignored_and_says_so() -> None:
    guess = guess_columns(["email", "Notes", ""], [["a@b.co", "VIP", "x"]])
    notes, blank = guess.columns[1], guess.columns[2]
    assert (notes.role, notes.key) == ("ignore", "")
    assert notes.reason == "'Notes' is not a name batch-engage knows, so it is not sent"
    assert blank.role == "ignore"
    assert "no header" in blank.reason
    assert guess.renames() == {}  # the mapper ignores both by itself, with a warning


def test_report_columns_are_ignored_silently(tmp_path: Path) -> None:
    # A failed.csv comes back with its report columns; a `_` column is never sent, even one
    # whose name or values would place it.
    headers = ["email", "content.name", "_row", "_stage", "_error", "_error_text", "_attempts",
               "_phone", "_backup"]
    guess = guess_columns(headers, [
        ["a@b.co", "Ann", "2", "api", "x", "y", "1", "+79001234567", "b@c.co"]])
    assert [c.role for c in guess.columns[2:]] == ["ignore"] * 7
    assert all("starting with '_'" in c.reason for c in guess.columns[2:])
    assert guess.renames() == {}
    assert mapper_for(guess, headers, tmp_path) == []


@pytest.mark.parametrize("headers", [
    ["email", "E-mail"],
    ["Email", "Phone", "Customer ID"],
    ["Телефон", "Мобильный", "Сотовый"],
    ["phone", "contact"],
    ["email", "phone", "profile_id", "field_value", "custom_request"],
    ["ID клиента", "customer id", "profile_id"],
    ["Колонка 3", "Телефон"],
])
def test_never_two_identifier_columns(headers: list[str], tmp_path: Path) -> None:
    rows = [[{"contact": "a@b.co", "Колонка 3": "+79001234567"}.get(h, "x") for h in headers]]
    guess = guess_columns(headers, rows)
    identifiers = [c for c in guess.columns if c.role in IDENTIFIER_ROLES]
    assert len(identifiers) == 1, guess.columns
    assert guess.identifier is identifiers[0]
    mapper_for(guess, headers, tmp_path)  # the mapper takes it: no two columns share a role


@pytest.mark.parametrize(("headers", "chosen", "matching"), [
    (["Phone", "Email", "Customer ID"], "Email", Matching.EMAIL),
    (["Customer ID", "Телефон"], "Телефон", Matching.PHONE),
    (["Notes", "ID клиента"], "ID клиента", Matching.PROFILE_ID),
    (["custom_request"], "custom_request", Matching.CUSTOM_REQUEST),
    (["field_value"], "field_value", Matching.CUSTOM),
    (["E-mail", "email"], "email", Matching.EMAIL),  # the mapper's own name is surest
    (["contact", "Почта"], "Почта", Matching.EMAIL),  # a header is surer than values
])
def test_matching_prefers_email_then_phone_then_profile_id(
    headers: list[str], chosen: str, matching: Matching
) -> None:
    rows = [[{"contact": "a@b.co"}.get(h, "") for h in headers]]
    guess = guess_columns(headers, rows)
    assert guess.matching is matching
    assert guess.identifier is not None
    assert guess.identifier.header == chosen


def test_the_other_identifier_is_ignored_with_a_reason(tmp_path: Path) -> None:
    headers = ["email", "phone", "Телефон"]
    guess = guess_columns(headers, [["a@b.co", "+79001234567", "+79001234568"]])
    assert [c.role for c in guess.columns] == ["email", "ignore", "ignore"]
    assert guess.columns[2].reason == (
        "header 'Телефон' means phone number, but profiles are matched by column 'email', so "
        "it is not sent; to send it with each row, write content.phone")
    # The mapper would read "phone" as a phone column: the guess says to leave it out.
    assert guess.renames() == {"phone": IGNORED}
    assert guess.phone_region is None  # no phone is matched on
    assert mapper_for(guess, headers, tmp_path) == ["these columns are ignored: 'Телефон'"]


def test_the_column_with_more_valid_values_wins_among_equals() -> None:
    rows = [["x", "a@b.co"], ["y", "c@d.co"]]
    guess = guess_columns(["Email", "E-mail"], rows)
    assert guess.identifier is not None
    assert guess.identifier.header == "Email"
    guess = guess_columns(["Почта", "E-mail"], rows)
    assert guess.identifier is not None
    assert guess.identifier.header == "E-mail"


@pytest.mark.parametrize(("headers", "kept"), [
    (["email", "first_name", "content.first_name"], "content.first_name"),
    (["email", "Имя", "First name"], "Имя"),
    (["email", "Имя", "content.first_name.short"], "content.first_name.short"),  # would nest
    (["email", "content.a", "content.a.b"], "content.a"),
    (["email", "Attachment", "attach"], "attach"),
    (["email", "resource_id", "Resource ID"], "resource_id"),
])
def test_a_content_key_or_role_is_given_once(
    headers: list[str], kept: str, tmp_path: Path
) -> None:
    guess = guess_columns(headers, [["a@b.co", "1", "2"]])
    roles = {c.header: c.role for c in guess.columns}
    assert roles[kept] != "ignore"
    assert [h for h in headers[1:] if roles[h] == "ignore"] == [h for h in headers[1:]
                                                                 if h != kept]
    mapper_for(guess, headers, tmp_path)


def test_headers_that_only_differ_in_case_are_all_left_out(tmp_path: Path) -> None:
    # The [columns] table matches headers ignoring case: it cannot tell these apart.
    headers = ["Email", "Имя", "имя", "EMAIL"]
    guess = guess_columns(headers, [["a@b.co", "A", "B", "c@d.co"]])
    assert [c.role for c in guess.columns] == ["ignore"] * 4
    assert "2 columns are headed 'Имя'" in guess.columns[1].reason
    assert guess.identifier is None
    assert guess.renames() == {"Email": IGNORED, "EMAIL": IGNORED}


def test_known_names_table_is_clean() -> None:
    for target, _ in KNOWN_NAMES.values():
        assert Mapper.role(target) is not None, target


# --- phone region -----------------------------------------------------------------------------


def test_phone_region_is_the_country_that_makes_bare_numbers_valid() -> None:
    # 8900123 is too short anywhere sensible; Luxembourg takes it, and must not win.
    values = ["79001234567", "89161234567", "+7 (903) 765-43-21", "8900123", "79261112233"]
    assert suggest_phone_region(values) == "RU"
    guess = guess_columns(["Phone"], [[v] for v in values])
    assert (guess.matching, guess.phone_region) == (Matching.PHONE, "RU")


@pytest.mark.parametrize(("values", "region"), [
    (["+79001234567", "+49 171 2345678"], None),     # every number has its +
    (["030 1234567", "0171 2345678", "089 12345678"], "DE"),
    (["12025550123", "2025550188"], "US"),
    (["8 (017) 123-45-67", "8 029 123 45 67"], "BY"),  # a trunk prefix 8, as in Russia
    (["07911 123456", "020 7946 0018"], None),        # as good in India as in Britain
    (["9161234567"], None),                           # no sign of any country
])
def test_phone_region_needs_a_sign_of_the_country(values: list[str], region: str | None) -> None:
    assert suggest_phone_region(values) == region


# --- reading and attachments ------------------------------------------------------------------


def test_read_sample_skips_blank_and_hidden_rows_and_names_the_sheet(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Clients"
    for row in (["Телефон"], ["+79001234567"], ["hidden"], [None], ["+79001234568"]):
        ws.append(row)
    ws.row_dimensions[3].hidden = True
    wb.create_sheet("Other").append(["email"])
    path = tmp_path / "in.xlsx"
    wb.save(path)
    sample = read_sample(path)
    assert (sample.headers, sample.rows) == (["Телефон"], [["+79001234567"], ["+79001234568"]])
    assert (sample.sheet, sample.encoding, sample.delimiter) == ("Clients", None, None)
    assert read_sample(path, sheet="Other", rows=1).sheet == "Other"


def test_read_sample_of_text_names_encoding_and_delimiter(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", "Имя;Почта\n" + "Иван;a@b.ru\n" * 80, "cp1251")
    sample = read_sample(path)
    assert (sample.encoding, sample.delimiter, sample.sheet) == ("cp1251", ";", None)
    assert len(sample.rows) == 50


def test_find_attach_dir(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "other").mkdir()
    for name in ("a.pdf", "b.txt"):
        (tmp_path / "files" / name).write_text("x")
    (tmp_path / "other" / "a.pdf").write_text("x")
    assert find_attach_dir(tmp_path, ["a.pdf|b.txt", "missing.pdf", ""]) == tmp_path / "files"
    (tmp_path / "a.pdf").write_text("x")
    (tmp_path / "b.txt").write_text("x")
    assert find_attach_dir(tmp_path, ["a.pdf|b.txt"]) is None  # the default folder holds them
    assert find_attach_dir(tmp_path, ["nowhere.pdf", ""]) is None
    # A path that leaves a folder counts for none (the mapper refuses it there): from
    # files/, "../c.txt" is a file that exists, but outside files/.
    (tmp_path / "c.txt").write_text("x")
    assert find_attach_dir(tmp_path, ["../c.txt"]) is None
