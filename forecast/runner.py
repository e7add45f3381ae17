"""The runner: the one way a command opens a saved model and forecasts at origins.

`open_saved` reads a version and the user's file and checks that they fit (before TensorFlow loads); `OpenedModel.load`
attaches the network and builds each series' features as the model reads them; `forecasts_at` runs a network at
origins. predict, plot, evaluate and its ablations and the retrain holdout all forecast through `forecasts_at` with the
saved network, so a forecast at an origin is the same number whichever command made it. Training's keep/discard gate,
its validation metrics and interval calibration, and the recent errors an interval is calibrated on, thousands of
forecasts, go through `forecasts_at` too, from a copy of the network at a larger batch (forecast.bulk): the same
numbers up to float rounding.

Each origin gets its own stream: the state is reset, warmed up over the `chunks - 1` chunks before the origin, then
the origin is forecast (`sampler.rolling_streams`), B streams at a time, laid out as they run. Indices are rows of
the feature arrays (`Features.starts`); forecasts are z-scored by each origin's series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast import backend
from forecast.bulk import bulk_network
from forecast.data import Collection
from forecast.data_cache import DataCache, load, release_pages
from forecast.errors import ForecastError
from forecast.features import Features, InputLayout, build_features, fit_scaler, stack
from forecast.recent_errors import first_unfitted, interval_offsets, window_ranges
from forecast.sampler import PADDING, OriginRange, rolling_block, rolling_origins
from forecast.scaling import Scaler, bounded_z, target_stats
from forecast.store import SavedModel, current_version, read_saved, with_network
from forecast.validation import describe_grid, listing, lookalike
from forecast.windowing import WindowBatcher

Log = Callable[[str], None]
Step = Callable[[dict[str, np.ndarray]], object]  # a model's call on a batch of inputs (by name)

# The fewest observed targets a series that took no part in training is z-scored on (its mean and spread need two).
MIN_SCALER_ROWS = 2


def forecasts_at(model, batcher: WindowBatcher, ranges: tuple[OriginRange, ...], chunks: int,
                 advance: Step | None = None) -> np.ndarray:
    """Forecasts (n_origins, H, z-scored by each origin's series, not clipped) of `model` at every origin of `ranges`,
    range after range, each from a state reset and then warmed up over the `chunks - 1` chunks before the origin
    (chunks = 1: a fresh state at every origin). `model` runs at the batch size it was built with (its inputs'
    first dimension); the last batch is padded. `advance` (see `stream_outputs`) warms the state up instead of
    `model`."""
    outputs = stream_outputs(model, batcher, ranges, chunks, advance)
    return outputs["prediction"] if outputs else np.empty((0, batcher.horizon), dtype="float32")


def stream_outputs(model, batcher: WindowBatcher, ranges: tuple[OriginRange, ...], chunks: int,
                   advance: Step | None = None, finish: Step | None = None) -> dict[str, np.ndarray]:
    """What `finish(inputs)` returns (by name: (B, H) each; default: `model.predict_on_batch`) at each origin of
    `ranges` (by name: (n_origins, H); {} for none), as `forecasts_at` makes its forecasts: B = `model`'s batch size
    streams at a time, `model`'s state reset, each stream's `chunks - 1` warm-up chunks fed in turn to `advance`
    (default: `model`, its outputs unused; it must move `model`'s state as `model` would), then its origin's chunk
    to `finish`. A model without state (a kept linear start) forecasts the same from any warm-up: only the origins
    run."""
    from forecast.model import reset_states, stateful_layers

    if not stateful_layers(model):
        chunks = 1
    batch_size = int(model.inputs[0].shape[0])
    origins, earliest = rolling_origins(ranges)
    groups = -(-len(origins) // batch_size)
    advance, finish = advance or model.predict_on_batch, finish or model.predict_on_batch
    outputs: dict[str, np.ndarray] = {}  # filled batch by batch: no list of batches beside the whole
    for index in range(groups):
        # B streams laid out at a time (the last position of each is its origin; the last group padded), so that
        # nothing of (n_origins, chunks) is held.
        part = slice(index * batch_size, (index + 1) * batch_size)
        group = np.full((batch_size, chunks), PADDING, dtype=np.int64)
        group[: len(origins[part])] = rolling_block(origins[part], earliest[part], batcher.lookback, chunks)
        reset_states(model)
        for chunk in range(chunks - 1):
            advance(batcher.inputs(group[:, chunk]))
        for name, values in finish(batcher.inputs(group[:, -1])).items():
            values = np.asarray(values)
            if name not in outputs:
                outputs[name] = np.empty((len(origins), *values.shape[1:]), dtype=values.dtype)
            rows = outputs[name][part]
            rows[...] = values[: len(rows)]
    return outputs


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


@dataclass(frozen=True)
class OpenedModel:
    """A saved version (without its network: no TensorFlow yet) and the series of a user's file it will forecast,
    checked against each other."""

    saved: SavedModel
    collection: Collection

    def select(self, series_ids: tuple[str, ...] | None) -> OpenedModel:
        """The same version with only the series `series_ids` of the file (None: all), in the file's order."""
        return OpenedModel(self.saved, self.collection.select(series_ids))

    def load(self, fit_rows: dict[str, int], log: Log, ahead: list[int] | None = None) -> LoadedModel:
        """The network attached and the features built: each series z-scored by its saved scaler, or for a series the
        model was not trained on, by one fitted on its first `fit_rows[id]` rows (those up to its first forecast
        origin, `scalers_for`); with `ahead`, sim also covers the `ahead[s]` rows after series s's last observation
        (the steps a forecast past the end reaches)."""
        saved = with_network(self.saved, load_model_file)
        scalers = scalers_for(self.collection, saved, fit_rows, log)
        features = collection_features(self.collection, saved, scalers, ahead)
        return LoadedModel(saved, self.collection, scalers, features,
                           WindowBatcher(features, saved.config.lookback, saved.config.horizon))


def open_saved(csv_path: str | Path, model_dir: str | Path, warn: Log | None = None,
               series_ids: tuple[str, ...] | None = None, version: Path | None = None,
               cache: DataCache | None = None) -> OpenedModel:
    """The current version of the model at `model_dir` (or the version directory `version`) and the series of
    `csv_path` (those in `series_ids`, or all; read through `cache`), refused in one line where the file does not fit
    the model. A last line still being written is left out, with a warning through `warn` (without `warn`: refused)."""
    saved = read_saved(version if version is not None else current_version(Path(model_dir)))
    collection = load(csv_path, saved.config, saved.schema.business_days, warn, cache).select(series_ids)
    check_compatible(collection, saved.schema, saved)
    return OpenedModel(saved, collection)


@dataclass(frozen=True)
class LoadedModel:
    """A saved version with its network, and the features of the series it forecasts (`features`, series in
    `collection` order) cut into windows by `batcher`; `scalers[s]` z-scores series s."""

    saved: SavedModel
    collection: Collection
    scalers: list[Scaler]
    features: Features
    batcher: WindowBatcher

    @property
    def target_stats(self) -> np.ndarray:
        """(n_series, 2): each series' target mean and spread, its units."""
        return target_stats(self.scalers, self.collection.first.roles.target)

    def bound(self, forecast: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """z-scored forecasts (m, H) at feature rows `origins` (m,) clipped to the target's bounds, each by its
        series' mean and spread, as every command clips them."""
        config = self.saved.config
        return bounded_z(forecast, self.target_stats[self.features.series_of(origins)], config.target_min,
                         config.target_max)

    def forecasts(self, ranges: tuple[OriginRange, ...], model=None, chunks: int | None = None) -> np.ndarray:
        """`forecasts_at` with the saved network (or `model`, a variant of it) and its chunks per stream (or
        `chunks`); not clipped."""
        config = self.saved.config
        return forecasts_at(self.saved.model if model is None else model, self.batcher, ranges,
                            config.chunks_per_stream if chunks is None else chunks)

    def offsets(self, ranges: tuple[OriginRange, ...], forecasts: np.ndarray | None = None) -> np.ndarray | None:
        """Interval offsets (n, Q, H) at every origin of `ranges` from each series' latest known errors
        (forecast.recent_errors); None for a model without an interval calibration. `forecasts` (n, H, clipped) are
        the model's own at those origins, where the caller has them (their errors join once known); those before
        them come from `bulk.bulk_network`."""
        saved = self.saved
        if saved.intervals is None:
            return None
        calibration = saved.intervals
        before = window_ranges(ranges, first_unfitted(self.collection, saved.schema, self.features),
                               max(calibration.window, 0), self.batcher.horizon)
        earlier = None
        if calibration.window >= 1:  # thousands of origins, B at a call at the network's own batch size
            spans = tuple(span for span in before if span.size)
            model, advance = bulk_network(saved.model, sum(span.size for span in spans), self.batcher)
            earlier = forecasts_at(model, self.batcher, spans, saved.config.chunks_per_stream, advance)
        return interval_offsets(self.batcher, ranges, before, earlier, calibration, self.bound, forecasts)


def scalers_for(collection: Collection, saved: SavedModel, fit_rows: dict[str, int], log: Log) -> list[Scaler]:
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


def collection_features(collection: Collection, saved: SavedModel, scalers: list[Scaler],
                        ahead: list[int] | None = None) -> Features:
    """The features of every series of `collection` as the saved model reads them, stacked in collection order; with
    `ahead`, sim also covers the `ahead[s]` rows after series s's last observation (checked to be there)."""
    statics, calendar = saved.statics, saved.schema.layout.calendar
    ahead = ahead or [0] * len(collection.series)
    parts = (build_features(series, scaler, rows, rows > 0, calendar, statics.encode(series.id) if statics else None)
             for series, scaler, rows in zip(collection.series, scalers, ahead))
    features = stack(parts, [series.n_observed + rows for series, rows in zip(collection.series, ahead)],
                     collection.scratch)
    release_pages(collection)  # read once into the features: the series' cached pages need not stay resident
    return features


def check_compatible(collection: Collection, schema, saved: SavedModel | None = None) -> None:
    """The file must have the trained frequency, the training file's columns, and feed the same input channels
    (checked before TensorFlow loads)."""
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
