"""Forecast metrics: errors over weighted steps (gaps and padding weigh 0), NSE, and each forecaster's and each series'
headline scores. Arrays are (n_origins, H); z-scored values give the literature's MSE and MAE, values in the target's
units the others."""

from __future__ import annotations

import math

import numpy as np


def weighted_errors(forecast: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """MSE and MAE over the steps with weight > 0 (gaps and padding have weight 0)."""
    mask = weight > 0
    if not mask.any():
        return {"mse": float("nan"), "mae": float("nan")}
    error = (forecast - truth)[mask]
    return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}


def nse(forecast: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> float:
    """Nash-Sutcliffe efficiency over the weighted values: 1 - SSE / variance sum of the observations."""
    mask = weight > 0
    observed = truth[mask]
    spread = np.sum((observed - observed.mean()) ** 2) if observed.size else 0.0
    return float(1.0 - np.sum((forecast[mask] - observed) ** 2) / spread) if spread > 0 else float("nan")


def origin_errors(forecast: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Mean squared error per origin over its weighted steps (n_origins,); NaN where an origin has none."""
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, ((forecast - target) ** 2 * weight).sum(axis=1) / total, np.nan)


def scores(forecast, truth, weight, scaled_forecast, scaled_truth, mase_scale: np.ndarray) -> dict[str, float]:
    """All the metrics of one forecaster over the same origins and steps; `mase_scale` (n_origins,) is the in-sample
    seasonal-naive MAE of each origin's series, in the target's units."""
    scaled = weighted_errors(scaled_forecast, scaled_truth, weight)
    original = weighted_errors(forecast, truth, weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(mase_scale > 0, mase_scale, np.nan)[:, None]
        relative = weighted_errors(forecast / scale, truth / scale, np.where(np.isfinite(scale), weight, 0.0))
    return {
        "mse": scaled["mse"],
        "mae": scaled["mae"],
        "mae_original": original["mae"],
        "rmse_original": math.sqrt(original["mse"]),
        "mase": relative["mae"],
        "nse": nse(forecast, truth, weight),
    }


def series_scores(forecast, truth, weight, scaled_forecast, scaled_truth) -> dict[str, float]:
    """One series' headline metrics: MSE on z-scored values, MAE in its units, NSE overall and at the first and last
    horizon step, and what the run's score (`criterion.series_score`) needs: the scored steps and the variance of the
    observed targets in the series' units."""
    observed = truth[weight > 0]
    return {
        "steps": float(weight.sum()),
        "variance_original": float(observed.var()) if observed.size > 1 else float("nan"),
        "mse": weighted_errors(scaled_forecast, scaled_truth, weight)["mse"],
        "mae_original": weighted_errors(forecast, truth, weight)["mae"],
        "mse_original": weighted_errors(forecast, truth, weight)["mse"],
        "nse": nse(forecast, truth, weight),
        "nse_first_step": nse(forecast[:, 0], truth[:, 0], weight[:, 0]),
        "nse_last_step": nse(forecast[:, -1], truth[:, -1], weight[:, -1]),
    }
