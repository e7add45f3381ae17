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

from forecast.backtest import backtest_table
from forecast.criterion import Improvement, improvement
from forecast.errors import ForecastError
from forecast.intervals import IntervalScores, score_intervals
from forecast.scaling import target_stats
from forecast.split import row_bound

if TYPE_CHECKING:
    from forecast.data import Series
    from forecast.data import Collection
    from forecast.features import Features
    from forecast.store import SavedModel, Schema, SeriesRecord


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
    worse_than_repeat: bool = False  # its error on the training rows exceeds Repeat's: a worse Repeat, not scored

    @property
    def scored(self) -> bool:
        return self.cycle is not None and not self.worse_than_repeat

    def describe(self) -> str:
        if self.cycle is None:
            return "seasonal naive: no calendar cycle is covered twice by the training rows, so it is left out"
        names = [CYCLE_NAMES[cycle] for cycle in self.candidates]
        among = f" (the smallest error on the training rows among a {', a '.join(names)})" if len(names) > 1 else ""
        described = f"seasonal naive: a season of {self.steps} steps, a {CYCLE_NAMES[self.cycle]}{among}"
        if self.worse_than_repeat:
            return f"{described}, errs more than Repeat on the training rows, so it is left out"
        return described


CYCLE_NAMES = {"hour_of_day": "day", "day_of_week": "week", "day_of_year": "year"}


