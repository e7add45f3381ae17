"""The networks of a run: each one built (fresh with the run's linear start, continued from a version's weights, or
resumed from its checkpoint), seeded, fitted over the training streams with early stopping, and returned with its
history.

The linear start is fitted once, by the process that runs the run (`executor.shared_linear_start`), and every fresh
network copies it; `train_member` trains one network wherever it runs: in this process (`train_members`) or in a Ray
task (`forecast.executor`), which is why a network gets its start as plain arrays (`LinearStart`, `MemberStart`).

`training` prepares the data, runs this once per run and keeps, scores and saves what comes back; training the networks
is its own module so that the run's bookkeeping and the network's training can each be read (and changed) alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import backend
from forecast.config import Config
from forecast.criterion import WEIGHT_CAP, best_epoch, streamed_origin_weights
from forecast.errors import ForecastError, IncompatibleWeights, ResumeRefused
from forecast.features import InputLayout
from forecast.linear_start import freeze_linear_terms, linear_terms
from forecast.sampler import StreamPlan
from forecast.split import Split
from forecast.store import MODEL_FILE, VERSIONS, checkpoint_dir, read_metrics, versions
from forecast.windowing import ValidationSet, WindowBatcher

Log = Callable[[str], None]


@dataclass(frozen=True)
class MemberRun:
    """What every network of a run trains on and reports to: the input layout, the windows, the training plan (which
    each network walks with its own seed) and the validation plan, the validation set (`windowing.ValidationSet`)
    and each validation origin's weight in the run's score (`criterion.origin_weights`), the model's root, the distribution
    strategy and its replica count, the run's purpose,
    the version a warm run continues, whether the run resumes, the caller's callbacks and verbosity, the logger and
    the data file (for messages)."""

    layout: InputLayout
    batcher: WindowBatcher
    train_plan: StreamPlan
    val_plan: StreamPlan
    validation: ValidationSet
    origin_weights: np.ndarray
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


@dataclass(frozen=True)
class LinearStart:
    """The run's ridge fit of the linear terms, which every fresh network copies: its choices (`fit`, a
    `linear_start.LinearFit` as a dict) and the weights of each linear layer (`terms`: layer name -> [kernel (F, H),
    bias (H,)])."""

    fit: dict
    terms: dict


@dataclass(frozen=True)
class MemberStart:
    """The weights a warm run's network starts from, as plain arrays: a whole network's (`weights`, in
    `get_weights` order), or a kept linear start's linear layers (`layers`: layer name -> weights) where the version
    has no network."""

    weights: list | None = None
    layers: dict | None = None


def member_start(model) -> MemberStart:
    """The start a network takes from `model`, its network in the version a warm run continues (`start_members`)."""
    from forecast.model import has_network

    if has_network(model):
        return MemberStart(weights=model.get_weights())
    return MemberStart(layers={layer.name: layer.get_weights() for layer in model.layers if layer.weights})


def train_members(run: MemberRun, config: Config, starts: list, linear: LinearStart | None) -> list[TrainedMember]:
    """The `config.members` networks of the run, trained one after the other in this process, network k from
    `starts[k]` (a `MemberStart` from the version a warm run continues; None: fresh, from `linear`)."""
    return [train_member(run, index, config, start, linear) for index, start in enumerate(starts)]


def train_member(run: MemberRun, index: int, config: Config, start: MemberStart | None, linear: LinearStart | None
                 ) -> TrainedMember:
    """Network `index` of the run (`_train_member`), with a line before and after it in an ensemble."""
    label = f"network {index + 1} of {config.members}"
    if config.members > 1:
        run.log(f"{label} (seed {config.seed + index})")
    trained = _train_member(run, index, config, start, linear)
    if config.members > 1:
        run.log(f"{label} done: {len(trained.history)} epochs, best validation score "
                f"{np.nanmin(trained.history['val_mse']):.4f}")
    return trained


def joint_start_weights(trained: list[TrainedMember]) -> list | None:
    """The weights the networks started from, in the combined model's order (network 0's, then network 1's, ...);
    None where one has none to compare with."""
    starts = [member.start_weights for member in trained]
    return None if any(start is None for start in starts) else [weight for start in starts for weight in start]


def member_checkpoints(root: Path, index: int) -> Path:
    """Network `index`'s epoch checkpoints: the run's own directory for the first, a folder in it for the others, so
    a single network's checkpoints are where they always were."""
    from forecast.ensemble import member_name

    return checkpoint_dir(root) if index == 0 else checkpoint_dir(root) / member_name(index)


