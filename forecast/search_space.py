"""The settings `forecast tune` searches: each one a list of choices or a range, from defaults around the configured
values and the TOML file's `[tune]` table, with the number of trials and the time budget; all checked before any trial
starts, so that a mistake ends in one line instead of in every trial.

    [tune]
    trials = 16
    time_budget = 3600                                      # seconds; none: no limit
    lookback = [14, 30, 60]                                 # choices
    learning_rate = { min = 1e-4, max = 1e-2, log = true }  # a range, drawn log-uniformly
    decoder = [true]                                        # one choice: fixed
    default_space = false                                   # search only what the table names

Ray Tune is imported only when the trials are drawn (`param_space`).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Any

from forecast.config import Config
from forecast.errors import ForecastError

# The settings a search may vary: the model's shape and its training, never the data, the split or the horizon.
SEARCHABLE = ("lookback", "stream_chunks", "units", "decoder", "dropout", "learning_rate", "head_units",
              "head_dropout", "batch_size", "sim_in_history", "attribute_terms", "series_weight", "lr_patience")
OPTIONS = ("trials", "time_budget", "default_space")
DEFAULT_TRIALS = 8
DEFAULT_DROPOUTS = (0.0, 0.1, 0.25)


@dataclass(frozen=True)
class Choices:
    """Values to draw from, each equally likely."""

    values: tuple

    @property
    def varies(self) -> bool:
        return len(set(self.values)) > 1

    def domain(self, tune):
        return tune.choice(list(self.values)) if self.varies else self.values[0]

    def describe(self) -> str:
        return "{" + ", ".join(shown(value) for value in self.values) + "}" if self.varies else shown(self.values[0])

    def to_json(self) -> list:
        return list(self.values)


@dataclass(frozen=True)
class Range:
    """Values from `low` to `high` (both included), drawn uniformly or, with `log`, log-uniformly; whole numbers for an
    `integer` setting."""

    low: float
    high: float
    log: bool
    integer: bool

    @property
    def varies(self) -> bool:
        return self.low < self.high

    def domain(self, tune):
        if not self.varies:
            return self.low
        if self.integer:  # Tune's integer ranges leave out their upper end
            return (tune.lograndint if self.log else tune.randint)(int(self.low), int(self.high) + 1)
        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)

    def describe(self) -> str:
        return f"{shown(self.low)} to {shown(self.high)}{' (log)' if self.log else ''}"

    def to_json(self) -> dict:
        return {"min": self.low, "max": self.high, "log": self.log}


@dataclass(frozen=True)
class SearchSpace:
    """What a search tries: each searched setting's `Choices` or `Range` (in the order the trials' settings are shown),
    the number of trials and the time budget in seconds (None: none)."""

    settings: dict
    trials: int
    time_budget: float | None

    @classmethod
    def read(cls, table: Any, config: Config, source: str, trials: int | None = None,
             time_budget: float | None = None) -> SearchSpace:
        """The search space of the `[tune]` table `table` (None: no table) of the file `source`, over the defaults
        around `config` (`default_space`); `trials` and `time_budget` (flags) override the table's."""
        where = f"{source}: [tune]"
        if table is None:
            table = {}
        if not isinstance(table, dict):
            raise ForecastError(f"{source}: tune must be a table ([tune]) of settings to search")
        searched = {name: value for name, value in table.items() if name not in OPTIONS}
        _check_names(searched, where)
        use_defaults = table.get("default_space", True)
        if not isinstance(use_defaults, bool):
            raise ForecastError(f"{where} default_space must be true or false, got {use_defaults!r}")
        settings = default_space(config) if use_defaults else {}
        settings.update({name: _dimension(name, value, config, where) for name, value in searched.items()})
        if not any(dimension.varies for dimension in settings.values()):
            raise ForecastError(f"{where}: the search space is empty: no setting has two values to try; give a "
                                "setting a list of choices or a range { min, max }")
        trials = _trials(table.get("trials", DEFAULT_TRIALS) if trials is None else trials,
                         f"{where} trials" if trials is None else "--trials")
        budget = _budget(table.get("time_budget") if time_budget is None else time_budget,
                         f"{where} time_budget" if time_budget is None else "--time-budget")
        return cls(settings, trials, budget)

    def param_space(self) -> dict:
        """The space as Ray Tune's `param_space`: a sampling domain per setting that varies, the value of one that
        does not."""
        from ray import tune

        return {name: dimension.domain(tune) for name, dimension in self.settings.items()}

    def describe(self) -> str:
        return ", ".join(f"{name} {dimension.describe()}" for name, dimension in self.settings.items())

    def to_json(self) -> dict:
        return {"settings": {name: dimension.to_json() for name, dimension in self.settings.items()},
                "trials": self.trials, "time_budget": self.time_budget}


