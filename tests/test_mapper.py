from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import email_validator.deliverability
import pytest

from batch_engage.attachments import MAX_BODY_BYTES
from batch_engage.errors import InputFileError, UsageError
from batch_engage.mapper import Mapper, Request, RowError, identity, parse_json_cell
from batch_engage.options import Matching, RunOptions
from batch_engage.reader import Record


def options(tmp_path: Path, **kw: Any) -> RunOptions:
    kw.setdefault("workflow_id", 12)
    kw.setdefault("input", tmp_path / "in.csv")
    return RunOptions(dry_run=True, **kw)


def mapper(headers: list[str], opts: RunOptions, warnings: list[str] | None = None) -> Mapper:
    sink = warnings if warnings is not None else []
    return Mapper(headers, opts, "TOKEN", sink.append)


def body(result: Request | RowError) -> dict[str, Any]:
    assert isinstance(result, Request), result
    data: dict[str, Any] = json.loads(result.body)
    return data


def body_bytes(result: Request | RowError) -> bytes:
    assert isinstance(result, Request), result
    return result.body


def error(result: Request | RowError) -> RowError:
    assert isinstance(result, RowError), result
    return result


def rec(number: int, *cells: str) -> Record:
    return Record(number, list(cells), [])


def test_email_body_in_api_order(tmp_path: Path) -> None:
    m = mapper(["Email ", "content.first_name"], options(tmp_path, resource_id=24))
    assert body(m.map(rec(2, " anna@mail.ru ", "Anna"))) == {
        "token": "TOKEN", "id": 12, "matching": "email", "email": "anna@mail.ru",
        "resource_id": 24, "content": {"first_name": "Anna"},
    }


def test_a_request_is_compact_utf8_json_with_the_identifier_as_sent(tmp_path: Path) -> None:
    m = mapper(["phone", "content.name"], options(tmp_path, matching=Matching.PHONE))
    # Compact and not ASCII-escaped: the body counts against the API's size limit.
    assert m.map(rec(7, "+7 900 123-45-67", "Иван")) == Request(
        7, "+79001234567",
        '{"token":"TOKEN","id":12,"matching":"phone","phone":"+79001234567",'
        '"content":{"name":"Иван"}}'.encode(), "+79001234567",
    )


@pytest.mark.parametrize(
    ("cell", "code", "text"),
    [
        ("", "missing_value", "row 2, column email: the email is empty"),
        ("anna.mail.ru", "invalid_email", "row 2, column email: 'anna.mail.ru' is not an email"),
        ("a@b", "invalid_email", "should have a period"),
    ],
)
def test_bad_emails(tmp_path: Path, cell: str, code: str, text: str) -> None:
    e = error(mapper(["email"], options(tmp_path)).map(rec(2, cell)))
    assert (e.stage, e.error) == ("validation", code)
    assert text in e.text


def test_an_unusual_email_is_checked_for_syntax_only_and_never_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whether a mail server exists is the API's business: a DNS lookup per row would make a
    # dry run slow, and fail the rows of a run on a machine without DNS.
    looked_up: list[str] = []

    def lookup(domain: str, *args: object, **kwargs: object) -> dict[str, str]:
        looked_up.append(domain)
        return {}

    monkeypatch.setattr(email_validator.deliverability, "validate_email_deliverability", lookup)
    m = mapper(["email"], options(tmp_path))
    # Not plain ASCII, so email-validator judges it, not the fast check.
    assert body(m.map(rec(2, "анна@почта.рф")))["email"] == "анна@почта.рф"
    assert looked_up == []


@pytest.mark.parametrize(
    ("cell", "region", "phone"),
    [
        ("+7 (900) 123-45-67", None, "+79001234567"),
        ("+79001234567", "DE", "+79001234567"),
        ("89001234567", "RU", "+79001234567"),
        ("79001234567", "RU", "+79001234567"),
        ("030 1234567", "DE", "+49301234567"),
    ],
)
def test_phones_become_e164(tmp_path: Path, cell: str, region: str | None, phone: str) -> None:
    m = mapper(["phone"], options(tmp_path, matching=Matching.PHONE, phone_region=region))
    b = body(m.map(rec(2, cell)))
    assert (b["matching"], b["phone"]) == ("phone", phone)


