"""Scoring forecasts: rolling-origin evaluation of a saved model over a range, next to Repeat and seasonal naive.

Every origin of the range gets its own forecast, from a state warmed up over the chunks before it exactly as
`forecast predict` does. Errors on z-scored values (the literature's MSE/MAE) use the model's own scaler, fitted on its
training rows; MAE, RMSE, MASE and NSE are in the target's own units, as are the intervals' widths and scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.errors import ForecastError
from forecast.intervals import IntervalScores, score_intervals

if TYPE_CHECKING:
    from forecast.data import Series
    from forecast.features import Features
    from forecast.store import SavedModel, Schema


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


@dataclass(frozen=True)
class Season:
    """The seasonal-naive baseline's season: `steps` back, the calendar `cycle` it follows (None: no cycle, 1 step)."""

    steps: int
    cycle: str | None
    candidates: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.cycle is None:
            return "seasonal naive: no calendar cycle is covered twice by the training rows, so it is left out"
        names = [CYCLE_NAMES[cycle] for cycle in self.candidates]
        among = f" (the smallest error on the training rows among a {', a '.join(names)})" if len(names) > 1 else ""
        return f"seasonal naive: a season of {self.steps} steps, a {CYCLE_NAMES[self.cycle]}{among}"


CYCLE_NAMES = {"hour_of_day": "day", "day_of_week": "week", "day_of_year": "year"}


def choose_season(
    freq: pd.Timedelta, span: pd.Timedelta, training: np.ndarray, horizon: int, business_days: bool = False
) -> Season:
    """The calendar cycle (a day, a week, a year) that the seasonal-naive baseline repeats.

    Candidates are the cycles longer than one step that the training rows (`training`, spanning `span`) cover at least
    twice, as for the calendar features; a year of daily data counts 365 steps (261 business days, a week 5). Among
    them wins the one whose seasonal-naive forecasts over `horizon` steps err least (mean absolute error) on the
    training rows themselves.
    """
    from forecast.calendar import CYCLES

    candidates = {}
    for cycle, length in CYCLES.items():
        steps = round(length / freq * (5 / 7 if business_days else 1))
        if steps >= 2 and span >= 2 * length and steps < len(training):
            candidates[cycle] = steps
    if not candidates:
        return Season(1, None)
    errors = {cycle: _training_error(training, steps, horizon) for cycle, steps in candidates.items()}
    best = min(errors, key=errors.get)
    return Season(candidates[best], best, tuple(candidates))


def _training_error(values: np.ndarray, season: int, horizon: int) -> float:
    """Mean absolute error of seasonal-naive forecasts on `values`, over every step of the horizon."""
    steps = np.arange(1, horizon + 1)
    backs = np.unique(season * np.ceil(steps / season).astype(int))
    weights = [np.count_nonzero(season * np.ceil(steps / season) == back) for back in backs]
    errors = [np.nanmean(np.abs(values[back:] - values[:-back])) if back < len(values) else np.nan for back in backs]
    return float(np.average(errors, weights=weights)) if np.isfinite(errors).all() else float("inf")


