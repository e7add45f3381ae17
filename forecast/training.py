"""Training: split and scale the series (`training_data`), have `members` train the networks on the streams, keep the
better of the trained model and its start (`kept_model`), and publish the version (`version_files`, `store`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forecast.config import Config
from forecast.data import Collection, describe_left_out
from forecast.data_cache import DataCache, load
from forecast.errors import ForecastError, IncompatibleWeights, ResumeRefused
from forecast.kept_model import (ValidationOrigins, interval_calibration, keep_and_score, model_kind,
                                model_to_save, validation_metrics)
from forecast.executor import distribution_strategy, runtime, train_networks
from forecast.members import (MemberRun, combined, joint_history, joint_start_weights, log_run, resumed_start,
                              start_members, training_record, validation_streams)
from forecast.store import VERSIONS, checkpoint_dir, current_version, kept_epochs, locked, publish, staging_dir
from forecast.training_data import check_trainable, detect_bounds, prepare, training_series
from forecast.version_files import write_version

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
    cache: DataCache | None = None,
) -> TrainResult:
    """Trains a model on `csv_path` (read through `cache`, see forecast.data_cache) and publishes it as the current
    version of the model at `root`.

    The series named in `config.holdout_series` take no part. The previous version stays current until the new one is
    complete. With `resume`, continues an interrupted run from its last epoch checkpoint. Holds the model's lock
    throughout, so a concurrent train or retrain stops at once.
    """
    log = log or (lambda message: None)
    root = Path(root)
    collection = load(csv_path, config, cache=cache)
    config = config.replace(past=collection.first.roles.past)
    training = training_series(collection, config.holdout_series)
    check_trainable(training, config, fresh=not resume and config.initial_epoch == 0)
    with locked(root):
        if resume:
            start_from = resumed_start(root)
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
    The networks train where `config.executor` says (`executor.runtime`: Ray is started or joined before anything
    else, so that a cluster that cannot be reached fails the run at once).
    """
    with runtime(config, log):
        return _train_collection(collection, config, root, log, verbose, extra_callbacks, resume, start_from, purpose)


def _train_collection(collection: Collection, config: Config, root: Path, log: Log, verbose: int,
                      extra_callbacks: tuple, resume: bool, start_from: Path | None, purpose: str) -> TrainResult:
    left_out = describe_left_out(collection.first)
    if left_out:
        log(left_out)
    data = prepare(collection, config, start_from, log)
    config = detect_bounds(config, data.training_target(), log)
    batcher = data.batcher(config)
    train_plan, val_plan = data.stream_plans(config)
    if not val_plan.ranges:
        raise ForecastError(f"{collection.path}: no validation origin in any series; add rows or lower --horizon")
    strategy, replicas = distribution_strategy(config)
    log_run(batcher, train_plan, val_plan, len(data.collection.series), replicas, config, log)
    starts = start_members(start_from, config.members) if start_from is not None else [None] * config.members
    if not resume:
        _clean_staging(staging_dir(root))
    streams, origin_weights = validation_streams(batcher, val_plan, data.series_index)
    run = MemberRun(data.layout, batcher, train_plan, val_plan, streams, origin_weights, root, strategy, replicas,
                    purpose, start_from, resume, extra_callbacks, verbose, log, str(collection.path))
    trained = train_networks(run, config, starts)
    del run, streams, origin_weights  # the validation streams served the epochs only; what follows holds more
    from forecast.dataset import release_feature_tensors

    release_feature_tensors(data.features)  # the training pipelines are done with the features' tensors
    model = combined(trained)
    validation = ValidationOrigins.of(batcher, val_plan.ranges, config.chunks_per_stream, data.target_stats,
                                      config.target_min, config.target_max)
    start_label = "the current version's weights" if start_from is not None else "the linear start"
    forecast, kept_start, verdict = keep_and_score(model, validation, joint_start_weights(trained), start_label,
                                                   tuple(data.collection.ids), config.horizon, log,
                                                   linear_start=start_from is None)
    linear_start = trained[0].state.linear_start
    metrics = validation_metrics(forecast, validation, len(data.collection.series))
    metrics.update({
        "kept_linear_start": kept_start and start_from is None, "kept_start_weights": kept_start,
        "gate": None if verdict is None else verdict.to_json(), "linear_start": linear_start,
        "model_kind": model_kind(linear_start, kept_start, verdict, start_from, config.members),
    })
    history = joint_history([member.history for member in trained])
    metrics.update(training_record(trained, history, metrics, start_from, data.splits, config.min_delta))
    calibration = interval_calibration(forecast, validation, config.quantiles, config.lookback, config.horizon, log)
    if calibration is not None:
        metrics["intervals"] = calibration.summary()
    del forecast  # (origins, H) floats, not to be held while the version is written and its plot drawn
    staging = staging_dir(root)
    write_version(staging, model_to_save(model, metrics), config, data, history, metrics, start_from, calibration)
    shutil.rmtree(checkpoint_dir(root), ignore_errors=True)
    return TrainResult(model_dir=staging, metrics=metrics, history=history)


def _clean_staging(staging: Path) -> None:
    """A clean staging directory: a killed run's leftovers are discarded."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)