def choose_season(
    freq: pd.Timedelta, span: pd.Timedelta, training: np.ndarray, horizon: int, business_days: bool = False
) -> Season:
    """The calendar cycle (a day, a week, a year) that the seasonal-naive baseline repeats.

    Candidates are the cycles longer than one step that the training rows (`training`, spanning `span`) cover at least
    twice, as for the calendar features; a year of daily data counts 365 steps (261 business days, a week 5). Among
    them wins the one whose seasonal-naive forecasts over `horizon` steps err least (mean absolute error) on the
    training rows themselves; where that error exceeds Repeat's there, the season is marked `worse_than_repeat`.
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
    # Repeat is the seasonal naive of a 1-step season; a daily river's weekly season, say, only repeats older values.
    worse = errors[best] > _training_error(training, 1, horizon)
    return Season(candidates[best], best, tuple(candidates), worse)


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


@dataclass(frozen=True)
class Evaluation:
    """Metrics over a range: `summary` per forecaster (pooled over every origin of every series), `per_step` per
    horizon step, `per_series` one row per series and forecaster, and the range itself."""

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
    per_series: pd.DataFrame | None = None
    intervals: dict[str, IntervalScores] | None = None  # "model" and "naive" (Repeat's); None without a calibration
    forecasts: pd.DataFrame | None = None  # every forecast scored, one row per (series, origin, step); on request

    def over_series(self) -> pd.DataFrame:
        """The median and mean over series of each forecaster's per-series metrics (the series held out of training
        with --holdout-series apart), one row per (forecaster, group, statistic)."""
        frame = self.per_series
        metrics = ["nse", "nse_first_step", "nse_last_step", "mse"]
        grouped = frame.groupby(["forecaster", "held_out"], sort=False)[metrics]
        table = pd.concat({"median": grouped.median(), "mean": grouped.mean()}, names=["statistic"])
        return table.reset_index()

    def table(self) -> str:
        """A plain-text table, one row per forecaster, the state ablation's t statistics below it, and for many series
        the median and mean over series of NSE at the first and last step."""
        columns = ("mse", "mae", "mae_original", "rmse_original", "mase", "nse")
        header = f"{'forecaster':<16}" + "".join(f"{name:>15}" for name in columns)
        rows = [
            f"{name:<16}" + "".join(f"{values[column]:>15.4f}" for column in columns)
            for name, values in self.summary.items()
        ]
        rows += [f"model beats {variant}: {verdict.describe()}" for variant, verdict in (self.ablation or {}).items()]
        if self.per_series is not None and self.per_series["series"].nunique() > 1:
            rows += ["", f"over series (median / mean NSE){'':<6}{'step 1':>17}{'last step':>17}{'all steps':>17}"]
            over = self.over_series()
            for (forecaster, held_out), part in over.groupby(["forecaster", "held_out"], sort=False):
                stats = part.set_index("statistic")
                cells = "".join(f"{stats.loc['median', key]:>8.3f} /{stats.loc['mean', key]:>7.3f}"
                                for key in ("nse_first_step", "nse_last_step", "nse"))
                label = f"{forecaster}{' (held out)' if held_out else ''}"
                count = int(np.count_nonzero((self.per_series["forecaster"] == forecaster)
                                             & (self.per_series["held_out"] == held_out)))
                rows.append(f"{label:<26}{count:>3} series   {cells}")
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
            "over_series": [] if self.per_series is None else self.over_series().to_dict(orient="records"),
            "per_series": [] if self.per_series is None else self.per_series.to_dict(orient="records"),
            "intervals": {
                label: {"pinball": scored.pinball, **scored.intervals} for label, scored in (self.intervals or {}).items()
            },
        }


@dataclass(frozen=True)
class RangeForecasts:
    """A saved model's forecasts at every origin `ends` (n,) of a range, series after series (`series_index` (n,)
    names each origin's series in `collection`): `models` maps each way of running it (see forecast.ablation) to its
    forecasts (n, H), z-scored by each origin's series and clipped to the target's bounds; `target` and `weight`
    (n, H) are the z-scored truth (gaps 0) and 1 where it is observed; `mean` and `std` (n, 1) turn z-scores of each
    origin's series into the target's units; `offsets` (n, Q, H) are each origin's interval offsets (see
    forecast.recent_errors; None without intervals)."""

    saved: SavedModel
    collection: Collection
    features: Features
    ranges: tuple
    ends: np.ndarray
    series_index: np.ndarray
    models: dict[str, np.ndarray]
    target: np.ndarray
    weight: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    warning: str | None
    left_out: tuple[str, ...]
    offsets: np.ndarray | None = None

    def in_units(self, values: np.ndarray) -> np.ndarray:
        return values.astype("float64") * self.std + self.mean


def range_forecasts(
    csv_path: str | Path, model_dir: str | Path, start: str | None = None, end: str | None = None,
    validation_rows: bool = False, warn: Callable[[str], None] | None = None, ablation: bool = True,
    series_ids: tuple[str, ...] | None = None, after_training: bool = False, intervals: bool = True,
) -> RangeForecasts:
    """The forecasts `evaluate` scores (its arguments are described there), before any scoring; `after_training`
    takes each trained series from the end of its training rows instead (its validation rows and all after them);
    `intervals` adds each origin's interval offsets where the model has a calibration."""
    from forecast.ablation import ablation_forecasts, rolling_forecasts
    from forecast.data import load_collection
    from forecast.prediction import check_compatible, collection_features, load_model_file, scalers_for, target_bound
    from forecast.recent_errors import first_unfitted, interval_offsets
    from forecast.sampler import origin_ranges
    from forecast.store import current_version, read_saved, with_network
    from forecast.windowing import WindowBatcher

    warn = warn or (lambda message: None)
    saved = read_saved(current_version(Path(model_dir)))
    config, schema = saved.config, saved.schema
    collection = load_collection(csv_path, config, schema.business_days, warn).select(series_ids)
    check_compatible(collection, schema, saved)
    horizon, lookback = config.horizon, config.lookback
    rows, warning, left_out = _scored_rows(collection, schema, start, end, validation_rows, horizon, Path(model_dir),
                                           after_training)
    collection = collection.select(tuple(rows))
    saved = with_network(saved, load_model_file)
    # An unseen series is z-scored on its rows up to its first origin: the first scored target's row, or the first
    # row with a whole lookback before it where the range starts earlier.
    scalers = scalers_for(collection, saved, {name: max(first, lookback) for name, (first, _) in rows.items()}, warn)
    features = collection_features(collection, saved, scalers, for_prediction=False)
    ranges = origin_ranges(features.starts, features.lengths, [rows[series.id] for series in collection.series],
                           lookback, horizon)
    left_out += _check_ranges(collection, ranges, rows, lookback, horizon)
    batcher = WindowBatcher(features, lookback, horizon)
    chunks = config.chunks_per_stream
    if ablation:
        models = ablation_forecasts(saved.model, batcher, ranges, chunks, config.batch_size)
    else:
        models = {"model": rolling_forecasts(saved.model, batcher, ranges, chunks, config.batch_size)}
    ends = np.concatenate([np.arange(span.first, span.last + 1) for span in ranges])
    series_index = features.series_of(ends)
    target, weight = batcher.targets(ends, np.ones(len(ends), dtype=bool))
    stats = target_stats(scalers, collection.first.roles.target)
    bound = target_bound(stats, features, config)
    models = {label: bound(forecast, ends) for label, forecast in models.items()}
    offsets = None
    if intervals and saved.intervals is not None:
        offsets = interval_offsets(saved.model, batcher, ranges, first_unfitted(collection, schema, features),
                                   saved.intervals, chunks, config.batch_size, bound, models["model"])
    mean, std = stats[series_index, :1], stats[series_index, 1:]
    return RangeForecasts(saved, collection, features, ranges, ends, series_index, models, target, weight, mean, std,
                          warning, tuple(left_out), offsets)


