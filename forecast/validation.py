"""Checks between reading a CSV and windowing it: each problem a user can fix ends in one line naming the row or column.

Row numbers in messages are the file's line numbers (the header is line 1), so a user can jump straight to them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # pandas' own list of the cells it reads as missing

from forecast.errors import ForecastError
from forecast.scaling import FLOAT32_MAX


def line_of(row: int, skip_rows: int | np.ndarray = 0) -> int:
    """The file line of data row `row` (0-based), the header being line 1 after `skip_rows` lines before it.

    For one series of a long file, whose rows are spread over the file, `skip_rows` is instead the array of each of
    its rows' file lines.
    """
    if isinstance(skip_rows, np.ndarray):
        return int(skip_rows[row])
    return row + 2 + skip_rows


def describe_grid(freq: pd.Timedelta, business_days: bool) -> str:
    """A series' step in words: "1 business day" on a business-day grid, else as `describe_step`."""
    return "1 business day" if business_days else describe_step(freq)


def describe_step(step: pd.Timedelta) -> str:
    """A time step as people write it: "1 h", "30 min", "1 day 6 h"."""
    parts = step.components
    units = ((parts.days, " day" if parts.days == 1 else " days"), (parts.hours, " h"), (parts.minutes, " min"),
             (parts.seconds, " s"))
    return " ".join(f"{amount}{unit}" for amount, unit in units if amount) or "0 s"


def without_partial_line(data: bytes, path: Path, warn: Callable[[str], None] | None) -> bytes:
    """`data` without a last line that has no line end: such a line may still be being written (a cut-off
    `...,0.822,3` would read as a valid row), so it is refused, or with `warn`, left out with a warning."""
    if not data or data.endswith(b"\n"):
        return data
    cut = data.rfind(b"\n") + 1
    shown = data[cut:][-40:].decode("utf-8", errors="replace")
    if warn is None:
        raise ForecastError(
            f"{path}: the last line ({shown!r}) has no line end, so it may still be being written; wait for the "
            "writer to finish, or end the line with a line break if it is complete"
        )
    warn(f"warning: {path}: left out the last line ({shown!r}): it has no line end, so it may still be being written")
    return data[:cut]


def check_header(names: list[str], path: Path) -> None:
    """Column names must be unique (pandas would rename a second `y` to `y.1` and the wrong one would be read), and
    a single name holding semicolons or tabs means the file is not comma-separated."""
    if len(names) == 1:
        for separator, label in ((";", "semicolons"), ("\t", "tabs")):
            if separator in names[0]:
                raise ForecastError(
                    f"{path}: the columns are separated by {label}, not commas; save the file as comma-separated CSV"
                )
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name and name in seen:
            raise ForecastError(
                f"{path}: columns {seen[name] + 1} and {index + 1} are both named {name!r}; give each column its own name"
            )
        seen[name] = index


def listing(names, limit: int = 12) -> str:
    """Up to `limit` names, comma-separated, and how many more there are: a message stays one readable line."""
    names = [str(name) for name in names]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def mostly_numeric(column: pd.Series) -> bool:
    """Numeric, or numbers with a few stray cells of text: such a column holds numbers whose bad cells must be
    reported, not text to be left out or read as categories."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    given = column.dropna()
    return len(given) > 0 and pd.to_numeric(given, errors="coerce").notna().mean() > 0.5


def missing_markers(header: list[str], id_column: str | None) -> dict[str, list[str]] | None:
    """The `na_values` of pandas' read_csv (with keep_default_na=False) for a file with this header line: pandas'
    usual missing-value markers in every column but the ids, where only an empty cell is missing, so that a series
    whose id is NA, None or null (a real station name) keeps it. None without an id column: pandas' defaults."""
    if id_column is None:
        return None
    markers = {}
    for index, raw in enumerate(header):
        # as pandas names the column, with or without skipinitialspace, and a column without a name
        for name in {raw, raw.lstrip(), raw.strip()} if raw.strip() else {f"Unnamed: {index}"}:
            markers[name] = [""] if raw.strip() == id_column else sorted(STR_NA_VALUES)
    return markers


def id_key(series_id: str) -> str:
    """An id as a spreadsheet may rewrite it: without its leading zeros or a trailing `.0`."""
    return series_id.strip().removesuffix(".0").lstrip("0")


