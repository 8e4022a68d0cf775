"""Phone numbers as the API takes them (E.164), judged by phonenumbers.

phonenumbers is the judge of every number. Its ``parse`` takes most of a phone row's time
(12 of 19 µs), mostly on the text (other digits, punctuation, extensions, RFC 3966), and a
number already written as ``+`` and digits has none of that to undo: for one, the country
code and the national number are read off the text as ``parse`` reads them, and only
``is_valid_number`` is asked. ``parse`` would change such a number only by taking a
national prefix off its front (``+7 8 912…``), and the fast way leaves any number whose
front could be one to ``parse``, like every number it finds not valid and every other way
of writing one. ``tests/test_phones.py`` holds the two ways to the same answers.
"""

from __future__ import annotations

import re
from functools import cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumber

# Compiled metadata patterns are kept, not looked up in the re module's small cache on
# every use: 5 µs a number.
phonenumbers.enable_pattern_cache()

_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{1,16}")
_MIN_NATIONAL, _MAX_NATIONAL = 2, 17  # phonenumbers' own limits on a national number


def e164(raw: str, region: str | None) -> str | None:
    """``raw`` as E.164 when phonenumbers finds it a valid number (read in ``region`` when
    it has no country code), else ``None``."""
    if _INTERNATIONAL.fullmatch(raw):
        number = _as_written(raw)
        if number is not None and phonenumbers.is_valid_number(number):
            return raw  # E.164 is how it is written: + country code, national number
    return _parsed(raw, region)


def _parsed(raw: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _as_written(raw: str) -> PhoneNumber | None:
    """The number ``parse`` makes of ``+`` and digits, or ``None`` where ``parse`` might
    make another (a national prefix, a leading zero, a length it refuses)."""
    digits = raw[1:]
    for length in (1, 2, 3):  # the shortest known code wins, as in parse
        code = int(digits[:length])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if not _MIN_NATIONAL <= len(national) <= _MAX_NATIONAL or national[0] == "0":
        return None
    prefix = _national_prefix(code)
    if prefix is not None and prefix.match(national):
        return None
    return PhoneNumber(country_code=code, national_number=int(national))


@cache
def _national_prefix(code: int) -> re.Pattern[str] | None:
    """What ``parse`` would try to take off the front of a national number of ``code``:
    the prefix pattern of the metadata it reads such a number with."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code))
    pattern = None if metadata is None else metadata.national_prefix_for_parsing
    return re.compile(pattern) if pattern else None
