"""Excel number formats: each case is what Excel shows for the value in a cell of that format."""

from __future__ import annotations

import pytest

from batch_engage.numfmt import builtin_code, compile_format, general, serial_to_datetime

SHOWN = [
    ("General", 274.65999999999997, "274.66"),
    ("General", 0.1 + 0.2, "0.3"),
    ("General", 1 / 3, "0.333333333333333"),
    ("General", 79001234567.0, "79001234567"),
    ("General", -5.5, "-5.5"),
    ("General", -0.0, "0"),
    ("General", 1e20, "1E+20"),
    ("General", 0.000012345, "1.2345E-05"),
    ("00000", 1234.0, "01234"),
    ("000000", 123.0, "000123"),
    ("0.00", 19.9, "19.90"),
    ("0.00", 2.675, "2.68"),  # half up on the decimal value, not on the binary one
    ("0.00", 1.005, "1.01"),
    ("0.0", -2.25, "-2.3"),
    ("0", -0.4, "-0"),  # Excel keeps the sign of what rounds to zero
    ("0.0", -0.04, "-0.0"),
    ("0", 2.5, "3"),
    ("#,##0", 1234567.4, "1,234,567"),
    ("#,##0.00", 1234.5, "1,234.50"),
    ("#,###", 0.0, ""),
    ("#.##", 5.0, "5."),
    (".00", 0.5, ".50"),
    ("?.??", 1.5, "1.5 "),
    ("0%", 0.15, "15%"),
    ("0.00%", 0.12345, "12.35%"),
    ("0%", -0.5, "-50%"),
    ('"$"#,##0.00', 1234.5, "$1,234.50"),
    ('"$"#,##0.00', -1234.5, "-$1,234.50"),
    ('#,##0.00 "₽"', -1234.5, "-1,234.50 ₽"),
    ("[$€-407] #,##0.00", 99.999, "€ 100.00"),
    ("#,##0.00;[Red]-#,##0.00;\"zero\"", 0.0, "zero"),
    ("#,##0.00;[Red]-#,##0.00;\"zero\"", -3.0, "-3.00"),
    ("0.00;(0.00)", -3.5, "(3.50)"),
    ("[<1000]0;0.0,\"K\"", 5000.0, "5.0K"),
    ("[<1000]0;0.0,\"K\"", 500.0, "500"),
    ('0.0,,"M"', 12345678.0, "12.3M"),
    ("(000) 000-0000", 5551234567.0, "(555) 123-4567"),
    ("00000-0000", 123456789.0, "12345-6789"),
    ("0.00E+00", 123456.0, "1.23E+05"),
    ("0.00E+00", 0.00012, "1.20E-04"),
    ("##0.0E+0", 12345.0, "12.3E+3"),
    ('"Total: "General', 5.0, "Total: 5"),
    ("@", 5.0, "5"),
    ("[h]:mm:ss", 1.5, "36:00:00"),
    ("[h]:mm:ss", 0.25, "6:00:00"),
    ("[mm]:ss", 1 / 24, "60:00"),
    # Dates and times are ISO 8601 whatever their format (SPEC "Input files").
    ("yyyy-mm-dd", 32888.0, "1990-01-15"),
    ("dd.mm.yyyy", 32888.0, "1990-01-15"),
    ("m/d/yyyy", 32888.75, "1990-01-15"),
    ("dd.mm.yyyy hh:mm", 32888.354166667, "1990-01-15T08:30:00"),
    ("m/d/yy h:mm", 32888.0, "1990-01-15T00:00:00"),
    ("h:mm AM/PM", 0.5, "12:00:00"),
    ("hh:mm:ss", 0.354166667, "08:30:00"),
    ("mm:ss", 0.25, "06:00:00"),
]


@pytest.mark.parametrize(("code", "value", "text"), SHOWN)
def test_a_number_shows_as_its_format_says(code: str, value: float, text: str) -> None:
    assert compile_format(code).show(value) == text


def test_1904_dates_count_from_1904() -> None:
    assert compile_format("yyyy-mm-dd", date1904=True).show(0.0) == "1904-01-01"
    assert compile_format("yyyy-mm-dd", date1904=True).show(32888.0 - 1462) == "1990-01-15"


def test_the_1900_leap_day_that_never_was() -> None:
    """Excel counts a 29 February 1900: serials before it are one day off from after it."""
    shown = [serial_to_datetime(s, False) for s in (1.0, 59.0, 61.0)]
    assert [d.date().isoformat() for d in shown if d] == ["1900-01-01", "1900-02-28",
                                                         "1900-03-01"]
    assert serial_to_datetime(-1.0, False) is None


def test_text_goes_through_the_at_section() -> None:
    assert compile_format('0.00;-0.00;0;"code: "@').show_text("A7") == "code: A7"
    assert compile_format("0.00").show_text("A7") == "A7"


def test_builtin_ids() -> None:
    assert builtin_code(14) == "mm-dd-yy"
    assert builtin_code(49) == "@"
    assert builtin_code(31) == "yyyy-mm-dd"  # an East Asian date: still a date
    assert builtin_code(300) == "General"


def test_fractions_are_not_covered_and_show_as_general() -> None:
    assert compile_format("# ?/?").show(1.5) == general(1.5) == "1.5"
