"""Excel number formats: a workbook number becomes the text its cell shows.

Covers what spreadsheets exported by marketers and CRMs use: General, zero padding (``00000``),
fixed decimals, thousands separators and scaling, percentages, scientific notation, literal
text and currency (``"$"#,##0.00``, ``[$€-407]``), sections (``pos;neg;zero;text``) with
colours and simple conditions, ``@`` text, dates, times of day and elapsed time
(``[h]:mm:ss``). Dates and times are written in ISO 8601 whatever their format (SPEC), so
their format only decides whether a date, a time or both are shown. Fractions (``# ?/?``) are
not covered: such cells are shown as General.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache

Show = Callable[[float], str]

# ECMA-376 part 1, 18.8.30: the formats a workbook may use by id without defining them.
# 5-8 and 41-44 depend on the locale; these are the en-US ones Excel writes out.
BUILTIN_FORMATS = {
    0: "General", 1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00",
    5: '"$"#,##0_);("$"#,##0)', 6: '"$"#,##0_);[Red]("$"#,##0)',
    7: '"$"#,##0.00_);("$"#,##0.00)', 8: '"$"#,##0.00_);[Red]("$"#,##0.00)',
    9: "0%", 10: "0.00%", 11: "0.00E+00", 12: "# ?/?", 13: "# ??/??",
    14: "mm-dd-yy", 15: "d-mmm-yy", 16: "d-mmm", 17: "mmm-yy", 18: "h:mm AM/PM",
    19: "h:mm:ss AM/PM", 20: "h:mm", 21: "h:mm:ss", 22: "m/d/yy h:mm",
    37: "#,##0 ;(#,##0)", 38: "#,##0 ;[Red](#,##0)", 39: "#,##0.00;(#,##0.00)",
    40: "#,##0.00;[Red](#,##0.00)",
    41: '_(* #,##0_);_(* \\(#,##0\\);_(* "-"_);_(@_)',
    42: '_("$"* #,##0_);_("$"* \\(#,##0\\);_("$"* "-"_);_(@_)',
    43: '_(* #,##0.00_);_(* \\(#,##0.00\\);_(* "-"??_);_(@_)',
    44: '_("$"* #,##0.00_);_("$"* \\(#,##0.00\\);_("$"* "-"??_);_(@_)',
    45: "mm:ss", 46: "[h]:mm:ss", 47: "mm:ss.0", 48: "##0.0E+0", 49: "@",
}
# Ids 27-36 and 50-81 are East Asian date formats; each shows a date.
_ASIAN_DATE_IDS = frozenset(range(27, 37)) | frozenset(range(50, 82))

_TOKEN = re.compile(
    r'"(?P<quoted>[^"]*)"?'            # literal text in quotes
    r"|\\(?P<escaped>.)"               # one escaped character
    r"|_(?P<pad>.)"                    # a space as wide as the next character
    r"|\*(?P<fill>.)"                  # repeat to fill the cell: nothing in a text export
    r"|\[(?P<bracket>[^\]]*)\]"        # colour, condition, locale/currency, elapsed time
    r"|(?P<general>[Gg][Ee][Nn][Ee][Rr][Aa][Ll])"
    r"|(?P<ampm>AM/PM|am/pm|A/P|a/p)"
    r"|(?P<date>[yY]+|[mM]+|[dD]+|[hH]+|[sS]+|[eE](?=[^+-]|$)|[gGbB]+)"
    r"|(?P<exp>[eE][+-])"
    r"|(?P<digit>[0#?])"
    r"|(?P<char>.)",
    re.DOTALL,
)
_CONDITION = re.compile(r"(<=|>=|<>|<|>|=)\s*(-?[0-9.]+(?:[eE][+-]?[0-9]+)?)")


def general(value: float) -> str:
    """Excel's General format: at most 15 significant digits, no '.0' on whole numbers."""
    if -1e15 < value < 1e15 and float(value).is_integer():
        return str(int(value))
    if math.isnan(value) or math.isinf(value):
        return "#NUM!"
    text = f"{value:.15g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}E{exponent[0]}{int(exponent[1:]):02d}"
    return text


# --- dates ------------------------------------------------------------------------------------

_EPOCH_1900 = dt.datetime(1899, 12, 30)
_EPOCH_1904 = dt.datetime(1904, 1, 1)