@pytest.mark.parametrize(
    ("region", "text"),
    [
        # Without a region, the fix offers --phone-region, as 8900... is a local number.
        (None, "row 17, column phone: '8900123' is not a phone number; write it with the "
               "country code, e.g. +79001234567, or pass --phone-region RU"),
        # With one, the message says which region the number was read in, and does not
        # suggest the option the user already passed.
        ("ru", "row 17, column phone: '8900123' is not a phone number in region RU; write it "
               "with the country code, e.g. +79001234567"),
    ],
)
def test_bad_phone_message_says_how_to_fix(tmp_path: Path, region: str | None, text: str) -> None:
    m = mapper(["phone"], options(tmp_path, matching=Matching.PHONE, phone_region=region))
    e = error(m.map(rec(17, "8900123")))
    assert (e.row, e.stage, e.error, e.text) == (17, "validation", "invalid_phone", text)


def test_profile_id_custom_and_custom_request(tmp_path: Path) -> None:
    m = mapper(["profile_id"], options(tmp_path, matching=Matching.PROFILE_ID))
    profile = "5a74876369d42613b31947b8"
    assert body(m.map(rec(2, f" {profile} "))) == {
        "token": "TOKEN", "id": 12, "matching": "profile_id", "profile_id": profile,
    }

    m = mapper(["field_value"], options(tmp_path, matching=Matching.CUSTOM, field_name="CRM_ID"))
    b = body(m.map(rec(2, "0123420")))
    assert (b["matching"], b["field_name"], b["field_value"]) == ("custom", "CRM_ID", "0123420")

    m = mapper(["custom_request"], options(tmp_path, matching=Matching.CUSTOM_REQUEST))
    b = body(m.map(rec(2, '{"email": {"$in": ["a@b.co"]}}')))
    assert "matching" not in b
    assert b["custom_request"] == {"email": {"$in": ["a@b.co"]}}
    e = error(m.map(rec(3, "{'email': 'a@b.co'}")))
    assert (e.row, e.stage, e.error, e.text) == (
        3, "validation", "invalid_json",
        "row 3, column custom_request: '{'email': 'a@b.co'}' is not a JSON object; write it "
        'as {"field": "value"} with double quotes',
    )
    assert error(m.map(rec(4, '["not", "an object"]'))).error == "invalid_json"


def test_custom_requests_are_duplicates_whatever_their_key_order(tmp_path: Path) -> None:
    m = mapper(["custom_request"], options(tmp_path, matching=Matching.CUSTOM_REQUEST))
    assert isinstance(m.map(rec(2, '{"crm_id": "7", "city": "Kazan"}')), Request)
    assert isinstance(m.map(rec(3, '{"crm_id": "8", "city": "Kazan"}')), Request)
    e = error(m.map(rec(4, '{"city": "Kazan",  "crm_id": "7"}')))
    assert (e.stage, e.text) == (
        "duplicate",
        "row 4, column custom_request: '{\"city\": \"Kazan\",  \"crm_id\": \"7\"}' repeats "
        "row 2, so it was not sent again; pass --allow-duplicates to send every row",
    )


def test_custom_matching_needs_field_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--field-name"):
        options(tmp_path, matching=Matching.CUSTOM)


@pytest.mark.parametrize(
    ("matching", "column"),
    [(Matching.EMAIL, "email"), (Matching.PHONE, "phone"), (Matching.PROFILE_ID, "profile_id")],
)
def test_missing_identifier_column_is_file_level(
    tmp_path: Path, matching: Matching, column: str
) -> None:
    with pytest.raises(InputFileError) as caught:
        mapper(["name", "content.x"], options(tmp_path, matching=matching))
    assert str(caught.value) == (
        f"--matching {matching} needs a column named '{column}', and the file has none (its "
        "columns: 'name', 'content.x'); rename the header, or map it in the config's [columns] "
        f'table, e.g. "E-mail" = "{column}"'
    )


def test_content_nesting_json_cells_and_constants(tmp_path: Path) -> None:
    m = mapper(
        ["email", "content.order.total", "APIcontent.order.items", "content.banner", "content.e"],
        options(tmp_path, content=(("promo", "SPRING"), ("order.currency", "RUB"))),
    )
    b = body(m.map(rec(2, "a@b.co", "10.50", '["x", "y"]', "[Sale] 20% off", "")))
    assert b["content"] == {
        "promo": "SPRING",
        "order": {"currency": "RUB", "total": "10.50", "items": ["x", "y"]},
        "banner": "[Sale] 20% off",
    }


