"""Where to cut a series by time: the training and validation rows of each series, from a row count or a date, and the
rows a command scores.

Rows are 0-based within a series (its rows on the regular time grid), and a range [first, end) excludes its end, so an
end is also a row count.
"""

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
    """Rows [0, `train_end`) of a series train the model; rows [`train_end`, `val_end`) validate it (0-based within the
    series; both ends are exclusive)."""

    train_end: int
    val_end: int


def resolve_split(series: Series, config: Config) -> Split:
    """The `Split` of `series`: `config.val_end` (a row count, or the last timestamp to include; unset: every observed
    row) and `config.train_end` (the same; unset: `config.validation_fraction` of the rows before val_end validate)
    turned into row counts of `series` (`row_bound`). Refused in one line (ForecastError) when the training rows hold
    no `config.lookback` + `config.horizon` window or the validation rows no horizon."""
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
    """The series of `collection` with enough rows for a training and a validation window under `config`, and their
    splits (`resolve_split`), in the same order. A series without is skipped with a line to `log` naming it; when none
    has enough, the first one's reason is the error."""
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
    return collection.keeping(tuple(kept)), tuple(splits)


def row_bound(series: Series, value: str, name: str, first: bool = False) -> int:
    """The row bound of `series` (0-based within the series) that `value` gives as a row count (digits only, taken as
    written) or a date; `name` names the bound in the refusal when `value` is neither.

    As an end (`first` False), a date is the last time to include, as far as it is written: `2018-02-20` includes that
    whole day, `2018-02-20 13:00` that minute; the bound is the count of rows up to it, so the end is exclusive. As a
    start (`first` True), it is the first timestamp to include, and the bound is its row.
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
    """Each series' scored rows [first, end) by id (0-based within the series, end exclusive: the rows whose targets
    are scored), the first warning, and notes naming the series of `collection` left out because they have nothing to
    score (an error when that is every series). `start` and `end` are --start and --end (a row count or a date, see
    `row_bound`; None: unset), `validation_rows` is --validation-rows, `horizon` the steps a forecast reaches, and
    `model_dir` names the model in messages; with `after_training`, a trained series' rows start after its training
    rows. A trained series' rows are `scored_rows`; one without a training record in `schema` (held out, or too short
    to train on) starts after the latest validation end of the trained series (with `validation_rows`: at the trained
    series' validation dates), unless `start` says otherwise."""
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
    """The rows [first, end) of the trained `series` whose targets are scored (0-based within the series, end
    exclusive), and a warning when they are, or reach back into, rows the model saw. By default they follow the
    validation rows `record` saved; `start` and `end` are --start and --end (a row count or a date, see `row_bound`;
    None: unset), `validation_rows` (--validation-rows) scores the validation rows instead, `horizon` is the steps that
    must fit after them, and `model_dir` names the model in messages."""
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
    """Notes naming the series of `collection` without an origin in `ranges` (the `sampler.OriginRange`s of their
    scored rows); an error when no series has one. `rows` are each series' scored rows by id, as
    `collection_scored_rows` gives them (0-based within the series, end exclusive); `lookback` and `horizon` (rows)
    are for the message."""
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
