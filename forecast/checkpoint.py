"""Per-epoch callbacks: checkpoints, so that an interrupted training resumes where it stopped and ends as an
uninterrupted one, and a log line per epoch for logs that need timestamps (cron).

After every epoch the staging directory's `checkpoints/` gets the whole model with its optimizer state (`last.keras`),
the best weights so far (`best.npz`, plain arrays), and `state.json`: the epoch reached, early stopping's counters and
the history so far. `state.json` is written last, each file by a rename, so it always describes complete files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forecast import backend
from forecast.criterion import improves
from forecast.errors import ResumeRefused
from forecast.store import CHECKPOINT_STATE

keras = backend.keras()

LAST_MODEL = "last.keras"
BEST_WEIGHTS = "best.npz"
START_WEIGHTS = "start.npz"
SEEDS = "seeds.npz"
STATE = CHECKPOINT_STATE


@dataclass
class ResumeState:
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    linear_start: dict | None = None  # the ridge fit's choices, for metrics.json at the end of a resumed run too
    purpose: str = "train"  # or "retrain": a candidate that must still be scored before it may be published
    start_version: str | None = None  # the version a warm run continues, whose scaler and layout it keeps


def load_state(directory: Path) -> ResumeState:
    path = directory / STATE
    if not path.is_file() or not (directory / LAST_MODEL).is_file():
        raise ResumeRefused(f"{directory}: no checkpoint to resume from; train without --resume")
    try:
        return ResumeState(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ResumeRefused(f"{path}: damaged checkpoint state ({exc}); train without --resume") from None


def load_best_weights(directory: Path) -> list[np.ndarray] | None:
    return _load_arrays(directory / BEST_WEIGHTS)


def save_start_weights(directory: Path, weights: list[np.ndarray]) -> None:
    """The weights training starts from (the linear start), which the end of a resumed run compares against."""
    directory.mkdir(parents=True, exist_ok=True)
    _replace(directory / START_WEIGHTS, lambda path: _save_arrays(path, weights))


def load_start_weights(directory: Path) -> list[np.ndarray] | None:
    return _load_arrays(directory / START_WEIGHTS)


def _load_arrays(path: Path) -> list[np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return [arrays[f"arr_{index}"] for index in range(len(arrays.files))]


def _seeded_layers(model) -> dict:
    """Layers that draw random numbers (dropout) and whose generator state is not part of the saved model."""
    return {layer.name: layer.seed_generator for layer in model.layers if getattr(layer, "seed_generator", None)}


def restore_seeds(model, directory: Path) -> None:
    """Puts the dropout generators back where the checkpoint left them, so the resumed epochs draw the same masks."""
    path = directory / SEEDS
    if not path.is_file():
        return
    with np.load(path, allow_pickle=False) as states:
        for name, generator in _seeded_layers(model).items():
            if name in states:
                generator.state.assign(states[name])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on the validation score (`val_mse`: `criterion.score`) whose counters and best weights survive
    a restart.

    An epoch counts as better only when it lowers the best score by more than the fraction `min_delta` of it
    (`criterion.improves`). With `start_mse` and `start_weights` (the linear start's validation score and weights), the
    start is the score to beat: epochs that do not beat it count towards patience, and when none does, its weights are
    restored.
    """

    def __init__(self, patience: int, min_delta: float, resumed: ResumeState | None = None, best_weights=None,
                 start_mse=None, start_weights=None):
        super().__init__(monitor="val_mse", mode="min", patience=patience, restore_best_weights=True)
        self.relative_min_delta = min_delta
        self.resumed = resumed
        self.resumed_weights = best_weights
        self.start_mse = start_mse
        self.start_weights = start_weights

    def _is_improvement(self, monitor_value, reference_value):
        return improves(float(monitor_value), None if reference_value is None else float(reference_value),
                        self.relative_min_delta)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed is not None and self.resumed.best is not None:
            self.best, self.best_epoch, self.wait = self.resumed.best, self.resumed.best_epoch, self.resumed.wait
            self.best_weights = self.resumed_weights if self.resumed_weights is not None else self.start_weights
        elif self.start_mse is not None and self.start_weights is not None:
            self.best, self.best_weights = self.start_mse, self.start_weights