def _train_member(run: MemberRun, index: int, config: Config, start: MemberStart | None, linear: LinearStart | None
                  ) -> TrainedMember:
    """Trains network `index` of the run with seed `config.seed + index` (its initial weights, dropout and stream
    order): from `start` (its network in the version a warm run continues) or, fresh, from the run's linear start
    `linear` (None: none). A network continues its checkpoint where it has one: in a resumed run (the first network
    always has one), or from an earlier attempt of this run (a retried Ray task; the run began with no checkpoints);
    a network the interrupted run never began starts afresh."""
    from forecast import checkpoint
    from forecast.ensemble import member_name

    config = config.replace(seed=config.seed + index)
    checkpoints = member_checkpoints(run.root, index)
    resume = (run.resuming and index == 0) or (checkpoints / checkpoint.STATE).is_file()
    train_plan = dataclasses.replace(run.train_plan, seed=config.seed)
    model, state, start_weights = _set_up_model(config, run, checkpoints, resume, start, linear)
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


def _set_up_model(config: Config, run: MemberRun, checkpoints: Path, resume: bool, start: MemberStart | None,
                  linear: LinearStart | None):
    """The network to train (fresh with the run's linear start `linear`, continued from `start` (`apply_start`), or
    resumed from its checkpoint), its `ResumeState`, and the weights the end of training compares with."""
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
                apply_start(model, start, run.start_from, config, run.log)
            if config.linear_start:
                state.linear_start = _copy_linear_start(model, start is not None, linear)
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
    from forecast.dataset import training_data, validation_data
    from forecast.model import SkipUnscoredBatches

    keras = backend.keras()
    chunks = config.chunks_per_stream
    callbacks = training_callbacks(keras, config, checkpoints, chunks, state, resume, start_weights, tensorboard)
    callbacks += list(run.extra_callbacks)
    callbacks.append(SkipUnscoredBatches(lambda epoch: ~train_plan.batches(epoch)[1].any(axis=1)))
    first_epoch = state.epoch if resume else config.initial_epoch
    model.fit(
        training_data(run.batcher, train_plan, config, first_epoch),
        epochs=first_epoch if state.stopped else max(config.epochs, first_epoch),
        initial_epoch=first_epoch,
        steps_per_epoch=train_plan.n_batches,
        validation_data=validation_data(run, config),
        validation_steps=run.validation.n_batches,
        callbacks=callbacks,
        shuffle=False,  # the stateful layout is ordered; the plan shuffles whole streams itself
        verbose=run.verbose,
    )
    return pd.DataFrame(state.history)


def _seed_everything(seed: int) -> None:
    """Same seed, same weights: seeds Python, NumPy and TensorFlow and makes TensorFlow's kernels deterministic."""
    import tensorflow as tf

    backend.keras().utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


# Where the networks train is a setting of the run, not of the model: a run may resume under another executor; the
# target's units are a label for readers.
RUN_ONLY_SETTINGS = {"epochs", "initial_epoch", "verbose", "patience", "tensorboard_dir", "checkpoints", "workers",
                     "use_multiprocessing", "max_queue_size", "data_pipeline", "executor", "ray_address",
                     "cpus_per_task", "gpus_per_task", "target_units"}


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


