"""The recent errors a forecast's interval is calibrated on: the model's forecasts at the origins before it.

A saved calibration (forecast.intervals) holds the quantiles of the validation errors; a forecast made months later
is calibrated instead on the last `window` errors of its own series whose truth is known at its origin, so the width
follows the errors as they are now. Only origins after a series' training rows count: an error on rows the weights were
fitted on is too small. Evaluation and prediction both get their offsets here, so that `forecast predict` at an origin
draws the interval `forecast evaluate` scores there.

Indices are rows of the feature arrays (`Features.starts`), as in forecast.sampler; forecasts and errors are z-scored
by each origin's series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from forecast.sampler import OriginRange

if TYPE_CHECKING:
    from forecast.data import Collection
    from forecast.features import Features
    from forecast.intervals import Calibration
    from forecast.store import Schema
    from forecast.windowing import WindowBatcher


def first_unfitted(collection: Collection, schema: Schema, features: Features) -> np.ndarray:
    """Per series of `collection` (n_series,), the first origin no weight was fitted on, a row of `features`: the last
    training row of a series `schema` records as trained (its horizon lies in the validation rows), the series' first
    row for one the model never trained on."""
    floors = []
    for index, series in enumerate(collection.series):
        start, _ = features.bounds(index)
        record = schema.record(series.id)
        floors.append(start + record.train_rows - 1 if record is not None else start)
    return np.asarray(floors, dtype=np.int64)


def window_ranges(ranges: tuple[OriginRange, ...], floors: np.ndarray, window: int, horizon: int
                  ) -> tuple[OriginRange, ...]:
    """For each of `ranges`, the origins before it whose errors its first origin may be calibrated on: the last
    `window` + `horizon` (the last H are known only in part), none before the series' floor in `floors` (n_series,;
    from `first_unfitted`) or its first whole window. A range may be empty (`size` 0)."""
    return tuple(
        OriginRange(span.series, max(span.earliest, int(floors[span.series]), span.first - window - horizon),
                    span.first - 1, span.earliest)
        for span in ranges
    )


def interval_offsets(
    batcher: WindowBatcher, ranges: tuple[OriginRange, ...], before: tuple[OriginRange, ...], earlier: np.ndarray,
    calibration: Calibration, bound, forecasts: np.ndarray | None = None,
) -> np.ndarray:
    """Offsets (n, Q, H), z-units per unit of scale, for every origin of `ranges` (n in all, in order), each from its
    series' latest known errors under `calibration` (`Calibration.sliding_offsets`; its saved offsets for all when its
    `window` is 0), the truths cut by `batcher`. `before` are the ranges' `window_ranges` and `earlier` (m, H,
    z-scored, not clipped) the model's forecasts at the origins of the non-empty ones, in order (as
    `runner.forecasts_at` makes them); `bound(forecast, origins)` clips z-scored forecasts (m, H) at `origins` (m,) to
    the target's bounds, as predict clips them; `forecasts` (n, H), where given, are the model's own forecasts at the
    ranges' origins, whose errors join once their truth is known."""
    if calibration.window < 1:
        return np.repeat(calibration.offsets[None], sum(span.size for span in ranges), axis=0)
    history = batcher.features.history[:, 0]
    offsets, taken, done = [], 0, 0
    for span, prior in zip(ranges, before):
        own = np.arange(span.first, span.last + 1)
        at = np.arange(prior.first, prior.last + 1)
        forecast = earlier[taken : taken + prior.size]
        taken += prior.size
        if forecasts is not None:
            at, forecast = np.concatenate([at, own]), np.concatenate([forecast, forecasts[done : done + span.size]])
        done += span.size
        truth, weight = batcher.targets(at, np.ones(len(at), dtype=bool))
        errors = (truth - bound(forecast, at)) / calibration.scale(history, at)[:, None]
        offsets.append(calibration.sliding_offsets(errors, weight, at, own))
    return np.concatenate(offsets)
