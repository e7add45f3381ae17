"""Training: split the series, fit the scaler, feed the streams to `fit`, and write the model directory."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import backend
from forecast.config import Config
from forecast.data import Collection, describe_left_out, load_collection
from forecast.errors import ForecastError, IncompatibleWeights, ResumeRefused
from forecast.split import Split, resolve_splits
from forecast.criterion import MIN_BLOCKS, WEIGHT_CAP, best_epoch, score_weights
from forecast.evaluation import nse, repeat_forecast, weighted_errors
from forecast.features import Features, InputLayout, build_features, fit_pooled_scaler, fit_scaler, stack
from forecast.linear_start import MAX_ORIGINS, copy_linear_terms, fit_linear_start, freeze_linear_terms, linear_terms
from forecast.store import (
    CONFIG_FILE,
    HISTORY_FILE,
    INTERVALS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SCALER_FILE,
    SCHEMA_FILE,
    STATICS_FILE,
    TRAINING_PLOT,
    VERSIONS,
    read_metrics,
    read_saved,
    Schema,
    SeriesRecord,
    checkpoint_dir,
    current_version,
    kept_epochs,
    locked,
    publish,
    staging_dir,
    versions,
    write_json,
)
from forecast.sampler import StreamPlan, origin_ranges
from forecast.scaling import GLOBAL, Scalers, target_stats
from forecast.statics import StaticEncoder, read_statics
from forecast.validation import row_digests
from forecast.windowing import ValidationSet, WindowBatcher, window_generator

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    metrics: dict
    history: pd.DataFrame


def train(
    csv_path: str | Path,
    config: Config,
    root: str | Path,
    log: Log | None = None,
    verbose: int = 0,
    extra_callbacks: tuple = (),
    resume: bool = False,
) -> TrainResult:
    """Trains a model on `csv_path` and publishes it as the current version of the model at `root`.

    The series named in `config.holdout_series` take no part. The previous version stays current until the new one is
    complete. With `resume`, continues an interrupted run from its last epoch checkpoint. Holds the model's lock
    throughout, so a concurrent train or retrain stops at once.
    """
    log = log or (lambda message: None)
    root = Path(root)
    collection = load_collection(csv_path, config)
    config = config.replace(past=collection.first.roles.past)
    training = training_series(collection, config.holdout_series)
    # Too little data or a bad attribute table: report it before touching the store.
    resolve_splits(training, config, lambda message: None)
    if config.static and not resume and config.initial_epoch == 0:
        read_statics(config.static, config.id_column, training.ids, lambda message: None)
    with locked(root):
        if resume:
            start_from = _resumed_start(root)
        else:
            start_from = current_version(root) if config.initial_epoch > 0 else None
        try:
            result = train_collection(training, config, root, log, verbose, extra_callbacks, resume, start_from)
        except IncompatibleWeights as exc:
            shutil.rmtree(staging_dir(root), ignore_errors=True)
            raise ForecastError(f"{exc}; train without --initial-epoch to start afresh") from None
        except ResumeRefused:
            raise
        except ForecastError:
            # A run that failed (as opposed to one killed, which --resume continues) would fail the same way again.
            shutil.rmtree(staging_dir(root), ignore_errors=True)
            raise
        version = publish(result.model_dir, root, config.keep_versions)
    metrics = result.metrics["validation"]
    log(
        f"saved {root} version {version}: {result.metrics['model_kind']}, validation MSE {metrics['model']['mse']:.4f} "
        f"(Repeat {metrics['repeat']['mse']:.4f}); weights of {kept_epochs(result.metrics)} kept, "
        f"{result.metrics['epochs_run']} epochs trained"
    )
    return TrainResult(model_dir=root / VERSIONS / version, metrics=result.metrics, history=result.history)


def training_series(collection: Collection, holdout: tuple[str, ...]) -> Collection:
    """The series training uses: all but the held-out ones, each of which must be in the file."""
    collection.select(holdout or None)  # an unknown id is refused
    kept = collection.without(holdout)
    if not kept.series:
        raise ForecastError(f"{collection.path}: every series is held out; leave at least one to train on")
    return kept


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

    def z_bounds(self, origins: np.ndarray, low: float | None, high: float | None):
        """The target's bounds (its units; None: none) in each origin's z-units, (n, 1) each: the scaling is
        increasing, so clipping there clips the forecast in its own units."""
        mean, std = self._target_stats(origins)
        return tuple(None if bound is None else (bound - mean) / std for bound in (low, high))

    def series_index(self, origins: np.ndarray) -> np.ndarray:
        """The index (n,) of each origin's series in `collection` (PADDING: the first series')."""
        return self.features.series_of(np.where(origins < 0, 0, origins))

    def _target_stats(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean and spread (n, 1) of the target in the series of each origin (PADDING: the first series')."""
        target = self.collection.first.roles.target
        stats = target_stats([self.scalers.get(series.id) for series in self.collection.series], target)
        series = self.series_index(origins)
        return stats[series, :1], stats[series, 1:]

    def target_units(self, origins: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`values` (n, H) forecast at `origins`, z-scored by each origin's series, in the target's own units."""
        mean, std = self._target_stats(origins)
        return values * std + mean


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
        scalers = _fit_scalers(collection, splits, config.scaling)
        statics = (read_statics(config.static, config.id_column, collection.ids, log) if config.static else None)
        span = max(series.time[split.train_end - 1] - series.time[0] for series, split in zip(collection.series, splits))
        static = statics.channels if statics else ()
        layout = InputLayout.from_roles(collection.first.roles, collection.first.freq, span, static)
    parts = [
        build_features(series, scalers.get(series.id), config.horizon, calendar=layout.calendar,
                       static=statics.encode(series.id) if statics else None)
        for series in collection.series
    ]
    return TrainingData(collection, splits, scalers, statics, layout, stack(parts))


def naive_weights(data: TrainingData, horizon: int) -> np.ndarray:
    """A weight per series (n_series,): 1 / the MSE of Repeat over the horizon on its training rows (z-units), scaled
    so that the training origins weigh 1 on average. A smooth series, where the last value is already a good forecast,
    then counts its errors against that, as a flashy one does, instead of being outweighed by the flashy ones' larger
    errors; for a single series the weight is 1."""
    mse, counts = [], []
    for index, split in enumerate(data.splits):
        start, _ = data.features.bounds(index)
        target = data.features.target[start : start + split.train_end].astype("float64")
        errors = [np.nanmean((target[step:] - target[:-step]) ** 2) for step in range(1, horizon + 1)]
        mse.append(max(float(np.nanmean(errors)), 1e-3))
        counts.append(split.train_end)
    weight = 1.0 / np.array(mse)
    return weight / np.average(weight, weights=counts)


def _fit_scalers(collection: Collection, splits: tuple[Split, ...], scaling: str) -> Scalers:
    """Each series z-scored on its own training rows, or (scaling = "global") all on their training rows pooled."""
    if scaling == "global":
        return Scalers({GLOBAL: fit_pooled_scaler([(s, split.train_end) for s, split in zip(collection.series, splits)])})
    return Scalers({series.id: fit_scaler(series, split.train_end) for series, split in zip(collection.series, splits)})


def train_collection(
    collection: Collection,
    config: Config,
    root: Path,
    log: Log,
    verbose: int = 0,
    extra_callbacks: tuple = (),
    resume: bool = False,
    start_from: Path | None = None,
    purpose: str = "train",
) -> TrainResult:
    """Trains one model on all series of `collection` into the staging directory of `root` and returns it complete, but
    not yet published.

    `start_from` is a model directory whose weights (and scalers) training continues from, at `config.initial_epoch`.
    `purpose` ("train" or "retrain") is recorded in the checkpoints, so that only the same kind of run resumes them.
    """
    left_out = describe_left_out(collection.first)
    if left_out:
        log(left_out)
    data = prepare(collection, config, start_from, log)
    training_target = np.concatenate([
        series.values[series.roles.target].to_numpy()[: split.train_end]
        for series, split in zip(data.collection.series, data.splits)
    ])
    config = detect_bounds(config, training_target, log)
    weights = naive_weights(data, config.horizon) if config.series_weight == "naive" else None
    batcher = WindowBatcher(data.features, config.lookback, config.horizon, weights)
    chunks = config.chunks_per_stream
    train_plan = StreamPlan(data.ranges(config.lookback, config.horizon, False), config.lookback, chunks,
                            config.batch_size, shuffle=True, seed=config.seed)
    val_plan = StreamPlan(data.ranges(config.lookback, config.horizon, True), config.lookback, chunks,
                          config.batch_size, shuffle=False)
    if not val_plan.ranges:
        raise ForecastError(f"{collection.path}: no validation origin in any series; add rows or lower --horizon")
    strategy, replicas = _strategy(config)
    _log_run(batcher, train_plan, val_plan, len(data.collection.series), replicas, config, log)
    starts = _start_members(start_from, config.members) if start_from is not None else [None] * config.members
    if not resume:
        _clean_staging(staging_dir(root))
    validation = ValidationSet.of(batcher, val_plan)
    val_score_weights = score_weights(data.series_index(validation.origins), validation.target, validation.weight)
    run = MemberRun(data.layout, batcher, train_plan, val_plan, validation, val_score_weights, root, strategy, replicas,
                    purpose, start_from, resume, extra_callbacks, verbose, log, str(collection.path))
    trained = _train_members(run, config, starts)
    from forecast.ensemble import combine

    model = combine([member.model for member in trained])
    metrics, forecast = _kept_model_metrics(model, run, data, config, trained[0].state.linear_start,
                                            _joint_start_weights(trained), log)
    history = _joint_history([member.history for member in trained])
    metrics.update(_training_record(trained, history, metrics, start_from, data, config.min_delta))
    calibration = _intervals(forecast, validation, batcher, data, config, log)
    if calibration is not None:
        metrics["intervals"] = calibration.summary()
    staging = staging_dir(root)
    _write_version(staging, model, config, data, history, metrics, start_from, calibration)
    shutil.rmtree(checkpoint_dir(root), ignore_errors=True)
    return TrainResult(model_dir=staging, metrics=metrics, history=history)


def _log_run(batcher: WindowBatcher, train_plan: StreamPlan, val_plan: StreamPlan, n_series: int, replicas: int,
             config: Config, log: Log) -> None:
    n_train, n_val = (len(batcher.scored_origins(plan.origins())) for plan in (train_plan, val_plan))
    log(
        f"training on {backend.device_name()}: {n_train} training and {n_val} validation "
        f"origins{f' of {n_series} series' if n_series > 1 else ''}, "
        f"{'stateful' if config.stateful else 'stateless'}, lookback {config.lookback}, "
        f"horizon {config.horizon}, batch {config.batch_size}"
        + (f" over {replicas} replicas" if replicas > 1 else "")
        + (f", an ensemble of {config.members} networks" if config.members > 1 else "")
    )
    if n_series > 1:
        log(f"validation score: each series' squared errors against its own spread, no series above {WEIGHT_CAP:g} "
            f"times the median series' weight; an epoch is better when it lowers the score by more than "
            f"{config.min_delta:.2%}")


@dataclass(frozen=True)
class MemberRun:
    """What every network of a run trains on and reports to: the input layout, the windows, the training plan (which
    each network walks with its own seed) and the validation plan, the validation set (`windowing.ValidationSet`)
    and its step weights under the run's score (`criterion.score_weights`), the model's root, the distribution
    strategy and its replica count, the run's purpose,
    the version a warm run continues, whether the run resumes, the caller's callbacks and verbosity, the logger and
    the data file (for messages)."""

    layout: InputLayout
    batcher: WindowBatcher
    train_plan: StreamPlan
    val_plan: StreamPlan
    validation: ValidationSet
    score_weights: np.ndarray
    root: Path
    strategy: object
    replicas: int
    purpose: str
    start_from: Path | None
    resuming: bool
    extra_callbacks: tuple
    verbose: int
    log: Log
    source: str


@dataclass(frozen=True)
class TrainedMember:
    """One trained network (a Keras model at the global batch size), its run's `checkpoint.ResumeState`, the weights
    it started from (None: no linear start and no earlier version) and its per-epoch history."""

    model: object
    state: object
    start_weights: list | None
    history: pd.DataFrame


def _train_members(run: MemberRun, config: Config, starts: list) -> list[TrainedMember]:
    """The `config.members` networks of the run, trained one after the other, network k from `starts[k]` (its
    weights in the version a warm run continues; None: fresh)."""
    trained = []
    for index, start in enumerate(starts):
        if config.members > 1:
            run.log(f"network {index + 1} of {config.members} (seed {config.seed + index})")
        trained.append(_train_member(run, index, config, start, trained[0] if trained else None))
    return trained


def _joint_start_weights(trained: list[TrainedMember]) -> list | None:
    """The weights the networks started from, in the combined model's order (network 0's, then network 1's, ...);
    None where one has none to compare with."""
    starts = [member.start_weights for member in trained]
    return None if any(start is None for start in starts) else [weight for start in starts for weight in start]


def _training_record(trained: list[TrainedMember], history: pd.DataFrame, kept: dict, start_from: Path | None,
                     data: TrainingData, min_delta: float) -> dict:
    """The metrics.json entries about the run, given those about the `kept` model (`_kept_model_metrics`): the kept
    epoch (`epochs`, the latest of the networks'; an ensemble's each under `member_epochs`, and its model kind says
    how many networks kept their linear start), the epochs run, the split's sizes, the device and the time."""
    epochs = _epochs_kept(trained, kept["kept_start_weights"], start_from, min_delta)
    record = {
        "epochs": max(epochs),
        "epochs_run": len(history),
        "last_epoch": int(history["epoch"].max()),
        "best_val_mse": float(np.nanmin(history["val_mse"])),
        "device": backend.device_name(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": {"train_rows": sum(split.train_end for split in data.splits),
                  "val_rows": sum(split.val_end - split.train_end for split in data.splits)},
        "series": len(data.collection.series),
    }
    if len(trained) > 1:
        record["member_epochs"] = epochs
        idle = epochs.count(0)
        if idle and not kept["kept_start_weights"]:
            record["model_kind"] = f"{kept['model_kind']}; {idle} of the {len(trained)} at their linear start"
    return record


def member_checkpoints(root: Path, index: int) -> Path:
    """Network `index`'s epoch checkpoints: the run's own directory for the first, a folder in it for the others, so
    a single network's checkpoints are where they always were."""
    from forecast.ensemble import member_name

    return checkpoint_dir(root) if index == 0 else checkpoint_dir(root) / member_name(index)


def _train_member(run: MemberRun, index: int, config: Config, start: list | None, first: TrainedMember | None
                  ) -> TrainedMember:
    """Trains network `index` of the run with seed `config.seed + index` (its initial weights, dropout and stream
    order): from `start` (its weights in the version a warm run continues) or, fresh, from the linear start, which
    the first network (`first`; None for the first itself) has fitted already. A resumed run continues the network's
    checkpoint where it has one; a network the interrupted run never began starts afresh."""
    from forecast import checkpoint
    from forecast.ensemble import member_name

    config = config.replace(seed=config.seed + index)
    checkpoints = member_checkpoints(run.root, index)
    resume = run.resuming and (index == 0 or (checkpoints / checkpoint.STATE).is_file())
    train_plan = dataclasses.replace(run.train_plan, seed=config.seed)
    model, state, start_weights = _set_up_model(config, run, checkpoints, train_plan, resume, start, first)
    tensorboard = config.tensorboard_dir
    if tensorboard and config.members > 1:  # each network its own curves
        tensorboard = str(Path(tensorboard) / member_name(index))
    history = _fit(model, run, checkpoints, train_plan, config, state, resume, start_weights, tensorboard)
    if history.empty or not np.isfinite(history["loss"]).all():
        raise ForecastError(f"{run.source}: training diverged (loss is not finite); lower --learning-rate or check the "
                            "data")
    if run.replicas > 1:
        from forecast.model import build_model

        # Each replica's copy takes B / replicas rows; saved and scored is the same network at the global batch size.
        single_device = build_model(config, run.layout, config.batch_size)
        single_device.set_weights(model.get_weights())
        model = single_device
    return TrainedMember(model, state, start_weights, history)


def _set_up_model(config: Config, run: MemberRun, checkpoints: Path, train_plan: StreamPlan, resume: bool,
                  start: list | None, first: TrainedMember | None):
    """The network to train (fresh with its linear start, continued from the weights `start`, or resumed from its
    checkpoint), its `ResumeState`, and the weights the end of training compares with."""
    from forecast import checkpoint
    from forecast.model import build_model, compile_model

    _seed_everything(config.seed)
    with run.strategy.scope():
        if resume:
            state = checkpoint.load_state(checkpoints)
            _check_resumable(config, state, checkpoints, run.purpose)
            model = _load_checkpoint_model(checkpoints / checkpoint.LAST_MODEL)
            checkpoint.restore_seeds(model, checkpoints)
            run.log(f"resuming {run.root} after epoch {state.epoch}")
        else:
            state = checkpoint.ResumeState(
                config=json.loads(config.to_json()), purpose=run.purpose,
                start_version=None if run.start_from is None else run.start_from.name,
            )
            model = build_model(config, run.layout, config.batch_size // run.replicas)
            if start is not None:
                _load_start(model, start, run.start_from, config, run.log)
            if config.linear_start:
                state.linear_start = _linear_start(model, run, train_plan, start is not None, first)
            compile_model(model, config)
    # The end of training compares the network with the weights it started from (the linear fit, or the current
    # version's for a warm retrain); a resumed run reads them back.
    if resume:
        start_weights = checkpoint.load_start_weights(checkpoints)
    elif state.linear_start or start is not None:
        start_weights = model.get_weights()
        if config.checkpoints:
            checkpoint.save_start_weights(checkpoints, start_weights)
    else:
        start_weights = None
    return model, state, start_weights


def _fit(model, run: MemberRun, checkpoints: Path, train_plan: StreamPlan, config: Config, state, resume: bool,
         start_weights, tensorboard: str | None) -> pd.DataFrame:
    """Runs Keras' fit over the training streams, validating on the run's validation set (and logging to the
    TensorBoard folder `tensorboard`, if any); returns the per-epoch history."""
    from forecast.model import SkipUnscoredBatches

    keras = backend.keras()
    from forecast.dataset import ValidationBatches

    chunks = config.chunks_per_stream
    callbacks = _callbacks(keras, config, checkpoints, chunks, state, resume, start_weights, tensorboard)
    callbacks += list(run.extra_callbacks)
    callbacks.append(SkipUnscoredBatches(lambda epoch: ~train_plan.batches(epoch)[1].any(axis=1)))
    first_epoch = state.epoch if resume else config.initial_epoch
    model.fit(
        _training_data(run.batcher, train_plan, config, first_epoch),
        epochs=first_epoch if state.stopped else max(config.epochs, first_epoch),
        initial_epoch=first_epoch,
        steps_per_epoch=train_plan.n_batches,
        validation_data=ValidationBatches(run.validation, run.score_weights),
        validation_steps=run.validation.n_batches,
        callbacks=callbacks,
        shuffle=False,  # the stateful layout is ordered; the plan shuffles whole streams itself
        verbose=run.verbose,
    )
    return pd.DataFrame(state.history)


def _kept_model_metrics(model, run: MemberRun, data: TrainingData, config: Config, linear_start: dict | None,
                        start_weights, log: Log) -> tuple[dict, np.ndarray]:
    """Keeps the trained network or the weights it started from (`gate.keep_the_better`) and returns the kept model's
    validation metrics, what kind of model it is and the verdict behind the choice, and its validation forecast (n, H,
    z-units)."""
    from forecast.gate import keep_the_better
    from forecast.model import predict_batches

    validation = run.validation
    val_target, val_weight, val_origins = validation.target, validation.weight, validation.origins

    def forecast_with(network):
        return predict_batches(network, validation.batches(), config.chunks_per_stream)

    forecast = forecast_with(model)
    kept_start, verdict = False, None
    if start_weights is not None:
        start_label = "the current version's weights" if run.start_from is not None else "the linear start"
        forecast, kept_start, verdict = keep_the_better(
            model, start_weights, forecast, forecast_with, val_target, run.score_weights, val_origins,
            data.series_index(val_origins), tuple(data.collection.ids), config.horizon, log, start_label,
        )
    metrics = _validation_metrics(forecast, val_target, val_weight, val_origins, run.batcher, data)
    metrics["kept_linear_start"] = kept_start and run.start_from is None
    metrics["kept_start_weights"] = kept_start
    metrics["gate"] = None if verdict is None else verdict.to_json()
    metrics["linear_start"] = linear_start
    metrics["model_kind"] = _model_kind(linear_start, kept_start, verdict, run.start_from, config.members)
    return metrics, forecast


def _write_version(staging: Path, model, config: Config, data: TrainingData, history: pd.DataFrame, metrics: dict,
                   start_from: Path | None, calibration) -> None:
    """Writes the network, its JSON files (the interval `calibration` too, where there is one) and the training
    picture into `staging`."""
    model.save(staging / MODEL_FILE)
    if calibration is not None:
        (staging / INTERVALS_FILE).write_text(calibration.to_json() + "\n", encoding="utf-8")
    (staging / CONFIG_FILE).write_text(config.to_json() + "\n", encoding="utf-8")
    (staging / SCALER_FILE).write_text(data.scalers.to_json() + "\n", encoding="utf-8")
    if data.statics is not None:
        (staging / STATICS_FILE).write_text(data.statics.to_json() + "\n", encoding="utf-8")
    records = tuple(
        SeriesRecord(series.id, split.train_end, series.n_observed, str(series.time[series.n_observed - 1]),
                     row_digests(series.time, series.values, series.n_observed), split.val_end,
                     str(series.time[split.val_end - 1]), str(series.time[split.train_end - 1]))
        for series, split in zip(data.collection.series, data.splits)
    )
    first = data.collection.first
    schema = Schema(first.freq, data.layout, records, first.columns, first.business_days, config.holdout_series)
    (staging / SCHEMA_FILE).write_text(schema.to_json() + "\n", encoding="utf-8")
    earlier = [pd.read_csv(start_from / HISTORY_FILE)] if start_from and (start_from / HISTORY_FILE).is_file() else []
    full_history = pd.concat([*earlier, history])
    full_history.to_csv(staging / HISTORY_FILE, index=False)
    write_json(staging / METRICS_FILE, metrics)
    from forecast.plots import plot_training

    plot_training(full_history, metrics, staging / TRAINING_PLOT)


def _intervals(forecast, validation: ValidationSet, batcher: WindowBatcher, data: TrainingData, config: Config,
               log: Log):
    """The interval calibration of the kept model, or None where none is asked for or possible."""
    target, weight, origins = validation.target, validation.weight, validation.origins
    if not config.quantiles:
        return None
    if not weight.any():
        log("no observed target in the validation rows: no forecast intervals to calibrate; point forecasts only")
        return None
    calibration = _calibrate_intervals(forecast, target, weight, origins, batcher, data, config)
    log(calibration.describe())
    return calibration


def _calibrate_intervals(forecast, target, weight, origins, batcher: WindowBatcher, data: TrainingData,
                         config: Config):
    """The interval calibration (intervals.Calibration) of the kept model's validation forecasts (n, H, z-units of each
    origin's series, pooled over series), clipped to the target's bounds as predict clips them; `origins` (n,) may
    hold padding, which weight 0 leaves out."""
    from forecast.intervals import calibrate, candidate_spans
    from forecast.prediction import bounded

    low, high = data.z_bounds(origins, config.target_min, config.target_max)
    return calibrate(bounded(forecast, low, high), target, weight, batcher.features.history[:, 0], origins,
                     config.quantiles, candidate_spans(config.lookback, config.horizon),
                     batcher.features.series_of(origins))


def detect_bounds(config: Config, training_target: np.ndarray, log: Log) -> Config:
    """`config` with target_min = 0 when no bound is set and the target is never negative in the training rows
    (`training_target`, NaN at gaps): river flow, irradiance, counts and prices, whose forecasts must not go below 0."""
    observed = training_target[np.isfinite(training_target)]
    if config.target_min is not None or config.target_max is not None or not observed.size or observed.min() < 0:
        return config
    log(f"{config.target} is never negative in the training rows: forecasts are clipped at 0 "
        "(set target_min = -inf to allow negative forecasts)")
    return config.replace(target_min=0.0)


def _strategy(config: Config):
    """The tf.distribute strategy and its replica count; each replica gets B / replicas rows and keeps its own state."""
    import tensorflow as tf

    if config.distribute == "none":
        return tf.distribute.get_strategy(), 1
    # All local GPUs; on a machine without, the logical CPU devices a user configured (how the tests check it).
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ForecastError(f"config: batch_size {config.batch_size} must be a multiple of the {replicas} replicas")
    return strategy, replicas


def _seed_everything(seed: int) -> None:
    """Same seed, same weights: seeds Python, NumPy and TensorFlow and makes TensorFlow's kernels deterministic."""
    import tensorflow as tf

    backend.keras().utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


RUN_ONLY_SETTINGS = {"epochs", "initial_epoch", "verbose", "patience", "tensorboard_dir", "checkpoints", "workers",
                     "use_multiprocessing", "max_queue_size", "data_pipeline"}


def _check_resumable(config: Config, state, checkpoints: Path, purpose: str) -> None:
    """A checkpoint continues only the run that wrote it: the same kind of run, and the settings that shape the model
    or the data must match."""
    if state.purpose != purpose:
        raise ResumeRefused(
            f"{checkpoints}: the interrupted run was a {state.purpose}, which cannot be resumed as a {purpose}; run "
            f"`forecast {state.purpose}` again (a retrain trains a new candidate and scores it before promoting it)"
        )
    current = json.loads(config.to_json())
    for name, value in state.config.items():
        if name not in RUN_ONLY_SETTINGS and current.get(name) != value:
            raise ResumeRefused(
                f"{checkpoints}: the checkpoint was trained with {name} = {value!r}, not {current.get(name)!r}; "
                "resume with the same settings or train without --resume"
            )


def _load_checkpoint_model(path: Path):
    """The checkpointed model with its optimizer state, so the resumed run takes the same steps as an uninterrupted one."""
    keras = backend.keras()
    try:
        return keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as exc:  # a damaged archive fails in many ways; all mean the same to a user
        raise ResumeRefused(f"{path}: cannot load the checkpoint ({type(exc).__name__}); train without --resume") from None


def _clean_staging(staging: Path) -> None:
    """A clean staging directory: a killed run's leftovers are discarded."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)


def _start_members(start_from: Path, members: int) -> list[list[np.ndarray]]:
    """The weights of each network of the version at `start_from`, which a warm run's networks continue from."""
    from forecast.ensemble import members_of
    from forecast.prediction import load_model_file

    saved = members_of(load_model_file(start_from / MODEL_FILE))
    if len(saved) != members:
        raise IncompatibleWeights(
            f"{start_from}: its model {'is one network' if len(saved) == 1 else f'averages {len(saved)} networks'}, "
            f"and this configuration trains {members} (set members = {len(saved)} to continue it)"
        )
    return [member.get_weights() for member in saved]


def _load_start(model, weights: list[np.ndarray], start_from: Path | None, config: Config, log: Log) -> None:
    """Sets the network's first weights to `weights`, those of its network in the version at `start_from`."""
    if [np.shape(value) for value in weights] != [tuple(variable.shape) for variable in model.weights]:
        raise IncompatibleWeights(
            f"{start_from}: its weights do not fit the network this configuration builds (other columns, lookback, "
            "horizon or units, or a model saved by an earlier version of forecast)"
        )
    model.set_weights(weights)
    log(f"continuing from the weights of {start_from} at epoch {config.initial_epoch + 1}")


def _linear_start(model, run: MemberRun, train_plan: StreamPlan, continued: bool, first: TrainedMember | None
                  ) -> dict | None:
    """A fresh model gets its linear terms by ridge regression (or, in an ensemble, the first network's, the same fit);
    a `continued` one keeps its own. All are frozen.

    Returns the ridge fit (a `LinearFit` as a dict), or None where none was made and there is no linear start for the
    end of training to compare with.
    """
    if continued:
        freeze_linear_terms(model)
        return None
    if first is not None:
        if first.state.linear_start is not None:
            copy_linear_terms(first.model, model)
        return first.state.linear_start
    batcher = run.batcher
    fit = fit_linear_start(model, batcher, train_plan.origins(), run.val_plan.origins(), len(run.layout.calendar))
    if fit is None:
        run.log("linear start skipped: gaps leave no fully observed window; all terms train from zero")
        return None
    scored = len(batcher.scored_origins(train_plan.origins()))
    run.log(
        f"linear start: ridge on {fit.windows} of the {scored} training origins (those whose whole horizon is observed"
        f"{f', at most {MAX_ORIGINS}' if scored > MAX_ORIGINS else ''}), history as {fit.history}, "
        f"covariates {'in' if fit.covariates else 'out'}, calendar {'in' if fit.calendar else 'out'}, "
        + (f"attributes {'in' if fit.attributes else 'out'}, " if "attribute_interaction" in linear_terms(model)
           else "")
        + f"penalty {fit.penalty:g}, validation MSE {fit.val_mse:.4f}"
        + (f" (t = {fit.t:.1f} over {fit.blocks} blocks against lags alone)" if fit.t else "")
        + (f"; only {fit.blocks} validation blocks of {batcher.horizon} origins, fewer than {MIN_BLOCKS}: the simplest "
           "inputs kept" if fit.blocks < MIN_BLOCKS else "")
    )
    return asdict(fit)


def _resumed_start(root: Path) -> Path | None:
    """The version an interrupted warm run (`--initial-epoch`) continued from, whose scaler, layout and weights it
    resumes with; None for a run that started afresh."""
    from forecast import checkpoint

    name = checkpoint.load_state(checkpoint_dir(root)).start_version
    if name is None:
        return None
    if name not in versions(root):
        raise ResumeRefused(
            f"{checkpoint_dir(root)}: the interrupted run continued version {name}, which is no longer kept; "
            "train without --resume"
        )
    return root / VERSIONS / name


def _model_kind(linear_start: dict | None, kept_start: bool, verdict, start_from: Path | None, members: int) -> str:
    """What was saved, in words: the linear start alone, or the linear terms with the LSTM's correction (whose t is
    against the linear start, or in a warm run against the weights of the version it continued), averaged over
    `members` networks."""
    if kept_start and start_from is not None:
        return read_metrics(start_from).get("model_kind", "as the version it continued")
    if kept_start and linear_start:
        inputs = ["lags" if linear_start["history"] == "lags" else "multi-scale means"]
        inputs += ["covariates"] * bool(linear_start["covariates"]) + ["calendar"] * bool(linear_start["calendar"])
        inputs += ["attributes"] * bool(linear_start.get("attributes"))
        return f"linear (ridge on {', '.join(inputs)})"
    correction = "LSTM correction" if members == 1 else f"the mean LSTM correction of {members} networks"
    if verdict is None:
        return f"linear terms and {correction} trained together (no linear start)"
    against = f"version {start_from.name}" if start_from is not None else "its linear start"
    return f"linear + {correction} (t = {verdict.t:.1f} over {verdict.blocks} blocks against {against})"


def _joint_history(histories: list[pd.DataFrame]) -> pd.DataFrame:
    """One network's per-epoch history, or an ensemble's: each network's, one after the other, with a `member`
    column (0, 1, ...)."""
    if len(histories) == 1:
        return histories[0]
    return pd.concat([history.assign(member=index) for index, history in enumerate(histories)], ignore_index=True)


def _epochs_kept(trained: list[TrainedMember], kept_start: bool, start_from: Path | None, min_delta: float
                 ) -> list[int]:
    """The epoch whose weights were saved, per network: the one early stopping restored, 0 where no epoch beat the
    linear start (early stopping then restored it: in an ensemble that the gate keeps, such a network adds no
    correction), and the continued version's own where the gate kept its weights."""
    if not kept_start:
        return [_kept_epoch(member.history, _start_mse(member.state.linear_start, member.start_weights), min_delta)
                for member in trained]
    saved = read_metrics(start_from) if start_from is not None else {}
    epochs = saved.get("member_epochs", [saved.get("epochs", 0)] * len(trained))
    return [epoch if isinstance(epoch, int) else 0 for epoch in epochs]


def _start_mse(linear_start: dict | None, start_weights) -> float | None:
    """The linear start's validation MSE, which early stopping must beat, where training began from it (None: it
    began from zero or from an earlier version's weights)."""
    return linear_start["val_mse"] if linear_start and start_weights is not None else None


def _kept_epoch(history: pd.DataFrame, start_mse: float | None = None, min_delta: float = 0.0) -> int:
    """The epoch whose weights early stopping restored (`criterion.best_epoch` over the validation scores), or 0 where
    none improved on the linear start's `start_mse` (whose weights early stopping then restored)."""
    kept = best_epoch(list(history["val_mse"].to_numpy(dtype=float)), start_mse, min_delta)
    return 0 if kept is None else int(history["epoch"].iloc[kept])


def _callbacks(keras, config: Config, checkpoints: Path, chunks: int, state, resumed: bool, start_weights=None,
               tensorboard: str | None = None) -> list:
    """The training callbacks; early stopping compares with the linear start (`start_weights`, whose validation MSE
    `state.linear_start` holds) as well as with the epochs before; `tensorboard` is the folder for TensorBoard's log
    (None: none)."""
    from forecast import checkpoint
    from forecast.model import StateResetter

    start_mse = _start_mse(state.linear_start, start_weights)
    early_stopping = checkpoint.ResumableEarlyStopping(
        config.patience, config.min_delta, state if resumed else None, checkpoint.load_best_weights(checkpoints) if resumed else None,
        start_mse, start_weights,
    )
    callbacks = [
        checkpoint.OneValidationScore(), StateResetter(chunks), early_stopping, keras.callbacks.TerminateOnNaN(),
        checkpoint.PlateauLearningRate(state, config.learning_rate, config.lr_patience, config.min_delta,
                                       start_mse),
    ]
    if config.checkpoints:
        callbacks.append(checkpoint.EpochCheckpoint(checkpoints, early_stopping, state))
    else:
        callbacks.append(checkpoint.HistoryRecorder(early_stopping, state))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=tensorboard))
    return callbacks


