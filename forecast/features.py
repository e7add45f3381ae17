"""From a loaded series to the scaled arrays the three model inputs are cut from."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.calendar import calendar_features, calendar_names, future_times
from forecast.data import Roles, Series
from forecast.errors import ForecastError
from forecast.scaling import Scaler

OBSERVED_FLAG = "target_observed"


@dataclass(frozen=True)
class InputLayout:
    """Channel names of each model input; the model is built from their counts."""

    history: tuple[str, ...]
    sim: tuple[str, ...]
    bg: tuple[str, ...]
    sim_columns: tuple[str, ...]

    @classmethod
    def from_roles(cls, roles: Roles, freq: pd.Timedelta, span: pd.Timedelta | None = None, static: tuple[str, ...] = ()
                   ) -> InputLayout:
        """The layout for these roles; `span`, the training range's length, decides which calendar cycles enter;
        `static` names the series' attribute channels, which follow the bg columns."""
        return cls(
            history=(*roles.history, OBSERVED_FLAG), sim=roles.sim, bg=(*roles.bg, *static), sim_columns=roles.sim
        ).with_calendar(calendar_names(freq, span))

    def with_calendar(self, calendar: tuple[str, ...]) -> InputLayout:
        """The same columns with `calendar` as the calendar features of sim and bg."""
        n_bg = len(self.bg) - len(self.calendar)
        return InputLayout(
            history=self.history,
            sim=(*self.sim_columns, *calendar),
            bg=(*self.bg[:n_bg], *calendar),
            sim_columns=self.sim_columns,
        )

    @property
    def calendar(self) -> tuple[str, ...]:
        return self.sim[len(self.sim_columns) :]

    @property
    def sim_history_index(self) -> tuple[int, ...]:
        """Where each sim column sits in the history input, or () when sims are not part of the history."""
        if not all(column in self.history for column in self.sim_columns):
            return ()
        return tuple(self.history.index(column) for column in self.sim_columns)


@dataclass(frozen=True)
class Features:
    """Scaled float32 arrays, one row per timestamp, the series of a collection one after another.

    Series s holds rows [starts[s], starts[s + 1]) (the last up to the end); a window never crosses from one series to
    the next because the origin sampler only picks origins with a whole window inside their series. Within a series the
    rows are its observed rows, and for prediction the horizon's rows after them (whose target is NaN and whose history
    repeats the last row; no origin reads them as history). Gaps in the inputs carry the last value forward (the
    observed flag marks target gaps); `target` keeps its gaps as NaN so that they get sample weight 0 instead of a
    made-up value.
    """

    history: np.ndarray
    target: np.ndarray
    sim: np.ndarray
    bg: np.ndarray
    time: pd.DatetimeIndex
    starts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return len(self.target)

    @property
    def lengths(self) -> np.ndarray:
        """The number of rows of each series (n_series,)."""
        return np.diff(np.append(self.starts, self.n_rows))

    def bounds(self, index: int) -> tuple[int, int]:
        """Rows [start, end) of series `index`."""
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.n_rows
        return int(self.starts[index]), int(end)

    def series_of(self, rows: np.ndarray) -> np.ndarray:
        """The index of the series each row belongs to."""
        return np.searchsorted(self.starts, rows, side="right") - 1


ARRAYS = ("history", "target", "sim", "bg")
# Where the stacked arrays start in memory: a multiple of this many bytes, as TensorFlow's kernels need to read an
# array in place (dataset.feature_tensors) instead of copying it.
ALIGNMENT = 64


