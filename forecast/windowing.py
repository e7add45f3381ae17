"""Cutting batches of ({sim, lstm, bg}, {"prediction": y}, sample_weight) from the feature arrays.

A forecast origin `o` is the last row of history: the lstm input holds rows o-T+1..o, the sim input and the target rows
o+1..o+H, and the bg input row o. Windows are zero-copy views (`sliding_window_view`), so memory grows with the series,
not with windows x window length; a batch copies only its own B windows.

A stateful model needs row i of batch k+1 to continue row i of batch k. The training origins are therefore laid out as
streams of K chunks, each chunk T steps after the one before, and B streams are walked in step for K batches; then the
state is reset and the next B streams start. Every origin ends exactly one chunk per epoch, so no time step is starved,
and the chunk grid is shifted each epoch (a random phase) so that an origin meets different amounts of warm-up. With
K=1 the same code gives the stateless layout: independent, shuffled, overlapping windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from forecast.features import Features

Batch = tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]
PADDING = -1


def stream_layout(first: int, last: int, chunk: int, chunks: int, phase: int, earliest: int) -> tuple[np.ndarray, np.ndarray]:
    """Streams (n_streams, chunks) of origins that score every origin in [first, last] exactly once.

    Within a stream consecutive origins are `chunk` steps apart, so each chunk of history continues the one before.
    The first stream of each of the `chunk` residue classes starts `phase` chunks before `first`: those positions are
    warm-up (fed to build up state, weight 0) when their history exists (origin >= earliest), else PADDING. The last
    stream of a class is padded at its end. Returns the origins and a boolean mask of the scored positions.
    """
    if last < first:
        return np.empty((0, chunks), dtype=np.int64), np.empty((0, chunks), dtype=bool)
    streams = []
    for offset in range(min(chunk, last - first + 1)):
        scored = np.arange(first + offset, last + 1, chunk)
        warmup = scored[0] - chunk * np.arange(phase, 0, -1)
        origins = np.concatenate([np.where(warmup >= earliest, warmup, PADDING), scored])
        origins = np.pad(origins, (0, -len(origins) % chunks), constant_values=PADDING)
        streams.append(origins.reshape(-1, chunks))
    origins = np.concatenate(streams)
    is_scored = origins >= first
    keep = is_scored.any(axis=1)
    return origins[keep], is_scored[keep]


def max_streams(first: int, last: int, chunk: int, chunks: int) -> int:
    """An upper bound on the number of streams `stream_layout` returns for any phase, so an epoch has fixed length."""
    total = 0
    for offset in range(min(chunk, max(last - first + 1, 0))):
        count = len(range(first + offset, last + 1, chunk))
        total += math.ceil((count + chunks - 1) / chunks)
    return total


def batch_layout(origins: np.ndarray, scored: np.ndarray, batch_size: int, n_streams: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Groups streams B at a time and walks each group in step: returns (n_batches, B) origins and scored masks.

    Streams are shuffled when `rng` is given and padded to `n_streams` so that every epoch has the same batch count.
    Batch g*K + k holds chunk k of the streams of group g.
    """
    order = rng.permutation(len(origins)) if rng is not None else np.arange(len(origins))
    chunks = origins.shape[1]
    groups = math.ceil(n_streams / batch_size)
    padded_origins = np.full((groups * batch_size, chunks), PADDING, dtype=np.int64)
    padded_scored = np.zeros((groups * batch_size, chunks), dtype=bool)
    padded_origins[: len(order)] = origins[order]
    padded_scored[: len(order)] = scored[order]

    def walk(table: np.ndarray) -> np.ndarray:
        return table.reshape(groups, batch_size, chunks).transpose(0, 2, 1).reshape(groups * chunks, batch_size)

    return walk(padded_origins), walk(padded_scored)


@dataclass(frozen=True)
class StreamPlan:
    """Which origins a range scores and how they are walked: the same plan for training, validation and evaluation."""

    first: int
    last: int
    lookback: int
    chunks: int
    batch_size: int
    shuffle: bool
    seed: int = 0

    @property
    def n_streams(self) -> int:
        """Fixed for every epoch: the bound over phases when shuffled, else the exact count (no empty batches)."""
        if self.shuffle:
            return max_streams(self.first, self.last, self.lookback, self.chunks)
        return len(stream_layout(self.first, self.last, self.lookback, self.chunks, 0, self.lookback - 1)[0])

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_streams / self.batch_size) * self.chunks

    @property
    def n_origins(self) -> int:
        return max(self.last - self.first + 1, 0)

    def batches(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_batches, B) origins and scored masks for one epoch; shuffled plans differ by epoch but not by run."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        phase = int(rng.integers(self.chunks)) if rng is not None else 0
        origins, scored = stream_layout(self.first, self.last, self.lookback, self.chunks, phase, self.lookback - 1)
        return batch_layout(origins, scored, self.batch_size, self.n_streams, rng)


