"""Per-column z-scoring fitted on the training rows only, saved as JSON (never pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.errors import ForecastError


@dataclass(frozen=True)
class Scaler:
    """Mean and standard deviation (ddof 0) of each column, ignoring empty cells."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

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
            return cls(tuple(data["columns"]), tuple(map(float, data["mean"])), tuple(map(float, data["std"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ForecastError(f"{path}: cannot read the saved scaler ({exc}); retrain the model") from None