def stack(parts: Iterable[Features], rows: Sequence[int] | None = None, scratch: Path | None = None) -> Features:
    """The features of several series as one collection (one contiguous float32 array per input, with offsets).

    `parts` may be a generator: given each part's number of rows (`rows`, as many as its sim has), each part is copied
    into the stacked arrays as it comes, so that no more than one part is held beside them. With `scratch`, a folder,
    the stacked arrays (and times) are memory-mapped files there without a name, which the system removes once the
    arrays are gone: their pages are the page cache's, which the kernel can write out and drop, so they need not fit in
    memory. Where that folder has no room for them they are held in memory.
    """
    if rows is None:
        parts = list(parts)
        rows = [len(part.sim) for part in parts]
    lengths = np.asarray(rows, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    arrays, times = {}, []
    for part, start, count in zip(parts, starts, lengths, strict=True):
        part = _padded(part)
        if part.n_rows != count:
            raise ValueError(f"a part of {part.n_rows} rows where {count} were announced")
        for name in ARRAYS:
            values = getattr(part, name)
            if name not in arrays:
                arrays[name] = allocated((int(lengths.sum()), *values.shape[1:]), values.dtype, scratch)
            arrays[name][start : start + count] = values
        times.append(part.time)
    return Features(**arrays, time=_stacked_times(times, int(lengths.sum()), scratch), starts=starts)


def allocated(shape: tuple[int, ...], dtype, scratch: Path | None) -> np.ndarray:
    """An array to fill, starting at a multiple of ALIGNMENT bytes: in memory, or with `scratch`, a memory-mapped file
    there without a name, its space reserved at once (writing pages of a full disk through a mapping would kill the
    process; memory is used instead)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if scratch is not None and size:
        try:
            with tempfile.TemporaryFile(dir=scratch) as handle:
                os.posix_fallocate(handle.fileno(), 0, size)
                return np.memmap(handle, dtype=dtype, mode="r+", shape=shape)
        except OSError:
            pass  # no room there (or no such folder any more): the run goes on in memory
    buffer = np.empty(size + ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % ALIGNMENT
    return buffer[offset : offset + size].view(dtype).reshape(shape)


def _stacked_times(times: list[pd.DatetimeIndex], n_rows: int, scratch: Path | None) -> pd.DatetimeIndex:
    """The parts' times one after the other, as `DatetimeIndex.append` gives them; with `scratch`, and times of one
    unit, memory-mapped as `allocated` maps arrays."""
    if len(times) == 1:
        return times[0]
    if scratch is None or len({time.unit for time in times}) > 1:
        return times[0].append(times[1:])
    stamps = allocated((n_rows,), np.int64, scratch)
    start = 0
    for time in times:
        stamps[start : start + len(time)] = time.asi8
        start += len(time)
    named = len({time.name for time in times}) == 1
    return pd.DatetimeIndex(stamps.view(f"datetime64[{times[0].unit}]"), copy=False,
                            name=times[0].name if named else None)


def _padded(part: Features) -> Features:
    """One series' features with history, target and bg as long as sim (for prediction, sim covers the horizon too)."""
    extra = len(part.sim) - len(part.target)
    if not extra:
        return part
    return dataclasses.replace(
        part,
        history=np.concatenate([part.history, np.repeat(part.history[-1:], extra, axis=0)]),
        target=np.concatenate([part.target, np.full(extra, np.nan, dtype=part.target.dtype)]),
        bg=np.concatenate([part.bg, np.repeat(part.bg[-1:], extra, axis=0)]),
    )


def fit_scaler(series: Series, train_rows: int) -> Scaler:
    """The z-scoring of the role columns, fitted on rows [0, train_rows) of `series` (original units)."""
    columns = series.roles.numeric
    return Scaler.fit(columns, series.values[list(columns)].to_numpy()[:train_rows])


def fit_pooled_scaler(parts: list[tuple[Series, int]]) -> Scaler:
    """One z-scoring for all series, fitted on the training rows of each (series, train_rows) pooled."""
    columns = parts[0][0].roles.numeric
    return Scaler.fit(columns, np.vstack([series.values[list(columns)].to_numpy()[:rows] for series, rows in parts]))


def build_features(
    series: Series, scaler: Scaler, horizon: int, for_prediction: bool = False, calendar: tuple[str, ...] | None = None,
    static: np.ndarray | None = None,
) -> Features:
    """Arrays for the observed rows; with `for_prediction`, sim also covers the `horizon` rows after the last one.

    `calendar` names the calendar features (a model's `layout.calendar`); None gives every cycle the frequency has.
    `static` (n_attributes,), the series' encoded attributes, is repeated in bg on every row, after the bg columns.
    """
    roles = series.roles
    calendar = calendar_names(series.freq) if calendar is None else calendar
    n_rows = series.n_observed
    values = series.values
    history = scaler.transform(roles.history, values[list(roles.history)].to_numpy()[:n_rows])
    observed = np.isfinite(history[:, :1])
    target = history[:, 0].copy()
    history = np.concatenate([carry_forward(history), observed], axis=1)
    bg = scaler.transform(roles.bg, values[list(roles.bg)].to_numpy()[:n_rows])
    attributes = np.repeat(np.zeros((1, 0)) if static is None else static[None, :], n_rows, axis=0)
    bg = np.concatenate([carry_forward(bg), attributes, calendar_features(series.time[:n_rows], calendar)], axis=1)

    sim_rows = n_rows + horizon if for_prediction else n_rows
    time = series.time[:sim_rows]
    if len(time) < sim_rows:
        time = time.append(future_times(series.time[-1], series.freq, sim_rows - len(time), series.business_days))
    sim_values = values[list(roles.sim)].to_numpy()[:sim_rows]
    sim_values = np.vstack([sim_values, np.full((sim_rows - len(sim_values), len(roles.sim)), np.nan)])
    if for_prediction and roles.sim:
        _check_future_sim(series, sim_values, time, n_rows)
    sim = scaler.transform(roles.sim, sim_values)
    sim = np.concatenate([carry_forward(sim), calendar_features(time, calendar)], axis=1)
    features = Features(
        history=history.astype("float32"),
        target=target.astype("float32"),
        sim=sim.astype("float32"),
        bg=bg.astype("float32"),
        time=time,
    )
    _check_in_range(features, roles, series.path)
    return features


def _check_in_range(features: Features, roles: Roles, path: str) -> None:
    """A value so far from the training rows' mean that its z-score overflows float32 names its column and time."""
    arrays = ((roles.history, features.history), (roles.sim, features.sim), (roles.bg, features.bg))
    for columns, values in arrays:
        rows, channels = np.nonzero(np.isinf(values[:, : len(columns)]))
        if rows.size:
            raise ForecastError(
                f"{path}: column {columns[channels[0]]!r} at {features.time[rows[0]]} is too far from the training rows' "
                "values to compute with; fix the cell or leave it empty"
            )


def carry_forward(values: np.ndarray) -> np.ndarray:
    """Fills each empty cell with the last value above it in its column, and leading gaps with 0 (the scaled mean)."""
    if values.size == 0:
        return values.astype("float64")
    filled = pd.DataFrame(values).ffill().fillna(0.0)
    return filled.to_numpy(dtype="float64")


def _check_future_sim(series: Series, sim_values: np.ndarray, time: pd.DatetimeIndex, n_rows: int) -> None:
    """The horizon needs a sim value for every step; name the first column and the timestamps that lack one."""
    horizon = len(time) - n_rows
    future = sim_values[n_rows:]
    for column_index, column in enumerate(series.roles.sim):
        missing = np.flatnonzero(np.isnan(future[:, column_index]))
        if missing.size:
            whole_days = series.freq % pd.Timedelta(days=1) == pd.Timedelta(0)
            stamps = ", ".join(
                str(time[n_rows + step].date() if whole_days else time[n_rows + step]) for step in missing[:3]
            )
            more = f" and {missing.size - 3} more" if missing.size > 3 else ""
            raise ForecastError(
                f"{series.path}: sim column {column!r} has no value for {stamps}{more}; add rows after the last "
                f"observation with {column!r} filled (target empty) for the {horizon} forecast steps"
            )