def test_constant_content_is_not_shared_between_rows(tmp_path: Path) -> None:
    m = mapper(["email", "content.a.b"], options(tmp_path, content=(("a.c", "1"),)))
    first = body(m.map(rec(2, "a@b.co", "x")))
    second = body(m.map(rec(3, "c@d.co", "")))
    assert first["content"] == {"a": {"c": "1", "b": "x"}}
    assert second["content"] == {"a": {"c": "1"}}


@pytest.mark.parametrize(
    ("headers", "content", "message"),
    [
        (["email", "content.a", "content.a.b"], (),
         "column 'content.a.b' nests inside column 'content.a', which is a single value; "
         "rename one of them (e.g. content.a_text)"),
        (["email", "content.x", "apicontent.x"], (),
         "column B 'content.x' and column C 'apicontent.x' are both 'content.x'; remove or "
         "rename one"),
        (["email", "content.order.total"], (("order.total", "5"),),
         "column 'content.order.total' and --content order.total both set "
         "content.order.total; keep one"),
        (["email", "content.order.total.cents"], (("order.total", "5"),),
         "column 'content.order.total.cents' nests inside --content order.total, which is a "
         "single value; rename one of them (e.g. content.order.total_text)"),
        (["email"], (("promo", "A"), ("promo", "B")),
         "--content promo and --content promo both set content.promo; keep one"),
        (["email", "content.a..b"], (), "column 'content.a..b': a content key cannot have an "
                                        "empty part"),
    ],
)
def test_conflicting_content_columns(
    tmp_path: Path, headers: list[str], content: tuple[tuple[str, str], ...], message: str
) -> None:
    with pytest.raises(InputFileError) as caught:
        mapper(headers, options(tmp_path, content=content))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "value"), [("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}), ("[Sale]", "[Sale]"),
                        ("42", "42"), ("null", "null"), ("{broken", "{broken")],
)
def test_parse_json_cell(text: str, value: object) -> None:
    assert parse_json_cell(text) == value


def test_subscription_filter_and_not_strict(tmp_path: Path) -> None:
    m = mapper(["phone", "subscription_filter.phone", "subscription_filter.not_strict"],
               options(tmp_path, matching=Matching.PHONE))
    b = body(m.map(rec(2, "+79106135133", "+79106135133", "FALSE")))
    assert b["subscription_filter"] == {"phone": "+79106135133", "not_strict": False}
    b = body(m.map(rec(3, "+79106135134", "", "yes")))
    assert b["subscription_filter"] == {"not_strict": True}
    e = error(m.map(rec(4, "+79106135135", "", "maybe")))
    assert (e.row, e.stage, e.error, e.text) == (
        4, "validation", "invalid_boolean",
        "row 4, column subscription_filter.not_strict: 'maybe' is not true or false; "
        "write true or false",
    )


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("x" * 60, "'" + "x" * 60 + "'"),
        ("x" * 61, "'" + "x" * 59 + "…'"),
        # A line break would split the message in a log or a report cell.
        ("12\n13", "'12\\n13'"),
    ],
    ids=["60 characters whole", "61 characters cut", "line break escaped"],
)
def test_a_bad_cell_is_quoted_in_the_message_cut_to_60_characters(
    tmp_path: Path, cell: str, shown: str
) -> None:
    m = mapper(["email", "resource_id"], options(tmp_path))
    e = error(m.map(rec(6, "a@b.co", cell)))
    assert (e.row, e.stage, e.error, e.text) == (
        6, "validation", "invalid_resource_id",
        f"row 6, column resource_id: {shown} is not a whole number; write the resource id as "
        "digits, e.g. 24",
    )


def test_a_subscription_filter_key_with_dots_is_sent_as_one_key(tmp_path: Path) -> None:
    m = mapper(["email", "subscription_filter.address.city"], options(tmp_path))
    assert body(m.map(rec(2, "a@b.co", " Kazan ")))["subscription_filter"] == {
        "address.city": "Kazan"
    }