def evaluate(
    csv_path: str | Path, model_dir: str | Path, start: str | None = None, end: str | None = None,
    validation_rows: bool = False,
    warn: Callable[[str], None] | None = None,
    ablation: bool = True,
    series_ids: tuple[str, ...] | None = None,
    keep_forecasts: bool = False,
) -> Evaluation:
    """Scores every origin whose whole horizon lies in rows [start, end) of each series (or of those in `series_ids`).

    The default range is every row after the model's validation rows, which chose its inputs and stopped its training
    and so cannot give an honest score; `validation_rows` scores exactly those, with a warning in the result. A series
    the model was not trained on (held out) is scored from the rows after the validation rows' end date of the trained
    series. A last line still being written is refused, or with `warn`, left out with a warning through it. With
    `ablation`, the model is also scored with its state reset before every chunk and with its LSTM zeroed (see
    forecast.ablation). A model with an interval calibration also gets its intervals scored next to the naive
    interval's. `keep_forecasts` keeps every forecast scored, in long format (`backtest.backtest_table`).
    """
    import time

    from forecast.store import current_version, read_metrics

    began = time.perf_counter()
    # A linear start has no network to ablate: its three variants would only repeat its own forecasts.
    linear = linear_start_kept(read_metrics(current_version(Path(model_dir))))
    ablation = ablation and not linear
    ranged = range_forecasts(csv_path, model_dir, start, end, validation_rows, warn, ablation, series_ids)
    saved, collection, features, ranges, ends = ranged.saved, ranged.collection, ranged.features, ranged.ranges, \
        ranged.ends
    models, target, weight, horizon = ranged.models, ranged.target, ranged.weight, saved.config.horizon
    errors = {label: origin_errors(forecast, target, weight) for label, forecast in models.items()}
    verdicts = {label: improvement(errors[label], errors["model"], ends, horizon) for label in models if label != "model"}
    candidates = {**models, "repeat": repeat_forecast(features.history[ends, 0], horizon)}
    naive, season, mase_scale, notes = _seasonal_naive(collection, saved.schema, features, ranges, horizon)
    notes = [LINEAR_START_NOTE] * linear + notes + list(ranged.left_out)
    if naive is not None:
        candidates["seasonal_naive"] = naive
    summary, per_step, per_series = _score_candidates(
        candidates, target, weight, ranged.in_units, mase_scale[ranged.series_index], ranged.series_index, ranges,
        collection, saved.schema
    )
    intervals, bounds = None, {}
    if saved.intervals is not None:
        bounds = interval_bounds(ranged, candidates["repeat"])
        intervals = interval_scores(ranged, bounds)
        for label, scored_intervals in intervals.items():
            for interval, coverage in scored_intervals.coverage_by_step.items():
                per_step[f"{label}_coverage_{interval}"] = coverage
    return Evaluation(
        summary=summary,
        per_step=per_step,
        origins=len(ends),
        first_time=str(min(features.time[span.first + 1] for span in ranges)),
        last_time=str(max(features.time[span.last + horizon] for span in ranges)),
        seconds=time.perf_counter() - began,
        warning=ranged.warning,
        season=season,
        notes=tuple(notes),
        ablation=verdicts if ablation else None,
        per_series=per_series,
        intervals=intervals,
        forecasts=backtest_table(ranged, candidates, bounds.get("model")) if keep_forecasts else None,
    )


