"""Where to cut a series by time: the training and validation rows of each series, from a row count or a date, and the
rows a command scores."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from forecast.config import Config
from forecast.data import Collection, Series
from forecast.errors import ForecastError

if TYPE_CHECKING:
    from pathlib import Path

    from forecast.store import Schema, SeriesRecord


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


def collection_scored_rows(collection, schema: Schema, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                 model_dir: Path, after_training: bool = False) -> tuple[dict[str, tuple[int, int]], str | None, list[str]]:
    """Each series' scored rows [first, end), the first warning, and notes naming the series left out because they
    have nothing to score (an error when that is every series). A series without a training record (held out, or too
    short to train on) starts after the latest validation end of the trained series, unless --start says otherwise."""
    rows, warnings, errors = {}, [], []
    for series in collection.series:
        try:
            rows[series.id], warning = _series_rows(series, schema, start, end, validation_rows, horizon, model_dir,
                                                    after_training)
        except ForecastError as exc:
            errors.append(exc)
            continue
        if warning:
            warnings.append(warning)
    if not rows:
        raise errors[0]
    return rows, (warnings[0] if warnings else None), [f"left out: {error}" for error in errors]


def _series_rows(series, schema: Schema, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                 model_dir: Path, after_training: bool = False) -> tuple[tuple[int, int], str | None]:
    record = schema.record(series.id)
    if record is not None and after_training:
        return (record.train_rows, min(row_bound(series, end, "end") if end else series.n_observed,
                                       series.n_observed)), None
    if record is not None:
        first_row, end_row, warning = scored_rows(series, record, start, end, validation_rows, horizon, model_dir)
        return (first_row, end_row), warning
    latest = max((record.val_time for record in schema.series if record.val_time), default=None)
    end_row = min(row_bound(series, end, "end") if end else series.n_observed, series.n_observed)
    if start is not None:
        return (row_bound(series, start, "start", first=True), end_row), None
    if latest is None:
        raise ForecastError(f"{series.where}: the model was not trained on this series and does not record "
                            "where validation ends; pass --start")
    if validation_rows:  # the dates the trained series validated on
        trained = max((record.train_time for record in schema.series if record.train_time), default=None)
        if trained is None:
            raise ForecastError(f"{series.where}: the model does not record where training ends; pass --start")
        return (row_bound(series, trained, "end"), min(end_row, row_bound(series, latest, "end"))), None
    first_row = row_bound(series, latest, "end")  # the first row after the trained series' validation
    if end_row - first_row < horizon:
        raise ForecastError(
            f"{series.where}: no rows after the trained series' validation rows (they end {latest}) to score "
            f"{horizon} steps ahead; pass --start, or --validation-rows to score those"
        )
    return (first_row, end_row), None


def scored_rows(series: Series, record: SeriesRecord, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                model_dir: Path) -> tuple[int, int, str | None]:
    """The rows [first, end) whose targets are scored (0-based row numbers, end exclusive), and a warning when they are
    the validation rows."""
    n_rows = series.n_observed
    end_row = min(row_bound(series, end, "end") if end else n_rows, n_rows)
    if start:
        if validation_rows:
            raise ForecastError("give --start or --validation-rows, not both")
        first_row = row_bound(series, start, "start", first=True)
        seen = record.val_end if record.val_end is not None else record.train_rows
        warning = None
        if first_row < seen:
            fitted = "training and validation" if first_row < record.train_rows else "validation"
            warning = (f"warning: rows {first_row} to {min(seen, end_row)} of this range are the model's {fitted} rows; "
                       "their scores flatter it")
        return first_row, end_row, warning
    if record.val_end is None:
        raise ForecastError(
            f"{model_dir}: the model does not record where its validation rows end (saved by an earlier version of "
            "forecast); pass --start with the first row or date to score"
        )
    if validation_rows:
        end_row = min(end_row, record.val_end) if end else min(record.val_end, n_rows)
        warning = (
            f"warning: rows {record.train_rows} to {record.val_end} are the validation rows, which chose the linear "
            "inputs, stopped training and decided the kept model; these scores flatter it"
        )
        return record.train_rows, end_row, warning
    if end_row - record.val_end < horizon:
        raise ForecastError(
            f"{series.where}: no rows after the model's validation rows (they end at row {record.val_end}, "
            f"{series.time[record.val_end - 1]}) to score {horizon} steps ahead; pass --start, or --validation-rows to "
            "score the validation rows (their scores flatter the model)"
        )
    return record.val_end, end_row, None


def check_ranges(collection, ranges, rows: dict[str, tuple[int, int]], lookback: int, horizon: int) -> list[str]:
    """Notes naming the series without an origin to score; an error when no series has one."""
    scored = {collection.series[span.series].id for span in ranges}
    reasons = []
    for series in collection.series:
        if series.id not in scored:
            first_row, end_row = rows[series.id]
            reasons.append(
                f"{series.where}: the range from row {first_row} to {end_row} holds no origin with {lookback} steps of "
                f"history and {horizon} steps ahead; widen --start/--end"
            )
    if not ranges:
        raise ForecastError(reasons[0])
    return [f"left out: {reason}" for reason in reasons]