def test_subscription_filter_columns_are_not_sent_with_custom_request(tmp_path: Path) -> None:
    warnings: list[str] = []
    m = mapper(["custom_request", "subscription_filter.phone", "subscription_filter.not_strict"],
               options(tmp_path, matching=Matching.CUSTOM_REQUEST), warnings)
    assert warnings == [
        "subscription_filter columns are not used with custom_request; the API ignores them, "
        "so they are not sent"
    ]
    # Not even checked: neither an invalid boolean nor an Excel error fails a row that will
    # not send them.
    assert body(m.map(rec(2, '{"crm_id": "7"}', "+79001234567", "maybe"))) == {
        "token": "TOKEN", "id": 12, "custom_request": {"crm_id": "7"},
    }
    assert body(m.map(Record(3, ['{"crm_id": "8"}', "", "#N/A"], [], errors=(2,)))) == {
        "token": "TOKEN", "id": 12, "custom_request": {"crm_id": "8"},
    }


def test_resource_id_column_overrides_default(tmp_path: Path) -> None:
    m = mapper(["email", "resource_id"], options(tmp_path, resource_id=7))
    assert body(m.map(rec(2, "a@b.co", "24")))["resource_id"] == 24
    assert body(m.map(rec(3, "c@d.co", "")))["resource_id"] == 7
    assert error(m.map(rec(4, "e@f.co", "2.5"))).error == "invalid_resource_id"


@pytest.mark.parametrize(
    ("matching", "column", "first", "again", "shown"),
    [
        (Matching.EMAIL, "email", "Anna@Mail.ru", " anna@mail.RU", "'anna@mail.RU'"),
        (Matching.PHONE, "phone", "+7 900 123-45-67", "8 900 1234567", "'+79001234567'"),
        (Matching.PROFILE_ID, "profile_id", "abc", "abc", "'abc'"),
    ],
)
def test_duplicates_judged_as_sent(
    tmp_path: Path, matching: Matching, column: str, first: str, again: str, shown: str
) -> None:
    m = mapper([column], options(tmp_path, matching=matching, phone_region="RU"))
    assert isinstance(m.map(rec(2, first)), Request)
    e = error(m.map(rec(5, again)))
    assert (e.row, e.stage, e.error, e.text) == (
        5, "duplicate", "duplicate",
        f"row 5, column {column}: {shown} repeats row 2, so it was not sent again; "
        "pass --allow-duplicates to send every row",
    )
    allowing = mapper([column], options(tmp_path, matching=matching, phone_region="RU",
                                        allow_duplicates=True))
    assert isinstance(allowing.map(rec(2, first)), Request)
    assert isinstance(allowing.map(rec(5, again)), Request)


def test_invalid_row_does_not_claim_its_identifier(tmp_path: Path) -> None:
    m = mapper(["email", "resource_id"], options(tmp_path))
    assert error(m.map(rec(2, "a@b.co", "x"))).error == "invalid_resource_id"
    assert isinstance(m.map(rec(3, "a@b.co", "1")), Request)


def test_extra_cells_make_row_invalid(tmp_path: Path) -> None:
    e = error(mapper(["email"], options(tmp_path)).map(Record(3, ["a@b.co"], ["Smith", "Jr"])))
    assert e.error == "extra_cells"
    assert e.text.startswith("row 3: has 2 more filled cell(s)")


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        # A text file: the likely cause is a delimiter inside an unquoted value.
        (".csv", "row 3: has 4 more filled cell(s) than the header has columns ({values}); a "
                 "value probably holds an unquoted delimiter: quote it, or add a header for "
                 "the extra column"),
        # A workbook: cells typed to the right of the table.
        (".xlsx", "row 3: has 4 filled cell(s) to the right of column B, the last one with a "
                  "header ({values}); add a header above them in row 1, or clear them"),
    ],
)
def test_extra_cells_message_quotes_the_first_three_cut_short(
    tmp_path: Path, suffix: str, text: str
) -> None:
    m = mapper(["email", "content.name"], options(tmp_path, input=tmp_path / f"in{suffix}"))
    extra = ["y" * 30, "x" * 31, "Jr", "fourth"]
    e = error(m.map(Record(3, ["a@b.co", "Anna"], extra)))
    # Up to 30 characters are quoted whole; a longer value is cut to 29 and an ellipsis.
    values = f"'{'y' * 30}', '{'x' * 29}…', 'Jr'"
    assert (e.row, e.stage, e.error, e.text) == (
        3, "validation", "extra_cells", text.format(values=values)
    )


