"""The one score every choice of a run is made by, and the test of whether one forecaster beats another on it.

Early stopping's best epoch, the weights it restores, the learning rate's plateaus, the linear start's choice of
inputs, the keep/discard gate and a retrain's promotion all judge by `score`, so that no step can pick what a later
step rejects.

- One series: the score is the MSE over the scored steps.
- Many series: each series' squared errors count against the variance of its own observed targets in the scored range
  (its share of 1 - NSE, as the mean NSE over series weighs it), but no series may weigh more than WEIGHT_CAP times the
  median series: a near-constant series (a dry river, a stuck sensor) would otherwise decide alone. The weights are
  scaled to average 1 over the scored steps, so the score reads as an MSE.

A later epoch is better only when it lowers the best score so far by more than `min_delta` of it (relative), so that
patience cannot hinge on a change in the fifth decimal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# No series outweighs this many times the median series (see the module's docstring).
WEIGHT_CAP = 3.0
# The smallest variance a series' weight is taken against (z-units or its own), so a constant series has a weight.
MIN_VARIANCE = 1e-6


def capped_weights(variances: np.ndarray, cap: float = WEIGHT_CAP) -> np.ndarray:
    """Per series (n_series,): 1 / its target variance (NaN: unknown, which gets the median weight), at most `cap`
    times the median of the series' weights. Relative weights: scale them as the caller needs."""
    variances = np.asarray(variances, dtype="float64")
    weights = 1.0 / np.maximum(variances, MIN_VARIANCE)
    known = np.isfinite(weights)
    if not known.any():
        return np.ones(len(variances))
    median = float(np.median(weights[known]))
    return np.minimum(np.where(known, weights, median), cap * median)


# Origins taken at a time where a pass over (origins, H) arrays makes float64 temporaries, so that their memory stays
# bounded whatever the number of series.
CHUNK_ORIGINS = 2**14


Cut = Callable[[slice], tuple[np.ndarray, np.ndarray]]  # origins `part` -> their targets and observed mask (m, H)


def chunks(n: int):
    """Slices of CHUNK_ORIGINS origins covering range(n), in order."""
    return (slice(start, min(start + CHUNK_ORIGINS, n)) for start in range(0, n, CHUNK_ORIGINS))


