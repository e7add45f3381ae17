"""Slicing batches of ({sim, lstm, bg}, {"prediction": y}, sample_weight) out of the feature arrays.

Windows are zero-copy views (`sliding_window_view`) of the one contiguous array that holds every series, so memory
grows with the rows, not with windows x window length; a batch copies only its own B windows. Which origins to cut,
and in which order, is the origin sampler's (`forecast.sampler`).

Origins are rows of the feature arrays (`Features.starts`), as in forecast.sampler, PADDING aside; an origin o reads
history rows o-T+1..o and target and sim rows o+1..o+H. Targets are z-scored by each origin's series (gaps as 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from forecast.features import Features
from forecast.sampler import PADDING, StreamPlan

Batch = tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]
SCORED_CHUNK = 2**16  # origins whose targets `scored_origins` cuts at a time


class WindowBatcher:
    """Cuts the model inputs for a batch of origins out of zero-copy window views of the feature arrays."""

    def __init__(self, features: Features, lookback: int, horizon: int, series_weight: np.ndarray | None = None):
        """Windows of `lookback` rows of history (T) and `horizon` steps ahead (H) over `features`; `series_weight`
        (n_series,) multiplies the sample weight of each series' targets (None: all 1)."""
        self.features = features
        self.lookback = lookback
        self.horizon = horizon
        self.series_weight = series_weight
        self._history = sliding_window_view(features.history, lookback, axis=0)
        self._sim = sliding_window_view(features.sim, horizon, axis=0)
        self._target = sliding_window_view(features.target, horizon) if features.n_rows >= horizon else None

    @property
    def earliest_origin(self) -> int:
        """The first series' first origin with a whole window (row T - 1): what PADDING positions are fed (weighted
        0)."""
        return self.lookback - 1

    def check_inside(self, origins: np.ndarray) -> None:
        """ValueError unless each of `origins` (n,; PADDING aside) has its whole window, history and horizon, inside
        its series: a window cut across two series, or past the end, must never be scored."""
        real = origins[origins != PADDING]
        if not real.size:
            return
        starts = self.features.starts
        series = self.features.series_of(real)
        ends = np.append(starts[1:], self.features.n_rows)[series]
        outside = (real < starts[series] + self.lookback - 1) | (real > ends - self.horizon - 1)
        if outside.any():
            raise ValueError(f"origin {real[outside][0]} has no whole window inside its series")

    def inputs(self, origins: np.ndarray) -> dict[str, np.ndarray]:
        """The three inputs for `origins` (B,) (PADDING rows get the earliest window, to be weighted 0), scaled as the
        feature arrays are: "sim" (B, H, n_sim) at the H rows after each origin, "lstm" (B, T, n_history) at the T rows
        up to it, "bg" (B, n_bg) at the origin."""
        origins = np.where(origins == PADDING, self.earliest_origin, origins)
        return {
            "sim": np.ascontiguousarray(self._sim[origins + 1].transpose(0, 2, 1)),
            "lstm": np.ascontiguousarray(self._history[origins - self.lookback + 1].transpose(0, 2, 1)),
            "bg": self.features.bg[origins],
        }

    def targets(self, origins: np.ndarray, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets (B, H) of `origins` (B,), z-scored by each origin's series with gaps as 0, and weights (B, H): the
        series' weight (1 without `series_weight`) where `scored` (B,) is True and the target observed, else 0.

        An origin other than PADDING without a whole window inside its series: ValueError, rather than a window cut from
        elsewhere with full weight.
        """
        self.check_inside(origins)
        rows = np.where(origins == PADDING, self.earliest_origin, origins) + 1
        target = self._target[rows]
        weight = (np.isfinite(target) & scored[:, None]).astype("float32")
        if self.series_weight is not None:
            weight *= self.series_weight[self.features.series_of(rows - 1)][:, None].astype("float32")
        return np.nan_to_num(target, nan=0.0), weight

    def scored_origins(self, origins: np.ndarray) -> np.ndarray:
        """The `origins` (n,) with at least one observed target in their horizon (m,), in order: the ones training,
        validation and the linear start's choice score (an origin whose horizon is all gaps scores nothing)."""
        if not origins.size:
            return origins
        kept = []
        for start in range(0, len(origins), SCORED_CHUNK):  # a chunk at a time: their targets would be n x H floats
            part = origins[start : start + SCORED_CHUNK]
            _, weight = self.targets(part, np.ones(len(part), dtype=bool))
            kept.append(part[weight.any(axis=1)])
        return np.concatenate(kept)

    def batch(self, origins: np.ndarray, scored: np.ndarray) -> Batch:
        """One Keras batch for `origins` (B,) with the scored mask `scored` (B,): the `inputs`, {"prediction": the
        targets (B, H)} and the weights (B, H), as `targets` gives them."""
        target, weight = self.targets(origins, scored)
        return self.inputs(origins), {"prediction": target}, weight

    def last_values(self, origins: np.ndarray) -> np.ndarray:
        """The target at each of `origins` (n,), z-scored by its series, gaps carried forward (PADDING: the earliest
        origin's): the Repeat forecast."""
        origins = np.where(origins == PADDING, self.earliest_origin, origins)
        return self.features.history[origins, 0]


def window_generator(batcher: WindowBatcher, plan: StreamPlan, initial_epoch: int = 0) -> Iterator[Batch]:
    """The training generator for Keras 3: endless batches of `batcher` (`WindowBatcher.batch`), `plan.n_batches` per
    epoch, a fresh layout of `plan` each epoch, starting at epoch `initial_epoch` (0-based)."""
    epoch = initial_epoch
    while True:
        origins, scored = plan.batches(epoch)
        for index in range(len(origins)):
            yield batcher.batch(origins[index], scored[index])
        epoch += 1


def materialise(batcher: WindowBatcher, plan: StreamPlan, epoch: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """All batches of epoch `epoch` of `plan`, cut by `batcher`, stacked in order: the inputs, targets (z-scored, gaps
    as 0), weights and origins, each with n = n_batches * B rows (a `ValidationSet` cut at once: for small sets, such
    as the tests')."""
    validation = ValidationSet.of(batcher, plan, epoch)
    target, weight = validation.cut(slice(None))
    return batcher.inputs(validation.origins), target, weight, validation.origins


@dataclass(frozen=True)
class ValidationSet:
    """One epoch of a plan's batches, in order, for scoring (validation): the `origins` (n = n_batches * B,; PADDING at
    padding) and which of them are `scored` (n,). Their inputs, targets and weights are cut by `batcher` when asked
    for, `batch_size` (B) origins a batch, as training cuts its batches: memory holds two numbers per origin, never its
    window or horizon."""

    batcher: WindowBatcher
    origins: np.ndarray
    scored: np.ndarray
    batch_size: int

    @classmethod
    def of(cls, batcher: WindowBatcher, plan: StreamPlan, epoch: int = 0) -> ValidationSet:
        """The batches of epoch `epoch` (0-based) of `plan`, their windows checked to lie inside their series."""
        origins, scored = plan.batches(epoch)
        batcher.check_inside(origins.reshape(-1))
        return cls(batcher, origins.reshape(-1), scored.reshape(-1), plan.batch_size)

    @property
    def n_batches(self) -> int:
        """How many batches of B origins the set holds."""
        return len(self.origins) // self.batch_size

    def rows(self, batch: int) -> slice:
        """The rows of `origins` and `scored` that batch `batch` (0-based) holds."""
        return slice(batch * self.batch_size, (batch + 1) * self.batch_size)

    def inputs(self, batch: int) -> dict[str, np.ndarray]:
        """The three inputs of batch `batch` (0-based), as `WindowBatcher.inputs` cuts them."""
        return self.batcher.inputs(self.origins[self.rows(batch)])

    def cut(self, part: slice) -> tuple[np.ndarray, np.ndarray]:
        """The targets (m, H; z-scored, gaps as 0) and step weights (m, H) of the origins `part` (a slice of the set's
        rows), as `WindowBatcher.targets` cuts them."""
        return self.batcher.targets(self.origins[part], self.scored[part])

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The inputs of every batch, in order (what `model.predict_batches` walks)."""
        return (self.inputs(batch) for batch in range(self.n_batches))
