"""Backtests: a saved model's forecasts at every origin of a range (`range_forecasts`, what `evaluate` scores), and
those forecasts in long format: every forecast `evaluate` scored, one row per (series, origin, step), as
NeuralForecast's `cross_validation` and Darts' `historical_forecasts` hand them back, for users' own skill scores,
joins with other models and event plots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.split import check_ranges, collection_scored_rows

if TYPE_CHECKING:
    from forecast.data import Collection
    from forecast.data_cache import DataCache
    from forecast.features import Features
    from forecast.store import SavedModel

@dataclass(frozen=True)
class RangeForecasts:
    """A saved model's forecasts at every origin `ends` (n,) of a range, series after series (`series_index` (n,)
    names each origin's series in `collection`): `models` maps each way of running it (see forecast.ablation) to its
    forecasts (n, H), z-scored by each origin's series and clipped to the target's bounds; `target` and `weight`
    (n, H) are the z-scored truth (gaps 0) and 1 where it is observed; `mean` and `std` (n, 1) turn z-scores of each
    origin's series into the target's units; `offsets` (n, Q, H) are each origin's interval offsets (see
    forecast.recent_errors; None without intervals)."""

    saved: SavedModel
    collection: Collection
    features: Features
    ranges: tuple
    ends: np.ndarray
    series_index: np.ndarray
    models: dict[str, np.ndarray]
    target: np.ndarray
    weight: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    warning: str | None
    left_out: tuple[str, ...]
    offsets: np.ndarray | None = None

    def in_units(self, values: np.ndarray) -> np.ndarray:
        return values.astype("float64") * self.std + self.mean


def range_forecasts(
    csv_path: str | Path, model_dir: str | Path, start: str | None = None, end: str | None = None,
    validation_rows: bool = False, warn: Callable[[str], None] | None = None, ablation: bool = True,
    series_ids: tuple[str, ...] | None = None, after_training: bool = False, intervals: bool = True,
    cache: DataCache | None = None,
) -> RangeForecasts:
    """The forecasts `evaluate` scores (its arguments are described there), before any scoring; `after_training`
    takes each trained series from the end of its training rows instead (its validation rows and all after them);
    `intervals` adds each origin's interval offsets where the model has a calibration; the file is read through
    `cache`."""
    from forecast.ablation import ablation_forecasts
    from forecast.runner import open_saved
    from forecast.sampler import origin_ranges

    warn = warn or (lambda message: None)
    opened = open_saved(csv_path, model_dir, warn, series_ids, cache=cache)
    config, schema = opened.saved.config, opened.saved.schema
    horizon, lookback = config.horizon, config.lookback
    rows, warning, left_out = collection_scored_rows(opened.collection, schema, start, end, validation_rows, horizon,
                                           Path(model_dir), after_training)
    opened = opened.select(tuple(rows))
    # An unseen series is z-scored on its rows up to its first origin: the first scored target's row, or the first
    # row with a whole lookback before it where the range starts earlier.
    loaded = opened.load({name: max(first, lookback) for name, (first, _) in rows.items()}, warn)
    collection, features = loaded.collection, loaded.features
    ranges = origin_ranges(features.starts, features.lengths, [rows[series.id] for series in collection.series],
                           lookback, horizon)
    left_out += check_ranges(collection, ranges, rows, lookback, horizon)
    if ablation:
        models = ablation_forecasts(loaded.saved.model, loaded.batcher, ranges, config.chunks_per_stream)
    else:
        models = {"model": loaded.forecasts(ranges)}
    ends = np.concatenate([np.arange(span.first, span.last + 1) for span in ranges])
    series_index = features.series_of(ends)
    target, weight = loaded.batcher.targets(ends, np.ones(len(ends), dtype=bool))
    models = {label: loaded.bound(forecast, ends) for label, forecast in models.items()}
    offsets = loaded.offsets(ranges, models["model"]) if intervals else None
    stats = loaded.target_stats
    mean, std = stats[series_index, :1], stats[series_index, 1:]
    return RangeForecasts(loaded.saved, collection, features, ranges, ends, series_index, models, target, weight, mean,
                          std, warning, tuple(left_out), offsets)


# The forecasters beside the model whose forecasts the table carries.
BASELINES = ("repeat", "seasonal_naive")


def backtest_table(ranged: RangeForecasts, candidates: dict[str, np.ndarray], model_bounds: np.ndarray | None
                   ) -> pd.DataFrame:
    """One row per series, origin and step (1..H) of `ranged`, in the target's units: `series`, `origin` (the time of
    the last observed row), `step`, `target_time`, `truth` (NaN where the file has none), `forecast` (the model's),
    one column per quantile of the model's interval (`model_bounds` (n, Q, H), where the model has a calibration;
    named like predict's, `TARGET_qLEVEL`), and the baselines' forecasts (`repeat`, `seasonal_naive` where evaluated).
    `candidates` holds each forecaster's z-scored forecasts (n, H) at `ranged.ends`."""
    ends, horizon = ranged.ends, ranged.target.shape[1]
    steps = np.arange(1, horizon + 1)
    times = ranged.features.time
    ids = np.array([series.id for series in ranged.collection.series], dtype=object)
    table = {
        "series": np.repeat(ids[ranged.series_index], horizon),
        "origin": np.repeat(np.asarray(times[ends]), horizon),
        "step": np.tile(steps, len(ends)),
        "target_time": np.asarray(times[(ends[:, None] + steps[None, :]).reshape(-1)]),
        "truth": np.where(ranged.weight > 0, ranged.in_units(ranged.target), np.nan).reshape(-1),
        "forecast": ranged.in_units(candidates["model"]).reshape(-1),
    }
    if model_bounds is not None:
        target = ranged.collection.first.roles.target
        for level, bound in zip(ranged.saved.intervals.quantiles, np.moveaxis(model_bounds, 1, 0)):
            table[f"{target}_q{level:g}"] = bound.reshape(-1)
    for label in BASELINES:
        if label in candidates:
            table[label] = ranged.in_units(candidates[label]).reshape(-1)
    return pd.DataFrame(table)
