"""Forecasting the steps after the last observation with a batch-1 copy of a trained model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import backend
from forecast.config import Config
from forecast.data import Series, load_series
from forecast.errors import ForecastError
from forecast.features import Features, InputLayout, build_features
from forecast.intervals import quantile_columns
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


def warmup_origins(origin: int, lookback: int, chunks: int) -> list[int]:
    """The origins fed before `origin`, one chunk apart, as in training: up to chunks - 1 of them, all with full history."""
    earlier = [origin - lookback * step for step in range(chunks - 1, 0, -1)]
    return [value for value in earlier if value >= lookback - 1]


def forecast_at(single, features: Features, config: Config, origin: int) -> np.ndarray:
    """The scaled forecast (H,) at `origin` from the batch-1 model, its state warmed up over the chunks before it."""
    from forecast.model import reset_states
    from forecast.windowing import WindowBatcher

    batcher = WindowBatcher(features, config.lookback, config.horizon)
    reset_states(single)
    output = None
    for step_origin in [*warmup_origins(origin, config.lookback, config.chunks_per_stream), origin]:
        output = single(batcher.inputs(np.array([step_origin])), training=False)
    return np.asarray(output["prediction"])[0]


@dataclass(frozen=True)
class Forecast:
    """A forecast at one origin and what a picture of it needs: `frame` holds the times, steps, point forecast and one
    column per quantile (the target's units); `origin` is the row of the last observation it starts from."""

    frame: pd.DataFrame
    series: Series
    origin: int
    saved: SavedModel

    @property
    def quantile_columns(self) -> list[str]:
        return [] if self.saved.intervals is None else quantile_columns(self.series.roles.target,
                                                                        self.saved.intervals.quantiles)


def predict(csv_path: str | Path, model_dir: str | Path, log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Forecasts the H steps after the last observed target of `csv_path` with the current version of the model at
    `model_dir`; returns timestamps, steps, values and one column per quantile (the target's units). A last line still
    being written is left out, with a warning through `log`."""
    return forecast_from(csv_path, model_dir, None, log).frame


def forecast_from(csv_path: str | Path, model_dir: str | Path, origin: str | None = None,
                  log: Callable[[str], None] | None = None) -> Forecast:
    """The forecast of the H steps after `origin` (a row number or the last date to include, as in `--end`; None: the
    last observed target) with the current version of the model at `model_dir`, with its quantiles."""
    saved = read_saved(current_version(Path(model_dir)))
    config, schema = saved.config, saved.schema
    series = load_series(csv_path, config, schema.business_days, warn=log or (lambda message: None))
    check_compatible(series, schema)
    row = series.n_observed - 1 if origin is None else origin_row(series, origin, config.lookback)
    if row < config.lookback - 1:
        raise ForecastError(
            f"{csv_path}: {series.n_observed} observed rows, but the model looks back {config.lookback} steps; add history"
        )
    saved = with_network(saved, load_model_file)
    from forecast.model import inference_copy

    # Only a horizon that reaches past the last observation needs (and checks) the sim rows appended after it.
    beyond = row + config.horizon >= series.n_observed
    features = build_features(series, saved.scaler, config.horizon, beyond, schema.layout.calendar)
    single = inference_copy(saved.model)
    scaled = forecast_at(single, features, config, row)
    if not np.isfinite(scaled).all():
        raise ForecastError(
            f"{csv_path}: the forecast is not finite: the last {config.lookback} rows lie far outside the values the "
            "model was trained on; check them"
        )
    target = series.roles.target
    low, high = scaled_bounds(saved.scaler, config)
    scaled = bounded(scaled.astype("float64"), low, high)[None]  # (1, H): the one origin
    columns = {target: bounded(saved.scaler.inverse(target, scaled)[0], config.target_min, config.target_max)}
    if saved.intervals is not None:
        quantiles = saved.intervals.bounds(scaled, features.history[:, 0], np.array([row]))[0]  # (Q, H)
        values = bounded(saved.scaler.inverse(target, quantiles), config.target_min, config.target_max)
        columns.update(zip(quantile_columns(target, saved.intervals.quantiles), values))
    elif log is not None:
        log(f"{saved.path}: no interval calibration (saved before intervals, or quantiles = []); point forecasts only")
    time = features.time[row + 1 : row + 1 + config.horizon]
    frame = pd.DataFrame({series.time_name: time, "step": np.arange(1, config.horizon + 1), **columns})
    return Forecast(frame, series, row, saved)


def origin_row(series: Series, origin: str, lookback: int) -> int:
    """The row of the last observation a forecast starts from: `origin` is a row number or the last date to include."""
    from forecast.training import row_bound

    row = row_bound(series, origin, "origin") - 1
    if not lookback - 1 <= row < series.n_observed:
        raise ForecastError(
            f"{series.path}: origin {origin} is row {row}, but a forecast needs {lookback} rows of history before it "
            f"and an observed target at it (rows {lookback - 1} to {series.n_observed - 1}, "
            f"{series.time[min(lookback - 1, series.n_observed - 1)]} to {series.time[series.n_observed - 1]})"
        )
    return row


def scaled_bounds(scaler: Scaler, config: Config) -> tuple[float | None, float | None]:
    """target_min and target_max in z-units: the scaling is increasing, so clipping there clips in the target's units."""
    return tuple(None if bound is None else float(scaler.transform((config.target,), np.array([[bound]]))[0, 0])
                 for bound in (config.target_min, config.target_max))


def bounded(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """`values` clipped to [low, high] (None: no bound on that side); for forecasts of a target that cannot be
    negative, say, which the linear terms and the correction can otherwise push below 0."""
    return np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)


def check_compatible(series: Series, schema: Schema) -> None:
    """The CSV must have the trained frequency, the training file's columns, and feed the same input channels (checked
    before TensorFlow loads)."""
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
    if InputLayout.from_roles(series.roles, series.freq).with_calendar(schema.layout.calendar) != schema.layout:
        raise ForecastError(
            f"{series.path}: the columns do not match the model (it needs history {', '.join(schema.layout.history[:-1])}"
            f"; sim {', '.join(schema.layout.sim_columns) or 'none'})"
        )
