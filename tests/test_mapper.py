from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from batch_engage.errors import InputFileError, UsageError
from batch_engage.mapper import Mapper, Request, RowError, parse_json_cell
from batch_engage.options import Matching, RunOptions
from batch_engage.reader import Record


def options(tmp_path: Path, **kw: Any) -> RunOptions:
    kw.setdefault("workflow_id", 12)
    return RunOptions(input=tmp_path / "in.csv", dry_run=True, **kw)


def mapper(headers: list[str], opts: RunOptions, warnings: list[str] | None = None) -> Mapper:
    sink = warnings if warnings is not None else []
    return Mapper(headers, opts, "TOKEN", sink.append)


def body(result: Request | RowError) -> dict[str, Any]:
    assert isinstance(result, Request), result
    data: dict[str, Any] = json.loads(result.body)
    return data


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


def test_bad_phone_message_says_how_to_fix(tmp_path: Path) -> None:
    m = mapper(["phone"], options(tmp_path, matching=Matching.PHONE))
    assert error(m.map(rec(17, "8900123"))).text == (
        "row 17, column phone: '8900123' is not a phone number; write it with the country "
        "code, e.g. +79001234567, or pass --phone-region RU"
    )


def test_profile_id_custom_and_custom_request(tmp_path: Path) -> None:
    m = mapper(["profile_id"], options(tmp_path, matching=Matching.PROFILE_ID))
    profile = "5a74876369d42613b31947b8"
    assert body(m.map(rec(2, profile)))["profile_id"] == profile

    m = mapper(["field_value"], options(tmp_path, matching=Matching.CUSTOM, field_name="CRM_ID"))
    b = body(m.map(rec(2, "0123420")))
    assert (b["matching"], b["field_name"], b["field_value"]) == ("custom", "CRM_ID", "0123420")

    m = mapper(["custom_request"], options(tmp_path, matching=Matching.CUSTOM_REQUEST))
    b = body(m.map(rec(2, '{"email": {"$in": ["a@b.co"]}}')))
    assert "matching" not in b
    assert b["custom_request"] == {"email": {"$in": ["a@b.co"]}}
    e = error(m.map(rec(3, '["not", "an object"]')))
    assert e.error == "invalid_json"


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
    with pytest.raises(InputFileError, match=f"needs a column named '{column}'"):
        mapper(["name", "content.x"], options(tmp_path, matching=matching))


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
    "headers",
    [["email", "content.a", "content.a.b"], ["email", "content.x", "apicontent.x"]],
)
def test_conflicting_content_columns(tmp_path: Path, headers: list[str]) -> None:
    with pytest.raises(InputFileError, match="content"):
        mapper(headers, options(tmp_path))


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
    assert e.text.startswith("row 4, column subscription_filter.not_strict: 'maybe' is not true")


def test_resource_id_column_overrides_default(tmp_path: Path) -> None:
    m = mapper(["email", "resource_id"], options(tmp_path, resource_id=7))
    assert body(m.map(rec(2, "a@b.co", "24")))["resource_id"] == 24
    assert body(m.map(rec(3, "c@d.co", "")))["resource_id"] == 7
    assert error(m.map(rec(4, "e@f.co", "2.5"))).error == "invalid_resource_id"


@pytest.mark.parametrize(
    ("matching", "column", "first", "again"),
    [
        (Matching.EMAIL, "email", "Anna@Mail.ru", "anna@mail.RU"),
        (Matching.PHONE, "phone", "+7 900 123-45-67", "+79001234567"),
        (Matching.PROFILE_ID, "profile_id", "abc", "abc"),
    ],
)
def test_duplicates_judged_as_sent(
    tmp_path: Path, matching: Matching, column: str, first: str, again: str
) -> None:
    m = mapper([column], options(tmp_path, matching=matching))
    assert isinstance(m.map(rec(2, first)), Request)
    e = error(m.map(rec(5, again)))
    assert (e.stage, e.error) == ("duplicate", "duplicate")
    assert "repeats row 2" in e.text
    assert "--allow-duplicates" in e.text
    allowing = mapper([column], options(tmp_path, matching=matching, allow_duplicates=True))
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


def test_ignored_columns_warned_once(tmp_path: Path) -> None:
    warnings: list[str] = []
    mapper(["email", "notes", "", "phone", "_row"], options(tmp_path), warnings)
    assert warnings == [
        "these columns are ignored: 'notes', #3 (no header), "
        "'phone' (not used with --matching email)"
    ]


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
    assert e.error == "body_too_large"


def test_a_row_too_large_to_send_does_not_claim_its_identifier(tmp_path: Path) -> None:
    """It was never sent, so the fixed row after it is no duplicate of it."""
    m = mapper(["email", "content.blob"], options(tmp_path))
    assert error(m.map(rec(2, "a@b.co", "x" * (11 * 2**20)))).error == "body_too_large"
    assert body(m.map(rec(3, "A@b.co", "short")))["content"] == {"blob": "short"}
    e = error(m.map(rec(4, "a@b.co", "again")))
    assert e.error == "duplicate"
    assert "repeats row 3" in e.text