def lookalike(ids, known) -> tuple[str, str] | None:
    """The first of `ids` that is none of `known` but matches one of them once leading zeros are ignored, with that
    one: the sign of ids whose zeros a spreadsheet dropped."""
    keys = {id_key(name): name for name in known if id_key(name)}
    known = set(known)
    for name in ids:
        match = keys.get(id_key(name))
        if name not in known and match is not None:
            return name, match
    return None


def first_non_utf8_line(path: Path) -> int:
    """The file line holding the first byte that is not UTF-8 (pandas reports offsets within its own buffers)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return data[: error.start].count(b"\n") + 1
    return 1


def check_order(time: pd.DatetimeIndex, path: Path, skip_rows: int | np.ndarray = 0) -> None:
    steps = np.diff(time.asi8)
    bad = np.flatnonzero(steps <= 0)
    if not bad.size:
        return
    row = int(bad[0]) + 1
    if steps[row - 1] == 0:
        raise ForecastError(
            f"{path}: row {line_of(row, skip_rows)}: timestamp {time[row]} repeats the row before (a clock change? export times "
            "in UTC); remove the duplicate"
        )
    raise ForecastError(
        f"{path}: row {line_of(row, skip_rows)}: timestamp {time[row]} goes back in time from {time[row - 1]}; sort the file by time"
    )


def business_daily(time: pd.DatetimeIndex) -> bool:
    """A daily series recorded on business days only (pandas' "B" frequency): no row on a Saturday or Sunday, every row
    at the same time of day, mostly one day apart, and at least one weekend skipped from a Friday to a Monday."""
    if len(time) < 3:
        return False
    weekdays = np.asarray(time.day_of_week)
    dates = time.normalize()
    days = np.asarray((dates[1:] - dates[:-1]).days)
    if (weekdays >= 5).any() or (time - time.normalize()).nunique() != 1:
        return False
    weekend_skipped = (weekdays[:-1] == 4) & (weekdays[1:] == 0) & (days == 3)
    return bool(weekend_skipped.any() and np.count_nonzero(days == 1) > len(days) / 2)


def check_weekdays(time: pd.DatetimeIndex, path: Path, skip_rows: int | np.ndarray = 0) -> None:
    """A series read on business days has no row on a Saturday or Sunday."""
    weekend = np.flatnonzero(np.asarray(time.day_of_week) >= 5)
    if weekend.size:
        row = int(weekend[0])
        raise ForecastError(
            f"{path}: row {line_of(row, skip_rows)}: {time[row]} is a {time[row].day_name()}, but the model was trained "
            "on business days; remove the weekend rows or train a new model"
        )


def regular_grid(
    time: pd.DatetimeIndex, values: pd.DataFrame, path: Path, gaps: str, max_gap: int, skip_rows: int | np.ndarray = 0,
    business_days: bool = False, target: str | None = None,
) -> tuple[pd.DatetimeIndex, pd.DataFrame, pd.Timedelta]:
    """The series on a regular grid at its most common step (with `business_days`, the business days: weekends are
    not gaps, and a holiday is one).

    Missing timestamps are refused, or (gaps="mask") inserted as empty rows, so their targets get weight 0, or
    (gaps="interpolate") inserted with each column's last value before the gap (causal: nothing after an origin
    reaches it) and the `target` column left empty, so filled targets get weight 0 too; a gap longer than `max_gap`
    steps is refused either way.
    """
    if len(time) < 2:
        raise ForecastError(f"{path}: a series needs at least two rows to have a frequency")
    steps = np.diff(time.asi8)
    candidates, counts = np.unique(steps, return_counts=True)
    step = int(candidates[np.argmax(counts)])
    freq = pd.Timedelta(step, unit=time.unit)
    uneven = np.flatnonzero(steps % step)
    if uneven.size:
        row = int(uneven[0]) + 1
        raise ForecastError(
            f"{path}: row {line_of(row, skip_rows)}: timestamp {time[row]} is "
            f"{describe_step(pd.Timedelta(int(steps[row - 1]), unit=time.unit))} after the row before, not a multiple "
            f"of the series step, {describe_step(freq)}; the series must be regular"
        )
    if business_days:
        grid = pd.bdate_range(time[0], time[-1], normalize=False).as_unit(time.unit)
        positions = grid.get_indexer(time)
        if (positions < 0).any():
            row = int(np.flatnonzero(positions < 0)[0])
            raise ForecastError(
                f"{path}: row {line_of(row, skip_rows)}: {time[row]} is not at the time of day of the first row, "
                f"{time[0].time()}; a business-day series needs one time of day"
            )
        missing = np.diff(positions) - 1
    else:
        grid = pd.date_range(time[0], time[-1], freq=freq, unit=time.unit)
        missing = steps // step - 1
    gap_rows = np.flatnonzero(missing)
    if not gap_rows.size:
        return time, values, freq
    row = int(gap_rows[0]) + 1
    unit = "business day(s) (a holiday?)" if business_days else "step(s)"
    where = f"row {line_of(row, skip_rows)}: {int(missing[row - 1])} missing {unit} between {time[row - 1]} and {time[row]}"
    if gaps == "refuse":
        raise ForecastError(
            f"{path}: {where}; fill the gap with rows, or set gaps = \"mask\" (weight 0) or \"interpolate\""
        )
    too_long = np.flatnonzero(missing > max_gap)
    if too_long.size:
        row = int(too_long[0]) + 1
        raise ForecastError(
            f"{path}: row {line_of(row, skip_rows)}: {int(missing[row - 1])} missing steps between {time[row - 1]} and {time[row]}, "
            f"more than max_gap = {max_gap}; fill them, raise max_gap, or split the series"
        )
    regular = values.set_axis(time).reindex(grid)
    if gaps == "interpolate":
        # Filled from the past only (the last value before the gap), never from the row after it, which an origin
        # inside the gap has not seen; a filled target is no observation, so `target` stays empty there (weight 0).
        inserted = ~grid.isin(time)
        regular.loc[inserted] = regular.ffill().loc[inserted]
        if target is not None:
            regular.loc[inserted, target] = np.nan
    return grid, regular.reset_index(drop=True), freq


def numeric_values(values: pd.DataFrame, path: Path, skip_rows: int | np.ndarray = 0) -> pd.DataFrame:
    """The role columns as float64; text or an infinite value in one of them names its row and column."""
    values = values.copy()
    for column in values.columns:
        series = values[column]
        if not pd.api.types.is_numeric_dtype(series):
            # In a long file a column is text for every series when one cell of one series is: the others are numbers.
            numbers = pd.to_numeric(series, errors="coerce")
            bad = np.flatnonzero(numbers.isna().to_numpy() & series.notna().to_numpy())
            if bad.size:
                raise ForecastError(
                    f"{path}: row {line_of(int(bad[0]), skip_rows)}: column {column!r} holds {series.iloc[bad[0]]!r}, "
                    "not a number; fix the cell, or exclude the column or give it no numeric role"
                )
            series = values[column] = numbers.astype("float64")  # text read as numbers is checked as numbers are
        numbers = series.to_numpy(dtype="float64")
        infinite = np.flatnonzero(np.isinf(numbers))
        if infinite.size:
            raise ForecastError(
                f"{path}: row {line_of(int(infinite[0]), skip_rows)}: column {column!r} is infinite; leave the cell empty instead"
            )
        huge = np.flatnonzero(np.abs(numbers) > FLOAT32_MAX)
        if huge.size:
            raise ForecastError(
                f"{path}: row {line_of(int(huge[0]), skip_rows)}: column {column!r} holds {numbers[huge[0]]:g}, beyond the "
                f"{FLOAT32_MAX:.1e} the model computes with; fix the cell or leave it empty"
            )
    return values.astype("float64")


def check_target(target: pd.Series, path: Path) -> None:
    observed = target.dropna()
    if observed.empty:
        raise ForecastError(f"{path}: target column {target.name!r} has no values")
    if observed.nunique() == 1:
        raise ForecastError(
            f"{path}: target column {target.name!r} is constant ({float(observed.iloc[0]):g}); there is nothing to forecast"
        )


DIGEST_BLOCK = 1024


def row_digests(time: pd.DatetimeIndex, values: pd.DataFrame, rows: int) -> tuple[str, ...]:
    """Fingerprints of the first `rows` rows, one per block of DIGEST_BLOCK rows, so that a rewritten history can be
    detected (and located to a block) without keeping a copy of the data."""
    stamps = time.as_unit("s").asi8[:rows]
    table = np.nan_to_num(values.to_numpy(dtype="float64")[:rows], nan=np.inf)
    digests = []
    for start in range(0, rows, DIGEST_BLOCK):
        block = slice(start, start + DIGEST_BLOCK)
        digests.append(hashlib.sha256(stamps[block].tobytes() + table[block].tobytes()).hexdigest()[:16])
    return tuple(digests)
