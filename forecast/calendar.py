"""Calendar features derived from timestamps: cycles as sine/cosine pairs, chosen by the series frequency and by how
much history the model trains on."""

from __future__ import annotations

import numpy as np
import pandas as pd

_DAY = pd.Timedelta(days=1)
CYCLES = {"hour_of_day": _DAY, "day_of_week": 7 * _DAY, "day_of_year": 365.25 * _DAY}


def calendar_names(freq: pd.Timedelta, span: pd.Timedelta | None = None) -> tuple[str, ...]:
    """The features for a frequency and a training span.

    Cycles no longer than one step carry no information. Cycles the training span does not cover twice are left out
    too: one pass of a cycle cannot tell its effect from the trend of that stretch (the rule of classical seasonal
    decomposition), so with one year of training, day-of-year would only memorise that year's levels.
    """
    return tuple(
        f"{cycle}_{part}"
        for cycle, length in CYCLES.items()
        if freq < length and (span is None or span >= 2 * length)
        for part in ("sin", "cos")
    )


def calendar_features(time: pd.DatetimeIndex, names: tuple[str, ...]) -> np.ndarray:
    """An array (len(time), len(names)) of values in [-1, 1] for calendar feature `names`."""
    fraction = {
        "hour_of_day": (time.hour + time.minute / 60.0) / 24.0,
        "day_of_week": (time.day_of_week + time.hour / 24.0) / 7.0,
        "day_of_year": (time.day_of_year - 1 + time.hour / 24.0) / 365.25,
    }
    columns = []
    for name in names:
        cycle, part = name.rsplit("_", 1)
        angle = 2.0 * np.pi * np.asarray(fraction[cycle], dtype="float64")
        columns.append(np.sin(angle) if part == "sin" else np.cos(angle))
    return np.stack(columns, axis=1) if columns else np.empty((len(time), 0))


def future_times(last: pd.Timestamp, freq: pd.Timedelta, steps: int, business_days: bool = False) -> pd.DatetimeIndex:
    """The `steps` timestamps after `last`, continuing the series at its frequency (the next business days, at the
    same time of day, for a business-day series)."""
    if business_days:
        return pd.bdate_range(last + pd.offsets.BDay(1), periods=steps, normalize=False).as_unit(last.unit)
    return pd.DatetimeIndex([last + freq * (step + 1) for step in range(steps)])
