"""Backtest forecasts in long format: every forecast `evaluate` scored, one row per (series, origin, step), as
NeuralForecast's `cross_validation` and Darts' `historical_forecasts` hand them back, for users' own skill scores,
joins with other models and event plots."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from forecast.evaluation import RangeForecasts

# The forecasters beside the model whose forecasts the table carries.
BASELINES = ("repeat", "seasonal_naive")


def backtest_table(ranged: RangeForecasts, candidates: dict[str, np.ndarray], model_bounds: np.ndarray | None
                   ) -> pd.DataFrame:
    """One row per series, origin and step (1..H) of `ranged`, in the target's units: `series`, `origin` (the time of
    the last observed row), `step`, `target_time`, `truth` (NaN where the file has none), `forecast` (the model's),
    one column per quantile of the model's interval (`model_bounds` (n, Q, H), where the model has a calibration;
    named like predict's, `TARGET_qLEVEL`), and the baselines' forecasts (`repeat`, `seasonal_naive` where evaluated).
    `candidates` holds each forecaster's z-scored forecasts (n, H) at `ranged.ends`."""
    ends, horizon = ranged.ends, ranged.target.shape[1]
    steps = np.arange(1, horizon + 1)
    times = ranged.features.time
    ids = np.array([series.id for series in ranged.collection.series], dtype=object)
    table = {
        "series": np.repeat(ids[ranged.series_index], horizon),
        "origin": np.repeat(np.asarray(times[ends]), horizon),
        "step": np.tile(steps, len(ends)),
        "target_time": np.asarray(times[(ends[:, None] + steps[None, :]).reshape(-1)]),
        "truth": np.where(ranged.weight > 0, ranged.in_units(ranged.target), np.nan).reshape(-1),
        "forecast": ranged.in_units(candidates["model"]).reshape(-1),
    }
    if model_bounds is not None:
        target = ranged.collection.first.roles.target
        for level, bound in zip(ranged.saved.intervals.quantiles, np.moveaxis(model_bounds, 1, 0)):
            table[f"{target}_q{level:g}"] = bound.reshape(-1)
    for label in BASELINES:
        if label in candidates:
            table[label] = ranged.in_units(candidates[label]).reshape(-1)
    return pd.DataFrame(table)
