"""Static attributes of each series (a basin's area, slope, soils): one row per id in a CSV, encoded as bg channels.

The bg input tells one model which series it is looking at. Numeric attributes are z-scored across the training
series (so a basin's area counts in spreads of the training basins' areas); a text attribute with few values is one-hot
encoded (one channel per value seen in training). The encoder keeps every series' raw attributes, so that predict and
evaluate need no attributes file, and is saved with the model as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.errors import ForecastError
from forecast.validation import listing

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
            {"numeric": self.numeric, "mean": self.mean, "std": self.std, "categories": self.categories,
             "table": self.table},
            indent=2,
        )

    @classmethod
    def from_json(cls, path: Path) -> StaticEncoder:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            encoder = cls(
                tuple(map(str, data["numeric"])), tuple(map(float, data["mean"])), tuple(map(float, data["std"])),
                {str(column): tuple(map(str, values)) for column, values in data["categories"].items()},
                {str(name): dict(row) for name, row in data["table"].items()},
            )
            if not len(encoder.numeric) == len(encoder.mean) == len(encoder.std):
                raise ValueError("as many means and spreads as numeric columns are needed")
            if not all(math.isfinite(value) for value in encoder.mean) or not all(
                math.isfinite(value) and value > 0 for value in encoder.std
            ):
                raise ValueError("means must be finite and spreads above 0")
            return encoder
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved attributes ({exc}); roll back or retrain the model") from None


def read_statics(path: str | Path, id_column: str, training_ids: tuple[str, ...], log: Callable[[str], None]
                 ) -> StaticEncoder:
    """The encoder for the attributes in `path` (one row per id in `id_column`), fitted on the `training_ids` rows.

    Refused in one line: a missing file or id column, an id listed twice, a text column with more than
    MAX_CATEGORIES values. Reported through `log`: training series without a row (their attributes are the training
    means), and empty cells of training series (each is the column's training mean).
    """
    path = Path(path)
    if not path.is_file():
        raise ForecastError(f"{path}: attributes file not found")
    try:
        frame = pd.read_csv(path, dtype={id_column: str}, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ForecastError(f"{path}: not a readable CSV of attributes ({str(exc).strip()})") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    if id_column not in frame.columns:
        raise ForecastError(f"{path}: no id column {id_column!r}; the file has {listing(frame.columns)}")
    frame[id_column] = frame[id_column].astype(str).str.strip()
    repeated = frame[id_column][frame[id_column].duplicated()]
    if not repeated.empty:
        raise ForecastError(f"{path}: series {repeated.iloc[0]!r} has more than one row; keep one row per series")
    frame = frame.set_index(id_column)
    missing = [name for name in training_ids if name not in frame.index]
    if missing:
        log(f"{path}: no attributes for series {listing(missing)}: each of their attributes is set to the training "
            "series' mean")
    training = frame.loc[[name for name in training_ids if name in frame.index]]
    numeric, categories = [], {}
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.notna().sum() == frame[column].notna().sum():
            numeric.append(column)
            continue
        seen = tuple(sorted(training[column].dropna().astype(str).unique()))
        if len(seen) > MAX_CATEGORIES:
            raise ForecastError(
                f"{path}: column {column!r} holds text with {len(seen)} different values; a category column may have at "
                f"most {MAX_CATEGORIES} (it is one-hot encoded); remove the column or give numbers"
            )
        categories[column] = seen
    numbers = training[numeric].apply(pd.to_numeric, errors="coerce")
    empty = [column for column in numeric if numbers[column].isna().any()]
    if empty:
        log(f"{path}: empty attribute cells in {listing(empty)} are set to the training series' mean")
    mean = numbers.mean().fillna(0.0)
    std = numbers.std(ddof=0).where(lambda spread: spread > 0).fillna(1.0)
    table = {
        str(name): {column: _cell(row[column]) for column in frame.columns} for name, row in frame.iterrows()
    }
    return StaticEncoder(tuple(numeric), tuple(map(float, mean)), tuple(map(float, std)), categories, table)


def _cell(value) -> float | str | None:
    if pd.isna(value):
        return None
    number = pd.to_numeric(value, errors="coerce")
    return float(number) if pd.notna(number) else str(value)