def _training_data(batcher: WindowBatcher, plan: StreamPlan, config: Config, first_epoch: int):
    if config.data_pipeline == "generator":
        return window_generator(batcher, plan, first_epoch)
    from forecast.dataset import WindowDataset

    return WindowDataset(
        batcher,
        plan,
        initial_epoch=first_epoch,
        workers=config.workers,
        use_multiprocessing=config.use_multiprocessing,
        max_queue_size=config.max_queue_size,
    )


def _validation_metrics(forecast, target, weight, origins, batcher: WindowBatcher, data: TrainingData) -> dict:
    """Validation errors (pooled over series) of the model and of Repeat on the same steps, z-scored and in the
    target's own units."""
    repeat = repeat_forecast(batcher.last_values(origins), target.shape[1])
    truth = data.target_units(origins, target)
    scores = {}
    for name, values in (("model", forecast), ("repeat", repeat)):
        scaled = weighted_errors(values, target, weight)
        original = weighted_errors(data.target_units(origins, values), truth, weight)
        scores[name] = {"mse": scaled["mse"], "mae": scaled["mae"], "mae_original": original["mae"],
                        "rmse_original": math.sqrt(original["mse"])}
        if len(data.collection.series) > 1:
            scores[name]["nse_over_series"] = _nse_over_series(values, target, weight, data.series_index(origins))
    return {"validation": scores, "origins": int(np.count_nonzero(weight.any(axis=1)))}


def _nse_over_series(forecast, target, weight, series) -> dict:
    """The median and mean over series of each series' NSE over all its validation steps (NSE is the same in z-units
    as in the target's own)."""
    values = [nse(forecast[series == index], target[series == index], weight[series == index])
              for index in np.unique(series[(weight > 0).any(axis=1)])]
    values = np.array([value for value in values if math.isfinite(value)])
    if not values.size:
        return {}
    return {"median": float(np.median(values)), "mean": float(values.mean()), "series": int(values.size)}
