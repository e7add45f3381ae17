"""Static attributes of each series (a basin's area, slope, soils): one row per id in a CSV, encoded as bg channels.

The bg input tells one model which series it is looking at. Numeric attributes are z-scored across the training
series (so a basin's area counts in spreads of the training basins' areas); a text attribute with few values is one-hot
encoded (one channel per value seen in training). The encoder keeps every series' raw attributes, so that predict and
evaluate need no attributes file, and is saved with the model as JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.errors import ForecastError
from forecast.scaling import FLOAT32_MAX
from forecast.seal import sealed
from forecast.validation import (check_header, first_non_utf8_line, line_of, listing, lookalike, missing_markers,
                                 mostly_numeric, numeric_values)

MAX_CATEGORIES = 20  # a text attribute with more distinct values is a name, not a category


@dataclass(frozen=True)
class StaticEncoder:
    """How the attributes become bg channels, and the raw attributes of every series of the file.

    `numeric` columns are z-scored with `mean` and `std` (fitted on the training series; an empty cell becomes 0, the
    training mean); each `categories` column becomes one channel per value (1 where the series has it, else 0).
    `table` maps each id to its raw values (None for an empty cell).
    """

    numeric: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categories: dict[str, tuple[str, ...]]
    table: dict[str, dict[str, float | str | None]]

    @property
    def channels(self) -> tuple[str, ...]:
        one_hot = tuple(f"{column}={value}" for column, values in self.categories.items() for value in values)
        return (*self.numeric, *one_hot)

    def encode(self, series_id: str) -> np.ndarray:
        """The bg channels (len(channels),) of one series, float32; a series without attributes gets zeros."""
        row = self.table.get(series_id, {})
        numbers = np.array([np.nan if row.get(column) is None else float(row[column]) for column in self.numeric])
        scaled = np.nan_to_num((numbers - np.array(self.mean)) / np.array(self.std), nan=0.0)
        one_hot = [float(row.get(column) == value) for column, values in self.categories.items() for value in values]
        return np.concatenate([scaled, one_hot]).astype("float32")

    def to_json(self) -> str:
        return json.dumps(
            sealed({"numeric": self.numeric, "mean": self.mean, "std": self.std, "categories": self.categories,
                    "table": self.table}),
            indent=2,
        )

    @classmethod
    def from_json(cls, path: Path) -> StaticEncoder:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            encoder = cls(
                tuple(map(str, data["numeric"])), tuple(map(float, data["mean"])), tuple(map(float, data["std"])),
                {str(column): tuple(map(str, values)) for column, values in data["categories"].items()},
                {str(name): _row(row) for name, row in data["table"].items()},
            )
            if not len(encoder.numeric) == len(encoder.mean) == len(encoder.std):
                raise ValueError("as many means and spreads as numeric columns are needed")
            if not all(_number(value) for value in encoder.mean) or not all(
                _number(value) and value > 0 for value in encoder.std
            ):
                raise ValueError("means and spreads must be finite numbers within float32 range, spreads above 0")
            encoder.check_table()
            return encoder
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved attributes ({exc}); roll back or retrain the model") from None

    def check_table(self) -> None:
        """Every cell is what its column's encoding reads: a number within float32 range (numeric) or text (category),
        or None for an empty cell."""
        for name, row in self.table.items():
            for column in self.numeric:
                value = row.get(column)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not _number(value)):
                    raise ValueError(f"series {name!r}: numeric column {column!r} holds {value!r}, not a number "
                                     "within float32 range")
            for column in self.categories:
                if not isinstance(row.get(column, ""), (str, type(None))):
                    raise ValueError(f"series {name!r}: category column {column!r} holds {row[column]!r}, not text")


def _row(row) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"a series' attributes must be a mapping of column to value, got {row!r}")
    return dict(row)


def _number(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def read_statics(path: str | Path, id_column: str, training_ids: tuple[str, ...], log: Callable[[str], None]
                 ) -> StaticEncoder:
    """The encoder for the attributes in `path` (one row per id in `id_column`), fitted on the `training_ids` rows.

    Refused in one line: a missing file or id column, an empty or repeated id, fewer than half of the training series
    with a row (ids that lost their leading zeros in a spreadsheet), a text column with more than MAX_CATEGORIES
    values, and in a column of numbers a text cell, an infinite one or one beyond float32 range (naming its row).
    Reported through `log`: training series without a row (their attributes are the training means), and empty cells
    of training series (each is the column's training mean).
    """
    path = Path(path)
    frame = _read_table(path, id_column)
    _check_ids(frame, path, id_column, training_ids)
    frame = frame.set_index(id_column)
    missing = [name for name in training_ids if name not in frame.index]
    if missing:
        log(f"{path}: no attributes for series {listing(missing)}: each of their attributes is set to the training "
            "series' mean")
    numeric = [column for column in frame.columns if frame[column].isna().all() or mostly_numeric(frame[column])]
    values = numeric_values(frame[numeric].reset_index(drop=True), path).set_axis(frame.index)
    training_rows = [name for name in training_ids if name in frame.index]
    categories = {}
    for column in frame.columns.difference(numeric, sort=False):
        seen = tuple(sorted(frame.loc[training_rows, column].dropna().unique()))
        if len(seen) > MAX_CATEGORIES:
            raise ForecastError(
                f"{path}: column {column!r} holds text with {len(seen)} different values; a category column may have "
                f"at most {MAX_CATEGORIES} (it is one-hot encoded); remove the column or give numbers"
            )
        categories[column] = seen
    numbers = values.loc[training_rows]
    empty = [column for column in numeric if numbers[column].isna().any()]
    if empty:
        log(f"{path}: empty attribute cells in {listing(empty)} are set to the training series' mean")
    mean = numbers.mean().fillna(0.0)
    std = numbers.std(ddof=0).where(lambda spread: spread > 0).fillna(1.0)
    table = {
        str(name): {column: None if pd.isna(frame.at[name, column]) else
                    (float(values.at[name, column]) if column in numeric else str(frame.at[name, column]))
                    for column in frame.columns}
        for name in frame.index
    }
    return StaticEncoder(tuple(numeric), tuple(map(float, mean)), tuple(map(float, std)), categories, table)


def _read_table(path: Path, id_column: str) -> pd.DataFrame:
    """The attributes file's cells as text, NaN where empty. The ids are read with no missing-value markers, so that
    a station named NA or None keeps its name."""
    if not path.is_file():
        raise ForecastError(f"{path}: attributes file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ForecastError(f"{path}: line {first_non_utf8_line(path)} is not UTF-8 text; re-save the file as UTF-8 "
                            "CSV") from None
    header = next(csv.reader([text.split("\n", 1)[0].rstrip("\r")]), [])
    names = [name.strip() for name in header]
    check_header(names, path)
    if id_column not in names:
        raise ForecastError(f"{path}: no id column {id_column!r}; the file has {listing(names)}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True, index_col=False,
                                keep_default_na=False, na_values=missing_markers(header, id_column))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ForecastError(f"{path}: not a readable CSV of attributes ({str(exc).strip()})") from None
    if caught:  # a row longer than the header, say, whose cells would shift into other columns
        raise ForecastError(f"{path}: not a readable CSV of attributes ({str(caught[0].message).split('. ')[0]})")
    frame.columns = [str(column).strip() for column in frame.columns]
    if frame.empty:
        raise ForecastError(f"{path}: the file has a header but no rows")
    frame[id_column] = frame[id_column].str.strip()
    return frame


def _check_ids(frame: pd.DataFrame, path: Path, id_column: str, training_ids: tuple[str, ...]) -> None:
    """Every row names its series once, and at least half of the training series find their row."""
    ids = frame[id_column]
    empty = np.flatnonzero(ids.isna().to_numpy() | (ids == "").to_numpy())
    if empty.size:
        raise ForecastError(f"{path}: row {line_of(int(empty[0]))}: column {id_column!r} is empty; every row needs the "
                            "id of its series")
    repeated = ids[ids.duplicated()]
    if not repeated.empty:
        raise ForecastError(f"{path}: series {repeated.iloc[0]!r} has more than one row; keep one row per series")
    listed = set(ids)
    found = sum(name in listed for name in training_ids)
    if 2 * found < len(training_ids):
        ours, theirs = lookalike(ids, training_ids) or (ids.iloc[0], next(n for n in training_ids if n not in listed))
        raise ForecastError(
            f"{path}: only {found} of the {len(training_ids)} training series have a row here (the data names a series "
            f"{theirs!r}, this file {ours!r}); the ids in column {id_column!r} must match the data's exactly (did a "
            "spreadsheet drop their leading zeros? keep the column as text)"
        )
