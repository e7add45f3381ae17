"""The baselines every forecast is scored next to: Repeat (the last observed value) and seasonal naive (the value one
season before), each series' season chosen on its own training rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from forecast.store import Schema


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


def seasonal_naive(collection, schema: Schema, features, ranges, horizon: int):
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