def start_members(start_from: Path, members: int) -> list:
    """The networks of the version at `start_from` (Keras models), which a warm run's networks continue from; a
    version that is a kept linear start (its linear terms alone) starts every network."""
    from forecast.ensemble import members_of
    from forecast.model import has_network
    from forecast.runner import load_model_file

    model = load_model_file(start_from / MODEL_FILE)
    if not has_network(model):
        return [model] * members
    saved = members_of(model)
    if len(saved) != members:
        raise IncompatibleWeights(
            f"{start_from}: its model {'is one network' if len(saved) == 1 else f'averages {len(saved)} networks'}, "
            f"and this configuration trains {members} (set members = {len(saved)} to continue it)"
        )
    return saved


def load_start(model, start, start_from: Path | None, config: Config, log: Log) -> None:
    """Sets the network's first weights to those of `start` (a Keras model), its network in the version at
    `start_from` (`apply_start`)."""
    apply_start(model, member_start(start), start_from, config, log)


def apply_start(model, start: MemberStart, start_from: Path | None, config: Config, log: Log) -> None:
    """Sets the network's first weights to `start`, taken from its network in the version at `start_from`; a kept
    linear start (no LSTM) gives its linear terms, and the correction starts afresh (at 0, so the network starts
    as that version forecasts)."""
    if start.layers is not None:
        if set(linear_terms(model)) - set(start.layers):
            raise IncompatibleWeights(f"{start_from}: its linear start lacks linear terms the network this "
                                      "configuration builds has (other settings: attribute terms, covariates)")
        for name, weights in start.layers.items():
            try:
                target = model.get_layer(name)
            except ValueError:
                target = None
            if target is None or [tuple(w.shape) for w in target.weights] != [np.shape(w) for w in weights]:
                raise IncompatibleWeights(f"{start_from}: its linear terms do not fit the network this "
                                          "configuration builds (other columns, lookback or horizon)")
            target.set_weights(weights)
        log(f"continuing from the linear start of {start_from} at epoch {config.initial_epoch + 1}; the network starts "
            "afresh")
        return
    weights = start.weights
    if [np.shape(value) for value in weights] != [tuple(variable.shape) for variable in model.weights]:
        raise IncompatibleWeights(
            f"{start_from}: its weights do not fit the network this configuration builds (other columns, lookback, "
            "horizon or units, or a model saved by an earlier version of forecast)"
        )
    model.set_weights(weights)
    log(f"continuing from the weights of {start_from} at epoch {config.initial_epoch + 1}")


def _copy_linear_start(model, continued: bool, linear: LinearStart | None) -> dict | None:
    """A fresh model gets the run's linear terms (`linear`, the ridge fit every network shares); a `continued` one
    keeps its own. All are frozen.

    Returns the ridge fit (a `LinearFit` as a dict), or None where none was made and there is no linear start for the
    end of training to compare with.
    """
    if continued:
        freeze_linear_terms(model)
        return None
    if linear is None:
        return None
    for name, weights in linear.terms.items():
        model.get_layer(name).set_weights(weights)
    freeze_linear_terms(model)
    return linear.fit


def linear_start_mse(linear_start: dict | None, start_weights) -> float | None:
    """The linear start's validation MSE, which early stopping must beat, where training began from it (None: it
    began from zero or from an earlier version's weights)."""
    return linear_start["val_mse"] if linear_start and start_weights is not None else None


def training_callbacks(keras, config: Config, checkpoints: Path, chunks: int, state, resumed: bool,
                       start_weights=None, tensorboard: str | None = None) -> list:
    """The training callbacks; early stopping compares with the linear start (`start_weights`, whose validation MSE
    `state.linear_start` holds) as well as with the epochs before; `tensorboard` is the folder for TensorBoard's log
    (None: none)."""
    from forecast import checkpoint
    from forecast.model import StateResetter

    start_mse = linear_start_mse(state.linear_start, start_weights)
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


