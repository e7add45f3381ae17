"""The configuration: one frozen dataclass, read from TOML, overridden by flags, saved with the model as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from forecast.errors import ForecastError


@dataclass(frozen=True)
class Config:
    """Everything train used, so that predict and retrain read exactly the same settings.

    Column roles: `target` is forecast; `sim` columns are known over the horizon (a simulation's output, a weather
    forecast); `bg` columns are static attributes of the series, read at the forecast origin; `past` columns are history
    covariates (None: every numeric column without another role). Calendar features of the horizon and of the origin are
    always added to sim and bg.
    """

    target: str | None = None
    time_column: str | None = None
    time_columns: tuple[str, ...] = ()
    sim: tuple[str, ...] = ()
    bg: tuple[str, ...] = ()
    past: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    sim_in_history: bool = True
    target_min: float | None = None  # forecasts are clipped to [target_min, target_max] in the target's units
    target_max: float | None = None
    target_units: str = ""  # the target's units as a reader writes them (mm/day, kW); pictures and info show them
    quantiles: tuple[float, ...] = (0.1, 0.9)  # levels of the forecast intervals (forecast.intervals); () for none
    gaps: str = "refuse"
    max_gap: int = 24
    skip_rows: int = 0  # lines before the header (station metadata), saved so predict and retrain read the same way
    id_column: str | None = None  # long format: the column naming the series each row belongs to
    static: str | None = None  # CSV of static attributes per series, keyed by id_column; they feed bg
    holdout_series: tuple[str, ...] = ()  # ids kept out of training entirely, to score on series never seen
    scaling: str = "series"  # z-score each series on its own training rows, or all series with one "global" scaler
    series_weight: str = "none"  # "naive": weight each series' errors by 1 / its Repeat MSE on its training rows
    attribute_terms: bool = False  # linear terms times each series' attributes (model.AttributeProducts)

    lookback: int = 96
    horizon: int = 24
    batch_size: int = 32
    stateful: bool = True
    stream_chunks: int = 4
    units: int = 64
    head_units: int = 64
    dropout: float = 0.0
    head_dropout: float = 0.3
    decoder: bool = True  # an LSTM over the horizon's sim, started from the history's state (model._decoder_head)
    linear_start: bool = True
    members: int = 1  # networks trained from seeds seed, seed + 1, ...; their forecasts averaged (forecast.ensemble)

    train_end: str | None = None
    val_end: str | None = None
    validation_fraction: float = 0.2

    epochs: int = 30
    initial_epoch: int = 0
    learning_rate: float = 1e-3
    patience: int = 5
    min_delta: float = 1e-3  # the relative gain in the validation score an epoch needs to count as better (criterion)
    lr_patience: int = 0  # epochs without validation gain before the learning rate halves (0: never)
    verbose: int | None = None
    checkpoints: bool = True
    keep_versions: int = 5
    tensorboard_dir: str | None = None
    seed: int = 0
    data_pipeline: str = "tfdata"  # "tfdata": batches gathered in TensorFlow; "pydataset"/"generator": cut in Python
    workers: int = 1
    use_multiprocessing: bool = False
    max_queue_size: int = 10
    distribute: str = "none"
    executor: str = "local"  # where the networks train: "local" (this process, one after the other) or "ray" (tasks)
    ray_address: str = ""  # with executor = "ray": "" starts Ray on this machine; "auto" or "HOST:PORT" joins a cluster
    cpus_per_task: int = 1  # CPUs Ray reserves for each network's task, and TensorFlow's threads in it
    gpus_per_task: float = 0.0  # GPUs Ray reserves for each network's task (1: one network per GPU)

    def __post_init__(self) -> None:
        _check_types(self)
        positive = ("lookback", "horizon", "batch_size", "stream_chunks", "units", "head_units", "epochs", "keep_versions",
                    "workers", "max_queue_size", "members", "cpus_per_task")
        for name in positive:
            if getattr(self, name) < 1:
                raise ForecastError(f"config: {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ForecastError(f"config: validation_fraction must be between 0 and 1, got {self.validation_fraction}")
        for name in ("dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ForecastError(f"config: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.verbose not in (None, 0, 1, 2):
            raise ForecastError(f"config: verbose must be 0, 1 or 2, got {self.verbose}")
        if self.gaps not in ("refuse", "mask", "interpolate"):
            raise ForecastError(f"config: gaps must be 'refuse', 'mask' or 'interpolate', got {self.gaps!r}")
        for name, allowed in (("target_min", -math.inf), ("target_max", math.inf)):
            bound = getattr(self, name)
            if bound is not None and (math.isnan(bound) or (math.isinf(bound) and bound != allowed)):
                raise ForecastError(f"config: {name} must be a number (or {allowed} for no bound), got {bound}")
        if self.target_min is not None and self.target_max is not None and self.target_min >= self.target_max:
            raise ForecastError(f"config: target_min ({self.target_min}) must be below target_max ({self.target_max})")
        object.__setattr__(self, "quantiles", check_quantiles(self.quantiles))
        if self.skip_rows < 0:
            raise ForecastError(f"config: skip_rows must be at least 0, got {self.skip_rows}")
        if self.max_gap < 0:
            raise ForecastError(f"config: max_gap must be at least 0, got {self.max_gap}")
        if not (math.isfinite(self.learning_rate) and 0.0 < self.learning_rate <= 1.0):
            raise ForecastError(f"config: learning_rate must be above 0 and at most 1, got {self.learning_rate}")
        if not (math.isfinite(self.min_delta) and 0.0 <= self.min_delta < 0.5):
            raise ForecastError(f"config: min_delta must be at least 0 and below 0.5, got {self.min_delta}")
        for name in ("patience", "lr_patience"):
            if getattr(self, name) < 0:
                raise ForecastError(f"config: {name} must be at least 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ForecastError(f"config: seed must be between 0 and {2**32 - 1}, got {self.seed}")
        if self.seed + self.members > 2**32:  # the last network's seed is seed + members - 1
            raise ForecastError(f"config: seed + members - 1 must be below 2**32, got {self.seed + self.members - 1}; "
                                "lower seed or members")
        if self.scaling not in ("series", "global"):
            raise ForecastError(f"config: scaling must be 'series' or 'global', got {self.scaling!r}")
        if self.series_weight not in ("none", "naive"):
            raise ForecastError(f"config: series_weight must be 'none' or 'naive', got {self.series_weight!r}")
        if (self.static or self.holdout_series) and not self.id_column:
            raise ForecastError("config: static and holdout_series need id_column, the column naming each row's series")
        if self.data_pipeline not in ("tfdata", "pydataset", "generator"):
            raise ForecastError("config: data_pipeline must be 'tfdata', 'pydataset' or 'generator', got "
                                f"{self.data_pipeline!r}")
        if self.distribute not in ("none", "mirrored"):
            raise ForecastError(f"config: distribute must be 'none' or 'mirrored', got {self.distribute!r}")
        if self.distribute == "mirrored" and (
            self.data_pipeline == "generator" or self.workers > 1 or self.use_multiprocessing
        ):
            # Keras builds a distributed model from a batch of a fresh iterator and then resets it: a generator or a
            # worker queue has prefetched batches by then, which are lost, and the stateful streams shift.
            raise ForecastError(
                "config: distribute = \"mirrored\" needs data_pipeline = \"tfdata\", or \"pydataset\" with workers = 1 "
                "and use_multiprocessing = false (otherwise batches are lost before the first epoch)"
            )
        if self.executor not in ("local", "ray"):
            raise ForecastError(f"config: executor must be 'local' or 'ray', got {self.executor!r}")
        if not (math.isfinite(self.gpus_per_task) and self.gpus_per_task >= 0):
            raise ForecastError(f"config: gpus_per_task must be at least 0, got {self.gpus_per_task}")
        if self.initial_epoch < 0 or self.initial_epoch >= self.epochs:
            raise ForecastError(
                f"config: initial_epoch ({self.initial_epoch}) must be at least 0 and below epochs ({self.epochs})"
            )

    @property
    def chunks_per_stream(self) -> int:
        """Chunks a stateful stream walks before its state is reset; a stateless model sees one chunk at a time."""
        return self.stream_chunks if self.stateful else 1

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied; None values mean "not given" and keep the current value."""
        given = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, **_normalised(given))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ForecastError(f"{source}: unknown setting {unknown[0]!r}; known settings are: {', '.join(sorted(known))}")
        try:
            return cls(**_normalised(values))
        except ForecastError as exc:
            raise ForecastError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: Path, key: str | None = None) -> Config:
        """The configuration saved in `path` (under `key` when it is part of a larger record). A setting the record
        lacks was saved before it existed, so it takes the value that version behaved as (SAVED_BEFORE), not today's
        default: a warm retrain or a resumed run of an older model then builds the network it was trained as."""
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            values = values[key] if key else values
            values = {**SAVED_BEFORE, **values}
        except FileNotFoundError:
            raise ForecastError(f"{path}: not found; nothing to read the configuration from") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved configuration ({exc}); retrain the model") from None
        return cls.from_dict(values, str(path))

    @classmethod
    def from_toml(cls, path: Path) -> Config:
        """The settings of the TOML file at `path`; its tables for other commands (TABLES) are left to them."""
        values = read_toml(path)
        return cls.from_dict({key: value for key, value in values.items()
                              if not (key in TABLES and isinstance(value, dict))}, str(path))