LINEAR_START_NOTE = "the model is its linear start (the network was discarded at training): no ablations"


def linear_start_kept(metrics: dict) -> bool:
    """Whether a version's metrics say it is a linear start: the gate kept it at training, or a warm retrain kept the
    weights of a version that was one (and took its kind)."""
    if metrics.get("kept_linear_start") is True:
        return True
    return metrics.get("kept_start_weights") is True and str(metrics.get("model_kind", "")).startswith("linear (")


def interval_bounds(ranged: RangeForecasts, repeat: np.ndarray) -> dict[str, np.ndarray]:
    """The model's interval bounds around its forecasts and the naive interval's around Repeat's (`repeat`, n, H,
    z-units), each (n, Q, H) in the target's units and clipped to its bounds."""
    from forecast.prediction import bounded

    calibration, config = ranged.saved.intervals, ranged.saved.config
    history = ranged.features.history[:, 0]
    bounds = {"model": calibration.bounds(ranged.models["model"], history, ranged.ends, ranged.offsets),
              "naive": calibration.naive_bounds(repeat)}
    mean, std = ranged.mean[:, :, None], ranged.std[:, :, None]  # (n, 1, 1): over the Q levels and H steps
    return {label: bounded(values * std + mean, config.target_min, config.target_max) for label, values in bounds.items()}


def interval_scores(ranged: RangeForecasts, bounds: dict[str, np.ndarray]) -> dict[str, IntervalScores]:
    """Each interval's `bounds` (`interval_bounds`) scored against the truth in the target's units where it is
    observed."""
    truth = ranged.in_units(ranged.target)
    quantiles = ranged.saved.intervals.quantiles
    return {label: score_intervals(values, truth, ranged.weight, quantiles) for label, values in bounds.items()}


def _score_candidates(candidates: dict[str, np.ndarray], target: np.ndarray, weight: np.ndarray, in_units,
                      mase_scale: np.ndarray, series_index: np.ndarray, ranges, collection, schema: Schema):
    """Each forecaster's metrics pooled over all origins, per horizon step, and per series. `candidates` and `target`
    are (n_origins, H) z-scored by each origin's series, `in_units` turns them into the target's units, `mase_scale`
    and `series_index` are per origin; a NaN forecast step is not scored."""
    horizon = target.shape[1]
    truth = in_units(target)
    summary, per_step, per_series = {}, {"step": np.arange(1, horizon + 1)}, []
    for label, scaled in candidates.items():
        scored = np.where(np.isfinite(scaled), weight, 0.0)
        values = in_units(scaled)
        summary[label] = scores(values, truth, scored, scaled, target, mase_scale)
        steps = range(horizon)
        per_step[f"{label}_mse"] = [weighted_errors(scaled[:, k], target[:, k], scored[:, k])["mse"] for k in steps]
        per_step[f"{label}_nse"] = [nse(values[:, k], truth[:, k], scored[:, k]) for k in steps]
        for span in ranges:
            mine = series_index == span.series
            if not np.isfinite(scaled[mine]).any():  # a baseline left out for this series (seasonal naive): no row
                continue
            series = collection.series[span.series]
            per_series.append({
                "series": series.id, "forecaster": label, "held_out": series.id in schema.holdout,
                "origins": int(np.count_nonzero(mine)),
                **series_scores(values[mine], truth[mine], scored[mine], scaled[mine], target[mine]),
            })
    return summary, pd.DataFrame(per_step), pd.DataFrame(per_series)


