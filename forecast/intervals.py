"""Forecast intervals: split-conformal quantiles of validation residuals, per horizon step (pure numpy).

A saved model is calibrated on its validation origins, which training never fitted on: for each horizon step h and
quantile level q, the forecast's bound is `point + scale * offset[q, h]`, where `offset` is the conformal quantile of
the residuals `(truth - point) / scale` of that step. Two ways of scaling compete:

- plain: scale 1, one width per step whatever the window;
- recent: scale = the target's mean absolute change over the window's last `span` rows (in quadrature with a floor),
  so that a stormy stretch gets a wider interval than a calm one; spans of about H and 4H rows compete.

Which one a model gets is measured: each is calibrated on the first half of the validation origins and scored by mean
pinball loss on the second half (a proper score for quantiles; for a 0.1-0.9 pair it is the Winkler score / 20), then
the winner is calibrated again on all of them. The same plain calibration of Repeat's errors gives the naive interval
that `forecast evaluate` sets the model's against.

The calibration then slides forward with the data (`Calibration.sliding_offsets`): a forecast's offsets are the
conformal quantiles of the last `window` errors of the same series whose truth is known at its origin (as many as
each series had validation origins), so that the width follows a change in the errors between one retrain and the
next instead of keeping the validation months' (the errors themselves: see forecast.recent_errors). Where fewer are
known, the saved offsets serve.

Shapes: n origins, H horizon steps, Q quantile levels. Forecasts, truths and offsets are z-scored (the model's scaler)
unless a function says otherwise; `history` (n_rows,) is the z-scored target at every row of the feature arrays, gaps
carried forward, and origins are rows of it (`Features.starts`, as in forecast.sampler).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from forecast.config import check_quantiles
from forecast.errors import ForecastError
from forecast.scaling import FLOAT32_MAX
from forecast.seal import sealed

METHODS = ("plain", "recent")


def recent_change(history: np.ndarray, origins: np.ndarray, span: int) -> np.ndarray:
    """Mean absolute one-step change (n,) of `history` (n_rows,) over the `span` rows up to each of `origins` (n,),
    z-units per step; fewer where the array starts less than `span` rows before the origin (an origin with a whole
    window and `span` below the lookback reads only its own series)."""
    change = np.empty(len(history))  # the running sum of absolute changes, made in place: one float64 per row
    change[0] = 0.0
    change[1:] = history[1:]
    change[1:] -= history[:-1]
    np.cumsum(np.abs(change, out=change), out=change)
    first = np.maximum(origins - span, 0)
    return (change[origins] - change[first]) / np.maximum(origins - first, 1)


def candidate_spans(lookback: int, horizon: int) -> tuple[int, ...]:
    """The spans (rows of history, ascending, distinct) the recent scale may read: `horizon` rows (at least 8, for a
    steadier estimate at small H) and four times that, each capped at `lookback` - 1 so it stays within the window."""
    short = max(horizon, 8)
    return tuple(sorted({max(1, min(lookback - 1, span)) for span in (short, 4 * short)}))


def conformal_rank(m: int, level: float) -> int:
    """The 0-based position in `m` sorted scores of their split-conformal quantile at `level` (q, in (0, 1)): the
    ceil((m + 1) q)-th smallest for an upper level (q >= 0.5), the floor((m + 1) q)-th for a lower one (each clamped to
    the sample), so that coverage holds in finite samples."""
    rank = math.ceil((m + 1) * level) if level >= 0.5 else math.floor((m + 1) * level)
    return min(max(rank, 1), m) - 1


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile of `scores` (m,) at `level` (see `conformal_rank`), in the units of `scores`."""
    return float(np.sort(scores)[conformal_rank(len(scores), level)])


