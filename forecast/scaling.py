"""Per-column z-scoring fitted on the training rows only, saved as JSON (never pickle)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.errors import ForecastError
from forecast.seal import sealed

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32


@dataclass(frozen=True)
class Scaler:
    """Mean and standard deviation (ddof 0) of each column, ignoring empty cells."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.columns) == len(self.mean) == len(self.std):
            raise ValueError(f"{len(self.columns)} columns, {len(self.mean)} means and {len(self.std)} spreads")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("a column is listed twice")
        for column, mean, std in zip(self.columns, self.mean, self.std):
            if not (math.isfinite(mean) and abs(mean) <= FLOAT32_MAX and math.isfinite(std) and 0.0 < std <= FLOAT32_MAX):
                raise ValueError(
                    f"column {column!r} has mean {mean:g} and spread {std:g}; both must be finite numbers within float32 "
                    "range, the spread above 0"
                )

    @classmethod
    def fit(cls, columns: tuple[str, ...], values: np.ndarray) -> Scaler:
        """Fits on `values` (rows x columns). A constant column gets std 1 so that it scales to zeros, not NaN."""
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        return cls(tuple(columns), tuple(map(float, mean)), tuple(map(float, std)))

    def _stats(self, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        index = [self.columns.index(column) for column in columns]
        return np.asarray(self.mean)[index], np.asarray(self.std)[index]

    def mean_std(self, column: str) -> tuple[float, float]:
        """The mean and spread of one column (its units)."""
        mean, std = self._stats((column,))
        return float(mean[0]), float(std[0])

    def transform(self, columns: tuple[str, ...], values: np.ndarray) -> np.ndarray:
        mean, std = self._stats(columns)
        return (values - mean) / std

    def inverse(self, column: str, values: np.ndarray) -> np.ndarray:
        mean, std = self._stats((column,))
        return values * std[0] + mean[0]

    def to_json(self) -> str:
        return json.dumps({"columns": self.columns, "mean": self.mean, "std": self.std}, indent=2)

    @classmethod
    def from_json(cls, path: Path) -> Scaler:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(tuple(map(str, data["columns"])), tuple(map(float, data["mean"])), tuple(map(float, data["std"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved scaler ({exc}); roll back or retrain the model") from None

    def check_covers(self, columns: tuple[str, ...], path: Path) -> None:
        """Every column the model reads must have its mean and spread here."""
        missing = [column for column in columns if column not in self.columns]
        if missing:
            raise ForecastError(f"{path}: no mean and spread for column {missing[0]!r}; roll back or retrain the model")


def target_stats(scalers: list[Scaler], column: str) -> np.ndarray:
    """The mean and spread of `column` under each scaler, (n_scalers, 2), in the column's units: what turns the
    z-scores of each series back into them."""
    return np.array([scaler.mean_std(column) for scaler in scalers])


def bounded(values: np.ndarray, low: float | None, high: float | None, out: np.ndarray | None = None) -> np.ndarray:
    """`values` clipped to [low, high] (None: no bound on that side); for forecasts of a target that cannot be
    negative, say, which the linear terms and the correction can otherwise push below 0. Written into `out` where
    given (`values` itself, to clip a large array without a copy)."""
    return np.clip(values, -np.inf if low is None else low, np.inf if high is None else high, out=out)


def bounded_z(values: np.ndarray, stats: np.ndarray, low: float | None, high: float | None,
              out: np.ndarray | None = None) -> np.ndarray:
    """z-scored `values` (n, H) clipped to the target's bounds [low, high] (its units; None: no bound), each row by
    its series' mean and std `stats` (n, 2); the scaling is increasing, so clipping there clips in the target's
    units. Written into `out` where given (see `bounded`)."""
    mean, std = stats[:, :1], stats[:, 1:]
    return bounded(values, *(None if bound is None else (bound - mean) / std for bound in (low, high)), out=out)


GLOBAL = "*"  # the key of the one scaler that scales every series (scaling = "global")


@dataclass(frozen=True)
class Scalers:
    """The scaling of each series: one Scaler per id, fitted on that series' training rows, or one under GLOBAL for
    all. Saved as one JSON file; a file written before series had ids holds one scaler, read as the id ""."""

    by_id: dict[str, Scaler]

    def get(self, series_id: str) -> Scaler | None:
        """The series' scaler; None for a series the model was not trained on (it is scaled on its own rows)."""
        return self.by_id.get(series_id, self.by_id.get(GLOBAL))

    def to_json(self) -> str:
        return json.dumps(
            sealed({"series": {name: json.loads(scaler.to_json()) for name, scaler in self.by_id.items()}}), indent=2
        )

    @classmethod
    def from_json(cls, path: Path) -> Scalers:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records = data["series"] if "series" in data else {"": data}
            return cls({
                str(name): Scaler(tuple(map(str, record["columns"])), tuple(map(float, record["mean"])),
                                  tuple(map(float, record["std"])))
                for name, record in records.items()
            })
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved scaler ({exc}); roll back or retrain the model") from None

    def check_covers(self, columns: tuple[str, ...], path: Path) -> None:
        for scaler in self.by_id.values():
            scaler.check_covers(columns, path)