# Tables a TOML file may hold beside the settings, each read by the command it is for: [tune], `forecast tune`'s
# search space (forecast.search_space), so that one file serves train and tune.
TABLES = ("tune",)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at `path`, parsed; one line where it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ForecastError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ForecastError(f"{path}: not a valid TOML file ({exc})") from None


# Settings whose default changed, with the value a configuration saved before they existed behaved as.
SAVED_BEFORE = {"decoder": False, "min_delta": 0.0}


def check_quantiles(quantiles: tuple[float, ...], source: str = "config") -> tuple[float, ...]:
    """The quantile levels, ascending; each strictly between 0 and 1 and given once."""
    if any(not 0.0 < q < 1.0 for q in quantiles):
        raise ForecastError(f"{source}: quantiles must lie strictly between 0 and 1, got {list(quantiles)}")
    if len(set(quantiles)) != len(quantiles):
        raise ForecastError(f"{source}: a quantile is given twice in {list(quantiles)}")
    return tuple(sorted(float(q) for q in quantiles))


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """Lists become tuples so that the frozen config stays hashable and compares equal after a JSON round trip."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def _check_types(config: Config) -> None:
    """Checks each value against its declared type, so a TOML typo fails here and not deep inside training."""
    hints = typing.get_type_hints(Config)
    for field in fields(config):
        value = getattr(config, field.name)
        if not _matches(value, hints[field.name]):
            raise ForecastError(f"config: {field.name} has the wrong type: {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(item, typing.get_args(hint)[0]) for item in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
