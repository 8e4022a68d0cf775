"""A pandas DataFrame as a table of rows, each cell as the text a spreadsheet would show.

Imported only when a run is given a DataFrame (``run(options, frame=df)``): pandas is an
optional extra, and importing it costs about a second at every start.

The frame is read in place, a few thousand rows at a time, column by column: each column's
dtype decides once how its values become text, and numpy does the work where it can
(numbers, dates), so the run holds no copy of the frame and keeps its speed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import math
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from .errors import UsageError
from .journal import Fingerprint
from .numfmt import general
from .options import RunOptions
from .reader import FORMULA_GUARD, Record, _is_own_report

try:
    import numpy as np
    import pandas as pd
except ImportError:  # the pandas extra is not installed (the frame is another library's)
    raise UsageError(
        "a DataFrame input needs pandas, which is not installed: "
        "pip install 'batch-engage[pandas]'") from None

CHUNK_ROWS = 4096
"""Rows turned into text at a time: enough for numpy's speed, a few MB at most."""

_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
"""Ticks of a second in the units pandas keeps datetime64 columns in."""

Texts = Callable[[int, int], list[str]]
"""The texts of one column's rows ``start`` to ``stop`` (positions, end excluded)."""


def open_frame(frame: object, options: RunOptions) -> FrameTable:
    """The table of a run whose rows are a DataFrame; ``options.input`` only names it."""
    if not isinstance(frame, pd.DataFrame):
        hint = ("; a Series is one column: pass series.to_frame()"
                if isinstance(frame, pd.Series) else "")
        raise UsageError(f"frame= takes a pandas DataFrame, not {type(frame).__name__}{hint}")
    for option, value in (("sheet", options.sheet), ("encoding", options.encoding),
                          ("delimiter", options.delimiter)):
        if value is not None:
            raise UsageError(f"the {option} option applies to files, and the input is a "
                             f"DataFrame; leave {option} unset")
    return FrameTable(frame, options.input)


class FrameTable:
    """The rows of a DataFrame by position: the first is row 2, as in a spreadsheet whose
    row 1 is the header, whatever the frame's index."""

    def __init__(self, frame: pd.DataFrame, name: Path) -> None:
        self.path = name
        self.headers = [str(column) for column in frame.columns]
        if not self.headers:
            raise UsageError(f"the DataFrame given as {name.name} has no columns; it needs "
                             "one per input column (email, phone, content.KEY...)")
        # A failed.csv read back with pandas still holds the ' that guards formulas.
        self._unguard = _is_own_report(self.headers)
        if self._unguard:
            self.headers = [h.removeprefix(FORMULA_GUARD) for h in self.headers]
        self._columns = [_column_texts(frame.iloc[:, i]) for i in range(len(self.headers))]
        self._rows = len(frame)
        self.description = "pandas DataFrame"

    def _chunks(self) -> Iterator[list[list[str]]]:
        """The rows, CHUNK_ROWS at a time, each a list of its cells' texts."""
        for start in range(0, self._rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, self._rows)
            columns = [texts(start, stop) for texts in self._columns]
            if self._unguard:
                columns = [[c[1:] if c.startswith(FORMULA_GUARD) else c for c in texts]
                           for texts in columns]
            yield [list(cells) for cells in zip(*columns, strict=True)]

    def records(self) -> Iterator[Record]:
        number = 2
        for rows in self._chunks():
            for cells in rows:
                yield Record(number, cells, [])
                number += 1

    def estimate_rows(self) -> int:
        return self._rows

    def row_bound(self) -> int:
        return self._rows

    def fingerprint(self) -> Fingerprint:
        """The frame's headers and cells as read: a resume must find the same texts, which
        are what decides each row's request (a column that became float64 from int64 with
        the same numbers is the same input)."""
        digest = hashlib.sha256()
        size = 0
        for rows in chain([[self.headers]], self._chunks()):
            data = "".join("\x1f".join(cells) + "\x1e" for cells in rows).encode(
                "utf-8", "surrogatepass")
            digest.update(data)
            size += len(data)
        return Fingerprint(size, digest.hexdigest())

    def close(self) -> None:
        """The frame is the caller's: nothing to release."""


