"""Scoring forecasts: errors over the weighted horizon steps, next to the Repeat (last value) baseline."""

from __future__ import annotations

import numpy as np


def weighted_errors(forecast: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """MSE and MAE over the steps with weight > 0 (gaps and padding have weight 0)."""
    mask = weight > 0
    if not mask.any():
        return {"mse": float("nan"), "mae": float("nan")}
    error = (forecast - truth)[mask]
    return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}


def repeat_forecast(last_values: np.ndarray, horizon: int) -> np.ndarray:
    """The Repeat baseline: the last observed value at the origin, for every step of the horizon."""
    return np.repeat(np.asarray(last_values)[:, None], horizon, axis=1)
