"""Forecasting the steps after an origin (by default the last observation) of each series, with its quantiles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data import Series
from forecast.data_cache import DataCache
from forecast.errors import ForecastError
from forecast.intervals import quantile_columns
from forecast.runner import LoadedModel, OpenedModel, open_saved
from forecast.sampler import OriginRange
from forecast.scaling import bounded
from forecast.split import row_bound
from forecast.store import SavedModel


@dataclass(frozen=True)
class Forecast:
    """A forecast at one origin of one series and what a picture of it needs: `frame` holds the times, steps, point
    forecast and one column per quantile (the target's units); `origin` is the row of the series' last observation
    it starts from."""

    frame: pd.DataFrame
    series: Series
    origin: int
    saved: SavedModel
    origin_note: str = ""  # how the origin was chosen, in words ("origin: last observed target")

    @property
    def quantile_columns(self) -> list[str]:
        return [] if self.saved.intervals is None else quantile_columns(self.series.roles.target,
                                                                        self.saved.intervals.quantiles)


def predict(csv_path: str | Path, model_dir: str | Path, log: Callable[[str], None] | None = None,
            series_ids: tuple[str, ...] | None = None, cache: DataCache | None = None) -> pd.DataFrame:
    """Forecasts the H steps after the last observed target of each series of `csv_path` (or of those in
    `series_ids`) with the current version of the model at `model_dir`; returns, in long format, the id (for a file with
    an id column), timestamps, steps, values and one column per quantile (the target's units). A last line still being
    written is left out, with a warning through `log`. The file is read through `cache` (forecast.data_cache)."""
    log = log or (lambda message: None)
    opened = open_saved(csv_path, model_dir, log, series_ids, cache=cache)
    return _forecasts(opened, [series.n_observed - 1 for series in opened.collection.series], log)


def forecast_from(csv_path: str | Path, model_dir: str | Path, origin: str | None = None,
                  log: Callable[[str], None] | None = None, series_id: str | None = None,
                  cache: DataCache | None = None) -> Forecast:
    """The forecast of one series (`series_id`; needed for a file of many) for the H steps after `origin` (a row
    number or the last date to include, as in `--end`; None: the latest the file can forecast, `default_origin`),
    with its quantiles; the file is read through `cache`."""
    log = log or (lambda message: None)
    # Only the series forecast is checked against the model: another series of the file need not fit it.
    opened = open_saved(csv_path, model_dir, log, None if series_id is None else (series_id,), cache=cache)
    if series_id is None and len(opened.collection.series) > 1:
        raise ForecastError(f"{csv_path}: holds {len(opened.collection.series)} series; name one with --series")
    series, config = opened.collection.first, opened.saved.config
    if origin is None:
        row, note = default_origin(series, config.horizon, config.lookback)
    else:
        row, note = origin_row(series, origin, config.lookback), "origin: as given"
    frame = _forecasts(opened, [row], log)
    id_name = opened.collection.id_name
    return Forecast(frame.drop(columns=[id_name] if id_name else []), series, row, opened.saved, note)


def default_origin(series: Series, horizon: int, lookback: int) -> tuple[int, str]:
    """The latest origin the file can forecast `series` from, and which it is in words: its last observed target
    where the sim columns cover the `horizon` rows after it, else the last row whose horizon they cover (a file whose
    forcings stop before the last observation's horizon ends)."""
    last = series.n_observed - 1
    future = series.values[list(series.roles.sim)].to_numpy()[last + 1 : last + 1 + horizon]
    # The rows after the last observation with every sim value, up to the first that lacks one.
    covered = int(np.isfinite(future).all(axis=1).cumprod().sum()) if series.roles.sim else horizon
    if covered >= horizon:
        return last, "origin: last observed target"
    row = last - (horizon - covered)
    if row < lookback - 1:
        raise ForecastError(
            f"{series.where}: the sim columns cover {covered} of the {horizon} rows after the last observed target "
            f"({series.time[last]}), and no earlier origin has {lookback} rows of history; add sim rows for the horizon"
        )
    return row, f"origin: {time_label(series, row)}, the last whose horizon the sim covers"


def time_label(series: Series, row: int) -> str:
    """The time of `row` as a message or a picture names it: its date alone for steps of whole days."""
    whole_days = series.freq % pd.Timedelta(days=1) == pd.Timedelta(0)
    return str(series.time[row].date() if whole_days else series.time[row])


def _forecasts(opened: OpenedModel, rows: list[int], log: Callable[[str], None]) -> pd.DataFrame:
    """The forecasts of each series of `opened` from its row `rows[s]` (the origin, 0-based within the series), in
    long format (see `predict`)."""
    collection, config = opened.collection, opened.saved.config
    for series, row in zip(collection.series, rows):
        if row < config.lookback - 1:
            raise ForecastError(f"{series.where}: {series.n_observed} observed rows, but the model looks back "
                                f"{config.lookback} steps; add history")
    # Only a horizon that reaches past the last observation needs (and checks) the sim rows appended after it, and
    # only as many as it reaches.
    ahead = [max(row + config.horizon + 1 - series.n_observed, 0) for series, row in zip(collection.series, rows)]
    loaded = opened.load({series.id: row + 1 for series, row in zip(collection.series, rows)}, log, ahead)
    features = loaded.features
    origins = np.array([features.bounds(index)[0] + row for index, row in enumerate(rows)])
    ranges = tuple(OriginRange(index, int(origin), int(origin), features.bounds(index)[0] + config.lookback - 1)
                   for index, origin in enumerate(origins))
    from forecast.model import has_network

    if not has_network(loaded.saved.model):
        log(f"{loaded.saved.path}: the model is its linear start (the gate discarded the network at training): no LSTM "
            "runs")
    scaled = loaded.forecasts(ranges)
    if not np.isfinite(scaled).all():
        where = collection.series[int(np.flatnonzero(~np.isfinite(scaled).all(axis=1))[0])].where
        raise ForecastError(
            f"{where}: the forecast is not finite: the last {config.lookback} rows lie far outside the values the "
            "model was trained on; check them"
        )
    scaled = loaded.bound(scaled.astype("float64"), origins)
    if loaded.saved.intervals is None:
        log(f"{loaded.saved.path}: no interval calibration (saved before intervals, or quantiles = []); point forecasts "
            "only")
    return _forecast_table(loaded, origins, scaled, loaded.offsets(ranges))


def origin_row(series: Series, origin: str, lookback: int) -> int:
    """The row of the last observation a forecast starts from: `origin` is a row number or the last date to include."""
    row = row_bound(series, origin, "origin") - 1
    if not lookback - 1 <= row < series.n_observed:
        raise ForecastError(
            f"{series.where}: origin {origin} is row {row}, but a forecast needs {lookback} rows of history before it "
            f"and an observed target at it (rows {lookback - 1} to {series.n_observed - 1}, "
            f"{series.time[min(lookback - 1, series.n_observed - 1)]} to {series.time[series.n_observed - 1]})"
        )
    return row


def _forecast_table(loaded: LoadedModel, origins: np.ndarray, scaled: np.ndarray, offsets: np.ndarray | None
                    ) -> pd.DataFrame:
    """The forecasts `scaled` (n_series, H, z-scored by each series, clipped) from feature rows `origins` in the
    target's units, with their quantiles from the interval `offsets` (n_series, Q, H; None without a calibration),
    one row per series and step."""
    collection, saved, config = loaded.collection, loaded.saved, loaded.saved.config
    target = collection.first.roles.target
    stats = loaded.target_stats
    mean, std = stats[:, :1], stats[:, 1:]
    quantiles = None
    if offsets is not None:  # (n_series, Q, H) in the target's units
        bounds = saved.intervals.bounds(scaled, loaded.features.history[:, 0], origins, offsets)
        quantiles = bounded(bounds * std[:, :, None] + mean[:, :, None], config.target_min, config.target_max)
    tables = []
    for index, (series, origin) in enumerate(zip(collection.series, origins)):
        columns = {collection.id_name: series.id} if collection.id_name else {}
        columns |= {collection.first.time_name: loaded.features.time[origin + 1 : origin + 1 + config.horizon],
                    "step": np.arange(1, config.horizon + 1),
                    target: bounded(scaled[index] * std[index] + mean[index], config.target_min, config.target_max)}
        if quantiles is not None:
            columns.update(zip(quantile_columns(target, saved.intervals.quantiles), quantiles[index]))
        tables.append(pd.DataFrame(columns))
    return pd.concat(tables, ignore_index=True)
