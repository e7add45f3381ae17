"""A forecaster's errors at many origins, summed as the keep/discard gate and a run's validation metrics read them.

With many series a run has hundreds of thousands of validation origins of H steps each, so the targets are cut a chunk
of origins at a time (`criterion.Cut`) and each forecaster's errors are kept as sums: per origin its part of the score
(n,), per series its squared and absolute errors (n_series,). Every value is z-scored by its origin's series (a
series' errors in its own units are its sums times its spread, or its square); a step counts where its weight is above
0 (observed, and not padding). The sums give the same numbers as the formulas on whole (n, H) arrays (`criterion.score`,
`criterion.origin_losses`, `metrics.nse`, `metrics.weighted_errors`) up to the order of summation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forecast.criterion import Cut, chunks, step_weights, summary_origin_weights, target_summary

Forecasts = Callable[[slice], np.ndarray]  # origins `part` -> the forecaster's forecasts there (m, H, z-units)


@dataclass(frozen=True)
class TargetSums:
    """What every forecaster's errors are judged against: per series index (n_series,) the `counts` of observed steps
    and their `variances` (z-units); `origin_weight` (n,) each origin's weight in the score
    (`criterion.origin_weights`)."""

    counts: np.ndarray
    variances: np.ndarray
    origin_weight: np.ndarray

    @classmethod
    def of(cls, series: np.ndarray, cut: Cut, n_series: int) -> TargetSums:
        """The sums for origins of series `series` (n,; indices below `n_series`), whose targets and step weights
        `cut(part)` gives (m, H each): one pass for the counts and variances that the origins' weights in the score
        and each series' NSE both read."""
        steps, counts, variances = target_summary(series, cut, n_series)
        return cls(counts, variances, summary_origin_weights(series, steps, counts, variances))

    @property
    def spread(self) -> np.ndarray:
        """Per series (n_series,), the sum of squared deviations of its observed targets from their mean: NSE's
        denominator."""
        return self.variances * self.counts


@dataclass(frozen=True)
class ErrorSums:
    """One forecaster's errors: `losses` (n,) each origin's sum of score weight x squared error over its steps,
    `weights` (n,) the sum of its steps' score weights; `squared` and `absolute` (n_series,) each series' sums of
    squared and absolute errors over its observed steps."""

    losses: np.ndarray
    weights: np.ndarray
    squared: np.ndarray
    absolute: np.ndarray

    @classmethod
    def of(cls, forecasts: Forecasts, cut: Cut, series: np.ndarray, targets: TargetSums) -> ErrorSums:
        """The sums of the forecaster whose forecasts at origins `part` are `forecasts(part)`, against the targets and
        step weights `cut(part)` (m, H each) of origins of series `series` (n,), CHUNK_ORIGINS origins at a time."""
        n, size = len(series), len(targets.counts)
        losses, weights = np.zeros(n), np.zeros(n)
        squared, absolute = np.zeros(size), np.zeros(size)
        for part in chunks(n):
            target, weight = cut(part)
            error = forecasts(part).astype("float64") - target
            scored = step_weights(weight, targets.origin_weight[part])
            losses[part] = (error**2 * scored).sum(axis=1)
            weights[part] = scored.sum(axis=1, dtype="float64")
            observed = weight > 0
            step_series = np.broadcast_to(series[part, None], observed.shape)[observed]
            squared += np.bincount(step_series, error[observed] ** 2, minlength=size)
            absolute += np.bincount(step_series, np.abs(error[observed]), minlength=size)
        return cls(losses, weights, squared, absolute)

    @property
    def score(self) -> float:
        """The run's score (`criterion.score`); NaN when nothing is scored."""
        total = float(self.weights.sum())
        return float(self.losses.sum()) / total if total > 0 else math.nan

    def origin_losses(self) -> np.ndarray:
        """Per origin (n,), its part of the score, scaled so that their mean over the scored origins is the score; NaN
        where an origin has no scored step (`criterion.origin_losses`)."""
        scored = self.weights > 0
        factor = np.count_nonzero(scored) / max(float(self.weights.sum()), 1e-300)
        return np.where(scored, self.losses * factor, np.nan)

    def series_nse(self, targets: TargetSums) -> np.ndarray:
        """Each series' NSE over its observed steps (n_series,; `metrics.nse`), NaN where its targets do not vary."""
        spread = targets.spread
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(spread > 0, 1.0 - self.squared / spread, np.nan)

    def pooled(self, targets: TargetSums, spreads: np.ndarray) -> dict[str, float]:
        """MSE and MAE over every observed step (`metrics.weighted_errors`), z-scored, and the MAE and RMSE in the
        target's units, each series' errors scaled by its spread `spreads` (n_series,, its units); NaN for no step."""
        steps = float(targets.counts.sum())
        if steps <= 0:
            return {"mse": math.nan, "mae": math.nan, "mae_original": math.nan, "rmse_original": math.nan}
        return {"mse": float(self.squared.sum()) / steps, "mae": float(self.absolute.sum()) / steps,
                "mae_original": float((self.absolute * spreads).sum()) / steps,
                "rmse_original": math.sqrt(float((self.squared * spreads**2).sum()) / steps)}
