"""What a run keeps, judged as predict will run it: the trained network or the weights it started from, and the kept
model's validation metrics and interval calibration.

Every number here comes from the forecasts predict would make at the validation origins (`runner.forecasts_at`: each
origin's state warmed up over the chunks before it, clipped to the target's bounds; run by a copy of the network at a
larger batch, `bulk.bulk_network`, the same numbers up to float rounding), not from the validation streams
Keras walks each epoch for early stopping, where the first chunk of a stream starts from a reset state. Both are
judged by the run's one score (`criterion.score_weights`), summed a chunk of origins at a time (`error_sums`): nothing
of (origins, H) is held beside the forecasts, the interval calibration's truths included (`intervals.RowTruths`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from forecast.baselines import repeat_forecast
from forecast.bulk import bulk_network
from forecast.error_sums import ErrorSums, Forecasts, TargetSums
from forecast.gate import Verdict, keep_the_better
from forecast.runner import forecasts_at
from forecast.sampler import OriginRange, rolling_origins
from forecast.scaling import bounded_z
from forecast.store import read_metrics
from forecast.windowing import WindowBatcher

Log = Callable[[str], None]


@dataclass(frozen=True)
class ValidationOrigins:
    """Every validation origin of a run, range after range (`origins` (n,), rows of the feature arrays; `series` (n,)
    each one's series index), with what their targets give every forecaster's errors (`targets`: per series counts and
    variances, per origin its weight in the score); the targets themselves (n, H) are cut a chunk at a time (`cut`).
    `stats` (n_series, 2) are each series' target mean and spread (its units), which clip forecasts to the bounds
    [`target_min`, `target_max`] (None: none) and turn z-scores back into units."""

    batcher: WindowBatcher
    ranges: tuple[OriginRange, ...]
    chunks: int
    stats: np.ndarray
    target_min: float | None
    target_max: float | None
    origins: np.ndarray
    series: np.ndarray
    targets: TargetSums

    @classmethod
    def of(cls, batcher: WindowBatcher, ranges: tuple[OriginRange, ...], chunks: int, stats: np.ndarray,
           target_min: float | None, target_max: float | None) -> ValidationOrigins:
        """Every origin of the validation `ranges` (feature rows) with its series and the sums of its targets;
        `stats` (n_series, 2) holds each series' target mean and spread, for clipping to `target_min`/`target_max`
        (original units)."""
        origins, _ = rolling_origins(ranges)
        series = batcher.features.series_of(origins)
        targets = TargetSums.of(series, partial(_cut, batcher, origins), len(stats))
        return cls(batcher, ranges, chunks, stats, target_min, target_max, origins, series, targets)

    def cut(self, part: slice) -> tuple[np.ndarray, np.ndarray]:
        """The z-scored targets (m, H, gaps 0) and step weights (m, H: 1 where observed) of the origins `part`."""
        return _cut(self.batcher, self.origins, part)

    def forecasts(self, model) -> np.ndarray:
        """The forecasts (n, H, z-units, float32) predict would make with `model` at every validation origin,
        clipped: run by a copy of `model` at a larger batch (`bulk.bulk_network`: the same numbers up to float
        rounding), as the recent errors of an interval are."""
        return self.forecaster(model)(slice(None))

    def forecaster(self, model) -> Forecasts:
        """`forecasts` of `model` at the origins `part` (m, H), made when asked: each origin's forecast is its own
        stream's (`runner.forecasts_at`), so a part's are those of the whole, and the bulk copy is made once for every
        part."""
        network, advance = bulk_network(model, len(self.origins), self.batcher)

        def at(part: slice) -> np.ndarray:
            values = forecasts_at(network, self.batcher, self.ranges_of(part), self.chunks, advance)
            return bounded_z(values, self.stats[self.series[part]], self.target_min, self.target_max, out=values)

        return at

    def ranges_of(self, part: slice) -> tuple[OriginRange, ...]:
        """The origins `part` (a slice of `origins`, step 1) as ranges of one series each, in order."""
        first, stop, _ = part.indices(len(self.origins))
        spans, offset = [], 0
        for span in self.ranges:
            low, high = max(first, offset), min(stop, offset + span.size)
            if low < high:
                spans.append(OriginRange(span.series, span.first + low - offset, span.first + high - offset - 1,
                                         span.earliest))
            offset += span.size
        return tuple(spans)

    def errors(self, forecasts: Forecasts) -> ErrorSums:
        """The errors of the forecaster whose forecasts at origins `part` are `forecasts(part)` (m, H, z-units)."""
        return ErrorSums.of(forecasts, self.cut, self.series, self.targets)


def _cut(batcher: WindowBatcher, origins: np.ndarray, part: slice) -> tuple[np.ndarray, np.ndarray]:
    chosen = origins[part]
    return batcher.targets(chosen, np.ones(len(chosen), dtype=bool))


def keep_and_score(model, validation: ValidationOrigins, start_weights: list | None, start_label: str,
                   series_ids: tuple[str, ...], horizon: int, log: Log, linear_start: bool = False
                   ) -> tuple[np.ndarray, bool, Verdict | None]:
    """Keeps the trained `model` or the weights it started from (`gate.keep_the_better`; None: there is no start, the
    network is kept), judged on the validation forecasts; returns the kept model's validation forecast (n, H,
    z-units, clipped), whether the start was kept, and the verdict (None without a start).

    With `linear_start` (the start is the ridge fit, its correction head still 0), the start is judged as it would be
    saved (`model_to_save`): its linear terms alone, which need no warm-up, so each origin runs once instead of once
    per chunk; adding a correction of exactly 0 changes no forecast."""
    forecast = validation.forecasts(model)
    if start_weights is None:
        return forecast, False, None

    def start_forecaster(started) -> Forecasts:
        if not linear_start:
            return validation.forecaster(started)
        from forecast.ensemble import members_of
        from forecast.model import linear_part

        return validation.forecaster(linear_part(members_of(started)[0]))

    kept, kept_start, verdict = keep_the_better(
        model, start_weights, forecast.__getitem__, start_forecaster, validation.errors, validation.targets,
        validation.origins, validation.series, series_ids, horizon, log, start_label)
    if not kept_start:
        return forecast, False, verdict
    del forecast  # the trained network's, not kept: freed before the start's are made whole
    return kept(slice(None)), True, verdict


def validation_metrics(forecast: np.ndarray, validation: ValidationOrigins, n_series: int) -> dict:
    """Validation errors (pooled over series) of the kept model's `forecast` (n, H, z-units) and of Repeat on the same
    steps, z-scored and in the target's own units; their `score`, the run's one score (`criterion.score`: for one
    series the MSE, for many each series' errors against its own spread), which `forecast tune` ranks trials by; with
    many series, the median and mean NSE over series."""
    batcher, origins, targets = validation.batcher, validation.origins, validation.targets

    def repeat(part: slice) -> np.ndarray:
        return repeat_forecast(batcher.last_values(origins[part]), batcher.horizon)

    scores = {}
    kept = validation.errors(lambda part: forecast[part])
    for name, errors in (("model", kept), ("repeat", validation.errors(repeat))):
        scores[name] = {**errors.pooled(targets, validation.stats[:, 1]), "score": errors.score}
        if n_series > 1:
            scores[name]["nse_over_series"] = _over_series(errors.series_nse(targets)[targets.counts > 0])
    return {"validation": scores, "origins": int(np.count_nonzero(kept.weights > 0))}


def _over_series(values: np.ndarray) -> dict:
    """The median and mean of the finite per-series values (each series' NSE), and how many; {} for none."""
    values = values[np.isfinite(values)]
    if not values.size:
        return {}
    return {"median": float(np.median(values)), "mean": float(values.mean()), "series": int(values.size)}


def interval_calibration(forecast: np.ndarray, validation: ValidationOrigins, quantiles: tuple[float, ...],
                         lookback: int, horizon: int, log: Log):
    """The interval calibration (`intervals.Calibration`) of the kept model's validation forecasts (n, H, z-units,
    clipped), or None where no quantile is asked for or no validation target is observed."""
    from forecast.intervals import RowTruths, calibrate, candidate_spans

    if not quantiles:
        return None
    if not validation.targets.counts.any():
        log("no observed target in the validation rows: no forecast intervals to calibrate; point forecasts only")
        return None
    features = validation.batcher.features
    truths = RowTruths(features.target, validation.origins, horizon)  # cut a step at a time: no (n, H) copy held
    calibration = calibrate(forecast, truths, features.history[:, 0], validation.origins, quantiles,
                            candidate_spans(lookback, horizon), validation.series)
    log(calibration.describe())
    return calibration


def model_kind(linear_start: dict | None, kept_start: bool, verdict, start_from: Path | None, members: int) -> str:
    """What was saved, in words: the linear start alone, or the linear terms with the LSTM's correction (whose t is
    against the linear start, or in a warm run against the weights of the version it continued), averaged over
    `members` networks."""
    if kept_start and start_from is not None:
        return read_metrics(start_from).get("model_kind", "as the version it continued")
    if kept_start and linear_start:
        inputs = ["lags" if linear_start["history"] == "lags" else "multi-scale means"]
        inputs += ["covariates"] * bool(linear_start["covariates"]) + ["calendar"] * bool(linear_start["calendar"])
        inputs += ["attributes"] * bool(linear_start.get("attributes"))
        return f"linear (ridge on {', '.join(inputs)})"
    correction = "LSTM correction" if members == 1 else f"the mean LSTM correction of {members} networks"
    if verdict is None:
        return f"linear terms and {correction} trained together (no linear start)"
    against = f"version {start_from.name}" if start_from is not None else "its linear start"
    return f"linear + {correction} (t = {verdict.t:.1f} over {verdict.blocks} blocks against {against})"


def linear_start_kept(metrics: dict) -> bool:
    """Whether a version's metrics say it is a linear start: the gate kept it at training, or a warm retrain kept the
    weights of a version that was one (and took its kind)."""
    if metrics.get("kept_linear_start") is True:
        return True
    return metrics.get("kept_start_weights") is True and str(metrics.get("model_kind", "")).startswith("linear (")


def model_to_save(model, metrics: dict):
    """The model a version saves, given its `metrics` (`validation_metrics` with the gate's entries): the kept one,
    or for a kept linear start its linear terms alone (`model.linear_part`, of the first network: an ensemble's share
    one ridge fit), so that predict and evaluate run no LSTM whose correction is 0."""
    from forecast.ensemble import members_of
    from forecast.model import linear_part

    return linear_part(members_of(model)[0]) if linear_start_kept(metrics) else model
