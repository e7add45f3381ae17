"""The model store: versioned model directories, an atomic pointer to the current one, and a lock per model.

    models/NAME/
        current -> versions/0003     relative symlink, replaced in one rename: always a complete version
        versions/0001/ ...           the last `keep_versions` complete model directories
        .staging/                    the run in progress and its per-epoch checkpoints
        .lock                        held by train and retrain, so two runs never overlap

A model directory holds `model.keras` (loaded in Keras safe mode), `config.json` (the configuration train used, with
the resolved column roles), `scaler.json`, `schema.json` (frequency, input channels, training range, data digests),
`history.csv` and `metrics.json`. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
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
    """What the model expects of a CSV besides the configuration, and a fingerprint of the data it was trained on."""

    freq: pd.Timedelta
    layout: InputLayout
    train_rows: int
    last_time: str
    rows: int = 0
    digests: tuple[str, ...] = ()
    val_end: int | None = None  # rows [train_rows, val_end) validated the model; None in schemas saved before this
    business_days: bool = False  # the steps are business days (freq is one day)

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
                "rows": self.rows,
                "digests": self.digests,
                "val_end": self.val_end,
                "business_days": self.business_days,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, path: Path) -> Schema:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            layout = {key: tuple(value) for key, value in data["layout"].items()}
            return cls(
                pd.Timedelta(data["freq"]), InputLayout(**layout), int(data["train_rows"]), str(data["last_time"]),
                int(data.get("rows", 0)), tuple(data.get("digests", ())),
                None if data.get("val_end") is None else int(data["val_end"]), bool(data.get("business_days", False)),
            )
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


def staging_dir(root: Path) -> Path:
    """Where a model is assembled (and its checkpoints kept) before it becomes a version."""
    return root / ".staging"


def checkpoint_dir(root: Path) -> Path:
    """Per-epoch checkpoints of a training run in progress (see checkpoint.py); gone once the model is published."""
    return staging_dir(root) / "checkpoints"


CHECKPOINT_STATE = "state.json"
CURRENT = "current"
VERSIONS = "versions"
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; cron may simply try again later


class LockHeld(ForecastError):
    """Another train or retrain of the same model is running."""

    exit_code = EXIT_LOCKED


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Holds the model's lock for the block; the kernel releases it when the process dies, so a crash leaves none."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{root}: another train or retrain of this model is running; this run stopped") from None
        yield


def versions(root: Path) -> list[str]:
    folder = root / VERSIONS
    return sorted(path.name for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def current_version(root: Path) -> Path:
    """The directory `predict` reads: the version `current` points to (or `root` itself for a plain model directory)."""
    pointer = root / CURRENT
    if pointer.exists():
        return pointer.resolve()
    if all((root / name).is_file() for name in REQUIRED_FILES):
        return root
    raise ForecastError(f"{root}: no model here; train one with `forecast train DATA.csv`")


def publish(staging: Path, root: Path, keep: int) -> str:
    """Turns a finished staging directory into the next version and points `current` at it, then prunes old versions.

    Both steps are single renames, so a crash at any moment leaves `current` on a complete version, old or new.
    """
    existing = versions(root)
    name = f"{int(existing[-1]) + 1:04d}" if existing else "0001"
    (root / VERSIONS).mkdir(parents=True, exist_ok=True)
    os.replace(staging, root / VERSIONS / name)
    point_current(root, name)
    prune(root, keep)
    return name


def point_current(root: Path, version: str) -> None:
    if not (root / VERSIONS / version / MODEL_FILE).is_file():
        raise ForecastError(f"{root}: no complete version {version!r}; `forecast models list` shows the versions")
    temporary = root / f".{CURRENT}.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS}/{version}", temporary)
    os.replace(temporary, root / CURRENT)
    _sync_directory(root)


def prune(root: Path, keep: int) -> None:
    """Deletes the oldest versions beyond the newest `keep`, never the current one nor its retrains' fixed reference."""
    current = current_version(root)
    kept = {current.name, read_metrics(current).get("reference_version")}
    for name in versions(root)[:-keep]:
        if name not in kept:
            shutil.rmtree(root / VERSIONS / name)


def read_metrics(model_dir: Path) -> dict:
    """A version's metrics.json, or {} where it is missing or unreadable (it only informs listings and retrains)."""
    try:
        return json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def rollback(root: Path, to: str | None = None) -> str:
    """Points `current` at version `to`, or at the version before the current one."""
    names = versions(root)
    current = current_version(root).name
    if to is None:
        older = [name for name in names if name < current]
        if not older:
            raise ForecastError(f"{root}: version {current} is the oldest kept; there is nothing to roll back to")
        to = older[-1]
    point_current(root, to)
    return to


def describe_versions(root: Path) -> list[dict]:
    """One row per kept version: when it was made, how far it trained, and its scores."""
    current = current_version(root).name
    rows = []
    for name in versions(root):
        try:
            metrics = json.loads((root / VERSIONS / name / METRICS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
        holdout = metrics.get("holdout", {}).get("candidate_mse")
        rows.append({
            "version": name,
            "current": name == current,
            "created": metrics.get("created", "?"),
            "last_epoch": metrics.get("last_epoch", "?"),
            "val_mse": metrics.get("validation", {}).get("model", {}).get("mse", float("nan")),
            "holdout_mse": f"{holdout:.4f}" if holdout is not None else "-",
        })
    return rows


def _sync_directory(path: Path) -> None:
    """Makes a rename in `path` durable, so a power cut cannot bring back the old pointer."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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


def load_saved(
    model_dir: Path, loader: Callable[[Path], Any], config: Config | None = None, schema: Schema | None = None
) -> SavedModel:
    """Reads a model directory; `loader` turns model.keras into a Keras model (kept out of here so this stays light).

    `config` and `schema`, when the caller has already read them from `model_dir`, are used instead of reading again.
    """
    check_model_dir(model_dir)
    return SavedModel(
        path=model_dir,
        config=config or Config.from_json(model_dir / CONFIG_FILE),
        scaler=Scaler.from_json(model_dir / SCALER_FILE),
        schema=schema or Schema.from_json(model_dir / SCHEMA_FILE),
        model=loader(model_dir / MODEL_FILE),
    )