def series_variances(series: np.ndarray, cut: Cut, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series index (size,): the count of observed steps and their variance (two passes: the means, then the
    squared deviations from them), CHUNK_ORIGINS origins at a time, each chunk's targets and observed mask (m, H) from
    `cut` (see `streamed_origin_weights`)."""
    counts, sums, squares = np.zeros(size), np.zeros(size), np.zeros(size)
    for part in chunks(len(series)):
        target, seen = cut(part)
        step_series = np.broadcast_to(series[part, None], seen.shape)[seen]
        counts += np.bincount(step_series, minlength=size)
        sums += np.bincount(step_series, target[seen].astype("float64"), minlength=size)
    means = sums / np.maximum(counts, 1)
    for part in chunks(len(series)):
        target, seen = cut(part)
        step_series = np.broadcast_to(series[part, None], seen.shape)[seen]
        squares += np.bincount(step_series, (target[seen].astype("float64") - means[step_series]) ** 2,
                               minlength=size)
    return counts, squares / np.maximum(counts, 1)


def origin_weights(series: np.ndarray, target: np.ndarray, weight: np.ndarray, cap: float = WEIGHT_CAP) -> np.ndarray:
    """Per origin (n,), its series' weight in the score: `series` (n,) the series index of each origin, `target` and
    `weight` (n, H) its targets (z-units, or any units that are the same within a series) and their step weights (0 at
    padding and unobserved steps). Scaled so that the scored steps weigh 1 on average; exactly 1 for one series."""
    return streamed_origin_weights(series, lambda part: (target[part], weight[part]), cap)


def streamed_origin_weights(series: np.ndarray, targets: Callable[[slice], tuple[np.ndarray, np.ndarray]],
                            cap: float = WEIGHT_CAP) -> np.ndarray:
    """`origin_weights` with the targets and step weights of origins `part` (a slice of the n origins; (m, H) each)
    given by `targets(part)`, a chunk at a time, so that no (n, H) array is held for many series: the same values."""
    size = int(series.max()) + 1 if len(series) else 0
    return summary_origin_weights(series, *target_summary(series, targets, size), cap)


def target_summary(series: np.ndarray, targets: Callable[[slice], tuple[np.ndarray, np.ndarray]], size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per origin (n,) the sum of its step weights, and per series index (size,) the count of observed steps (weight
    above 0) and their variance (`series_variances`), from `targets(part)` as in `streamed_origin_weights`."""
    steps = np.empty(len(series))
    for part in chunks(len(series)):
        steps[part] = targets(part)[1].sum(axis=1)

    def observed(part: slice) -> tuple[np.ndarray, np.ndarray]:
        target, weight = targets(part)
        return target, weight > 0

    return (steps, *series_variances(series, observed, size))


def summary_origin_weights(series: np.ndarray, steps: np.ndarray, counts: np.ndarray, variances: np.ndarray,
                           cap: float = WEIGHT_CAP) -> np.ndarray:
    """`origin_weights` from the `target_summary` of the origins of `series` (n,)."""
    present = np.flatnonzero(counts > 0)
    if len(present) <= 1:
        return np.ones(len(series))
    per_series = np.ones(len(counts))
    per_series[present] = capped_weights(np.where(counts[present] > 1, variances[present], np.nan), cap)
    weights = per_series[series]
    return weights * steps.sum() / float((weights * steps).sum())


def score_weights(series: np.ndarray, target: np.ndarray, weight: np.ndarray, cap: float = WEIGHT_CAP) -> np.ndarray:
    """The step weights (n, H) under which a weighted MSE is the score: `weight` times each origin's series weight
    (`origin_weights`), float32 like the validation arrays Keras reads."""
    per_origin = origin_weights(series, target, weight, cap)
    weights = np.empty(weight.shape, dtype="float32")
    for part in chunks(len(series)):
        weights[part] = step_weights(weight[part], per_origin[part])
    return weights


def step_weights(weight: np.ndarray, per_origin: np.ndarray) -> np.ndarray:
    """The score's step weights (n, H, float32) of origins whose step weights are `weight` (n, H) and whose weights in
    the score are `per_origin` (n,; `origin_weights`): the product in float64, rounded once."""
    return (weight * per_origin[:, None]).astype("float32")


def score(forecast: np.ndarray, target: np.ndarray, weights: np.ndarray) -> float:
    """The score (lower is better): the MSE of `forecast` (n, H) against `target` under `weights` from
    `score_weights`; NaN when nothing is scored."""
    total = float(weights.sum())
    if total <= 0:
        return math.nan
    return float(((forecast.astype("float64") - target) ** 2 * weights).sum() / total)


def origin_losses(forecast: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per origin (n,), its part of the score, scaled so that the mean over the scored origins is the score; NaN where
    an origin has no scored step. The paired test `improvement` compares these."""
    per_origin = ((forecast.astype("float64") - target) ** 2 * weights).sum(axis=1)
    scored = weights.sum(axis=1) > 0
    factor = np.count_nonzero(scored) / max(float(weights.sum()), 1e-300)
    return np.where(scored, per_origin * factor, np.nan)


def series_score(mse: np.ndarray, steps: np.ndarray, variance: np.ndarray, cap: float = WEIGHT_CAP) -> float:
    """The score from per-series summaries (n_series,) of one forecaster: each series' MSE, its number of scored steps
    and the variance of its observed targets, all in the series' own units (a retrain compares versions whose scalers
    differ). For one series, its MSE."""
    mse, steps = np.asarray(mse, dtype="float64"), np.asarray(steps, dtype="float64")
    if len(mse) == 1:
        return float(mse[0])
    weights = capped_weights(variance, cap) * steps
    return float((weights * mse).sum() / weights.sum())


def improves(value: float, best: float | None, min_delta: float) -> bool:
    """Whether a score `value` beats `best` (None: nothing yet) by more than the fraction `min_delta` of it."""
    if best is None or not math.isfinite(best):
        return math.isfinite(value)
    return value < best - min_delta * abs(best)


def best_epoch(scores: list[float], start: float | None, min_delta: float) -> int | None:
    """The position in `scores` (one per epoch, in order) of the epoch early stopping keeps: the last that improved
    (`improves`) on the best before it, starting from the linear start's `start` (None: no start); None where no
    epoch improved on the start."""
    best, kept = start, None
    for position, value in enumerate(scores):
        if improves(value, best, min_delta):
            best, kept = value, position
    return kept


# A richer model replaces a simpler one only when it beats it by this t statistic (`improvement`) on validation. One
# comparison passes it by chance about once in 40; the linear start makes up to seven, so this is a parsimony prior
# rather than an exact test.
SIGNIFICANT_T = 2.0
# ... and only over at least this many independent blocks of origins: on three block means a weekly series' gate passed
# at t = 3.1 and 3.8 with a model that was 41-55 % worse on its test rows than the simpler one.
MIN_BLOCKS = 10


@dataclass(frozen=True)
class Improvement:
    """How surely a richer model's errors beat a simpler one's: the t statistic over `blocks` block means."""

    t: float
    blocks: int
    block: int

    @property
    def required_t(self) -> float:
        """The two-sided 95 % Student t quantile for blocks - 1 degrees of freedom, and at least SIGNIFICANT_T."""
        from scipy.stats import t as student_t

        return max(SIGNIFICANT_T, float(student_t.ppf(0.975, self.blocks - 1))) if self.blocks > 1 else math.inf

    @property
    def clear(self) -> bool:
        """True only with enough blocks and a t above the threshold for their number; else keep the simpler model."""
        return self.blocks >= MIN_BLOCKS and self.t > self.required_t

    def describe(self) -> str:
        if self.blocks < MIN_BLOCKS:
            return (f"t = {self.t:.1f} over {self.blocks} blocks of {self.block} origins, fewer than the {MIN_BLOCKS} "
                    "blocks a decision needs")
        return f"t = {self.t:.1f} over {self.blocks} blocks of {self.block} origins, needs above {self.required_t:.2f}"


def improvement(baseline_errors: np.ndarray, errors: np.ndarray, origins: np.ndarray, block: int) -> Improvement:
    """How surely `errors` beat `baseline_errors`: the t statistic of the mean loss difference (a Diebold-Mariano test).

    The inputs are per-origin losses (n,) (NaN where an origin is not scored) and the origins' row indices (n,).
    Overlapping forecasts make neighbouring origins' errors correlated, so the differences are averaged over blocks of
    `block` consecutive origins before the standard error is taken. t is positive when `errors` are smaller; 0 with
    fewer than two blocks.
    """
    keep = np.isfinite(baseline_errors) & np.isfinite(errors)
    order = np.argsort(origins[keep], kind="stable")
    difference = (baseline_errors[keep] - errors[keep])[order]
    n_blocks = len(difference) // block
    if n_blocks < 2:
        return Improvement(0.0, n_blocks, block)
    means = difference[: n_blocks * block].reshape(n_blocks, block).mean(axis=1)
    spread = means.std(ddof=1)
    return Improvement(float(means.mean() / (spread / math.sqrt(n_blocks))) if spread > 0 else 0.0, n_blocks, block)