def log_run(batcher: WindowBatcher, train_plan: StreamPlan, val_plan: StreamPlan, n_series: int, replicas: int,
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


def training_record(trained: list[TrainedMember], history: pd.DataFrame, kept: dict, start_from: Path | None,
                    splits: tuple[Split, ...], min_delta: float) -> dict:
    """The metrics.json entries about the run, given those about the `kept` model (`kept_model.validation_metrics` and
    the gate's): the kept epoch (`epochs`, the latest of the networks'; an ensemble's each under `member_epochs`, and its
    model kind says how many networks kept their linear start), the epochs run, the split's sizes (`splits`, one per
    series), the device and the time."""
    epochs = epochs_kept(trained, kept["kept_start_weights"], start_from, min_delta)
    record = {
        "epochs": max(epochs),
        "epochs_run": len(history),
        "last_epoch": int(history["epoch"].max()),
        "best_val_mse": float(np.nanmin(history["val_mse"])),
        "device": backend.device_name(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": {"train_rows": sum(split.train_end for split in splits),
                  "val_rows": sum(split.val_end - split.train_end for split in splits)},
        "series": len(splits),
    }
    if len(trained) > 1:
        record["member_epochs"] = epochs
        idle = epochs.count(0)
        if idle and not kept["kept_start_weights"]:
            record["model_kind"] = f"{kept['model_kind']}; {idle} of the {len(trained)} at their linear start"
    return record


def resumed_start(root: Path) -> Path | None:
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


def joint_history(histories: list[pd.DataFrame]) -> pd.DataFrame:
    """One network's per-epoch history, or an ensemble's: each network's, one after the other, with a `member`
    column (0, 1, ...)."""
    if len(histories) == 1:
        return histories[0]
    return pd.concat([history.assign(member=index) for index, history in enumerate(histories)], ignore_index=True)


def epochs_kept(trained: list[TrainedMember], kept_start: bool, start_from: Path | None, min_delta: float
                 ) -> list[int]:
    """The epoch whose weights were saved, per network: the one early stopping restored, 0 where no epoch beat the
    linear start (early stopping then restored it: in an ensemble that the gate keeps, such a network adds no
    correction), and the continued version's own where the gate kept its weights."""
    if not kept_start:
        return [kept_epoch(member.history, linear_start_mse(member.state.linear_start, member.start_weights),
                            min_delta)
                for member in trained]
    saved = read_metrics(start_from) if start_from is not None else {}
    epochs = saved.get("member_epochs", [saved.get("epochs", 0)] * len(trained))
    return [epoch if isinstance(epoch, int) else 0 for epoch in epochs]


def kept_epoch(history: pd.DataFrame, start_mse: float | None = None, min_delta: float = 0.0) -> int:
    """The epoch whose weights early stopping restored (`criterion.best_epoch` over the validation scores), or 0 where
    none improved on the linear start's `start_mse` (whose weights early stopping then restored)."""
    kept = best_epoch(list(history["val_mse"].to_numpy(dtype=float)), start_mse, min_delta)
    return 0 if kept is None else int(history["epoch"].iloc[kept])


def validation_streams(batcher: WindowBatcher, plan: StreamPlan, series: Callable[[np.ndarray], np.ndarray]
                       ) -> tuple[ValidationSet, np.ndarray]:
    """The validation streams Keras walks each epoch for early stopping (`windowing.ValidationSet`) and each origin's
    weight (n,) in the run's score (`criterion.origin_weights`: the set's step weights times it are the score's);
    `series(origins)` gives each origin's series index."""
    streams = ValidationSet.of(batcher, plan)
    return streams, streamed_origin_weights(series(streams.origins), streams.cut)


def combined(trained: list[TrainedMember]):
    """The run's model: the one network, or the ensemble of them all (`ensemble.combine`)."""
    from forecast.ensemble import combine

    return combine([member.model for member in trained])
