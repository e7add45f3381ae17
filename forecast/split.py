"""Where to cut a series by time: the training and validation rows of each series, from a row count or a date."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from forecast.config import Config
from forecast.data import Collection, Series
from forecast.errors import ForecastError


@dataclass(frozen=True)
class Split:
    """Rows [0, train_end) train the model; rows [train_end, val_end) validate it. Both ends are exclusive."""

    train_end: int
    val_end: int


def resolve_split(series: Series, config: Config) -> Split:
    """Turns train_end / val_end (a row count, or the last timestamp to include) into row counts of `series`."""
    n_rows = series.n_observed
    val_end = row_bound(series, config.val_end, "val_end") if config.val_end else n_rows
    val_end = min(val_end, n_rows)
    if config.train_end:
        train_end = row_bound(series, config.train_end, "train_end")
    else:
        train_end = val_end - round(val_end * config.validation_fraction)
    need_train = config.lookback + config.horizon
    if train_end < need_train or val_end - train_end < config.horizon:
        raise ForecastError(
            f"{series.where}: too little data: {train_end} training rows and {val_end - train_end} validation rows, but "
            f"lookback + horizon needs {need_train} training rows and horizon needs {config.horizon} validation rows; "
            "add rows or lower --lookback/--horizon"
        )
    return Split(train_end=train_end, val_end=val_end)


def resolve_splits(collection: Collection, config: Config, log: Callable[[str], None]) -> tuple[Collection, tuple[Split, ...]]:
    """The series with enough rows for a training and a validation window, and their splits. A series without is
    skipped with a log line naming it; when none has enough, the first one's reason is the error."""
    kept, splits, refused = [], [], []
    for series in collection.series:
        try:
            splits.append(resolve_split(series, config))
            kept.append(series)
        except ForecastError as exc:
            refused.append(exc)
    if not kept:
        raise refused[0]
    for reason in refused:
        log(f"skipped: {reason}")
    return Collection(collection.path, tuple(kept), collection.id_name), tuple(splits)


def row_bound(series: Series, value: str, name: str, first: bool = False) -> int:
    """A row number for a range bound given as a row count or a date.

    As an end (first=False), a date is the last time to include, as far as it is written: `2018-02-20` includes that
    whole day, `2018-02-20 13:00` that minute; the bound is the count of rows up to it. As a start (first=True), it is
    the first timestamp to include.
    """
    if value.isdigit():
        return int(value)
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise ForecastError(f"{series.path}: {name} = {value!r} is neither a row number nor a date") from None
    if not first and stamp.tzinfo is None:
        with contextlib.suppress(ValueError):
            stamp = pd.Period(value).end_time  # the last instant of the day (or minute, month) the value names
    return int(series.time.searchsorted(stamp, side="left" if first else "right"))
