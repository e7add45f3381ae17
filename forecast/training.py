"""Training: split the series, fit the scaler, feed the streams to `fit`, and write the model directory."""

from __future__ import annotations

import contextlib
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
from forecast.data import Series, describe_left_out, load_series
from forecast.errors import ForecastError, IncompatibleWeights, ResumeRefused
from forecast.evaluation import MIN_BLOCKS, improvement, origin_errors, repeat_forecast, weighted_errors
from forecast.features import InputLayout, build_features, fit_scaler
from forecast.linear_start import MAX_ORIGINS, LinearFit, fit_linear_start, freeze_linear_terms
from forecast.store import (
    CONFIG_FILE,
    HISTORY_FILE,
    INTERVALS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SCALER_FILE,
    SCHEMA_FILE,
    TRAINING_PLOT,
    VERSIONS,
    read_metrics,
    read_saved,
    Schema,
    checkpoint_dir,
    current_version,
    locked,
    publish,
    staging_dir,
    versions,
    write_json,
)
from forecast.validation import row_digests
from forecast.windowing import StreamPlan, WindowBatcher, materialise, window_generator

Log = Callable[[str], None]


@dataclass(frozen=True)
class Split:
    """Rows [0, train_end) train the model; rows [train_end, val_end) validate it. Both ends are exclusive."""

    train_end: int
    val_end: int


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    metrics: dict
    history: pd.DataFrame


def resolve_split(series: Series, config: Config) -> Split:
    """Turns train_end / val_end (a row count, or the last timestamp to include) into row counts."""
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
            f"{series.path}: too little data: {train_end} training rows and {val_end - train_end} validation rows, but "
            f"lookback + horizon needs {need_train} training rows and horizon needs {config.horizon} validation rows; "
            "add rows or lower --lookback/--horizon"
        )
    return Split(train_end=train_end, val_end=val_end)


def row_bound(series: Series, value: str, name: str, first: bool = False) -> int:
    """A row number for a range bound given as a row count or a date.

    As an end (first=False), a date is the last time to include, as far as it is written: `2018-02-20` includes that
    whole day, `2018-02-20 13:00` that minute; the bound is the count of rows up to it. As a start (first=True), it is
    the first timestamp to include.
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

    The previous version stays current until the new one is complete. With `resume`, continues an interrupted run from
    its last epoch checkpoint. Holds the model's lock throughout, so a concurrent train or retrain stops at once.
    """
    log = log or (lambda message: None)
    root = Path(root)
    series = load_series(csv_path, config)
    config = config.replace(past=series.roles.past)
    resolve_split(series, config)  # too little data is a user error: report it before touching the store
    with locked(root):
        if resume:
            start_from = _resumed_start(root)
        else:
            start_from = current_version(root) if config.initial_epoch > 0 else None
        try:
            result = train_series(series, config, root, log, verbose, extra_callbacks, resume, start_from)
        except IncompatibleWeights as exc:
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
        f"(Repeat {metrics['repeat']['mse']:.4f}); weights of epoch {result.metrics['epochs']} kept, "
        f"{result.metrics['epochs_run']} epochs trained"
    )
    return TrainResult(model_dir=root / VERSIONS / version, metrics=result.metrics, history=result.history)


