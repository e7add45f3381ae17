"""The origin sampler: which forecast origins train, validate, evaluate and predict, and how they are walked in streams.

An origin `o` is the last row of history: the lstm input reads rows o-T+1..o, the target and sim rows o+1..o+H. The
series of a collection lie one after another in the feature arrays (`Features.starts`); an origin is valid only when
its whole window lies inside its own series, so a range of origins is always one series' (`OriginRange`), and a stream
never crosses from one series to another. Where to cut (this module) is kept apart from how to slice the arrays
(`windowing.WindowBatcher`).

A stateful model needs row i of batch k+1 to continue row i of batch k. Origins are therefore laid out as streams of
K chunks, each chunk T steps after the one before. Training walks B streams in step for K batches, then resets the
state; every origin ends exactly one chunk per epoch, and the chunk grid is shifted each epoch (a random phase) so
that an origin meets different amounts of warm-up. Evaluation and prediction give each origin its own stream: the
K - 1 chunks before it, then the origin. One rule covers the start of a series for all of them: a warm-up chunk
before the series' first whole window repeats that first window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

PADDING = -1  # a position after a stream's last origin: fed some window, weighted 0, its state discarded


@dataclass(frozen=True)
class OriginRange:
    """Origins `first`..`last` (rows of the feature arrays, both included) of series `series` (its index in the
    collection), whose first origin with a whole window of history is `earliest` (a row of the feature arrays too)."""

    series: int
    first: int
    last: int
    earliest: int

    @property
    def size(self) -> int:
        """How many origins the range holds: `last` - `first` + 1, or 0 for an empty range (`last` < `first`)."""
        return max(self.last - self.first + 1, 0)


def origin_ranges(starts: np.ndarray, lengths: np.ndarray, rows: list[tuple[int, int] | None], lookback: int,
                  horizon: int) -> tuple[OriginRange, ...]:
    """One `OriginRange` per series, in series order: the origins whose `lookback` rows of history lie inside the
    series and whose `horizon` rows ahead lie in its scored rows. Series s holds rows [`starts[s]`, `starts[s]` +
    `lengths[s]`) of the feature arrays (`starts`, `lengths` (n_series,)); `rows[s]` = (lo, hi) are its scored rows
    (0-based within the series, hi exclusive; None: the series takes no part). Series without such an origin are left
    out."""
    ranges = []
    for index, bounds in enumerate(rows):
        if bounds is None:
            continue
        low, high = bounds
        start = int(starts[index])
        earliest = start + lookback - 1
        first = max(start + low - 1, earliest)
        last = start + min(high, int(lengths[index])) - horizon - 1
        if last >= first:
            ranges.append(OriginRange(index, first, last, earliest))
    return tuple(ranges)


def stream_layout(ranges: tuple[OriginRange, ...], chunk: int, chunks: int, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """Streams (n_streams, `chunks`) of origins (rows of the feature arrays; PADDING after a stream's end) that score
    every origin of `ranges` exactly once, and the mask (n_streams, `chunks`) of the scored positions.

    Within a stream consecutive origins are `chunk` rows apart (the lookback T). The first stream of each of the
    `chunk` residue classes of a range starts `phase` chunks (0 <= `phase` < `chunks`) before the range's first origin
    (warm-up, weight 0; `warm_up` at the series' start); the last stream of a class is padded at its end with PADDING.
    """
    if not ranges:
        return np.empty((0, chunks), dtype=np.int64), np.empty((0, chunks), dtype=bool)
    # One residue class (a range and an offset below `chunk`) per element, laid out with array arithmetic: an epoch's
    # layout costs the same Python work for ten series as for ten thousand.
    first, size, earliest = (np.array([getattr(span, name) for span in ranges], dtype=np.int64)
                             for name in ("first", "size", "earliest"))
    used = np.minimum(size, chunk)
    span = np.repeat(np.arange(len(ranges)), used)
    offset = np.arange(used.sum()) - np.repeat(np.cumsum(used) - used, used)
    count = -(-(size[span] - offset) // chunk)  # scored origins of the class: ceil((size - offset) / chunk)
    rows = -(-(count + phase) // chunks)  # its streams: warm-up and scored positions, padded to whole streams
    stream_class = np.repeat(np.arange(len(span)), rows)
    stream_row = np.arange(rows.sum()) - np.repeat(np.cumsum(rows) - rows, rows)
    # Position k of a class counts its scored origins from 0; warm-up positions are negative, padding >= count.
    position = (stream_row * chunks)[:, None] + np.arange(chunks)[None, :] - phase
    klass = stream_class[:, None]
    origins = first[span][klass] + offset[klass] + chunk * position
    scored = (position >= 0) & (position < count[klass])
    origins = np.where(position < 0, warm_up(origins, earliest[span][klass]), origins)
    origins = np.where(position >= count[klass], PADDING, origins)
    keep = scored.any(axis=1)
    return origins[keep], scored[keep]


def warm_up(origins: np.ndarray, earliest: int) -> np.ndarray:
    """The warm-up `origins` (any shape, rows of the feature arrays), those before the series' first origin with a
    whole window (`earliest`) replaced by it."""
    return np.maximum(origins, earliest)


def max_streams(ranges: tuple[OriginRange, ...], chunk: int, chunks: int) -> int:
    """An upper bound on the number of streams `stream_layout(ranges, chunk, chunks, phase)` returns for any phase, so
    an epoch has a fixed length: per range of `ranges` and residue class (offset) of its origins modulo `chunk` (rows),
    the streams of `chunks` positions its origins and a full warm-up could fill."""
    if not ranges:
        return 0
    sizes = np.array([span.size for span in ranges], dtype=np.int64)
    offsets = np.arange(chunk, dtype=np.int64)[None, :]
    used = offsets < np.minimum(sizes, chunk)[:, None]
    counts = -(-(sizes[:, None] - offsets) // chunk)  # origins in each class: ceil((size - offset) / chunk)
    return int(np.where(used, -(-(counts + chunks - 1) // chunks), 0).sum())


def rolling_streams(ranges: tuple[OriginRange, ...], chunk: int, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Streams (n, `chunks`) of origins, one per origin of `ranges` (n in all, in order), and their scored masks
    (n, `chunks`): the `chunks` - 1 origins `chunk` rows apart before it (warm-up, as predict warms up; `warm_up` at
    the series' start), then the origin itself, the only scored position. Origins are rows of the feature arrays.
    `rolling_origins` and `rolling_block` make the same streams a block of origins at a time."""
    origins, earliest = rolling_origins(ranges)
    streams = rolling_block(origins, earliest, chunk, chunks)
    scored = np.zeros(streams.shape, dtype=bool)
    scored[:, -1] = True
    return streams, scored


def rolling_origins(ranges: tuple[OriginRange, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every origin of `ranges` (n,), range after range, and the earliest origin with a whole window of each one's
    series (n,), rows of the feature arrays."""
    if not ranges:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    origins = np.concatenate([np.arange(span.first, span.last + 1, dtype=np.int64) for span in ranges])
    earliest = np.repeat(np.array([span.earliest for span in ranges], dtype=np.int64), [span.size for span in ranges])
    return origins, earliest


def rolling_block(origins: np.ndarray, earliest: np.ndarray, chunk: int, chunks: int) -> np.ndarray:
    """The streams (m, `chunks`) of `origins` (m,), whose series' earliest whole-window origins are `earliest` (m,),
    as `rolling_streams` lays them out."""
    before = chunk * np.arange(chunks - 1, -1, -1, dtype=np.int64)[None, :]
    return warm_up(origins[:, None] - before, earliest[:, None])


def batch_layout(origins: np.ndarray, scored: np.ndarray, batch_size: int, n_streams: int, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Groups the streams `origins` (n, K) and their scored masks `scored` (n, K) B = `batch_size` at a time and
    walks each group in step: returns (n_batches, B) origins (rows of the feature arrays, PADDING at padding) and
    scored masks.

    Streams are shuffled when `rng` is given (None: kept in order), so a batch mixes series, and padded with PADDING
    streams to `n_streams` (at least n) so that every epoch has the same batch count, ceil(`n_streams` / B) * K. Batch
    g*K + k holds chunk k of the streams of group g.
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
    """Which origins a purpose scores and how they are walked: the same plan for training, validation and evaluation.

    The origins of `ranges` are laid out in streams of `chunks` positions `lookback` rows apart (`stream_layout`) and
    walked `batch_size` streams at a time (`batch_layout`); with `shuffle`, each epoch draws its phase and stream order
    from (`seed`, epoch), else phase 0 and the streams in order.
    """

    ranges: tuple[OriginRange, ...]
    lookback: int
    chunks: int
    batch_size: int
    shuffle: bool
    seed: int = 0

    @cached_property
    def n_streams(self) -> int:
        """Fixed for every epoch: the bound over phases when shuffled, else the exact count (no empty batches). Computed
        once per plan: a batch must not pay for walking every series."""
        if self.shuffle:
            return max_streams(self.ranges, self.lookback, self.chunks)
        return len(stream_layout(self.ranges, self.lookback, self.chunks, 0)[0])

    @cached_property
    def n_batches(self) -> int:
        """Batches per epoch, the same for every epoch: `chunks` for each group of `batch_size` streams."""
        return math.ceil(self.n_streams / self.batch_size) * self.chunks

    @property
    def n_origins(self) -> int:
        """How many origins the plan scores (each once per epoch)."""
        return sum(span.size for span in self.ranges)

    def origins(self) -> np.ndarray:
        """Every origin of the plan (n_origins,), range after range (rows of the feature arrays)."""
        return rolling_origins(self.ranges)[0]

    def batches(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_batches, B) origins and scored masks for epoch `epoch` (0-based); shuffled plans differ by epoch but not
        by run."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        phase = int(rng.integers(self.chunks)) if rng is not None else 0
        origins, scored = stream_layout(self.ranges, self.lookback, self.chunks, phase)
        return batch_layout(origins, scored, self.batch_size, self.n_streams, rng)