def plateau_learning_rate(val_mse: list[float], start_mse: float | None, base: float, patience: int,
                          min_delta: float = 0.0, factor: float = 0.5) -> float:
    """The learning rate for the epoch after those whose validation scores are `val_mse`: `base`, times `factor` each
    time `patience` epochs in a row have not improved on the best so far (`criterion.improves` by `min_delta`; the
    linear start's `start_mse` included), the count starting again after each drop. A function of the history alone,
    so a resumed run picks up the same rate. patience 0: always `base`."""
    rate, best, wait = base, start_mse, 0
    for value in val_mse:
        if improves(value, best, min_delta):
            best, wait = value, 0
            continue
        wait += 1
        if patience and wait >= patience:
            rate, wait = rate * factor, 0
    return rate


class PlateauLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each epoch from `plateau_learning_rate` over the history so far."""

    def __init__(self, state: ResumeState, base: float, patience: int, min_delta: float, start_mse: float | None = None):
        super().__init__()
        self.state, self.base, self.patience, self.start_mse = state, base, patience, start_mse
        self.min_delta = min_delta

    def on_epoch_begin(self, epoch, logs=None):
        history = [entry["val_mse"] for entry in self.state.history if "val_mse" in entry]
        rate = plateau_learning_rate(history, self.start_mse, self.base, self.patience, self.min_delta)
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class HistoryRecorder(keras.callbacks.Callback):
    """Keeps the per-epoch logs and early stopping's counters in a ResumeState."""

    def __init__(self, early_stopping: ResumableEarlyStopping, state: ResumeState):
        super().__init__()
        self.early_stopping = early_stopping
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        stopping = self.early_stopping
        self.state.epoch = epoch + 1
        self.state.best = None if stopping.best is None else float(stopping.best)
        self.state.best_epoch, self.state.wait = int(stopping.best_epoch), int(stopping.wait)
        self.state.stopped = bool(self.model.stop_training)
        self.state.history.append({"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}})


class EpochCheckpoint(HistoryRecorder):
    """Also writes the checkpoint files at the end of every epoch (after early stopping has updated its counters)."""

    def __init__(self, directory: Path, early_stopping: ResumableEarlyStopping, state: ResumeState):
        super().__init__(early_stopping, state)
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.directory.mkdir(parents=True, exist_ok=True)
        _replace(self.directory / LAST_MODEL, lambda path: self.model.save(path))
        seeds = {name: keras.ops.convert_to_numpy(generator.state) for name, generator in _seeded_layers(self.model).items()}
        _replace(self.directory / SEEDS, lambda path: _save_arrays(path, **seeds))
        stopping = self.early_stopping
        if stopping.best_epoch == epoch and stopping.best_weights is not None:
            _replace(self.directory / BEST_WEIGHTS, lambda path: _save_arrays(path, stopping.best_weights))
        _replace(self.directory / STATE, lambda path: path.write_text(json.dumps(self.state.__dict__), encoding="utf-8"))


class OneValidationScore(keras.callbacks.Callback):
    """Leaves `val_mse` as the one validation number in the epoch logs (progress line, log file, history.csv).

    Early stopping watches `val_mse`, the exact weighted MSE over the whole validation set under the score's weights
    (`criterion.score`); Keras' `val_loss` averages per-batch losses instead, which counts a half-empty batch fully.
    Runs first, so every callback after it (Keras' progress bar and history too) sees the logs without `val_loss`.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.pop("val_loss", None)


class EpochLogger(keras.callbacks.Callback):
    """One line per epoch through the caller's logger, instead of Keras' own progress output."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        # The scores first, then the learning rate, with the digits a halved rate needs
        logs = logs or {}
        values = [f"{key} {logs[key]:.4f}" for key in sorted(logs) if key != "learning_rate"]
        if "learning_rate" in logs:
            values.append(f"learning_rate {logs['learning_rate']:.3g}")
        self.log(f"epoch {epoch + 1}: {' '.join(values)}")


def _save_arrays(path: Path, arrays=(), **named) -> None:
    with path.open("wb") as writer:
        np.savez(writer, *arrays, **named)


def _replace(path: Path, write) -> None:
    """Writes through a temporary file in the same directory and renames it over `path`."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(temporary)
    os.replace(temporary, path)