def serial_to_datetime(serial: float, date1904: bool) -> dt.datetime | None:
    """The moment a date serial stands for, to the second; None where Excel shows ####."""
    if serial < 0 or serial > 2958465.99999:  # before the epoch or after 9999-12-31
        return None
    days = math.floor(serial)
    seconds = round((serial - days) * 86400)
    if date1904:
        base = _EPOCH_1904
    else:
        # Excel counts the 29th of February 1900, which never was: before it, one day less.
        base = _EPOCH_1900 if days >= 61 else _EPOCH_1900 + dt.timedelta(days=1)
        if days == 60:
            days = 59  # the day that never was; shown as the 28th, as LibreOffice does
    return base + dt.timedelta(days=days, seconds=seconds)


@dataclass(frozen=True, slots=True)
class _DateShape:
    date: bool
    time: bool


def _show_moment(shape: _DateShape, date1904: bool) -> Show:
    def show(value: float) -> str:
        moment = serial_to_datetime(value, date1904)
        if moment is None:
            return general(value)
        if shape.date and shape.time:
            return moment.isoformat(timespec="seconds")
        if shape.date:
            return moment.date().isoformat()
        return moment.time().isoformat(timespec="seconds")
    return show


def _show_elapsed(tokens: list[tuple[str, str]]) -> Show:
    """``[h]:mm:ss`` and the like: hours (or minutes, seconds) past 24 keep counting."""
    decimals = 0
    for kind, text in tokens:
        if kind == "decimals":
            decimals = len(text)

    def show(value: float) -> str:
        sign = "-" if value < 0 else ""
        scale = 10 ** decimals
        total = round(abs(value) * 86400 * scale)  # in units of the shown fraction
        whole, fraction = divmod(total, scale)
        out = []
        for kind, text in tokens:
            if kind == "lit":
                out.append(text)
            elif kind == "decimals":
                out.append("." + str(fraction).zfill(decimals) if decimals else "")
            else:
                unit = text[0].lower()
                width = len(text)
                if kind == "elapsed":
                    amount = whole // {"h": 3600, "m": 60, "s": 1}[unit]
                else:
                    amount = {"h": whole // 3600 % 24, "m": whole // 60 % 60,
                              "s": whole % 60}[unit]
                out.append(str(amount).zfill(min(width, 2)))
        return sign + "".join(out)
    return show


# --- numbers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Section:
    tokens: list[tuple[str, str]]
    condition: tuple[str, float] | None
    text: bool  # an @ placeholder: how text is shown


_WIDE = Context(prec=400)  # every digit of the largest double, and decimals to spare


def _round_half_up(value: float, decimals: int, factor: int = 1) -> Decimal:
    # Through 15 significant digits, as Excel keeps them: 2.675 shows as 2.68, not 2.67.
    exact = Decimal(f"{value:.15g}") * factor
    return exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP,
                          context=_WIDE)


def _place_digits(placeholders: list[str], digits: str) -> list[str]:
    """Right-align digits into placeholders; the leftmost one takes any digits left over."""
    out = [""] * len(placeholders)
    rest = digits
    for i in range(len(placeholders) - 1, -1, -1):
        if i == 0:
            out[i] = rest
        elif rest:
            out[i], rest = rest[-1], rest[:-1]
        if not out[i]:
            out[i] = {"0": "0", "?": " "}.get(placeholders[i], "")
    if not digits and placeholders:
        # A zero shows in a '0' placeholder only; ``#,##0`` shows 0, ``#,###`` nothing.
        out[0] = {"0": "0", "?": " "}.get(placeholders[0], "")
    return out


def _group(text: str) -> str:
    digits = text.lstrip(" ")
    pad = text[: len(text) - len(digits)]
    head = len(digits) % 3 or 3
    parts = [digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)]
    return pad + ",".join(p for p in parts if p)