def test_an_excel_error_fails_the_row_only_in_a_column_that_is_sent(tmp_path: Path) -> None:
    m = mapper(["email", "content.total", "notes"], options(tmp_path))
    e = error(m.map(Record(4, ["a@b.co", "#DIV/0!", ""], [], errors=(1,))))
    assert (e.row, e.stage, e.error, e.text) == (
        4, "validation", "cell_error",
        "row 4, column content.total: the cell shows the Excel error #DIV/0!, not a value; "
        "fix the formula or the data it uses, save the workbook and run it again",
    )
    # The notes column is not sent, so its error cell does not matter.
    assert body(m.map(Record(5, ["c@d.co", "10", "#N/A"], [], errors=(2,))))["content"] == {
        "total": "10"
    }


def test_ignored_columns_warned_once(tmp_path: Path) -> None:
    warnings: list[str] = []
    # A prefix alone names no key, and a long header is not taken for a filter column.
    mapper(["email", "notes", "", "phone", "_row", "content.", "subscription_filter.",
            "Customer loyalty level"], options(tmp_path), warnings)
    assert warnings == [
        "these columns are ignored: 'notes', #3 (no header), "
        "'phone' (not used with --matching email), 'content.', 'subscription_filter.', "
        "'Customer loyalty level'"
    ]


def test_columns_starting_with_underscore_are_skipped_without_a_warning(tmp_path: Path) -> None:
    # A failed.csv fed back in starts with _row and ends with _error: not the user's data.
    warnings: list[str] = []
    m = mapper(["_row", "email", "_error"], options(tmp_path), warnings)
    assert body(m.map(rec(2, "3", "a@b.co", "invalid_email")))["email"] == "a@b.co"
    assert warnings == []


@pytest.mark.parametrize(
    ("headers", "columns", "message"),
    [
        (["email", "E-mail"], {"e-mail": "email"},
         "column A 'email' and column B 'E-mail' (renamed to 'email') are both 'email'; "
         "remove or rename one"),
        (["email", "Extra"], {"EXTRA": "content.a..b"},
         "column 'Extra' (renamed to 'content.a..b'): a content key cannot have an empty part"),
    ],
)
def test_a_renamed_column_is_named_as_in_the_file_and_as_renamed(
    tmp_path: Path, headers: list[str], columns: dict[str, str], message: str
) -> None:
    with pytest.raises(InputFileError) as caught:
        mapper(headers, options(tmp_path, columns=columns))
    assert str(caught.value) == message


def test_a_column_without_header_named_in_the_config_is_called_by_its_number(
    tmp_path: Path,
) -> None:
    m = mapper(["name", ""], options(tmp_path, matching=Matching.PHONE, columns={"": "phone"}))
    assert body(m.map(rec(2, "Anna", "+79001234567")))["phone"] == "+79001234567"
    assert error(m.map(rec(3, "Boris", "12"))).text.startswith(
        "row 3, column #2: '12' is not a phone number;"
    )


def test_config_column_renames(tmp_path: Path) -> None:
    m = mapper(["E-mail", "Имя"], options(tmp_path, columns={"e-mail": "email",
                                                             "имя": "content.first_name"}))
    assert body(m.map(rec(2, "a@b.co", "Иван")))["content"] == {"first_name": "Иван"}
    e = error(m.map(rec(3, "bad", "x")))
    assert e.text.startswith("row 3, column E-mail: 'bad'")


