"""A few hundred mangled copies of real rows: each ends in a clear ForecastError or a valid series, never a crash."""

import random

import numpy as np
import pytest

from forecast.config import Config
from forecast.data import load_series
from forecast.errors import ForecastError
from forecast.training import resolve_split

from conftest import ETTH1

CONFIG = Config(target="OT", lookback=24, horizon=6)
JUNK = ["", "nan", "inf", "-inf", "1e999", "abc", "NULL", "12,5", '"', "2016-07-01", " ", "0x1F", "\u00e9", "--", "1.2.3"]


def mangle(lines: list[str], rng: random.Random) -> bytes:
    lines = list(lines)
    for _ in range(rng.randint(1, 4)):
        if len(lines) < 2:
            break
        kind = rng.randrange(10)
        row = rng.randrange(1, len(lines))
        if kind == 0:
            del lines[row]
        elif kind == 1:
            lines.insert(row, lines[row])
        elif kind == 2:
            other = rng.randrange(1, len(lines))
            lines[row], lines[other] = lines[other], lines[row]
        elif kind == 3:
            fields = lines[row].rstrip("\n").split(",")
            fields[rng.randrange(len(fields))] = rng.choice(JUNK)
            lines[row] = ",".join(fields) + "\n"
        elif kind == 4:
            fields = lines[row].rstrip("\n").split(",")
            del fields[rng.randrange(len(fields))]
            lines[row] = ",".join(fields) + "\n"
        elif kind == 5:
            lines[row] = lines[row].rstrip("\n") + ",7\n"
        elif kind == 6:
            lines = lines[: rng.randint(0, len(lines))]
        elif kind == 7:
            lines[0] = ",".join(rng.sample(lines[0].rstrip("\n").split(","), 8)) + "\n"
        elif kind == 8:
            del lines[row : row + rng.randint(1, 40)]
        else:
            lines[row] = lines[row].replace("2016", str(rng.choice([1900, 2262, 9999, 16])), 1)
    text = "".join(lines)
    if rng.random() < 0.2:
        text = text[: rng.randrange(len(text) + 1)]
    data = text.encode("utf-8")
    if rng.random() < 0.05:
        position = rng.randrange(len(data) + 1)
        data = data[:position] + bytes([rng.randrange(128, 256)]) + data[position:]
    return data


@pytest.mark.parametrize("seed", range(6))
def test_mangled_csvs_fail_clearly_or_load_validly(tmp_path, seed):
    with ETTH1.open(encoding="utf-8") as reader:
        lines = [next(reader) for _ in range(201)]
    rng = random.Random(seed)
    outcomes = {"error": 0, "valid": 0}
    for case in range(60):
        path = tmp_path / f"mangled_{case}.csv"
        path.write_bytes(mangle(lines, rng))
        try:
            series = load_series(path, CONFIG)
            resolve_split(series, CONFIG)
        except ForecastError as error:
            message = str(error)
            assert message.startswith(str(path)) and "\n" not in message, message
            outcomes["error"] += 1
            continue
        steps = np.diff(series.time.asi8)
        assert (steps == steps[0]).all() and steps[0] > 0
        assert series.values.dtypes.map(lambda dtype: dtype == np.float64).all()
        assert np.isfinite(series.values.to_numpy()[~np.isnan(series.values.to_numpy())]).all()
        outcomes["valid"] += 1
    assert outcomes["error"] > 10 and outcomes["valid"] > 0, outcomes