def default_space(config: Config) -> dict:
    """The default search: lookback, stream chunks (stateful models) and units halved, as configured and doubled; the
    decoder on and off; dropout 0, 0.1 and 0.25; the learning rate from a third to three times the configured one,
    log-uniformly."""
    def around(value: int) -> Choices:
        return Choices(tuple(dict.fromkeys((max(1, value // 2), value, 2 * value))))

    space = {"lookback": around(config.lookback)}
    if config.stateful:
        space["stream_chunks"] = around(config.stream_chunks)
    space.update({
        "units": around(config.units),
        "decoder": Choices((True, False)),
        "dropout": Choices(DEFAULT_DROPOUTS),
        "learning_rate": Range(config.learning_rate / 3, min(1.0, config.learning_rate * 3), log=True, integer=False),
    })
    return space


def settings_text(settings: dict) -> str:
    """A trial's settings in words: `lookback 30, decoder true, learning_rate 0.00123`."""
    return ", ".join(f"{name} {shown(value)}" for name, value in settings.items())


def plain(value: Any) -> Any:
    """A value Ray Tune drew (a NumPy scalar for a range) as the Python value a `Config` takes."""
    return value.item() if hasattr(value, "item") else value


def _check_names(searched: dict, where: str) -> None:
    known = {field.name for field in fields(Config)}
    for name in searched:
        if name in SEARCHABLE:
            continue
        if name in known:
            raise ForecastError(f"{where} {name}: not a setting a search varies (it would change the data, the split "
                                f"or what is forecast); the searchable settings are {', '.join(SEARCHABLE)}")
        raise ForecastError(f"{where}: unknown setting {name!r}; the table takes {', '.join(SEARCHABLE + OPTIONS)}")


def _dimension(name: str, value: Any, config: Config, where: str) -> Choices | Range:
    """The setting's choices (a list, or one value) or range (a table { min, max, log }), each value checked as the
    configuration checks it."""
    if isinstance(value, dict):
        dimension = _range(name, value, where)
        values = (dimension.low, dimension.high)
    else:
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values:
            raise ForecastError(f"{where} {name}: no choices; give at least one value")
        dimension = Choices(values)
    for item in values:
        try:
            config.replace(**{name: item})
        except ForecastError as exc:
            raise ForecastError(f"{where} {name} = {shown(item)}: {str(exc).removeprefix('config: ')}") from None
    return dimension


def _range(name: str, table: dict, where: str) -> Range:
    unknown = sorted(set(table) - {"min", "max", "log"})
    if unknown or not {"min", "max"} <= set(table):
        raise ForecastError(f"{where} {name}: a range is {{ min = ..., max = ... }}, optionally with log = true; got "
                            f"{', '.join(sorted(table)) or 'an empty table'}")
    hint = typing.get_type_hints(Config)[name]
    if hint not in (int, float):
        raise ForecastError(f"{where} {name}: a range needs a numeric setting; give {name} a list of choices")
    low, high, log = table["min"], table["max"], table.get("log", False)
    for bound, label in ((low, "min"), (high, "max")):
        number = isinstance(bound, (int, float)) and not isinstance(bound, bool) and math.isfinite(bound)
        if not number or (hint is int and not isinstance(bound, int)):
            kind = "a whole number" if hint is int else "a number"
            raise ForecastError(f"{where} {name}: {label} must be {kind}, got {bound!r}")
    if low > high:
        raise ForecastError(f"{where} {name}: min ({shown(low)}) is above max ({shown(high)})")
    if not isinstance(log, bool):
        raise ForecastError(f"{where} {name}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ForecastError(f"{where} {name}: a log range needs min above 0, got {shown(low)}")
    return Range(low, high, log, hint is int)


def _trials(value: Any, label: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ForecastError(f"{label} must be at least 1, got {value!r}")
    return value


def _budget(value: Any, label: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ForecastError(f"{label} must be a number of seconds above 0, got {value!r}")
    return float(value)


def shown(value: Any) -> str:
    """A setting's value as the search's lines and tables show it: `true`, `0.00123`, `30`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
