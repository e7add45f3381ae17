"""The model directory: what train writes, how it is replaced without a half-written state, and how it is read back.

A model directory holds `model.keras` (loaded in Keras safe mode), `config.json` (the configuration train used, with
the resolved column roles), `scaler.json`, `schema.json` (frequency, input channels, training range), `history.csv`
and `metrics.json`. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from forecast.config import Config
from forecast.errors import ForecastError
from forecast.features import InputLayout
from forecast.scaling import Scaler

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
SCALER_FILE = "scaler.json"
SCHEMA_FILE = "schema.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, SCALER_FILE, SCHEMA_FILE)


@dataclass(frozen=True)
class Schema:
    """What the model expects of a CSV besides the configuration."""

    freq: pd.Timedelta
    layout: InputLayout
    train_rows: int
    last_time: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "freq": self.freq.isoformat(),
                "layout": {
                    "history": self.layout.history,
                    "sim": self.layout.sim,
                    "bg": self.layout.bg,
                    "sim_columns": self.layout.sim_columns,
                },
                "train_rows": self.train_rows,
                "last_time": self.last_time,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, path: Path) -> Schema:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            layout = {key: tuple(value) for key, value in data["layout"].items()}
            return cls(pd.Timedelta(data["freq"]), InputLayout(**layout), int(data["train_rows"]), str(data["last_time"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved schema ({exc}); retrain the model") from None


DEFAULT_STORE = "models"


def resolve_model_path(value: str | Path, store: str | Path = DEFAULT_STORE) -> Path:
    """The model directory for a name (`ETTh1`) or a path (`models/ETTh1`), which must lie inside the store.

    A path relative to the working directory that points into the store is taken as it is; anything else is read
    relative to the store. Whatever resolves outside it (`../x`, an absolute path elsewhere, a symlink out) is refused,
    so that a model name from a script can never make forecast read or replace files elsewhere.
    """
    root = Path(store).resolve()
    given = Path(value)
    candidate = given if given.is_absolute() or _inside(given.resolve(), root) else root / given
    resolved = candidate.resolve()
    if not _inside(resolved, root):
        raise ForecastError(
            f"{value}: model path is outside the model store {root}; name a model inside it or pass --store"
        )
    return resolved


def _inside(path: Path, root: Path) -> bool:
    return path != root and root in path.parents


def staging_dir(model_dir: Path) -> Path:
    """Where a model is assembled (and its checkpoints kept) before it replaces `model_dir` in one rename."""
    return model_dir.parent / f".{model_dir.name}.partial"


def checkpoint_dir(model_dir: Path) -> Path:
    """Per-epoch checkpoints of a training run in progress (see checkpoint.py); gone once the model is published."""
    return staging_dir(model_dir) / "checkpoints"


CHECKPOINT_STATE = "state.json"


def publish(staging: Path, model_dir: Path) -> None:
    """Moves a finished staging directory into place; the old model is kept aside until the new one is in."""
    previous = model_dir.parent / f".{model_dir.name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if model_dir.exists():
        os.replace(model_dir, previous)
    os.replace(staging, model_dir)
    shutil.rmtree(previous, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n", encoding="utf-8")


@dataclass
class SavedModel:
    """A model directory read back: the Keras model (batch size of training) and everything needed around it."""

    path: Path
    config: Config
    scaler: Scaler
    schema: Schema
    model: Any


def check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise ForecastError(f"{model_dir}: no model directory here; train one with `forecast train DATA.csv`")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ForecastError(f"{model_dir}: not a complete model directory (missing {', '.join(missing)}); retrain it")


def load_saved(model_dir: Path, loader: Callable[[Path], Any]) -> SavedModel:
    """Reads a model directory; `loader` turns model.keras into a Keras model (kept out of here so this stays light)."""
    check_model_dir(model_dir)
    return SavedModel(
        path=model_dir,
        config=Config.from_json(model_dir / CONFIG_FILE),
        scaler=Scaler.from_json(model_dir / SCALER_FILE),
        schema=Schema.from_json(model_dir / SCHEMA_FILE),
        model=loader(model_dir / MODEL_FILE),
    )