def _show_number(tokens: list[tuple[str, str]], value: float) -> str:
    """One section's tokens applied to a value that is already non-negative."""
    kinds = [k for k, _ in tokens]
    percent = kinds.count("percent")
    value *= 100 ** percent
    if "exp" in kinds:
        return _show_scientific(tokens, value)
    dot = kinds.index("dot") if "dot" in kinds else len(tokens)
    integer = tokens[:dot]
    fraction = tokens[dot + 1:]
    int_digits = [i for i, (k, _) in enumerate(integer) if k == "digit"]
    # Commas right after the last integer placeholder divide by 1,000 each; between
    # placeholders they group thousands.
    grouping = False
    scale = 0
    for i, (kind, _) in enumerate(integer):
        if kind == "comma":
            if int_digits and int_digits[0] < i < int_digits[-1]:
                grouping = True
            elif int_digits and i > int_digits[-1]:
                scale += 1
    frac_digits = [i for i, (k, _) in enumerate(fraction) if k == "digit"]
    scale += sum(1 for i, (k, _) in enumerate(fraction)
                 if k == "comma" and (not frac_digits or i > frac_digits[-1]))
    value /= 1000 ** scale
    frac_places = [t for k, t in fraction if k == "digit"]
    rounded = _round_half_up(value, len(frac_places))
    whole, _, decimals = f"{rounded:f}".partition(".")
    whole = whole.lstrip("0")
    decimals = decimals.ljust(len(frac_places), "0")
    if not int_digits and whole:
        int_digits_text = [whole]
    else:
        int_digits_text = _place_digits([integer[i][1] for i in int_digits], whole)
    if grouping:
        joined = _group("".join(int_digits_text))
        int_digits_text = [joined] + [""] * (len(int_digits) - 1)
    out = []
    placed = iter(int_digits_text)
    for kind, text in integer:
        if kind == "digit":
            out.append(next(placed))
        elif kind in ("lit", "percent"):
            out.append(text)
    if not int_digits and whole and "dot" in kinds:
        out.insert(0, whole)
    if dot < len(tokens):
        out.append(".")
        # Trailing zeros vanish in '#' places and become spaces in '?' places.
        shown = list(decimals)
        for j in range(len(frac_places) - 1, -1, -1):
            if shown[j] != "0" or frac_places[j] == "0":
                break
            shown[j] = " " if frac_places[j] == "?" else ""
        places = iter(shown)
        for kind, text in fraction:
            if kind == "digit":
                out.append(next(places))
            elif kind in ("lit", "percent", "comma"):
                out.append(text if kind != "comma" else "")
    return "".join(out)


_SIMPLE_CORE = re.compile(r"[#,]*0*(?:\.0*)?")


def _simple(tokens: list[tuple[str, str]]) -> Show | None:
    """A fast path for the usual one-section formats: text around ``#,##0.00``, ``00000``
    or ``0%``; None for anything else."""
    digits = [i for i, (k, _) in enumerate(tokens) if k == "digit"]
    if not digits:
        return None
    first, last = digits[0], digits[-1]
    if first and tokens[first - 1][0] == "dot":
        return None
    core = "".join(t for _, t in tokens[first:last + 1])
    around = tokens[:first] + tokens[last + 1:]
    if not _SIMPLE_CORE.fullmatch(core) or any(k not in ("lit", "percent") for k, _ in around):
        return None
    whole_part, _, fraction = core.partition(".")
    grouping = "," in whole_part
    if grouping and (whole_part.startswith(",") or whole_part.endswith(",")):
        return None  # a trailing comma scales by 1,000: the general path knows how
    min_whole = whole_part.count("0")
    if grouping and min_whole > 1:
        return None
    decimals = len(fraction)
    factor = 100 ** sum(1 for k, _ in around if k == "percent")
    scale = 10 ** decimals
    prefix = "".join(t for _, t in tokens[:first])
    suffix = "".join(t for _, t in tokens[last + 1:])

    spec = f"{',' if grouping else ''}.{decimals}f"

    def show(value: float) -> str:
        scaled = abs(value) * factor
        units = scaled * scale
        # Near a tie, or past 15 significant digits: decide in decimal.
        if units >= 1e9 or abs(units - math.floor(units) - 0.5) < 1e-6:
            text = format(_round_half_up(abs(value), decimals, factor), spec)
        else:  # no tie: rounding the binary value to nearest is rounding the decimal one
            text = format(scaled, spec)
        if not min_whole and text.startswith("0"):
            text = text[1:]  # '#' places show no lone zero: .50, or nothing at all
        elif min_whole > 1:
            whole, dot, part = text.partition(".")
            text = whole.zfill(min_whole) + dot + part
        text = prefix + text + suffix
        # Excel keeps the minus of a value that rounds to zero: -0.04 in 0.0 shows -0.0.
        return "-" + text if value < 0 else text
    return show


