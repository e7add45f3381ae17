"""Calendar features derived from timestamps: cycles as sine/cosine pairs, chosen by the series frequency."""

from __future__ import annotations

import numpy as np
import pandas as pd

_DAY = pd.Timedelta(days=1)


def calendar_names(freq: pd.Timedelta) -> tuple[str, ...]:
    """The features for a frequency: cycles shorter than one step carry no information and are left out."""
    cycles = []
    if freq < _DAY:
        cycles.append("hour_of_day")
    if freq < 7 * _DAY:
        cycles.append("day_of_week")
    cycles.append("day_of_year")
    return tuple(f"{cycle}_{part}" for cycle in cycles for part in ("sin", "cos"))


def calendar_features(time: pd.DatetimeIndex, freq: pd.Timedelta) -> np.ndarray:
    """An array (len(time), len(calendar_names(freq))) of values in [-1, 1]."""
    fraction = {
        "hour_of_day": (time.hour + time.minute / 60.0) / 24.0,
        "day_of_week": (time.day_of_week + time.hour / 24.0) / 7.0,
        "day_of_year": (time.day_of_year - 1 + time.hour / 24.0) / 365.25,
    }
    columns = []
    for name in calendar_names(freq):
        cycle, part = name.rsplit("_", 1)
        angle = 2.0 * np.pi * np.asarray(fraction[cycle], dtype="float64")
        columns.append(np.sin(angle) if part == "sin" else np.cos(angle))
    return np.stack(columns, axis=1)


def future_times(last: pd.Timestamp, freq: pd.Timedelta, steps: int) -> pd.DatetimeIndex:
    """The `steps` timestamps after `last`, continuing the series at its frequency."""
    return pd.DatetimeIndex([last + freq * (step + 1) for step in range(steps)])
