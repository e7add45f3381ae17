"""Forecasting the steps after the last observation with a batch-1 copy of a trained model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import backend
from forecast.config import Config
from forecast.data import Collection, load_collection
from forecast.errors import ForecastError
from forecast.features import Features, InputLayout, build_features, fit_scaler, stack
from forecast.sampler import OriginRange, rolling_streams
from forecast.scaling import Scaler
from forecast.store import SavedModel, Schema, current_version, read_saved, with_network
from forecast.validation import describe_grid, listing


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
    new), one fitted on its own first `fit_rows[id]` rows, those before the first origin scored or forecast."""
    scalers, unseen = [], []
    for series in collection.series:
        scaler = saved.scaler.get(series.id)
        if scaler is None:
            unseen.append(series.id)
            scaler = fit_scaler(series, fit_rows[series.id])
        scalers.append(scaler)
    if unseen:
        log(f"series {listing(unseen)} took no part in training: each is z-scored on its own rows before its first "
            "forecast origin")
    return scalers


def collection_features(collection: Collection, saved: SavedModel, scalers: list[Scaler], for_prediction: bool
                        ) -> Features:
    """The features of every series of `collection` as the saved model reads them, stacked in collection order."""
    statics, calendar = saved.statics, saved.schema.layout.calendar
    return stack([
        build_features(series, scaler, saved.config.horizon, for_prediction, calendar,
                       statics.encode(series.id) if statics else None)
        for series, scaler in zip(collection.series, scalers)
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


def predict(csv_path: str | Path, model_dir: str | Path, log: Callable[[str], None] | None = None,
            series_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Forecasts the H steps after the last observed target of each series of `csv_path` (or of those in
    `series_ids`) with the current version of the model at `model_dir`; returns, in long format, the id (for a file with
    an id column), timestamps, steps and values (the target's units). A last line still being written is left out,
    with a warning through `log`."""
    log = log or (lambda message: None)
    saved = read_saved(current_version(Path(model_dir)))
    config, schema = saved.config, saved.schema
    collection = load_collection(csv_path, config, schema.business_days, warn=log).select(series_ids)
    check_compatible(collection, schema, saved)
    for series in collection.series:
        if series.n_observed < config.lookback:
            raise ForecastError(f"{series.where}: {series.n_observed} observed rows, but the model looks back "
                                f"{config.lookback} steps; add history")
    saved = with_network(saved, load_model_file)
    from forecast.model import inference_copy
    from forecast.windowing import WindowBatcher

    scalers = scalers_for(collection, saved, {series.id: series.n_observed for series in collection.series}, log)
    features = collection_features(collection, saved, scalers, for_prediction=True)
    origins = [features.bounds(index)[0] + series.n_observed - 1 for index, series in enumerate(collection.series)]
    ranges = tuple(OriginRange(index, origin, origin, features.bounds(index)[0] + config.lookback - 1)
                   for index, origin in enumerate(origins))
    batcher = WindowBatcher(features, config.lookback, config.horizon)
    scaled = rolling_forecast(inference_copy(saved.model), batcher, ranges, config.chunks_per_stream)
    return _forecast_table(collection, scalers, features, origins, scaled, config)


def _forecast_table(collection: Collection, scalers: list[Scaler], features: Features, origins: list[int],
                    scaled: np.ndarray, config: Config) -> pd.DataFrame:
    """The forecasts (n_series, H, z-scored) in the target's units, bounded, one row per series and step."""
    if not np.isfinite(scaled).all():
        where = collection.series[int(np.flatnonzero(~np.isfinite(scaled).all(axis=1))[0])].where
        raise ForecastError(
            f"{where}: the forecast is not finite: the last {config.lookback} rows lie far outside the values the "
            "model was trained on; check them"
        )
    first = collection.first
    tables = []
    for index, (series, scaler, origin) in enumerate(zip(collection.series, scalers, origins)):
        values = bounded(scaler.inverse(first.roles.target, scaled[index].astype("float64")), config.target_min,
                         config.target_max)
        columns = {collection.id_name: series.id} if collection.id_name else {}
        columns |= {first.time_name: features.time[origin + 1 : origin + 1 + config.horizon],
                    "step": np.arange(1, config.horizon + 1), first.roles.target: values}
        tables.append(pd.DataFrame(columns))
    return pd.concat(tables, ignore_index=True)


def bounded(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """`values` clipped to [low, high] (None: no bound on that side); for forecasts of a target that cannot be
    negative, say, which the linear terms and the correction can otherwise push below 0."""
    return np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)


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
    static = saved.statics.channels if saved is not None and saved.statics else ()
    if InputLayout.from_roles(series.roles, series.freq, static=static).with_calendar(schema.layout.calendar) != schema.layout:
        raise ForecastError(
            f"{series.path}: the columns do not match the model (it needs history {', '.join(schema.layout.history[:-1])}"
            f"; sim {', '.join(schema.layout.sim_columns) or 'none'})"
        )