def _check_ranges(collection, ranges, rows: dict[str, tuple[int, int]], lookback: int, horizon: int) -> list[str]:
    """Notes naming the series without an origin to score; an error when no series has one."""
    scored = {collection.series[span.series].id for span in ranges}
    reasons = []
    for series in collection.series:
        if series.id not in scored:
            first_row, end_row = rows[series.id]
            reasons.append(
                f"{series.where}: the range from row {first_row} to {end_row} holds no origin with {lookback} steps of "
                f"history and {horizon} steps ahead; widen --start/--end"
            )
    if not ranges:
        raise ForecastError(reasons[0])
    return [f"left out: {reason}" for reason in reasons]


def _seasonal_naive(collection, schema: Schema, features, ranges, horizon: int):
    """The seasonal-naive forecasts (n_origins, H, z-scored; None when no series has a cycle covered twice whose
    forecasts beat Repeat's on its training rows), the season of the first series, each series' MASE scale (in-sample
    seasonal-naive MAE of its training rows, target units, whether or not the baseline is scored) and notes. Each
    series repeats its own season, chosen on its own training rows (all rows before the range for a series the model
    was not trained on); a series where it errs more than Repeat there gets NaN forecasts, which are not scored."""
    name = collection.first.roles.target
    forecasts, scales, seasons, short = [], [], [], 0
    for span in ranges:
        series = collection.series[span.series]
        record = schema.record(series.id)
        train_rows = record.train_rows if record else span.first - features.bounds(span.series)[0] + 1
        training = series.values[name].to_numpy()[:train_rows]
        season = choose_season(series.freq, series.time[train_rows - 1] - series.time[0], training, horizon,
                               series.business_days)
        seasons.append(season)
        scales.append(float(np.nanmean(np.abs(training[season.steps :] - training[: -season.steps]))))
        start = features.bounds(span.series)[0]
        origins = np.arange(span.first, span.last + 1) - start
        values = features.history[start : features.bounds(span.series)[1], 0]
        naive = (seasonal_naive_forecast(values, origins, horizon, season.steps) if season.scored
                 else np.full((len(origins), horizon), np.nan))
        short += int(np.count_nonzero(np.isnan(naive).any(axis=1))) if season.scored else 0
        forecasts.append(naive)
    scale = np.full(len(collection.series), np.nan)
    for span, value in zip(ranges, scales):
        scale[span.series] = value
    notes = [seasons[0].describe()]
    worse = sum(season.worse_than_repeat for season in seasons)
    if len({season.steps for season in seasons}) > 1 or 0 < worse < len(seasons):
        notes = ["seasonal naive: each series repeats the season that fits its own training rows best"]
        if worse:
            notes.append(f"seasonal naive: left out for {worse} of the {len(seasons)} series, where it errs more "
                         "than Repeat on their training rows")
    if short:
        notes.append(f"seasonal naive: {short} of the first origins lack a season of history; their steps before "
                     "the first row are not scored for it")
    if not any(season.scored for season in seasons):
        return None, seasons[0], scale, notes
    return np.concatenate(forecasts), seasons[0], scale, notes


