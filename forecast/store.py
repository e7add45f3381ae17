"""The model store: versioned model directories, an atomic pointer to the current one, and a lock per model.

    models/NAME/
        current -> versions/0003     relative symlink, replaced in one rename: always a complete version
        versions/0001/ ...           the last `keep_versions` complete model directories
        .staging/                    the run in progress and its per-epoch checkpoints
        .lock                        held by train and retrain, so two runs never overlap

A model directory holds `model.keras` (loaded in Keras safe mode), `config.json` (the configuration train used, with
the resolved column roles), `scaler.json`, `schema.json` (frequency, input channels, training range, data digests),
`history.csv`, `metrics.json`, `intervals.json` (the interval calibration, see intervals.py), `training.png` and, for a
model with static attributes, `statics.json`. Nothing is pickled. Read back, a version is checked whole (see
store_checks.py); no command but train and retrain writes inside a model directory (`check_output`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from forecast.config import Config
from forecast.errors import ForecastError
from forecast.features import InputLayout
from forecast.intervals import Calibration
from forecast.scaling import Scalers
from forecast.statics import StaticEncoder
from forecast.store_checks import check_contained, check_sealed_files, check_trained_ids
from forecast.validation import DIGEST_BLOCK

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
SCALER_FILE = "scaler.json"
SCHEMA_FILE = "schema.json"
STATICS_FILE = "statics.json"  # the attributes of each series, for a model trained with --static
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
INTERVALS_FILE = "intervals.json"
TRAINING_PLOT = "training.png"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, SCALER_FILE, SCHEMA_FILE)


@dataclass(frozen=True)
class SeriesRecord:
    """One series' share of the training data: `rows` observed rows up to `last_time`, rows [0, train_rows) trained on
    and [train_rows, val_end) validated (val_end None in schemas saved before it was kept), and one fingerprint per
    DIGEST_BLOCK of the `rows` rows, so that a retrain can tell grown data from rewritten history."""

    id: str
    train_rows: int
    rows: int
    last_time: str
    digests: tuple[str, ...]
    val_end: int | None = None
    val_time: str | None = None  # the time of the last validation row
    train_time: str | None = None  # the time of the last training row

    def __post_init__(self) -> None:
        if not 0 < self.train_rows <= self.rows:
            raise ValueError(f"train_rows must be between 1 and rows ({self.rows}), got {self.train_rows}")
        if self.val_end is not None and not self.train_rows < self.val_end <= self.rows:
            raise ValueError(f"val_end must be above train_rows ({self.train_rows}) and at most rows ({self.rows})")
        if len(self.digests) != math.ceil(self.rows / DIGEST_BLOCK):
            raise ValueError(f"{len(self.digests)} digests for {self.rows} rows; expected one per {DIGEST_BLOCK} rows")
        if not all(re.fullmatch("[0-9a-f]{16}", digest) for digest in self.digests):
            raise ValueError("a digest is not 16 hexadecimal digits")

    def to_dict(self) -> dict:
        return {"id": self.id, "train_rows": self.train_rows, "val_end": self.val_end, "rows": self.rows,
                "last_time": self.last_time, "train_time": self.train_time, "val_time": self.val_time,
                "digests": self.digests}

    @classmethod
    def from_dict(cls, data: dict, series_id: str = "") -> SeriesRecord:
        return cls(
            str(data.get("id", series_id)), int(data["train_rows"]), int(data["rows"]), str(data["last_time"]),
            tuple(data["digests"]), None if data.get("val_end") is None else int(data["val_end"]),
            None if data.get("val_time") is None else str(data["val_time"]),
            None if data.get("train_time") is None else str(data["train_time"]),
        )


@dataclass(frozen=True)
class Schema:
    """What the model expects of a CSV besides the configuration, and a fingerprint of the data it was trained on.

    `series` holds a record per trained series (one, id "", for a file without an id column); `holdout` names the
    series kept out of training; `columns` is the training file's header (empty for models saved before it was kept).
    """

    freq: pd.Timedelta
    layout: InputLayout
    series: tuple[SeriesRecord, ...]
    columns: tuple[str, ...] = ()
    business_days: bool = False  # the steps are business days (freq is one day)
    holdout: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.freq <= pd.Timedelta(0):
            raise ValueError(f"freq must be positive, got {self.freq}")
        if not self.series:
            raise ValueError("no series record")

    def record(self, series_id: str) -> SeriesRecord | None:
        """The training record of a series; None for one the model was not trained on."""
        return next((record for record in self.series if record.id == series_id), None)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(record.id for record in self.series)

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
                "series": [record.to_dict() for record in self.series],
                "columns": self.columns,
                "business_days": self.business_days,
                "holdout": self.holdout,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, path: Path) -> Schema:
        """Reads a schema; one saved before series had ids holds the one series' record at its top level."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            layout = {key: tuple(value) for key, value in data["layout"].items()}
            records = [SeriesRecord.from_dict(item) for item in data["series"]] if "series" in data else [
                SeriesRecord.from_dict(data)
            ]
            return cls(
                pd.Timedelta(data["freq"]), InputLayout(**layout), tuple(records), tuple(data.get("columns", ())),
                bool(data.get("business_days", False)), tuple(map(str, data.get("holdout", ()))),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved schema ({exc}); roll back or retrain the model") from None


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


def check_output(path: Path, store: str | Path, option: str) -> None:
    """Refuses an output path (a file, or a folder to write into) inside a model directory of the store: only train
    and retrain write there, so that a forecast can never land on a version's scaler.json. The store's root itself
    may hold other files (the nightly wrapper keeps each model's log beside it)."""
    root = Path(store).resolve()
    target = Path(path).resolve()
    for folder in (target, *target.parents):
        if not _inside(folder, root):
            return
        if folder.is_dir() and any(os.path.lexists(folder / name) for name in MODEL_MARKS):
            raise ForecastError(f"{path}: {option} lies inside the model directory {folder}, which only train and "
                                "retrain may write to; write it outside the model store's model directories")


def discard_unpublished(root: Path) -> None:
    """Removes the directory a refused first training created, so that the refusal leaves the store as it was; one
    that holds a version or an interrupted run's checkpoint, or whose lock another run holds, stays."""
    if not root.is_dir() or os.path.lexists(root / CURRENT) or (root / VERSIONS).exists():
        return
    if (checkpoint_dir(root) / CHECKPOINT_STATE).is_file():
        return
    with contextlib.suppress(LockHeld), locked(root):
        shutil.rmtree(root)


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
# What makes a folder a model directory, or a version of one: writing there is the store's own business.
MODEL_MARKS = (CURRENT, VERSIONS, ".lock", ".staging", *REQUIRED_FILES)
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; cron may simply try again later


class LockHeld(ForecastError):
    """Another train or retrain of the same model is running."""

    exit_code = EXIT_LOCKED


_held: set[Path] = set()


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Holds the model's lock for the block; the kernel releases it when the process dies, so a crash leaves none.

    Re-entrant within a process: the command takes the lock before its heavy imports, so that a second run stops at
    once, and the library call inside takes it again.
    """
    root = root.resolve()
    if root in _held:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{root}: another train or retrain of this model is running; this run stopped") from None
        _held.add(root)
        try:
            yield
        finally:
            _held.discard(root)


def versions(root: Path) -> list[str]:
    folder = root / VERSIONS
    return sorted(path.name for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def current_version(root: Path) -> Path:
    """The directory `predict` reads: the version `current` points to (or `root` itself for a plain model directory)."""
    pointer = root / CURRENT
    if pointer.exists():
        target = pointer.resolve()
        if target.parent != (root / VERSIONS).resolve():
            raise ForecastError(
                f"{pointer}: points to {target}, which is not a version of this model; "
                "`forecast models rollback --to VERSION` points it back"
            )
        return target
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
    if version not in versions(root) or not (root / VERSIONS / version / MODEL_FILE).is_file():
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


# The entries of metrics.json that listings, pruning and retrains read, and the types they must have.
METRIC_TYPES = {"reference_version": (str, type(None)), "model_kind": str, "created": str, "epochs": int,
                "member_epochs": list, "last_epoch": int, "validation": dict, "holdout": dict, "intervals": dict,
                "tune": dict}


def kept_epochs(metrics: dict) -> str:
    """The epoch whose weights a version holds, in words: "epoch 7", or an ensemble's "epochs 7, 9, 12"."""
    members = metrics.get("member_epochs")
    if members:
        return f"epochs {', '.join(str(epoch) for epoch in members)}"
    return f"epoch {metrics.get('epochs', '?')}"


def read_metrics(model_dir: Path) -> dict:
    """A version's metrics.json, or {} where it is missing or unreadable (it only informs listings and retrains); an
    entry of METRIC_TYPES with another type (a damaged or altered file) is left out."""
    try:
        metrics = json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    return {key: value for key, value in metrics.items() if isinstance(value, METRIC_TYPES.get(key, object))}


def rollback(root: Path, to: str | None = None) -> str:
    """Points `current` at version `to`, or at the version before the current one."""
    names = versions(root)
    if to is None:
        current = current_version(root).name
        older = [name for name in names if name < current]
        if not older:
            raise ForecastError(f"{root}: version {current} is the oldest kept; there is nothing to roll back to")
        to = older[-1]
    point_current(root, to)
    return to


def describe_versions(root: Path) -> list[dict]:
    """One row per kept version: when it was made, the epoch its weights come from (0: the linear start), its scores,
    and the kind of model kept."""
    current = current_version(root).name
    rows = []
    for name in versions(root):
        metrics = read_metrics(root / VERSIONS / name)
        holdout = metrics.get("holdout", {}).get("candidate_mse")
        model = metrics.get("validation", {}).get("model")
        val_mse = model.get("mse") if isinstance(model, dict) else None
        rows.append({
            "version": name,
            "current": name == current,
            "created": metrics.get("created", "?"),
            "epochs": metrics.get("epochs", metrics.get("last_epoch", "?")),
            "kind": metrics.get("model_kind", "?"),
            "val_mse": float(val_mse) if isinstance(val_mse, (int, float)) else float("nan"),
            "holdout_mse": f"{holdout:.4f}" if isinstance(holdout, (int, float)) else "-",
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


@dataclass(frozen=True)
class SavedModel:
    """A model directory read back: its JSON files, checked against each other, and (once loaded) the Keras model at
    the batch size of training."""

    path: Path
    config: Config
    scaler: Scalers
    schema: Schema
    model: Any = None
    statics: StaticEncoder | None = None
    intervals: Calibration | None = None  # None: a model saved without intervals (quantiles = [], or before them)


def check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise ForecastError(f"{model_dir}: no model directory here; train one with `forecast train DATA.csv`")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ForecastError(f"{model_dir}: not a complete model directory (missing {', '.join(missing)}); retrain it")
    check_contained(model_dir)


def read_saved(model_dir: Path) -> SavedModel:
    """The configuration, scaler, schema and interval calibration of a model directory, without the network (light: no
    TensorFlow)."""
    check_model_dir(model_dir)
    config = Config.from_json(model_dir / CONFIG_FILE)
    scaler = Scalers.from_json(model_dir / SCALER_FILE)
    scaler.check_covers((config.target, *(config.past or ()), *config.sim, *config.bg), model_dir / SCALER_FILE)
    statics = StaticEncoder.from_json(model_dir / STATICS_FILE) if (model_dir / STATICS_FILE).is_file() else None
    intervals = None
    if (model_dir / INTERVALS_FILE).is_file():
        intervals = Calibration.from_json(model_dir / INTERVALS_FILE, config.horizon)
        if intervals.quantiles != config.quantiles:
            raise ForecastError(
                f"{model_dir / INTERVALS_FILE}: calibrated for quantiles {list(intervals.quantiles)}, but config.json "
                f"asks for {list(config.quantiles)}; the files were changed after training: roll back or retrain"
            )
    schema = Schema.from_json(model_dir / SCHEMA_FILE)
    # After each file's own checks, so that a value out of range is named as such rather than as a changed file.
    check_trained_ids(model_dir, schema.ids, scaler)
    check_sealed_files(model_dir, (SCALER_FILE, STATICS_FILE, INTERVALS_FILE))
    return SavedModel(model_dir, config, scaler, schema, statics=statics, intervals=intervals)


def with_network(saved: SavedModel, loader: Callable[[Path], Any]) -> SavedModel:
    """`saved` with its network, loaded by `loader` (kept out of here so this module stays light), whose input shapes
    must be those the configuration and schema describe."""
    model = loader(saved.path / MODEL_FILE)
    layout, config = saved.schema.layout, saved.config
    expected = {
        "sim": (config.horizon, len(layout.sim)),
        "lstm": (config.lookback, len(layout.history)),
        "bg": (len(layout.bg),),
    }
    for tensor in model.inputs:
        if expected.get(tensor.name) != tuple(tensor.shape[1:]):
            raise ForecastError(
                f"{saved.path}: the network's {tensor.name} input has shape {tuple(tensor.shape[1:])}, but config.json "
                f"and schema.json describe {expected.get(tensor.name)} (lookback {config.lookback}, horizon "
                f"{config.horizon}); the files were changed after training: roll back or retrain the model"
            )
    return dataclasses.replace(saved, model=model)