class WindowBatcher:
    """Cuts the model inputs for a batch of origins out of zero-copy window views of the feature arrays."""

    def __init__(self, features: Features, lookback: int, horizon: int):
        self.features = features
        self.lookback = lookback
        self.horizon = horizon
        self._history = sliding_window_view(features.history, lookback, axis=0)
        self._sim = sliding_window_view(features.sim, horizon, axis=0)
        self._target = sliding_window_view(features.target, horizon) if features.n_rows >= horizon else None

    @property
    def earliest_origin(self) -> int:
        return self.lookback - 1

    @property
    def last_training_origin(self) -> int:
        """The last origin whose whole horizon is observed."""
        return self.features.n_rows - self.horizon - 1

    def inputs(self, origins: np.ndarray) -> dict[str, np.ndarray]:
        """The three inputs for `origins` (PADDING rows get the earliest window, to be weighted 0)."""
        origins = np.where(origins == PADDING, self.earliest_origin, origins)
        return {
            "sim": np.ascontiguousarray(self._sim[origins + 1].transpose(0, 2, 1)),
            "lstm": np.ascontiguousarray(self._history[origins - self.lookback + 1].transpose(0, 2, 1)),
            "bg": self.features.bg[origins],
        }

    def targets(self, origins: np.ndarray, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets (B, H) with gaps as 0, and weights (B, H): 1 where scored and observed, else 0.

        An origin other than PADDING outside [earliest_origin, last_training_origin] has no whole horizon of rows:
        ValueError, rather than a window cut from elsewhere with full weight.
        """
        real = origins[origins != PADDING]
        if real.size and (real.min() < self.earliest_origin or real.max() > self.last_training_origin):
            raise ValueError(
                f"origins {real.min()} to {real.max()} reach outside "
                f"[{self.earliest_origin}, {self.last_training_origin}]"
            )
        rows = np.where(origins == PADDING, self.earliest_origin, origins) + 1
        target = self._target[rows]
        weight = (np.isfinite(target) & scored[:, None]).astype("float32")
        return np.nan_to_num(target, nan=0.0), weight

    def scored_origins(self, first: int, last: int) -> np.ndarray:
        """The origins in [first, last] with at least one observed target in their horizon: the ones training,
        validation and the linear start's choice score (an origin whose horizon is all gaps scores nothing)."""
        origins = np.arange(first, last + 1)
        if not origins.size:
            return origins
        _, weight = self.targets(origins, np.ones(len(origins), dtype=bool))
        return origins[weight.any(axis=1)]

    def batch(self, origins: np.ndarray, scored: np.ndarray) -> Batch:
        target, weight = self.targets(origins, scored)
        return self.inputs(origins), {"prediction": target}, weight

    def last_values(self, origins: np.ndarray) -> np.ndarray:
        """The scaled target at each origin, gaps carried forward: the Repeat forecast."""
        origins = np.where(origins == PADDING, self.earliest_origin, origins)
        return self.features.history[origins, 0]


def window_generator(batcher: WindowBatcher, plan: StreamPlan, initial_epoch: int = 0) -> Iterator[Batch]:
    """The seed's generator, for Keras 3: endless, `plan.n_batches` batches per epoch, a fresh layout each epoch."""
    epoch = initial_epoch
    while True:
        origins, scored = plan.batches(epoch)
        for index in range(len(origins)):
            yield batcher.batch(origins[index], scored[index])
        epoch += 1


def materialise(batcher: WindowBatcher, plan: StreamPlan, epoch: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """All batches of one epoch stacked in order: inputs, targets, weights and origins, each with n_batches * B rows."""
    origins, scored = plan.batches(epoch)
    flat_origins, flat_scored = origins.reshape(-1), scored.reshape(-1)
    target, weight = batcher.targets(flat_origins, flat_scored)
    return batcher.inputs(flat_origins), target, weight, flat_origins


def origin_streams(first: int, last: int, chunk: int, chunks: int, earliest: int) -> tuple[np.ndarray, np.ndarray]:
    """One stream per origin in [first, last]: the chunks - 1 chunks before it, as prediction warms up, then the
    origin itself, the only scored position. Warm-up positions without full history are PADDING."""
    ends = np.arange(first, last + 1)
    origins = ends[:, None] - chunk * np.arange(chunks - 1, -1, -1)[None, :]
    origins = np.where(origins >= earliest, origins, PADDING)
    scored = np.zeros(origins.shape, dtype=bool)
    scored[:, -1] = True
    return origins, scored