def _scored_rows(collection, schema: Schema, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                 model_dir: Path, after_training: bool = False) -> tuple[dict[str, tuple[int, int]], str | None, list[str]]:
    """Each series' scored rows [first, end), the first warning, and notes naming the series left out because they
    have nothing to score (an error when that is every series). A series without a training record (held out, or too
    short to train on) starts after the latest validation end of the trained series, unless --start says otherwise."""
    rows, warnings, errors = {}, [], []
    for series in collection.series:
        try:
            rows[series.id], warning = _series_rows(series, schema, start, end, validation_rows, horizon, model_dir,
                                                    after_training)
        except ForecastError as exc:
            errors.append(exc)
            continue
        if warning:
            warnings.append(warning)
    if not rows:
        raise errors[0]
    return rows, (warnings[0] if warnings else None), [f"left out: {error}" for error in errors]


def _series_rows(series, schema: Schema, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                 model_dir: Path, after_training: bool = False) -> tuple[tuple[int, int], str | None]:
    record = schema.record(series.id)
    if record is not None and after_training:
        return (record.train_rows, min(row_bound(series, end, "end") if end else series.n_observed,
                                       series.n_observed)), None
    if record is not None:
        first_row, end_row, warning = scored_rows(series, record, start, end, validation_rows, horizon, model_dir)
        return (first_row, end_row), warning
    latest = max((record.val_time for record in schema.series if record.val_time), default=None)
    end_row = min(row_bound(series, end, "end") if end else series.n_observed, series.n_observed)
    if start is not None:
        return (row_bound(series, start, "start", first=True), end_row), None
    if latest is None:
        raise ForecastError(f"{series.where}: the model was not trained on this series and does not record "
                            "where validation ends; pass --start")
    if validation_rows:  # the dates the trained series validated on
        trained = max((record.train_time for record in schema.series if record.train_time), default=None)
        if trained is None:
            raise ForecastError(f"{series.where}: the model does not record where training ends; pass --start")
        return (row_bound(series, trained, "end"), min(end_row, row_bound(series, latest, "end"))), None
    first_row = row_bound(series, latest, "end")  # the first row after the trained series' validation
    if end_row - first_row < horizon:
        raise ForecastError(
            f"{series.where}: no rows after the trained series' validation rows (they end {latest}) to score "
            f"{horizon} steps ahead; pass --start, or --validation-rows to score those"
        )
    return (first_row, end_row), None


def scored_rows(series: Series, record: SeriesRecord, start: str | None, end: str | None, validation_rows: bool, horizon: int,
                model_dir: Path) -> tuple[int, int, str | None]:
    """The rows [first, end) whose targets are scored (0-based row numbers, end exclusive), and a warning when they are
    the validation rows."""
    n_rows = series.n_observed
    end_row = min(row_bound(series, end, "end") if end else n_rows, n_rows)
    if start:
        if validation_rows:
            raise ForecastError("give --start or --validation-rows, not both")
        first_row = row_bound(series, start, "start", first=True)
        seen = record.val_end if record.val_end is not None else record.train_rows
        warning = None
        if first_row < seen:
            fitted = "training and validation" if first_row < record.train_rows else "validation"
            warning = (f"warning: rows {first_row} to {min(seen, end_row)} of this range are the model's {fitted} rows; "
                       "their scores flatter it")
        return first_row, end_row, warning
    if record.val_end is None:
        raise ForecastError(
            f"{model_dir}: the model does not record where its validation rows end (saved by an earlier version of "
            "forecast); pass --start with the first row or date to score"
        )
    if validation_rows:
        end_row = min(end_row, record.val_end) if end else min(record.val_end, n_rows)
        warning = (
            f"warning: rows {record.train_rows} to {record.val_end} are the validation rows, which chose the linear "
            "inputs, stopped training and decided the kept model; these scores flatter it"
        )
        return record.train_rows, end_row, warning
    if end_row - record.val_end < horizon:
        raise ForecastError(
            f"{series.where}: no rows after the model's validation rows (they end at row {record.val_end}, "
            f"{series.time[record.val_end - 1]}) to score {horizon} steps ahead; pass --start, or --validation-rows to "
            "score the validation rows (their scores flatter the model)"
        )
    return record.val_end, end_row, None
