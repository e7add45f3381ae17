"""Forecasting the steps after the last observation with a batch-1 copy of a trained model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import backend
from forecast.data import Collection, Series, load_collection
from forecast.errors import ForecastError
from forecast.features import Features, InputLayout, build_features, fit_scaler, stack
from forecast.intervals import quantile_columns
from forecast.recent_errors import first_unfitted, interval_offsets
from forecast.sampler import OriginRange, rolling_streams
from forecast.scaling import Scaler, target_stats
from forecast.split import row_bound
from forecast.store import SavedModel, Schema, current_version, read_saved, with_network
from forecast.validation import describe_grid, listing, lookalike

# The fewest observed targets a series that took no part in training is z-scored on (its mean and spread need two).
MIN_SCALER_ROWS = 2


def load_model_file(path: Path):
    """Loads model.keras in safe mode (no arbitrary code); a damaged file is a user-facing error, not a crash."""
    keras = backend.keras()
    import forecast.model  # noqa: F401  (registers the custom layer and loss)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a damaged archive; all mean the same to a user.
        if "safe_mode" in str(exc):
            raise ForecastError(
                f"{path}: refused: the file holds code that would run on loading (a Lambda layer), which a model "
                "written by forecast never does; it is unsafe, so roll back to a version you trust or retrain"
            ) from None
        raise ForecastError(f"{path}: cannot load the model ({type(exc).__name__}); the file is damaged, retrain it") from None


def scalers_for(collection: Collection, saved: SavedModel, fit_rows: dict[str, int], log: Callable[[str], None]
                ) -> list[Scaler]:
    """Each series' scaler: the one saved with the model, or for a series the model was not trained on (held out, or
    new), one fitted on its own first `fit_rows[id]` rows, those up to its first forecast origin (what is known there:
    nothing after the origin may change a forecast), which must hold MIN_SCALER_ROWS observed targets."""
    scalers, unseen = [], []
    target = collection.first.roles.target
    for series in collection.series:
        scaler = saved.scaler.get(series.id)
        if scaler is None:
            unseen.append(series.id)
            rows = fit_rows[series.id]
            observed = int(np.isfinite(series.values[target].to_numpy()[:rows]).sum())
            if observed < MIN_SCALER_ROWS:
                raise ForecastError(
                    f"{series.where}: took no part in training, and only {observed} observed {target} values lie "
                    f"before its first forecast origin, too few to z-score it (at least {MIN_SCALER_ROWS}); forecast "
                    "from a later origin"
                )
            scaler = fit_scaler(series, rows)
        scalers.append(scaler)
    if unseen:
        log(f"series {listing(unseen)} took no part in training: each is z-scored on its own rows before its first "
            "forecast origin")
    return scalers


def collection_features(collection: Collection, saved: SavedModel, scalers: list[Scaler], for_prediction: bool,
                        ahead: list[int] | None = None) -> Features:
    """The features of every series of `collection` as the saved model reads them, stacked in collection order; with
    `for_prediction`, sim also covers the `ahead[s]` rows after series s's last observation (default: the horizon)."""
    statics, calendar = saved.statics, saved.schema.layout.calendar
    ahead = ahead or [saved.config.horizon] * len(collection.series)
    return stack([
        build_features(series, scaler, rows, for_prediction and rows > 0, calendar,
                       statics.encode(series.id) if statics else None)
        for series, scaler, rows in zip(collection.series, scalers, ahead)
    ])