def train_series(
    series: Series,
    config: Config,
    root: Path,
    log: Log,
    verbose: int = 0,
    extra_callbacks: tuple = (),
    resume: bool = False,
    start_from: Path | None = None,
    purpose: str = "train",
) -> TrainResult:
    """Trains on `series` into the staging directory of `root` and returns it complete, but not yet published.

    `start_from` is a model directory whose weights (and scaler) training continues from, at `config.initial_epoch`.
    `purpose` ("train" or "retrain") is recorded in the checkpoints, so that only the same kind of run resumes them.
    """
    split = resolve_split(series, config)
    left_out = describe_left_out(series)
    if left_out:
        log(left_out)
    config = detect_bounds(config, series.values[series.roles.target].to_numpy()[: split.train_end], log)
    keras = backend.keras()
    from forecast import checkpoint
    from forecast.model import (
        SkipUnscoredBatches, build_model, compile_model, input_names, predict_batches, stacked_batches,
    )

    if start_from is not None:
        saved = read_saved(start_from)
        scaler, layout = saved.scaler, saved.schema.layout
    else:
        scaler = fit_scaler(series, split.train_end)
        span = series.time[split.train_end - 1] - series.time[0]
        layout = InputLayout.from_roles(series.roles, series.freq, span)
    features = build_features(series, scaler, config.horizon, calendar=layout.calendar)
    batcher = WindowBatcher(features, config.lookback, config.horizon)
    chunks = config.chunks_per_stream
    train_plan = StreamPlan(
        batcher.earliest_origin, split.train_end - config.horizon - 1, config.lookback, chunks, config.batch_size,
        shuffle=True, seed=config.seed,
    )
    val_plan = StreamPlan(
        split.train_end - 1, split.val_end - config.horizon - 1, config.lookback, chunks, config.batch_size, shuffle=False
    )

    _seed_everything(config.seed)
    staging = staging_dir(root)
    checkpoints = checkpoint_dir(root)
    strategy, replicas = _strategy(config)
    with strategy.scope():
        if resume:
            state = checkpoint.load_state(checkpoints)
            _check_resumable(config, state, checkpoints, purpose)
            model = _load_checkpoint_model(checkpoints / checkpoint.LAST_MODEL)
            checkpoint.restore_seeds(model, checkpoints)
            log(f"resuming {root} after epoch {state.epoch}")
        else:
            state = checkpoint.ResumeState(
                config=json.loads(config.to_json()), purpose=purpose,
                start_version=None if start_from is None else start_from.name,
            )
            model = build_model(config, layout, config.batch_size // replicas)
            _start_staging(staging, start_from, model, config, log)
            if config.linear_start:
                fit = _linear_start(model, batcher, train_plan, val_plan, len(layout.calendar), start_from, log)
                state.linear_start = asdict(fit) if fit else None
            compile_model(model, config)
    # The end of training compares the network with the weights it started from (the linear fit, or the current
    # version's for a warm retrain); a resumed run reads them back.
    if resume:
        start_weights = checkpoint.load_start_weights(checkpoints)
    elif state.linear_start or start_from is not None:
        start_weights = model.get_weights()
        if config.checkpoints:
            checkpoint.save_start_weights(checkpoints, start_weights)
    else:
        start_weights = None

    n_train, n_val = (len(batcher.scored_origins(plan.first, plan.last)) for plan in (train_plan, val_plan))
    log(
        f"training on {backend.device_name()}: {n_train} training and {n_val} validation "
        f"origins, {'stateful' if config.stateful else 'stateless'}, lookback {config.lookback}, horizon {config.horizon}, "
        f"batch {config.batch_size}"
        + (f" over {replicas} replicas" if replicas > 1 else "")
    )
    val_inputs, val_target, val_weight, val_origins = materialise(batcher, val_plan)
    validation = (
        [val_inputs[name] for name in input_names(model)], {"prediction": val_target}, {"prediction": val_weight}
    )
    callbacks = _callbacks(keras, config, checkpoints, chunks, state, resume, start_weights) + list(extra_callbacks)
    callbacks.append(SkipUnscoredBatches(lambda epoch: ~train_plan.batches(epoch)[1].any(axis=1)))
    first_epoch = state.epoch if resume else config.initial_epoch
    data = _training_data(batcher, train_plan, config, first_epoch)
    model.fit(
        data,
        epochs=first_epoch if state.stopped else max(config.epochs, first_epoch),
        initial_epoch=first_epoch,
        steps_per_epoch=train_plan.n_batches,
        validation_data=validation,
        validation_batch_size=config.batch_size,
        validation_steps=val_plan.n_batches,
        callbacks=callbacks,
        shuffle=False,  # the stateful layout is ordered; the plan shuffles whole streams itself
        verbose=verbose,
    )
    history = pd.DataFrame(state.history)
    if history.empty or not np.isfinite(history["loss"]).all():
        raise ForecastError(f"{series.path}: training diverged (loss is not finite); lower --learning-rate or check the data")

    if replicas > 1:
        # Each replica's copy takes B / replicas rows; saved and scored is the same network at the global batch size.
        single_device = build_model(config, layout, config.batch_size)
        single_device.set_weights(model.get_weights())
        model = single_device
    forecast = predict_batches(model, stacked_batches(val_inputs, config.batch_size), chunks)
    kept_start, verdict = False, None
    if start_weights is not None:
        start_label = "the current version's weights" if start_from is not None else "the linear start"
        forecast, kept_start, verdict = _keep_the_better(
            model, start_weights, forecast, val_inputs, val_target, val_weight, val_origins, config, log, start_label
        )
    metrics = _validation_metrics(forecast, val_target, val_weight, batcher.last_values(val_origins), scaler, series)
    metrics["kept_linear_start"] = kept_start and start_from is None
    metrics["kept_start_weights"] = kept_start
    metrics["gate"] = None if verdict is None else {"t": verdict.t, "blocks": verdict.blocks}
    metrics["linear_start"] = state.linear_start
    metrics["model_kind"] = _model_kind(state.linear_start, kept_start, verdict, start_from)
    metrics.update(
        epochs=_epochs_kept(history, kept_start, start_from),
        epochs_run=len(history),
        last_epoch=int(history["epoch"].iloc[-1]),
        best_val_mse=float(np.nanmin(history["val_mse"])),
        device=backend.device_name(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        split={"train_rows": split.train_end, "val_rows": split.val_end - split.train_end},
    )
    if config.quantiles and not val_weight.any():
        log("no observed target in the validation rows: no forecast intervals to calibrate; point forecasts only")
    elif config.quantiles:
        calibration = _calibrate_intervals(forecast, val_target, val_weight, val_origins, batcher, scaler, config)
        (staging / INTERVALS_FILE).write_text(calibration.to_json() + "\n", encoding="utf-8")
        metrics["intervals"] = calibration.summary()
        log(calibration.describe())
    model.save(staging / MODEL_FILE)
    (staging / CONFIG_FILE).write_text(config.to_json() + "\n", encoding="utf-8")
    (staging / SCALER_FILE).write_text(scaler.to_json() + "\n", encoding="utf-8")
    schema = Schema(
        series.freq, layout, split.train_end, str(series.time[series.n_observed - 1]), series.n_observed,
        row_digests(series.time, series.values, series.n_observed), series.columns, split.val_end,
        series.business_days,
    )
    (staging / SCHEMA_FILE).write_text(schema.to_json() + "\n", encoding="utf-8")
    earlier = [pd.read_csv(start_from / HISTORY_FILE)] if start_from and (start_from / HISTORY_FILE).is_file() else []
    full_history = pd.concat([*earlier, history])
    full_history.to_csv(staging / HISTORY_FILE, index=False)
    write_json(staging / METRICS_FILE, metrics)
    from forecast.plots import plot_training

    plot_training(full_history, metrics, staging / TRAINING_PLOT)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(model_dir=staging, metrics=metrics, history=history)


def _calibrate_intervals(forecast, target, weight, origins, batcher: WindowBatcher, scaler, config: Config):
    """The interval calibration (intervals.Calibration) of the kept model's validation forecasts (n, H, z-units),
    clipped to the target's bounds as predict clips them; `origins` (n,) may hold padding, which weight 0 leaves out."""
    from forecast.intervals import calibrate, candidate_spans
    from forecast.prediction import bounded, scaled_bounds

    low, high = scaled_bounds(scaler, config)
    return calibrate(bounded(forecast, low, high), target, weight, batcher.features.history[:, 0], origins,
                     config.quantiles, candidate_spans(config.lookback, config.horizon))


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


def _start_staging(staging: Path, start_from: Path | None, model, config: Config, log: Log) -> None:
    """A clean staging directory (a killed run's leftovers are discarded); `start_from` supplies the first weights."""
    shutil.rmtree(staging, ignore_errors=True)
    if start_from is not None:
        from forecast.prediction import load_model_file

        weights = load_model_file(start_from / MODEL_FILE).get_weights()
        if [np.shape(value) for value in weights] != [tuple(variable.shape) for variable in model.weights]:
            raise IncompatibleWeights(
                f"{start_from}: its weights do not fit the network this configuration builds (other columns, lookback, "
                "horizon or units, or a model saved by an earlier version of forecast)"
            )
        model.set_weights(weights)
        log(f"continuing from the weights of {start_from} at epoch {config.initial_epoch + 1}")
    staging.mkdir(parents=True)


def _linear_start(
    model, batcher: WindowBatcher, train_plan: StreamPlan, val_plan: StreamPlan, n_calendar: int, start_from, log: Log
) -> LinearFit | None:
    """A fresh model gets its linear terms by ridge regression; a continued one keeps its own. Both are frozen.

    Returns the ridge fit (a `LinearFit`), or None where none was made and there is no linear start for the end of
    training to compare with.
    """
    if start_from is not None:
        freeze_linear_terms(model)
        return None
    fit = fit_linear_start(
        model,
        batcher,
        np.arange(train_plan.first, train_plan.last + 1),
        np.arange(val_plan.first, val_plan.last + 1),
        n_calendar,
    )
    if fit is None:
        log("linear start skipped: gaps leave no fully observed window; all terms train from zero")
        return None
    scored = len(batcher.scored_origins(train_plan.first, train_plan.last))
    log(
        f"linear start: ridge on {fit.windows} of the {scored} training origins (those whose whole horizon is observed"
        f"{f', at most {MAX_ORIGINS}' if scored > MAX_ORIGINS else ''}), history as {fit.history}, "
        f"covariates {'in' if fit.covariates else 'out'}, calendar {'in' if fit.calendar else 'out'}, "
        f"penalty {fit.penalty:g}, validation MSE {fit.val_mse:.4f}"
        + (f" (t = {fit.t:.1f} over {fit.blocks} blocks against lags alone)" if fit.t else "")
        + (f"; only {fit.blocks} validation blocks of {batcher.horizon} origins, fewer than {MIN_BLOCKS}: the simplest "
           "inputs kept" if fit.blocks < MIN_BLOCKS else "")
    )
    return fit


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


def _model_kind(linear_start: dict | None, kept_start: bool, verdict, start_from: Path | None) -> str:
    """What was saved, in words: the linear start alone, or the linear terms with the LSTM's correction (whose t is
    against the linear start, or in a warm run against the weights of the version it continued)."""
    if kept_start and start_from is not None:
        return read_metrics(start_from).get("model_kind", "as the version it continued")
    if kept_start and linear_start:
        inputs = ["lags" if linear_start["history"] == "lags" else "multi-scale means"]
        inputs += ["covariates"] * bool(linear_start["covariates"]) + ["calendar"] * bool(linear_start["calendar"])
        return f"linear (ridge on {', '.join(inputs)})"
    if verdict is None:
        return "linear terms and LSTM correction trained together (no linear start)"
    against = f"version {start_from.name}" if start_from is not None else "its linear start"
    return f"linear + LSTM correction (t = {verdict.t:.1f} over {verdict.blocks} blocks against {against})"


def _epochs_kept(history: pd.DataFrame, kept_start: bool, start_from: Path | None) -> int:
    """The epoch whose weights were saved: 0 for the linear start, the continued version's own for its weights."""
    if not kept_start:
        return _kept_epoch(history)
    epochs = read_metrics(start_from).get("epochs", 0) if start_from is not None else 0
    return epochs if isinstance(epochs, int) else 0


def _kept_epoch(history: pd.DataFrame) -> int:
    """The epoch whose weights early stopping restored: the one with the lowest validation MSE."""
    return int(history["epoch"].iloc[int(np.argmin(history["val_mse"].to_numpy()))])


def _keep_the_better(model, start_weights, trained_forecast, val_inputs, val_target, val_weight, val_origins,
                     config: Config, log: Log, start_label: str = "the linear start"):
    """The trained model, unless it does not beat the weights it began from (`start_label`: the linear start, or the
    current version's weights in a warm retrain) clearly on validation.

    "Clearly" is `Improvement.clear` for the per-origin error difference: at least MIN_BLOCKS independent blocks of H
    origins and a t statistic above the Student t threshold for their number. A network that only matches its own
    linear start, or beats it on too few blocks to tell, has found nothing shown to generalise, and the simpler model
    is the safer forecast for unseen data. Returns the kept model's validation forecast, whether it is the start, and
    the comparison (`Improvement`).
    """
    from forecast.model import predict_batches, stacked_batches

    trained_weights = model.get_weights()
    model.set_weights(start_weights)
    start_forecast = predict_batches(model, stacked_batches(val_inputs, config.batch_size), config.chunks_per_stream)
    trained = weighted_errors(trained_forecast, val_target, val_weight)["mse"]
    start = weighted_errors(start_forecast, val_target, val_weight)["mse"]
    verdict = improvement(
        origin_errors(start_forecast, val_target, val_weight), origin_errors(trained_forecast, val_target, val_weight),
        val_origins, config.horizon,
    )
    if not verdict.clear:
        log(f"kept {start_label}: validation MSE {start:.4f}, trained {trained:.4f} ({verdict.describe()})")
        return start_forecast, True, verdict
    log(f"the trained network beats {start_label}: validation MSE {trained:.4f} vs {start:.4f} ({verdict.describe()})")
    model.set_weights(trained_weights)
    return trained_forecast, False, verdict


def _callbacks(keras, config: Config, checkpoints: Path, chunks: int, state, resumed: bool, start_weights=None) -> list:
    """The training callbacks; early stopping compares with the linear start (`start_weights`, whose validation MSE
    `state.linear_start` holds) as well as with the epochs before."""
    from forecast import checkpoint
    from forecast.model import StateResetter

    start_mse = state.linear_start["val_mse"] if state.linear_start and start_weights is not None else None
    early_stopping = checkpoint.ResumableEarlyStopping(
        config.patience, state if resumed else None, checkpoint.load_best_weights(checkpoints) if resumed else None,
        start_mse, start_weights,
    )
    callbacks = [
        checkpoint.OneValidationScore(), StateResetter(chunks), early_stopping, keras.callbacks.TerminateOnNaN()
    ]
    if config.checkpoints:
        callbacks.append(checkpoint.EpochCheckpoint(checkpoints, early_stopping, state))
    else:
        callbacks.append(checkpoint.HistoryRecorder(early_stopping, state))
    if config.tensorboard_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=config.tensorboard_dir))
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


def _validation_metrics(forecast, target, weight, last_values, scaler, series: Series) -> dict:
    """Validation errors of the model and of Repeat on the same steps, z-scored and in the target's own units."""
    target_name = series.roles.target
    repeat = repeat_forecast(last_values, target.shape[1])
    scores = {}
    for name, values in (("model", forecast), ("repeat", repeat)):
        scaled = weighted_errors(values, target, weight)
        original = weighted_errors(scaler.inverse(target_name, values), scaler.inverse(target_name, target), weight)
        scores[name] = {"mse": scaled["mse"], "mae": scaled["mae"], "mae_original": original["mae"],
                        "rmse_original": math.sqrt(original["mse"])}
    return {"validation": scores, "origins": int(np.count_nonzero(weight.any(axis=1)))}
