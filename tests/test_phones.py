"""The fast way for numbers written as + and digits gives phonenumbers' own answers."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata, PhoneNumberType

from batch_engage import phones
from batch_engage.phones import e164

REGIONS = [None, "RU", "US", "DE", "AR", "GB"]


def _examples() -> list[str]:
    """Each region's example number of each type, as + and digits, and the same with the
    region's national prefix or a zero put in after the country code: numbers that parse
    reads as written, and numbers it changes or refuses."""
    written = set()
    for region in [*sorted(phonenumbers.SUPPORTED_REGIONS), "001"]:
        codes = ([phonenumbers.country_code_for_region(region)] if region != "001"
                 else sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS))
        for code in codes:
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(
                code, phonenumbers.region_code_for_country_code(code))
            assert metadata is not None
            for kind in vars(PhoneNumberType).values():
                if not isinstance(kind, int):
                    continue
                example = (phonenumbers.example_number_for_type(region, kind)
                           if region != "001" else
                           phonenumbers.example_number_for_non_geo_entity(code))
                if example is None:
                    continue
                national = phonenumbers.national_significant_number(example)
                written.add(f"+{code}{national}")
                written.add(f"+{code}0{national}")
                if metadata.national_prefix:
                    written.add(f"+{code}{metadata.national_prefix}{national}")
    return sorted(written)


EXAMPLES = _examples()


@pytest.mark.parametrize("region", REGIONS)
def test_every_regions_example_numbers_get_phonenumbers_answer(region: str | None) -> None:
    assert len(EXAMPLES) > 1000
    differ = [raw for raw in EXAMPLES if e164(raw, region) != phones._parsed(raw, region)]
    assert differ == []
    assert sum(e164(raw, region) is not None for raw in EXAMPLES) > 400


@given(st.from_regex(r"\+[0-9]{1,18}", fullmatch=True), st.sampled_from(REGIONS))
def test_any_plus_and_digits_gets_phonenumbers_answer(raw: str, region: str | None) -> None:
    assert e164(raw, region) == phones._parsed(raw, region)


def test_a_number_written_in_e164_is_judged_without_parse(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_parse(*_args: object) -> None:
        raise AssertionError("parse was asked")

    monkeypatch.setattr(phonenumbers, "parse", no_parse)
    assert e164("+79001234567", None) == "+79001234567"
    assert e164("+4915123456789", "RU") == "+4915123456789"
    assert e164("+380501234567", None) == "+380501234567"  # a code of three digits


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("+7 900 123-45-67", None, "+79001234567"),  # written otherwise: parse reads it
    ("89001234567", "RU", "+79001234567"),
    ("+789001234567", None, "+79001234567"),  # RU's national prefix after +7: parse drops it
    ("+7900123456", None, None),  # a digit short: not valid, either way
    ("+٧٩٠٠١٢٣٤٥٦٧", None, "+79001234567"),  # other digits: parse reads them
])
def test_numbers_the_fast_way_leaves_to_parse(raw: str, region: str | None,
                                              expected: str | None) -> None:
    assert e164(raw, region) == expected == phones._parsed(raw, region)