def _show_scientific(tokens: list[tuple[str, str]], value: float) -> str:
    kinds = [k for k, _ in tokens]
    e = kinds.index("exp")
    mantissa, exponent = tokens[:e], tokens[e + 1:]
    m_kinds = [k for k, _ in mantissa]
    dot = m_kinds.index("dot") if "dot" in m_kinds else len(mantissa)
    int_places = sum(1 for k, _ in mantissa[:dot] if k == "digit") or 1
    decimals = sum(1 for k, _ in mantissa[dot + 1:] if k == "digit")
    exp_width = sum(1 for k, _ in exponent if k == "digit")
    if value == 0:
        power = 0
    else:
        power = math.floor(math.log10(value))
        # Engineering notation (##0.0E+0): the exponent is a multiple of the integer places.
        if int_places > 1 and any(t == "#" for k, t in mantissa[:dot] if k == "digit"):
            power -= power % int_places
    scaled = _round_half_up(value / 10 ** power, decimals) if value else Decimal(0)
    if scaled >= 10 ** (int_places if int_places > 1 else 1) and value:
        power += int_places if int_places > 1 else 1
        scaled = _round_half_up(value / 10 ** power, decimals)
    body = f"{scaled:.{decimals}f}"
    prefix = "".join(t for k, t in mantissa[:dot] if k in ("lit",))
    sign = "-" if power < 0 else ("+" if tokens[e][1][1] == "+" else "")
    suffix = "".join(t for k, t in exponent if k == "lit")
    return f"{prefix}{body}{tokens[e][1][0]}{sign}{str(abs(power)).zfill(exp_width)}{suffix}"


# --- compiling a format -----------------------------------------------------------------------