def _column_texts(column: pd.Series[Any]) -> Texts:
    """How one column's values become text, decided once by its dtype."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        # The few categories are turned into text once; code -1 (missing) picks the "".
        categories = dtype.categories
        shown = [*_column_texts(pd.Series(categories))(0, len(categories)), ""]
        codes = column.cat.codes.to_numpy()
        return lambda start, stop: [shown[c] for c in codes[start:stop].tolist()]
    if isinstance(dtype, np.dtype):
        values = column.to_numpy()  # a view of the frame's own array, not a copy
        if dtype.kind in "iu":
            return lambda start, stop: list(map(str, values[start:stop].tolist()))
        if dtype.kind == "f":
            return lambda start, stop: [_float(v) for v in values[start:stop].tolist()]
        if dtype.kind == "b":
            return lambda start, stop: ["TRUE" if v else "FALSE"
                                        for v in values[start:stop].tolist()]
        if dtype.kind == "M":
            return _datetimes(values)
        if dtype.kind == "O":
            return lambda start, stop: [_text(v) for v in values[start:stop].tolist()]
    array = column.array
    if isinstance(dtype, pd.StringDtype):
        return lambda start, stop: list(array[start:stop].to_numpy(dtype=object, na_value=""))
    # Nullable numbers and booleans, dates with a time zone, timedeltas, periods, Arrow
    # types: as Python values, each shown by the rules of an object column.
    return lambda start, stop: [
        _text(v) for v in array[start:stop].to_numpy(dtype=object, na_value=None).tolist()]


def _datetimes(values: np.ndarray[Any, np.dtype[np.datetime64]]) -> Texts:
    """A datetime64 column as pandas prints it: dates alone when every value is at midnight
    (a birthday column), else dates and times to the second, midnight included, as the
    workbook reader shows a date cell and a date-and-time cell."""
    unit, _ = np.datetime_data(values.dtype)
    per_day = 86400 * _PER_SECOND[unit]
    ticks = values.view(np.int64)
    nat = np.iinfo(np.int64).min
    dates_only = all(
        bool(((part % per_day == 0) | (part == nat)).all())
        for part in (ticks[i:i + 16 * CHUNK_ROWS] for i in range(0, len(ticks),
                                                                  16 * CHUNK_ROWS)))
    if dates_only:
        def dates(start: int, stop: int) -> list[str]:
            shown = np.datetime_as_string(values[start:stop], unit="D").tolist()
            return [t if t != "NaT" else "" for t in shown]
        return dates
    # Rounded to the second, as the workbook reader rounds a date serial.
    half = np.timedelta64(500, "ms")

    def moments(start: int, stop: int) -> list[str]:
        seconds = (values[start:stop] + half).astype("datetime64[s]")
        shown = np.datetime_as_string(seconds, unit="s").tolist()
        return [t if t != "NaT" else "" for t in shown]
    return moments


def _float(value: float) -> str:
    """As Excel's General shows it: 15 significant digits, whole numbers without '.0'."""
    return "" if math.isnan(value) else general(value)


def _text(value: object) -> str:
    """One value of an object column, or of a nullable or Arrow column, as shown."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"  # as the workbook reader shows a boolean cell
    if isinstance(value, int | np.integer):
        return str(value)  # every digit: an id or a phone held exactly stays exact
    if isinstance(value, float | np.floating):
        return _float(float(value))
    if isinstance(value, decimal.Decimal):
        # As written, like a number format: a NUMERIC(10,2) from SQL keeps its 19.90.
        return "" if value.is_nan() else format(value, "f")
    if isinstance(value, dt.datetime):
        # As pandas prints a Timestamp in an object column: with its time, midnight too.
        return _to_the_second(value).isoformat(timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        moment = _to_the_second(dt.datetime.combine(dt.date.min, value))
        return moment.timetz().isoformat(timespec="seconds")
    return str(value)


def _to_the_second(moment: dt.datetime) -> dt.datetime:
    """Rounded to the second, as the workbook reader rounds a date serial; isoformat with
    seconds then drops the fraction."""
    return moment + dt.timedelta(seconds=1) if moment.microsecond >= 500_000 else moment