class TestAttachments:
    def make(self, tmp_path: Path) -> tuple[Mapper, Path]:
        files = tmp_path / "files"
        files.mkdir()
        (files / "日本.txt").write_bytes("今日は\n".encode())
        (files / "US.txt").write_bytes(b"HELLO\n")
        (tmp_path / "secret.txt").write_text("outside")
        return mapper(["profile_id", "attach"],
                      options(tmp_path, matching=Matching.PROFILE_ID, attach_dir=files)), files

    def test_data_uris_as_in_api_doc(self, tmp_path: Path) -> None:
        m, _ = self.make(tmp_path)
        assert body(m.map(rec(2, "p1", "日本.txt| US.txt")))["attach"] == [
            {"data": "data:text/plain;base64,5LuK5pel44GvCg==", "name": "日本.txt"},
            {"data": "data:text/plain;base64,SEVMTE8K", "name": "US.txt"},
        ]

    @pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt", "{abs}"])
    def test_paths_outside_folder_refused(self, tmp_path: Path, path: str) -> None:
        m, _ = self.make(tmp_path)
        path = path.format(abs=tmp_path / "secret.txt")
        e = error(m.map(rec(2, "p1", path)))
        assert e.error == "attachment_outside_dir"
        assert "--attach-dir" in e.text

    def test_absolute_path_inside_folder_is_fine(self, tmp_path: Path) -> None:
        m, files = self.make(tmp_path)
        assert body(m.map(rec(2, "p1", str(files / "US.txt"))))["attach"][0]["name"] == "US.txt"

    def test_symlink_out_of_folder_refused(self, tmp_path: Path) -> None:
        m, files = self.make(tmp_path)
        os.symlink(tmp_path / "secret.txt", files / "link.txt")
        assert error(m.map(rec(2, "p1", "link.txt"))).error == "attachment_outside_dir"

    def test_missing_file(self, tmp_path: Path) -> None:
        m, _ = self.make(tmp_path)
        e = error(m.map(rec(2, "p1", "nope.pdf")))
        assert e.error == "attachment_missing"
        assert e.text.startswith("row 2, column attach: file 'nope.pdf' was not found")

    def test_file_over_api_limit(self, tmp_path: Path) -> None:
        m, files = self.make(tmp_path)
        with (files / "big.bin").open("wb") as f:
            f.truncate(8 * 2**20)
        assert error(m.map(rec(2, "p1", "big.bin"))).error == "attachment_too_large"

    def test_fixed_attach_for_every_row(self, tmp_path: Path) -> None:
        (tmp_path / "terms.pdf").write_bytes(b"%PDF-1.4")
        m = mapper(["email"], options(tmp_path, attach=(tmp_path / "terms.pdf",)))
        assert body(m.map(rec(2, "a@b.co")))["attach"] == [
            {"data": "data:application/pdf;base64,JVBERi0xLjQ=", "name": "terms.pdf"}
        ]
        missing = r"--attach .*gone\.pdf: file 'gone\.pdf' was not found"
        with pytest.raises(UsageError, match=missing):
            mapper(["email"], options(tmp_path, attach=(tmp_path / "gone.pdf",)))


def test_body_over_limit_is_row_error(tmp_path: Path) -> None:
    m = mapper(["email", "content.blob"], options(tmp_path))
    e = error(m.map(rec(2, "a@b.co", "x" * (11 * 2**20))))
    assert (e.row, e.stage, e.error, e.text) == (
        2, "validation", "body_too_large",
        "row 2: the request would be 11.0 MB, over the API's 10 MB limit; shorten the content "
        "or attach smaller files",
    )


def test_a_body_of_exactly_the_api_limit_is_sent(tmp_path: Path) -> None:
    m = mapper(["email", "content.blob"], options(tmp_path, allow_duplicates=True))
    frame = len(body_bytes(m.map(rec(2, "a@b.co", "x"))))
    fits = "x" * (MAX_BODY_BYTES - frame + 1)
    assert len(body_bytes(m.map(rec(3, "a@b.co", fits)))) == MAX_BODY_BYTES
    assert error(m.map(rec(4, "a@b.co", fits + "x"))).error == "body_too_large"


def test_a_row_too_large_to_send_does_not_claim_its_identifier(tmp_path: Path) -> None:
    """It was never sent, so the fixed row after it is no duplicate of it."""
    m = mapper(["email", "content.blob"], options(tmp_path))
    assert error(m.map(rec(2, "a@b.co", "x" * (11 * 2**20)))).error == "body_too_large"
    assert body(m.map(rec(3, "A@b.co", "short")))["content"] == {"blob": "short"}
    e = error(m.map(rec(4, "a@b.co", "again")))
    assert e.error == "duplicate"
    assert "repeats row 3" in e.text


@pytest.mark.parametrize(("matching", "identifier", "same_as"), [
    (Matching.EMAIL, "John.Doe@Example.COM", "john.doe@example.com"),
    (Matching.PHONE, "+79001234567", "+79001234567"),
    (Matching.PROFILE_ID, "AbC", "AbC"),
    (Matching.CUSTOM, "CRM-1", "CRM-1"),
    (Matching.CUSTOM_REQUEST, '{"b": 1, "a": "x"}', '{"a": "x", "b": 1}'),
])
def test_identity_is_how_duplicates_and_earlier_engagements_are_judged(
    matching: Matching, identifier: str, same_as: str
) -> None:
    assert identity(matching, identifier) == identity(matching, same_as)
    assert identity(Matching.PROFILE_ID, "AbC") != identity(Matching.PROFILE_ID, "abc")
    assert identity(Matching.CUSTOM_REQUEST, '{"a": 1}') != identity(
        Matching.CUSTOM_REQUEST, '{"a": 2}')