class ArrayTruths:
    """The truths of n origins as arrays made already: `truth` (n, H, z-units) observed where `weight` (n, H) > 0."""

    def __init__(self, truth: np.ndarray, weight: np.ndarray):
        self.truth, self.weight = truth, weight
        self.horizon = truth.shape[1]

    def observed(self, step: int, at: np.ndarray) -> np.ndarray:
        """Whether step `step` (0-based) of the origins at positions `at` (m,) is observed (m, bool)."""
        return self.weight[at, step] > 0

    def values(self, step: int, at: np.ndarray) -> np.ndarray:
        """The truths (m,) of step `step` of the origins at positions `at` (m,); meaningful where observed."""
        return self.truth[at, step]

    def block(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The truths (m, H, gaps 0) and weights (m, H) of the origins at positions `at` (m,)."""
        return self.truth[at], self.weight[at]

    def any_observed(self) -> np.ndarray:
        """Whether each origin (n,) has an observed step."""
        return (self.weight > 0).any(axis=1)


class RowTruths:
    """The truths of n origins read from the target rows they forecast, as the windows read them: origin `origins[i]`
    (a row) has at step h (0-based) the row `origins[i] + 1 + h` of `target` (n_rows, z-units, NaN where unobserved).
    Nothing of (n, H) is held: a step, or a block of origins, is cut when asked."""

    def __init__(self, target: np.ndarray, origins: np.ndarray, horizon: int):
        self.target, self.origins, self.horizon = target, origins, horizon

    def observed(self, step: int, at: np.ndarray) -> np.ndarray:
        """As `ArrayTruths.observed`."""
        return np.isfinite(self.values(step, at))

    def values(self, step: int, at: np.ndarray) -> np.ndarray:
        """As `ArrayTruths.values` (NaN where unobserved)."""
        return self.target[self.origins[at] + 1 + step]

    def block(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As `ArrayTruths.block`, with a bool weight."""
        truth = sliding_window_view(self.target, self.horizon)[self.origins[at] + 1]
        observed = np.isfinite(truth)
        return np.where(observed, truth, 0), observed

    def any_observed(self) -> np.ndarray:
        """As `ArrayTruths.any_observed`, a step at a time."""
        seen = np.zeros(len(self.origins), dtype=bool)
        for step in range(self.horizon):
            seen |= np.isfinite(self.target[self.origins + 1 + step])
        return seen


Truths = ArrayTruths | RowTruths


def _step_quantiles(column, truths: Truths, rows: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """Offsets (Q, H), in the units of the residuals `column(step, at)` gives (m,) at the positions `at` (m,) of a
    step: the conformal quantile at each of `quantiles` (Q,) of each step's residuals at the positions `rows` where
    `truths` is observed, ascending along Q so that bounds built from them never cross; a step without one gets the
    pooled residuals of all steps. One step's residuals are made at a time, never all (n, H) of them."""
    def observed(step: int) -> np.ndarray:
        return rows[truths.observed(step, rows)]

    horizon = truths.horizon
    offsets = np.full((len(quantiles), horizon), np.nan)
    for step in range(horizon):
        chosen = observed(step)
        if len(chosen):
            values = column(step, chosen)
            offsets[:, step] = [conformal_quantile(values, q) for q in quantiles]
    empty = np.isnan(offsets[0])
    if empty.all():
        raise ValueError("no scored residual to calibrate on")
    if empty.any():  # a step without a scored residual: the residuals of every step, pooled
        pooled = np.concatenate([column(step, observed(step)) for step in np.flatnonzero(~empty)])
        offsets[:, empty] = np.array([conformal_quantile(pooled, q) for q in quantiles])[:, None]
    return np.sort(offsets, axis=0)


def pinball_loss(bounds: np.ndarray, truth: np.ndarray, weight: np.ndarray, quantiles: tuple[float, ...]) -> float:
    """Mean pinball (quantile) loss of `bounds` (n, Q, H) at levels `quantiles` (Q,) for `truth` (n, H) over the steps
    with `weight` (n, H) > 0 and all levels, in the units of its inputs; NaN when no step is scored."""
    loss, steps = pinball_sums(bounds, truth, weight, quantiles)
    return loss / steps if steps else float("nan")


def pinball_sums(bounds: np.ndarray, truth: np.ndarray, weight: np.ndarray, quantiles: tuple[float, ...]
                 ) -> tuple[float, int]:
    """The sum of the pinball losses that `pinball_loss` averages, and how many (steps times levels)."""
    levels = np.asarray(quantiles)[None, :, None]
    error = truth[:, None, :] - bounds
    loss = np.maximum(levels * error, (levels - 1.0) * error)
    mask = np.broadcast_to((weight > 0)[:, None, :], loss.shape)
    return float(loss[mask].sum()), int(np.count_nonzero(mask))


@dataclass(frozen=True)
class Calibration:
    """How a model's intervals are drawn around its point forecasts.

    `quantiles` (Q,) are the ascending levels, in (0, 1); `method` is one of METHODS, and `span` the rows of history
    the recent scale reads. `offsets` (Q, H) are z-units per unit of scale (plain: scale 1); `naive` (Q, H) are the
    quantiles of Repeat's validation errors, in z-units (never scaled); `floor` (z-units per step) keeps the recent
    scale of a flat window above 0; `checked` holds each candidate's mean pinball loss (z-units) on the second half of
    the validation origins when calibrated on the first; `origins` is how many calibrated the saved offsets; `window`
    is how many of a series' latest known errors each forecast is calibrated on (0: the saved offsets only, as in files
    written before the calibration slid).
    """

    quantiles: tuple[float, ...]
    method: str
    span: int
    floor: float
    offsets: np.ndarray
    naive: np.ndarray
    origins: int
    checked: dict[str, float]
    window: int = 0

    def __post_init__(self) -> None:
        shape = (len(self.quantiles), self.offsets.shape[-1] if self.offsets.ndim == 2 else -1)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.offsets.shape != shape or self.naive.shape != shape:
            raise ValueError(f"offsets must have shape (quantiles, horizon) = {shape}")
        for name, table in (("offsets", self.offsets), ("naive", self.naive)):
            if not np.isfinite(table).all() or (np.diff(table, axis=0) < 0).any():
                raise ValueError(f"{name} must be finite and ascending along the quantiles")
            if table.size and np.abs(table).max() > FLOAT32_MAX:
                raise ValueError(f"{name} holds {np.abs(table).max():g}, beyond the float32 range the model computes in")
        if check_quantiles(self.quantiles, "intervals") != tuple(self.quantiles) or not self.quantiles:
            raise ValueError("quantiles must be ascending")
        if not (math.isfinite(self.floor) and 0 < self.floor <= FLOAT32_MAX and self.span >= 1):
            raise ValueError("floor must be above 0 and span at least 1")
        if self.window < 0:
            raise ValueError("window must be at least 0")

    @property
    def horizon(self) -> int:
        """H, the steps the offsets cover."""
        return self.offsets.shape[1]

    def scale(self, history: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """The scale (n,) of the forecast at each of `origins` (n,), rows of `history` (n_rows,): 1 for plain; for
        recent, `recent_change` over the last `span` rows in quadrature with `floor`, in z-units (per step)."""
        if self.method == "plain":
            return np.ones(len(origins))
        return np.hypot(recent_change(history, origins, self.span), self.floor)

    def bounds(self, forecast: np.ndarray, history: np.ndarray, origins: np.ndarray, offsets: np.ndarray | None = None
               ) -> np.ndarray:
        """Quantile forecasts (n, Q, H) in z-units around the point forecasts `forecast` (n, H) at `origins` (n,), rows
        of `history` (n_rows,) that sets each one's `scale`, with each origin's `offsets` (n, Q, H; see
        `sliding_offsets`) or, without them, the saved ones."""
        offsets = self.offsets[None] if offsets is None else offsets
        return forecast[:, None, :] + self.scale(history, origins)[:, None, None] * offsets

    def sliding_offsets(self, errors: np.ndarray, weight: np.ndarray, error_origins: np.ndarray, origins: np.ndarray
                        ) -> np.ndarray:
        """The offsets (n, Q, H) of one series' forecasts at `origins` (n,): for step h (1-based), the conformal
        quantiles of the last `window` observed errors of step h among `errors` (m, H; truth - forecast divided by the
        window's scale, z-units per unit of scale) at `error_origins` (m, ascending rows, as `origins`) whose truth is
        known at the origin (error origin + h <= origin); the saved offsets where fewer are known. `weight` (m, H) > 0
        marks an observed truth."""
        result = np.repeat(self.offsets[None], len(origins), axis=0)
        if self.window < 1:
            return result
        ranks = [conformal_rank(self.window, level) for level in self.quantiles]
        rows_per_part = max(1, 2**22 // self.window)  # bounds the partitioned copy at 32 MiB
        for step in range(self.horizon):
            observed = weight[:, step] > 0
            column = errors[observed, step].astype("float64")
            if len(column) < self.window:
                continue
            known = np.searchsorted(error_origins[observed], origins - (step + 1), side="right")
            full = np.flatnonzero(known >= self.window)
            windows = sliding_window_view(column, self.window)
            for part in np.array_split(full, max(1, math.ceil(len(full) / rows_per_part))):
                ordered = np.partition(windows[known[part] - self.window], ranks, axis=1)
                result[part, :, step] = ordered[:, ranks]
        return np.sort(result, axis=1)

    def naive_bounds(self, repeat: np.ndarray) -> np.ndarray:
        """The naive interval (n, Q, H) in z-units: Repeat's forecasts `repeat` (n, H, z-units) plus its validation
        errors' quantiles (`naive`)."""
        return repeat[:, None, :] + self.naive[None]

    def describe(self) -> str:
        """One line: the levels, the method and how it was chosen."""
        levels = ", ".join(f"{q:g}" for q in self.quantiles)
        how = (f"scaled by the mean absolute change over the last {self.span} rows" if self.method == "recent"
               else "one width per step")
        checked = ", ".join(f"{name} {loss:.4f}" for name, loss in self.checked.items())
        sliding = (f"; each forecast recalibrated on its series' last {self.window} errors known at its origin"
                   if self.window else "")
        return (f"forecast intervals: quantiles {levels}, split conformal per step, {how}, calibrated on "
                f"{self.origins} origins (pinball loss on the later half of validation: {checked}){sliding}")

    def summary(self) -> dict:
        """What metrics.json and `forecast info` show: the levels, the method chosen and the comparison that chose
        it."""
        return {"quantiles": list(self.quantiles), "method": self.method,
                "span": self.span if self.method == "recent" else None, "origins": self.origins, "window": self.window,
                "checked": self.checked}

    def to_json(self) -> str:
        """The calibration as the sealed JSON text (`seal.sealed`: with its checksum) that `from_json` reads back."""
        return json.dumps(sealed({
            "quantiles": list(self.quantiles), "method": self.method, "span": self.span, "floor": self.floor,
            "offsets": self.offsets.tolist(), "naive": self.naive.tolist(), "origins": self.origins,
            "window": self.window, "checked": self.checked,
        }), indent=1)

    @classmethod
    def from_json(cls, path: Path, horizon: int) -> Calibration:
        """The calibration saved at `path`, checked: a changed or damaged file, or one calibrated for other than
        `horizon` steps, is refused in one line."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            calibration = cls(
                tuple(float(q) for q in data["quantiles"]), str(data["method"]), int(data["span"]),
                float(data["floor"]), np.asarray(data["offsets"], dtype="float64"),
                np.asarray(data["naive"], dtype="float64"), int(data["origins"]),
                {str(name): float(loss) for name, loss in data["checked"].items()}, int(data.get("window", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ForecastError) as exc:
            raise ForecastError(f"{path}: cannot read the interval calibration ({exc}); roll back or retrain the "
                                "model") from None
        if calibration.horizon != horizon:
            raise ForecastError(f"{path}: calibrated for {calibration.horizon} steps, but config.json says the model "
                                f"forecasts {horizon}; the files were changed after training: roll back or retrain")
        return calibration


def calibrate(
    forecast: np.ndarray, truths: Truths, history: np.ndarray, origins: np.ndarray,
    quantiles: tuple[float, ...], spans: tuple[int, ...], series: np.ndarray,
) -> Calibration:
    """Calibrates intervals at `quantiles` (Q,) on the validation forecasts `forecast` (n, H) against `truths` (of the
    same n origins: `ArrayTruths` or `RowTruths`), at `origins` (n,) (rows of `history` (n_rows,)) of series `series`
    (n,), all in z-units; Repeat's forecast is `history[origins]`. Plain and the recent scale over each of `spans`
    (rows) are calibrated on the earlier half in time of each series' origins and scored by pinball loss on the later
    half (`earlier_half`); the best is calibrated again on all of them (plain where too few origins leave nothing to
    compare). The sliding `window` is the scored origins per series (their mean, rounded).

    The arrays are read where they are, through positions into them: what this holds beside them grows with n, not
    with n times H."""
    rows = np.flatnonzero(truths.any_observed())
    rows = rows[np.argsort(origins[rows], kind="stable")]
    if not len(rows):
        raise ValueError("no scored origin to calibrate on")
    arrays = (forecast, truths, history, origins)
    window = round(len(rows) / len(np.unique(series[rows])))
    candidates = {"plain": ("plain", spans[0]), **{f"recent {span}": ("recent", span) for span in spans}}
    early = earlier_half(series[rows])
    checked = {}
    for name, (method, span) in candidates.items():
        if early.all() or not early.any():
            break
        fitted = fit(method, span, *arrays, quantiles, rows=rows[early])
        checked[name] = _pinball_at(fitted, *arrays, rows[~early], quantiles)
    finite = {name: loss for name, loss in checked.items() if math.isfinite(loss)}
    method, span = candidates[min(finite, key=finite.get) if finite else "plain"]
    return fit(method, span, *arrays, quantiles, checked, window, rows=rows)


# Origins whose (origins, Q, H) bounds are scored at a time, so that memory stays bounded at many series.
PINBALL_ORIGINS = 2**14


def _pinball_at(calibration: Calibration, forecast: np.ndarray, truths: Truths, history: np.ndarray,
                origins: np.ndarray, rows: np.ndarray, quantiles: tuple[float, ...]) -> float:
    """`pinball_loss` of `calibration`'s bounds at the origins `rows` (indices into the other arguments, as in
    `calibrate`), PINBALL_ORIGINS at a time."""
    total, steps = 0.0, 0
    for start in range(0, len(rows), PINBALL_ORIGINS):
        part = rows[start : start + PINBALL_ORIGINS]
        bounds = calibration.bounds(forecast[part], history, origins[part])
        loss, count = pinball_sums(bounds, *truths.block(part), quantiles)
        total, steps = total + loss, steps + count
    return total / steps if steps else float("nan")


def earlier_half(series: np.ndarray) -> np.ndarray:
    """For origins (n,) grouped by series and in time order within each (as the stacked rows are), of series `series`
    (n,): True for the first half (rounded down) of each series' origins. A split in time, so that the later half is
    scored as new data would be."""
    _, first, inverse, counts = np.unique(series, return_index=True, return_inverse=True, return_counts=True)
    rank = np.arange(len(series)) - first[inverse]
    return rank < counts[inverse] // 2


def fit(method, span, forecast, truths, history, origins, quantiles, checked=None, window=0, rows=None
        ) -> Calibration:
    """The calibration of `method` with `span` on the origins at positions `rows` (m,) of the arrays (see `calibrate`
    for the others; None: all of them, each with a scored step), recording `checked` and `window` as given. The recent
    scale's floor is its median over them (at least 1e-3 z-units per step): a flat window gets at least that, not a
    zero-width interval."""
    rows = np.arange(len(origins)) if rows is None else rows
    chosen = origins[rows]
    floor = max(float(np.median(recent_change(history, chosen, span))), 1e-3)
    zeros = np.zeros((len(quantiles), forecast.shape[1]))
    draft = Calibration(quantiles, method, span, floor, zeros, zeros, len(rows), {})
    scale = np.empty(len(origins))
    scale[rows] = draft.scale(history, chosen)
    last = history[origins]
    offsets = _step_quantiles(lambda step, at: (truths.values(step, at) - forecast[at, step]) / scale[at], truths,
                              rows, quantiles)
    naive = _step_quantiles(lambda step, at: truths.values(step, at) - last[at], truths, rows, quantiles)
    return Calibration(quantiles, method, span, floor, offsets, naive, len(rows), checked or {}, window)


@dataclass(frozen=True)
class IntervalScores:
    """How good quantile forecasts were, in the target's units: `intervals` maps each central interval's name
    (`interval_name`; the levels paired from the outside in) to its "nominal" and observed "coverage" (fractions of the
    scored steps), mean "width" and "winkler" score; `pinball` is the mean pinball loss; `coverage_by_step` maps each
    interval's name to its observed coverage at each step (H,)."""

    intervals: dict[str, dict[str, float]]
    pinball: float
    coverage_by_step: dict[str, np.ndarray]  # per interval, (H,)


def interval_pairs(quantiles: tuple[float, ...]) -> list[tuple[int, int]]:
    """Indices (lower, upper) into `quantiles` of the central intervals: the outermost levels first, a level at 0.5 or
    a lone one on one side of it left unpaired."""
    lower = [i for i, q in enumerate(quantiles) if q < 0.5]
    upper = [i for i, q in enumerate(quantiles) if q > 0.5][::-1]
    return list(zip(lower, upper))


def interval_name(low: float, high: float) -> str:
    """The name of the interval between the levels `low` and `high`: its nominal coverage in percent, '80%' for the
    0.1-0.9 interval."""
    return f"{100 * (high - low):.4g}%"


def score_intervals(bounds: np.ndarray, truth: np.ndarray, weight: np.ndarray, quantiles: tuple[float, ...]
                    ) -> IntervalScores:
    """Scores `bounds` (n, Q, H) at levels `quantiles` (Q,) against `truth` (n, H) over the steps with `weight` (n, H)
    > 0, all in the target's units. The Winkler score of [l, u] is u - l plus the miss beyond a bound divided by that
    bound's tail probability (2 / alpha for a central interval)."""
    mask = weight > 0
    intervals, by_step = {}, {}
    for low_index, high_index in interval_pairs(quantiles):
        low_q, high_q = quantiles[low_index], quantiles[high_index]
        low, high = bounds[:, low_index], bounds[:, high_index]
        inside = (truth >= low) & (truth <= high)
        winkler = (high - low) + np.maximum(low - truth, 0) / low_q + np.maximum(truth - high, 0) / (1.0 - high_q)
        name = interval_name(low_q, high_q)
        intervals[name] = {
            "nominal": high_q - low_q,
            "coverage": float(inside[mask].mean()) if mask.any() else float("nan"),
            "width": float((high - low)[mask].mean()) if mask.any() else float("nan"),
            "winkler": float(winkler[mask].mean()) if mask.any() else float("nan"),
        }
        with np.errstate(invalid="ignore", divide="ignore"):
            by_step[name] = (inside & mask).sum(axis=0) / mask.sum(axis=0)
    return IntervalScores(intervals, pinball_loss(bounds, truth, weight, quantiles), by_step)


def quantile_columns(target: str, quantiles: tuple[float, ...]) -> list[str]:
    """The forecast CSV's column names for `quantiles` of the target column named `target`: `OT_q0.1`, `OT_q0.9` for
    target OT and quantiles (0.1, 0.9)."""
    return [f"{target}_q{q:g}" for q in quantiles]
