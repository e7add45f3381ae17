"""From a loaded series to the scaled arrays the three model inputs are cut from."""

from __future__ import annotations

from dataclasses import dataclass

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
    def from_roles(cls, roles: Roles, freq: pd.Timedelta, span: pd.Timedelta | None = None) -> InputLayout:
        """The layout for these roles; `span`, the training range's length, decides which calendar cycles enter."""
        return cls(
            history=(*roles.history, OBSERVED_FLAG), sim=roles.sim, bg=roles.bg, sim_columns=roles.sim
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
    """Scaled float32 arrays, one row per timestamp.

    `history`, `target` and `bg` cover the observed rows; `sim` and `time` also cover the rows after them that the last
    forecast needs. Gaps in the inputs carry the last value forward (the observed flag marks target gaps); `target` keeps
    its gaps as NaN so that they get sample weight 0 instead of a made-up value.
    """

    history: np.ndarray
    target: np.ndarray
    sim: np.ndarray
    bg: np.ndarray
    time: pd.DatetimeIndex

    @property
    def n_rows(self) -> int:
        return len(self.target)


def fit_scaler(series: Series, train_rows: int) -> Scaler:
    columns = series.roles.numeric
    return Scaler.fit(columns, series.values[list(columns)].to_numpy()[:train_rows])


def build_features(
    series: Series, scaler: Scaler, horizon: int, for_prediction: bool = False, calendar: tuple[str, ...] | None = None
) -> Features:
    """Arrays for the observed rows; with `for_prediction`, sim also covers the `horizon` rows after the last one.

    `calendar` names the calendar features (a model's `layout.calendar`); None gives every cycle the frequency has.
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
    bg = np.concatenate([carry_forward(bg), calendar_features(series.time[:n_rows], calendar)], axis=1)

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
