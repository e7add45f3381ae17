"""Scoring forecasts: rolling-origin evaluation of a saved model over a range, next to Repeat and seasonal naive.

Every origin of the range gets its own forecast, from a state warmed up over the chunks before it exactly as
`forecast predict` does. Errors on z-scored values (the literature's MSE/MAE) use the model's own scaler, fitted on its
training rows; MAE, RMSE, MASE and NSE are in the target's own units, as are the intervals' widths and scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.backtest import RangeForecasts, backtest_table, range_forecasts
from forecast.baselines import repeat_forecast, seasonal_naive
from forecast.criterion import Improvement, improvement
from forecast.intervals import IntervalScores, score_intervals
from forecast.kept_model import linear_start_kept
from forecast.metrics import nse, origin_errors, scores, series_scores, weighted_errors

if TYPE_CHECKING:
    from forecast.baselines import Season
    from forecast.data_cache import DataCache
    from forecast.store import Schema


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
        return rows + self.series_coverage()

    def series_coverage(self) -> list[str]:
        """For many series, one line per model interval: its coverage per series, the median and the five series
        furthest from the nominal level."""
        frame = self.per_series
        if frame is None or frame["series"].nunique() < 2 or "model" not in (self.intervals or {}):
            return []
        rows = []
        model = frame[frame["forecaster"] == "model"]
        for name, values in self.intervals["model"].intervals.items():
            coverage = model.set_index("series")[f"coverage_{name}"].dropna()
            worst = (coverage - values["nominal"]).abs().sort_values(ascending=False).index[:5]
            rows.append(f"model {name} per series: coverage median {coverage.median():.3f}, within 5 points of "
                        f"{values['nominal']:.0%} for {int(((coverage - values['nominal']).abs() <= 0.05).sum())} of "
                        f"{len(coverage)}; furthest: " + ", ".join(f"{series} {coverage[series]:.3f}" for series in worst))
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


def evaluate(
    csv_path: str | Path, model_dir: str | Path, start: str | None = None, end: str | None = None,
    validation_rows: bool = False,
    warn: Callable[[str], None] | None = None,
    ablation: bool = True,
    series_ids: tuple[str, ...] | None = None,
    keep_forecasts: bool = False,
    cache: DataCache | None = None,
) -> Evaluation:
    """Scores every origin whose whole horizon lies in rows [start, end) of each series (or of those in `series_ids`).

    The default range is every row after the model's validation rows, which chose its inputs and stopped its training
    and so cannot give an honest score; `validation_rows` scores exactly those, with a warning in the result. A series
    the model was not trained on (held out) is scored from the rows after the validation rows' end date of the trained
    series. A last line still being written is refused, or with `warn`, left out with a warning through it. With
    `ablation`, the model is also scored with its state reset before every chunk and with its LSTM zeroed (see
    forecast.ablation). A model with an interval calibration also gets its intervals scored next to the naive
    interval's. `keep_forecasts` keeps every forecast scored, in long format (`backtest.backtest_table`). The file is
    read through `cache` (forecast.data_cache).
    """
    import time

    from forecast.store import current_version, read_metrics

    began = time.perf_counter()
    # A linear start has no network to ablate: its three variants would only repeat its own forecasts.
    linear = linear_start_kept(read_metrics(current_version(Path(model_dir))))
    ablation = ablation and not linear
    ranged = range_forecasts(csv_path, model_dir, start, end, validation_rows, warn, ablation, series_ids,
                             cache=cache)
    saved, collection, features, ranges, ends = ranged.saved, ranged.collection, ranged.features, ranged.ranges, \
        ranged.ends
    models, target, weight, horizon = ranged.models, ranged.target, ranged.weight, saved.config.horizon
    errors = {label: origin_errors(forecast, target, weight) for label, forecast in models.items()}
    verdicts = {label: improvement(errors[label], errors["model"], ends, horizon) for label in models if label != "model"}
    candidates = {**models, "repeat": repeat_forecast(features.history[ends, 0], horizon)}
    naive, season, mase_scale, notes = seasonal_naive(collection, saved.schema, features, ranges, horizon)
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
        per_series = with_series_intervals(per_series, ranged, bounds)
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


def interval_bounds(ranged: RangeForecasts, repeat: np.ndarray) -> dict[str, np.ndarray]:
    """The model's interval bounds around its forecasts and the naive interval's around Repeat's (`repeat`, n, H,
    z-units), each (n, Q, H) in the target's units and clipped to its bounds."""
    from forecast.scaling import bounded

    calibration, config = ranged.saved.intervals, ranged.saved.config
    history = ranged.features.history[:, 0]
    bounds = {"model": calibration.bounds(ranged.models["model"], history, ranged.ends, ranged.offsets),
              "naive": calibration.naive_bounds(repeat)}
    mean, std = ranged.mean[:, :, None], ranged.std[:, :, None]  # (n, 1, 1): over the Q levels and H steps
    return {label: bounded(values * std + mean, config.target_min, config.target_max) for label, values in bounds.items()}


# The forecaster whose per-series row carries each interval's scores: the naive interval is Repeat's.
INTERVAL_FORECASTER = {"model": "model", "naive": "repeat"}


def with_series_intervals(per_series: pd.DataFrame, ranged: RangeForecasts, bounds: dict[str, np.ndarray]
                          ) -> pd.DataFrame:
    """`per_series` with each interval's coverage and Winkler score per series (`coverage_80%`, `winkler_80%`; target's
    units) on the rows of the forecaster it is drawn around (`INTERVAL_FORECASTER`); `bounds` as `interval_bounds`
    returns them."""
    truth = ranged.in_units(ranged.target)
    quantiles = ranged.saved.intervals.quantiles
    per_series = per_series.copy()
    for label, values in bounds.items():
        for index in np.unique(ranged.series_index):
            rows = ranged.series_index == index
            scored = score_intervals(values[rows], truth[rows], ranged.weight[rows], quantiles).intervals
            where = ((per_series["series"] == ranged.collection.series[index].id)
                     & (per_series["forecaster"] == INTERVAL_FORECASTER[label]))
            for name, values_of in scored.items():
                per_series.loc[where, f"coverage_{name}"] = values_of["coverage"]
                per_series.loc[where, f"winkler_{name}"] = values_of["winkler"]
    return per_series


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