def rolling_forecast(single, batcher, ranges: tuple[OriginRange, ...], chunks: int) -> np.ndarray:
    """Scaled forecasts (n_origins, H) of the batch-1 model at each origin of `ranges`, its state reset and then warmed
    up over the chunks before the origin (`sampler.rolling_streams`, the rule evaluation follows too)."""
    from forecast.model import reset_states

    streams, _ = rolling_streams(ranges, batcher.lookback, chunks)
    forecasts = []
    for stream in streams:
        reset_states(single)
        for origin in stream:
            output = single(batcher.inputs(np.array([origin])), training=False)
        forecasts.append(np.asarray(output["prediction"])[0])
    return np.array(forecasts)


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
            series_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Forecasts the H steps after the last observed target of each series of `csv_path` (or of those in
    `series_ids`) with the current version of the model at `model_dir`; returns, in long format, the id (for a file with
    an id column), timestamps, steps, values and one column per quantile (the target's units). A last line still being
    written is left out, with a warning through `log`."""
    log = log or (lambda message: None)
    saved = read_saved(current_version(Path(model_dir)))
    collection = load_collection(csv_path, saved.config, saved.schema.business_days, warn=log).select(series_ids)
    check_compatible(collection, saved.schema, saved)
    return _forecasts(collection, saved, [series.n_observed - 1 for series in collection.series], log)


def forecast_from(csv_path: str | Path, model_dir: str | Path, origin: str | None = None,
                  log: Callable[[str], None] | None = None, series_id: str | None = None) -> Forecast:
    """The forecast of one series (`series_id`; needed for a file of many) for the H steps after `origin` (a row
    number or the last date to include, as in `--end`; None: the latest the file can forecast, `default_origin`),
    with its quantiles."""
    log = log or (lambda message: None)
    saved = read_saved(current_version(Path(model_dir)))
    collection = load_collection(csv_path, saved.config, saved.schema.business_days, warn=log)
    if series_id is None and len(collection.series) > 1:
        raise ForecastError(f"{csv_path}: holds {len(collection.series)} series; name one with --series")
    collection = collection.select(None if series_id is None else (series_id,))
    check_compatible(collection, saved.schema, saved)
    series = collection.first
    if origin is None:
        row, note = default_origin(series, saved.config.horizon, saved.config.lookback)
    else:
        row, note = origin_row(series, origin, saved.config.lookback), "origin: as given"
    frame = _forecasts(collection, saved, [row], log)
    return Forecast(frame.drop(columns=[collection.id_name] if collection.id_name else []), series, row, saved, note)


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


def _forecasts(collection: Collection, saved: SavedModel, rows: list[int], log: Callable[[str], None]) -> pd.DataFrame:
    """The forecasts of each series of `collection` from its row `rows[s]` (the origin, 0-based within the series),
    in long format (see `predict`)."""
    config = saved.config
    for series, row in zip(collection.series, rows):
        if row < config.lookback - 1:
            raise ForecastError(f"{series.where}: {series.n_observed} observed rows, but the model looks back "
                                f"{config.lookback} steps; add history")
    saved = with_network(saved, load_model_file)
    from forecast.model import inference_copy
    from forecast.windowing import WindowBatcher

    scalers = scalers_for(collection, saved, {series.id: row + 1 for series, row in zip(collection.series, rows)}, log)
    # Only a horizon that reaches past the last observation needs (and checks) the sim rows appended after it, and
    # only as many as it reaches.
    ahead = [max(row + config.horizon + 1 - series.n_observed, 0) for series, row in zip(collection.series, rows)]
    features = collection_features(collection, saved, scalers, for_prediction=any(ahead), ahead=ahead)
    origins = [features.bounds(index)[0] + row for index, row in enumerate(rows)]
    ranges = tuple(OriginRange(index, origin, origin, features.bounds(index)[0] + config.lookback - 1)
                   for index, origin in enumerate(origins))
    batcher = WindowBatcher(features, config.lookback, config.horizon)
    scaled = rolling_forecast(inference_copy(saved.model), batcher, ranges, config.chunks_per_stream)
    offsets = None
    if saved.intervals is None:
        log(f"{saved.path}: no interval calibration (saved before intervals, or quantiles = []); point forecasts only")
    else:
        offsets = interval_offsets(
            saved.model, batcher, ranges, first_unfitted(collection, saved.schema, features), saved.intervals,
            config.chunks_per_stream, config.batch_size,
            target_bound(target_stats(scalers, collection.first.roles.target), features, config),
        )
    return _forecast_table(collection, saved, scalers, features, np.array(origins), scaled, offsets)


def target_bound(stats: np.ndarray, features: Features, config):
    """`bound(forecast, origins)`: z-scored forecasts (m, H) at feature rows `origins` (m,) clipped to the target's
    bounds, each by its series' mean and std (`stats` (n_series, 2), from `scaling.target_stats`)."""
    return lambda forecast, origins: bounded_z(forecast, stats[features.series_of(origins)], config.target_min,
                                               config.target_max)


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


def _forecast_table(collection: Collection, saved: SavedModel, scalers: list[Scaler], features: Features,
                    origins: np.ndarray, scaled: np.ndarray, offsets: np.ndarray | None) -> pd.DataFrame:
    """The forecasts (n_series, H, z-scored by each series) in the target's units, bounded, with their quantiles
    from the interval `offsets` (n_series, Q, H; None without a calibration), one row per series and step."""
    config = saved.config
    if not np.isfinite(scaled).all():
        where = collection.series[int(np.flatnonzero(~np.isfinite(scaled).all(axis=1))[0])].where
        raise ForecastError(
            f"{where}: the forecast is not finite: the last {config.lookback} rows lie far outside the values the "
            "model was trained on; check them"
        )
    target = collection.first.roles.target
    stats = target_stats(scalers, target)
    mean, std = stats[:, :1], stats[:, 1:]
    scaled = bounded_z(scaled.astype("float64"), stats, config.target_min, config.target_max)
    quantiles = None
    if saved.intervals is not None:  # (n_series, Q, H) in the target's units
        bounds = saved.intervals.bounds(scaled, features.history[:, 0], origins, offsets)
        quantiles = bounded(bounds * std[:, :, None] + mean[:, :, None], config.target_min, config.target_max)
    tables = []
    for index, (series, origin) in enumerate(zip(collection.series, origins)):
        columns = {collection.id_name: series.id} if collection.id_name else {}
        columns |= {collection.first.time_name: features.time[origin + 1 : origin + 1 + config.horizon],
                    "step": np.arange(1, config.horizon + 1),
                    target: bounded(scaled[index] * std[index] + mean[index], config.target_min, config.target_max)}
        if quantiles is not None:
            columns.update(zip(quantile_columns(target, saved.intervals.quantiles), quantiles[index]))
        tables.append(pd.DataFrame(columns))
    return pd.concat(tables, ignore_index=True)


def bounded(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """`values` clipped to [low, high] (None: no bound on that side); for forecasts of a target that cannot be
    negative, say, which the linear terms and the correction can otherwise push below 0."""
    return np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)


def bounded_z(values: np.ndarray, stats: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """z-scored `values` (n, H) clipped to the target's bounds [low, high] (its units; None: no bound), each row by
    its series' mean and std `stats` (n, 2); the scaling is increasing, so clipping there clips in the target's
    units."""
    mean, std = stats[:, :1], stats[:, 1:]
    return bounded(values, *(None if bound is None else (bound - mean) / std for bound in (low, high)))


def check_compatible(collection: Collection, schema: Schema, saved: SavedModel | None = None) -> None:
    """The CSV must have the trained frequency, the training file's columns, and feed the same input channels (checked
    before TensorFlow loads)."""
    series = collection.first
    if series.freq != schema.freq or series.business_days != schema.business_days:
        raise ForecastError(
            f"{series.path}: the series steps by {describe_grid(series.freq, series.business_days)}, but the model was "
            f"trained on steps of {describe_grid(schema.freq, schema.business_days)}"
        )
    if schema.columns and set(series.columns) != set(schema.columns):
        extra = sorted(set(series.columns) - set(schema.columns))
        missing = sorted(set(schema.columns) - set(series.columns))
        differences = []
        if extra:
            differences.append(f"{listing(extra)} not in it")
        if missing:
            differences.append(f"{listing(missing)} missing")
        raise ForecastError(
            f"{series.path}: the columns differ from the training file's ({'; '.join(differences)}); give the file the "
            "same columns, or train a new model on them"
        )
    if saved is not None:
        check_known_ids(collection, saved)
    static = saved.statics.channels if saved is not None and saved.statics else ()
    if InputLayout.from_roles(series.roles, series.freq, static=static).with_calendar(schema.layout.calendar) != schema.layout:
        raise ForecastError(
            f"{series.path}: the columns do not match the model (it needs history {', '.join(schema.layout.history[:-1])}"
            f"; sim {', '.join(schema.layout.sim_columns) or 'none'})"
        )


def check_known_ids(collection: Collection, saved: SavedModel) -> None:
    """Refuses a file where fewer than half the series are known to the model (trained, held out or with saved
    attributes) and an unknown id is a known one without its leading zeros: a spreadsheet dropped them, and every
    series would be forecast as new. A file of new series with ids of their own is forecast as such."""
    if collection.id_name is None:
        return
    known = (*saved.schema.ids, *saved.schema.holdout, *(saved.statics.table if saved.statics else ()))
    listed = set(known)
    unknown = [name for name in collection.ids if name not in listed]
    if 2 * (len(collection.ids) - len(unknown)) >= len(collection.ids):
        return
    pair = lookalike(unknown, known)
    if pair is not None:
        raise ForecastError(
            f"{collection.path}: {len(unknown)} of its {len(collection.ids)} series are unknown to the model, and its id "
            f"{pair[0]!r} is the model's {pair[1]!r} without the leading zeros; write the ids in column "
            f"{collection.id_name!r} exactly as in training (did a spreadsheet drop the zeros? keep the column as text)"
        )
