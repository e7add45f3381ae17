"""The series a run trains on: split, z-scored on their training rows and stacked in one set of feature arrays."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.config import Config
from forecast.data import Collection
from forecast.data_cache import release_pages
from forecast.errors import ForecastError
from forecast.features import Features, InputLayout, build_features, fit_pooled_scaler, fit_scaler, stack
from forecast.sampler import StreamPlan, origin_ranges
from forecast.scaling import GLOBAL, Scalers, target_stats
from forecast.split import Split, resolve_splits
from forecast.statics import StaticEncoder, read_statics
from forecast.store import read_saved
from forecast.windowing import WindowBatcher

Log = Callable[[str], None]


def training_series(collection: Collection, holdout: tuple[str, ...]) -> Collection:
    """The series training uses: all but the held-out ones, each of which must be in the file."""
    collection.select(holdout or None)  # an unknown id is refused
    kept = collection.without(holdout)
    if not kept.series:
        raise ForecastError(f"{collection.path}: every series is held out; leave at least one to train on")
    return kept


def check_trainable(training: Collection, config: Config, fresh: bool) -> None:
    """Refuses, before the store is touched, series too short to split and (for a `fresh` run, which reads it) a bad
    attribute table."""
    resolve_splits(training, config, lambda message: None)
    if config.static and fresh:
        read_statics(config.static, config.id_column, training.ids, lambda message: None)


@dataclass(frozen=True)
class TrainingData:
    """The series a run trains on, each z-scored and all stacked in one set of feature arrays (`features`, series in
    `collection` order), with each series' split, the scalers, the attribute encoder and the model's input layout."""

    collection: Collection
    splits: tuple[Split, ...]
    scalers: Scalers
    statics: StaticEncoder | None
    layout: InputLayout
    features: Features

    def ranges(self, lookback: int, horizon: int, validation: bool) -> tuple:
        """The training (or validation) origins of every series (`sampler.OriginRange`s)."""
        rows = [(split.train_end, split.val_end) if validation else (0, split.train_end) for split in self.splits]
        return origin_ranges(self.features.starts, self.features.lengths, rows, lookback, horizon)

    def stream_plans(self, config: Config) -> tuple[StreamPlan, StreamPlan]:
        """The training plan (streams shuffled by the run's seed, a new layout each epoch) and the validation plan."""
        lookback, horizon, chunks = config.lookback, config.horizon, config.chunks_per_stream
        return (StreamPlan(self.ranges(lookback, horizon, False), lookback, chunks, config.batch_size, shuffle=True,
                           seed=config.seed),
                StreamPlan(self.ranges(lookback, horizon, True), lookback, chunks, config.batch_size, shuffle=False))

    def batcher(self, config: Config) -> WindowBatcher:
        """The windows of the run (`windowing.WindowBatcher`), each series' targets weighted by `naive_weights` where
        `series_weight = "naive"`."""
        weights = naive_weights(self, config.horizon) if config.series_weight == "naive" else None
        return WindowBatcher(self.features, config.lookback, config.horizon, weights)

    def training_target(self) -> np.ndarray:
        """The target's training rows of every series, one after the other (its units, NaN at gaps)."""
        return np.concatenate([series.values[series.roles.target].to_numpy()[: split.train_end]
                               for series, split in zip(self.collection.series, self.splits)])

    def series_index(self, origins: np.ndarray) -> np.ndarray:
        """The index (n,) of each origin's series in `collection` (PADDING: the first series')."""
        return self.features.series_of(np.where(origins < 0, 0, origins))

    @property
    def target_stats(self) -> np.ndarray:
        """(n_series, 2): each series' target mean and spread (its units), what turns its z-scores back into them."""
        target = self.collection.first.roles.target
        return target_stats([self.scalers.get(series.id) for series in self.collection.series], target)


def prepare(collection: Collection, config: Config, start_from: Path | None, log: Log) -> TrainingData:
    """Splits, scales and stacks the series; a warm run (`start_from`) reuses that version's scalers, attributes and
    layout (a series it does not know is scaled on its own training rows)."""
    collection, splits = resolve_splits(collection, config, log)
    if start_from is not None:
        saved = read_saved(start_from)
        known, statics, layout = saved.scaler, saved.statics, saved.schema.layout
        scalers = known if GLOBAL in known.by_id else Scalers({
            series.id: known.get(series.id) or fit_scaler(series, split.train_end)
            for series, split in zip(collection.series, splits)
        })
    else:
        scalers = fit_scalers(collection, splits, config.scaling)
        statics = (read_statics(config.static, config.id_column, collection.ids, log) if config.static else None)
        span = max(series.time[split.train_end - 1] - series.time[0] for series, split in zip(collection.series, splits))
        static = statics.channels if statics else ()
        layout = InputLayout.from_roles(collection.first.roles, collection.first.freq, span, static)
    parts = (
        build_features(series, scalers.get(series.id), config.horizon, calendar=layout.calendar,
                       static=statics.encode(series.id) if statics else None)
        for series in collection.series
    )
    rows = [series.n_observed for series in collection.series]
    features = stack(parts, rows, collection.scratch)
    release_pages(collection)  # read once into the features: the series' cached pages need not stay resident
    return TrainingData(collection, splits, scalers, statics, layout, features)


def naive_weights(data: TrainingData, horizon: int) -> np.ndarray:
    """A weight per series (n_series,): 1 / the MSE of Repeat over the horizon on its training rows (z-units), scaled
    so that the training origins weigh 1 on average. A smooth series, where the last value is already a good forecast,
    then counts its errors against that, as a flashy one does, instead of being outweighed by the flashy ones' larger
    errors; for a single series the weight is 1. A series with no two observed training rows within `horizon` of each
    other has no Repeat error: it gets the median weight of those that have one (1 where none has)."""
    mse, counts = [], []
    for index, split in enumerate(data.splits):
        start, _ = data.features.bounds(index)
        target = data.features.target[start : start + split.train_end].astype("float64")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a step without an observed pair is NaN, left out
            errors = [np.nanmean((target[step:] - target[:-step]) ** 2) for step in range(1, horizon + 1)]
            repeat_mse = float(np.nanmean(errors))
        mse.append(max(repeat_mse, 1e-3) if np.isfinite(repeat_mse) else np.nan)
        counts.append(split.train_end)
    weight = 1.0 / np.array(mse)
    known = np.isfinite(weight)
    weight[~known] = np.median(weight[known]) if known.any() else 1.0
    return weight / np.average(weight, weights=counts)


def fit_scalers(collection: Collection, splits: tuple[Split, ...], scaling: str) -> Scalers:
    """Each series z-scored on its own training rows, or (scaling = "global") all on their training rows pooled."""
    if scaling == "global":
        return Scalers({GLOBAL: fit_pooled_scaler([(s, split.train_end) for s, split in zip(collection.series, splits)])})
    return Scalers({series.id: fit_scaler(series, split.train_end) for series, split in zip(collection.series, splits)})


def detect_bounds(config: Config, training_target: np.ndarray, log: Log) -> Config:
    """`config` with target_min = 0 when no bound is set and the target is never negative in the training rows
    (`training_target`, NaN at gaps): river flow, irradiance, counts and prices, whose forecasts must not go below 0."""
    observed = training_target[np.isfinite(training_target)]
    if config.target_min is not None or config.target_max is not None or not observed.size or observed.min() < 0:
        return config
    log(f"{config.target} is never negative in the training rows: forecasts are clipped at 0 "
        "(set target_min = -inf to allow negative forecasts)")
    return config.replace(target_min=0.0)