def seasonal_naive_forecast(values: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Step h repeats the value one season before it, from the last season observed at the origin; NaN where that
    lies before the first row (no wrapping to the series' end)."""
    steps = np.arange(1, horizon + 1)
    back = season * np.ceil(steps / season).astype(int) - steps
    rows = origins[:, None] - back[None, :]
    return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)


def nse(forecast: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> float:
    """Nash-Sutcliffe efficiency over the weighted values: 1 - SSE / variance sum of the observations."""
    mask = weight > 0
    observed = truth[mask]
    spread = np.sum((observed - observed.mean()) ** 2) if observed.size else 0.0
    return float(1.0 - np.sum((forecast[mask] - observed) ** 2) / spread) if spread > 0 else float("nan")


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

    The inputs are per-origin squared errors (NaN where an origin is not scored). Overlapping forecasts make
    neighbouring origins' errors correlated, so the differences are averaged over blocks of `block` consecutive
    origins before the standard error is taken. t is positive when `errors` are smaller; 0 with fewer than two blocks.
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


def origin_errors(forecast: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Mean squared error per origin over its weighted steps (n_origins,); NaN where an origin has none."""
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, ((forecast - target) ** 2 * weight).sum(axis=1) / total, np.nan)


def scores(forecast, truth, weight, scaled_forecast, scaled_truth, mase_scale: float) -> dict[str, float]:
    """All the metrics of one forecaster over the same origins and steps."""
    scaled = weighted_errors(scaled_forecast, scaled_truth, weight)
    original = weighted_errors(forecast, truth, weight)
    return {
        "mse": scaled["mse"],
        "mae": scaled["mae"],
        "mae_original": original["mae"],
        "rmse_original": math.sqrt(original["mse"]),
        "mase": original["mae"] / mase_scale if mase_scale > 0 else float("nan"),
        "nse": nse(forecast, truth, weight),
    }


@dataclass(frozen=True)
class Evaluation:
    """Metrics over a range: `summary` per forecaster, `per_step` per horizon step, and the range itself."""

    summary: dict[str, dict[str, float]]
    per_step: pd.DataFrame
    origins: int
    first_time: str
    last_time: str
    seconds: float
    warning: str | None = None
    season: Season | None = None
    notes: tuple[str, ...] = ()
    ablation: dict[str, Improvement] | None = None  # per variant: how surely the model as it runs beats it
    intervals: dict[str, IntervalScores] | None = None  # "model" and "naive" (Repeat's); None without a calibration

    def table(self) -> str:
        """A plain-text table, one row per forecaster, and the state ablation's t statistics below it."""
        columns = ("mse", "mae", "mae_original", "rmse_original", "mase", "nse")
        header = f"{'forecaster':<16}" + "".join(f"{name:>15}" for name in columns)
        rows = [
            f"{name:<16}" + "".join(f"{values[column]:>15.4f}" for column in columns)
            for name, values in self.summary.items()
        ]
        rows += [f"model beats {variant}: {verdict.describe()}" for variant, verdict in (self.ablation or {}).items()]
        return "\n".join([header, *rows, *self.interval_table()])

    def interval_table(self) -> list[str]:
        """Coverage, mean width and Winkler score of each interval, and the mean pinball loss, for the model and the
        naive interval (Repeat plus the quantiles of its validation errors); widths and scores in the target's units."""
        if not self.intervals:
            return []
        rows = ["", f"{'interval':<16}{'nominal':>10}{'coverage':>10}{'min step':>10}{'max step':>10}{'width':>12}"
                f"{'winkler':>12}{'pinball':>12}"]
        for label, scored in self.intervals.items():
            for name, values in scored.intervals.items():
                by_step = scored.coverage_by_step[name]
                rows.append(
                    f"{label + ' ' + name:<16}{values['nominal']:>10.3f}{values['coverage']:>10.3f}"
                    f"{np.nanmin(by_step):>10.3f}{np.nanmax(by_step):>10.3f}{values['width']:>12.4g}"
                    f"{values['winkler']:>12.4g}{scored.pinball:>12.4g}"
                )
        return rows

    def to_json(self) -> dict:
        return {
            "origins": self.origins,
            "first_target_time": self.first_time,
            "last_target_time": self.last_time,
            "seconds": self.seconds,
            "seasonal_naive_season": (
                None if self.season is None else {"steps": self.season.steps, "cycle": self.season.cycle}
            ),
            "notes": list(self.notes),
            "metrics": self.summary,
            "ablation": {
                variant: {"t": verdict.t, "blocks": verdict.blocks, "block": verdict.block}
                for variant, verdict in (self.ablation or {}).items()
            },
            "intervals": {
                label: {"pinball": scored.pinball, **scored.intervals} for label, scored in (self.intervals or {}).items()
            },
        }


@dataclass(frozen=True)
class RangeForecasts:
    """A saved model's forecasts at every origin `ends` (n,) of a range: `models` maps each way of running it (see
    forecast.ablation) to its z-scored forecasts (n, H), clipped to the target's bounds; `target` and `weight` (n, H)
    are the z-scored truth (gaps 0) and 1 where it is observed."""

    saved: SavedModel
    series: Series
    features: Features
    ends: np.ndarray
    models: dict[str, np.ndarray]
    target: np.ndarray
    weight: np.ndarray
    warning: str | None


def range_forecasts(
    csv_path: str | Path, model_dir: str | Path, start: str | None = None, end: str | None = None,
    validation_rows: bool = False, warn: Callable[[str], None] | None = None, ablation: bool = True,
) -> RangeForecasts:
    """The forecasts `evaluate` scores (its arguments are described there), before any scoring."""
    from forecast.ablation import ablation_forecasts, rolling_forecasts
    from forecast.data import load_series
    from forecast.features import build_features
    from forecast.prediction import bounded, check_compatible, load_model_file, scaled_bounds
    from forecast.store import current_version, read_saved, with_network
    from forecast.windowing import WindowBatcher

    saved = read_saved(current_version(Path(model_dir)))
    config, schema = saved.config, saved.schema
    series = load_series(csv_path, config, schema.business_days, warn)
    check_compatible(series, schema)
    horizon, lookback = config.horizon, config.lookback
    first_row, end_row, warning = scored_rows(series, schema, start, end, validation_rows, horizon, model_dir)
    first, last = max(first_row - 1, lookback - 1), end_row - horizon - 1
    if last < first:
        raise ForecastError(
            f"{csv_path}: the range from row {first_row} to {end_row} holds no origin with {lookback} steps of history "
            f"and {horizon} steps ahead; widen --start/--end"
        )
    saved = with_network(saved, load_model_file)
    features = build_features(series, saved.scaler, horizon, calendar=schema.layout.calendar)
    batcher = WindowBatcher(features, lookback, horizon)
    chunks = config.chunks_per_stream
    if ablation:
        models = ablation_forecasts(saved.model, batcher, first, last, chunks, config.batch_size)
    else:
        models = {"model": rolling_forecasts(saved.model, batcher, first, last, chunks, config.batch_size)}
    ends = np.arange(first, last + 1)
    target, weight = batcher.targets(ends, np.ones(len(ends), dtype=bool))
    low, high = scaled_bounds(saved.scaler, config)
    models = {label: bounded(forecast, low, high) for label, forecast in models.items()}
    return RangeForecasts(saved, series, features, ends, models, target, weight, warning)


def evaluate(
    csv_path: str | Path, model_dir: str | Path, start: str | None = None, end: str | None = None,
    validation_rows: bool = False,
    warn: Callable[[str], None] | None = None,
    ablation: bool = True,
) -> Evaluation:
    """Scores every origin whose whole horizon lies in rows [start, end).

    The default range is every row after the model's validation rows, which chose its inputs and stopped its training
    and so cannot give an honest score; `validation_rows` scores exactly those, with a warning in the result. A last
    line still being written is refused, or with `warn`, left out with a warning through it. With `ablation`, the
    model is also scored with its state reset before every chunk and with its LSTM zeroed (see forecast.ablation).
    A model with an interval calibration also gets its intervals scored next to the naive interval's.
    """
    import time

    began = time.perf_counter()
    ranged = range_forecasts(csv_path, model_dir, start, end, validation_rows, warn, ablation)
    saved, series, features, ends = ranged.saved, ranged.series, ranged.features, ranged.ends
    models, target, weight = ranged.models, ranged.target, ranged.weight
    schema, horizon = saved.schema, saved.config.horizon
    errors = {label: origin_errors(forecast, target, weight) for label, forecast in models.items()}
    verdicts = {label: improvement(errors[label], errors["model"], ends, horizon) for label in models if label != "model"}
    name = series.roles.target
    training = series.values[name].to_numpy()[: schema.train_rows]
    season = choose_season(
        series.freq, series.time[schema.train_rows - 1] - series.time[0], training, horizon, series.business_days
    )
    candidates = {**models, "repeat": repeat_forecast(features.history[ends, 0], horizon)}
    notes = [season.describe()]
    if season.cycle is not None:
        candidates["seasonal_naive"] = seasonal_naive_forecast(features.history[:, 0], ends, horizon, season.steps)
        short = int(np.count_nonzero(np.isnan(candidates["seasonal_naive"]).any(axis=1)))
        if short:
            notes.append(f"seasonal naive: {short} of the first origins lack a season of history; their steps before "
                         "the first row are not scored for it")
    truth = saved.scaler.inverse(name, target.astype("float64"))
    mase_scale = float(np.nanmean(np.abs(training[season.steps :] - training[: -season.steps])))
    summary, per_step = {}, {"step": np.arange(1, horizon + 1)}
    for label, scaled in candidates.items():
        scored = np.where(np.isfinite(scaled), weight, 0.0)
        values = saved.scaler.inverse(name, scaled.astype("float64"))
        summary[label] = scores(values, truth, scored, scaled, target, mase_scale)
        steps = range(horizon)
        per_step[f"{label}_mse"] = [weighted_errors(scaled[:, k], target[:, k], scored[:, k])["mse"] for k in steps]
        per_step[f"{label}_nse"] = [nse(values[:, k], truth[:, k], scored[:, k]) for k in steps]
    intervals = None
    if saved.intervals is not None:
        intervals = interval_scores(saved, features.history[:, 0], ends, models["model"], candidates["repeat"], truth,
                                    weight)
        for label, scored_intervals in intervals.items():
            for interval, coverage in scored_intervals.coverage_by_step.items():
                per_step[f"{label}_coverage_{interval}"] = coverage
    return Evaluation(
        summary=summary,
        per_step=pd.DataFrame(per_step),
        origins=len(ends),
        first_time=str(series.time[ends[0] + 1]),
        last_time=str(series.time[ends[-1] + horizon]),
        seconds=time.perf_counter() - began,
        warning=ranged.warning,
        season=season,
        notes=tuple(notes),
        ablation=verdicts if ablation else None,
        intervals=intervals,
    )


def interval_scores(saved: SavedModel, history: np.ndarray, ends: np.ndarray, forecast: np.ndarray, repeat: np.ndarray,
                    truth: np.ndarray, weight: np.ndarray) -> dict[str, IntervalScores]:
    """The model's intervals around its z-scored `forecast` (n, H) at `ends` (n,), and the naive interval around
    Repeat's (n, H), each clipped to the target's bounds and scored against `truth` (n, H, the target's units) where
    `weight` > 0; `history` is the z-scored target of every row (the recent scale reads it)."""
    from forecast.prediction import bounded

    calibration, config = saved.intervals, saved.config
    bounds = {"model": calibration.bounds(forecast, history, ends), "naive": calibration.naive_bounds(repeat)}
    return {
        label: score_intervals(
            bounded(saved.scaler.inverse(config.target, values), config.target_min, config.target_max), truth, weight,
            calibration.quantiles,
        )
        for label, values in bounds.items()
    }


def scored_rows(series: Series, schema: Schema, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                model_dir: Path) -> tuple[int, int, str | None]:
    """The rows [first, end) whose targets are scored (0-based row numbers, end exclusive), and a warning when they are
    the validation rows."""
    from forecast.training import row_bound

    n_rows = series.n_observed
    end_row = min(row_bound(series, end, "end") if end else n_rows, n_rows)
    if start:
        if validation_rows:
            raise ForecastError("give --start or --validation-rows, not both")
        first_row = row_bound(series, start, "start", first=True)
        seen = schema.val_end if schema.val_end is not None else schema.train_rows
        warning = None
        if first_row < seen:
            fitted = "training and validation" if first_row < schema.train_rows else "validation"
            warning = (f"warning: rows {first_row} to {min(seen, end_row)} of this range are the model's {fitted} rows; "
                       "their scores flatter it")
        return first_row, end_row, warning
    if schema.val_end is None:
        raise ForecastError(
            f"{model_dir}: the model does not record where its validation rows end (saved by an earlier version of "
            "forecast); pass --start with the first row or date to score"
        )
    if validation_rows:
        end_row = min(end_row, schema.val_end) if end else min(schema.val_end, n_rows)
        warning = (
            f"warning: rows {schema.train_rows} to {schema.val_end} are the validation rows, which chose the linear "
            "inputs, stopped training and decided the kept model; these scores flatter it"
        )
        return schema.train_rows, end_row, warning
    if end_row - schema.val_end < horizon:
        raise ForecastError(
            f"{series.path}: no rows after the model's validation rows (they end at row {schema.val_end}, "
            f"{series.time[schema.val_end - 1]}) to score {horizon} steps ahead; pass --start, or --validation-rows to "
            "score the validation rows (their scores flatter the model)"
        )
    return schema.val_end, end_row, None