def _split_sections(code: str) -> list[str]:
    sections, current, quoted, i = [], [], False, 0
    while i < len(code):
        ch = code[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and not quoted and i + 1 < len(code):
            current.append(code[i:i + 2])
            i += 2
            continue
        elif ch == ";" and not quoted:
            sections.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    sections.append("".join(current))
    return sections


def _tokens(section: str) -> tuple[list[tuple[str, str]], tuple[str, float] | None]:
    tokens: list[tuple[str, str]] = []
    condition = None
    for m in _TOKEN.finditer(section):
        kind = m.lastgroup
        text = m.group(kind or 0)
        if kind in {"quoted", "escaped"}:
            tokens.append(("lit", text))
        elif kind == "pad":
            tokens.append(("lit", " "))
        elif kind == "bracket":
            inner = text.strip()
            cond = _CONDITION.fullmatch(inner)
            if cond:
                condition = (cond.group(1), float(cond.group(2)))
            elif inner.startswith("$"):
                symbol = inner[1:].split("-", 1)[0]
                if symbol:
                    tokens.append(("lit", symbol))
            elif re.fullmatch(r"[hH]+|[mM]+|[sS]+", inner):
                tokens.append(("elapsed", inner))
            # colours ([Red], [Color10]) and others show nothing
        elif kind == "general":
            tokens.append(("general", text))
        elif kind == "ampm":
            tokens.append(("ampm", text))
        elif kind == "date":
            tokens.append(("date", text))
        elif kind == "exp":
            tokens.append(("exp", text))
        elif kind == "digit":
            tokens.append(("digit", text))
        elif kind == "char":
            if text == ".":
                tokens.append(("dot", "."))
            elif text == ",":
                tokens.append(("comma", ","))
            elif text == "%":
                tokens.append(("percent", "%"))
            elif text == "@":
                tokens.append(("at", "@"))
            else:
                tokens.append(("lit", text))
    return tokens, condition


def _date_shape(tokens: list[tuple[str, str]]) -> _DateShape | None:
    """Whether a section shows a date, a time, both, or (None) is not a date format."""
    parts = [(k, t.lower()) for k, t in tokens if k in ("date", "ampm")]
    if not parts:
        return None
    date = time = False
    for i, (kind, text) in enumerate(parts):
        if kind == "ampm":
            time = True
            continue
        unit = text[0]
        if unit == "m":
            # Minutes when an hour is just before or a second just after, else the month.
            near = (i > 0 and parts[i - 1][1][0] == "h") or (
                i + 1 < len(parts) and parts[i + 1][1][0] == "s")
            time = time or near
            date = date or not near
        elif unit in "hs":
            time = True
        elif unit in "ydegb":
            date = True
    return _DateShape(date, time)


def _elapsed_tokens(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    after_seconds = False
    for kind, text in tokens:
        if kind in ("elapsed", "date"):
            out.append((kind, text))
            after_seconds = text[0].lower() == "s"
        elif kind == "dot" and after_seconds:
            out.append(("decimals", ""))
        elif kind == "digit" and out and out[-1][0] == "decimals":
            out[-1] = ("decimals", out[-1][1] + "0")
        elif kind in {"lit", "comma"}:
            out.append(("lit", text))
    return out


class NumberFormat:
    """A compiled format code: ``show(value)`` for numbers, ``show_text(text)`` for text."""

    def __init__(self, code: str, *, date1904: bool = False) -> None:
        self.code = code
        self.is_date = False
        sections = []
        for part in _split_sections(code)[:4]:
            tokens, condition = _tokens(part)
            sections.append(_Section(tokens, condition, any(k == "at" for k, _ in tokens)))
        self._sections = sections
        self._text_section = next((s for s in sections if s.text), None)
        first = sections[0].tokens
        kinds = [k for k, _ in first]
        if "elapsed" in kinds:
            self.show: Show = _show_elapsed(_elapsed_tokens(first))
            self.is_date = True
        elif (shape := _date_shape(first)) is not None:
            self.show = _show_moment(shape, date1904)
            self.is_date = True
        elif len(sections) == 1 and kinds in ([], ["general"], ["at"]):
            self.show = general
        elif re.search(r"[0#?]\s*/\s*[0-9#?]", code):
            self.show = general  # fractions are not covered
        else:
            simple = _simple(first) if len(sections) == 1 and not sections[0].condition else None
            self.show = simple or self._show_sections

    def _pick(self, value: float) -> tuple[_Section, bool]:
        """The section for a value, and whether its minus sign must be written by us."""
        numeric = [s for s in self._sections if not (s.text and not any(
            k == "digit" for k, _ in s.tokens))] or self._sections
        if any(s.condition for s in numeric):
            for section in numeric[:2]:
                if section.condition and _holds(section.condition, value):
                    return section, value < 0 and section is not numeric[1]
            rest = numeric[2] if len(numeric) > 2 else numeric[-1]
            return rest, value < 0
        if len(numeric) >= 3 and value == 0:
            return numeric[2], False
        if len(numeric) >= 2 and value < 0:
            return numeric[1], False
        return numeric[0], value < 0

    def _show_sections(self, value: float) -> str:
        section, minus = self._pick(value)
        tokens = section.tokens
        kinds = {k for k, _ in tokens}
        if "general" in kinds:
            shown = "".join(general(abs(value)) if k == "general" else t for k, t in tokens
                            if k in ("general", "lit", "percent", "comma", "dot"))
        elif not kinds & {"digit", "exp"}:
            # A section of text only ("zero", "-"): shown as it is.
            return "".join(t for k, t in tokens if k in ("lit", "percent", "comma", "dot"))
        else:
            shown = _show_number(tokens, abs(value))
        if minus:
            return "-" + shown
        return shown

    def show_text(self, text: str) -> str:
        """A text cell: shown through the format's @ section when it has one."""
        section = self._text_section
        if section is None:
            return text
        return "".join(text if k == "at" else t for k, t in section.tokens
                       if k in ("at", "lit", "percent", "comma", "dot"))


def _holds(condition: tuple[str, float], value: float) -> bool:
    op, limit = condition
    return {"<": value < limit, "<=": value <= limit, ">": value > limit,
            ">=": value >= limit, "=": value == limit, "<>": value != limit}[op]


@lru_cache(maxsize=1024)
def compile_format(code: str, date1904: bool = False) -> NumberFormat:
    return NumberFormat(code, date1904=date1904)


def builtin_code(format_id: int) -> str:
    """The code of a built-in format id; East Asian dates read as ISO dates anyway."""
    if format_id in _ASIAN_DATE_IDS:
        return "yyyy-mm-dd"
    return BUILTIN_FORMATS.get(format_id, "General")
