"""Mangled copies of real and generated rows: each ends in a clear ForecastError or a valid series, never a crash.

Reading is fuzzed with a few hundred files; the commands `predict` and `train`, in process through the CLI, with 300
and 50 more, each checked for a single error line or a valid result, and no file cut off mid-line read as data.
"""

import io
import random
import signal

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.config import Config
from forecast.data import load_series
from forecast.errors import ForecastError
from forecast.split import resolve_split
from forecast.training import train

from conftest import ETTH1, synthetic_lines

CONFIG = Config(target="OT", lookback=24, horizon=6)
JUNK = ["", "nan", "inf", "-inf", "1e999", "abc", "NULL", "12,5", '"', "2016-07-01", " ", "0x1F", "\u00e9", "--", "1.2.3"]


def mangle(lines: list[str], rng: random.Random) -> bytes:
    lines = list(lines)
    for _ in range(rng.randint(1, 4)):
        if len(lines) < 2:
            break
        kind = rng.randrange(12)
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
            names = lines[0].rstrip("\n").split(",")
            lines[0] = ",".join(rng.sample(names, len(names))) + "\n"
        elif kind == 8:
            del lines[row : row + rng.randint(1, 40)]
        elif kind == 9:
            lines[row] = lines[row].replace(lines[1][:4], str(rng.choice([1900, 2262, 9999, 16])), 1)
        else:
            lines = _rearranged_columns(lines, rng, duplicate=kind == 10)
    text = "".join(lines)
    if rng.random() < 0.2:
        text = text[: rng.randrange(len(text) + 1)]
    data = bytearray(text.encode("utf-8"))
    if data and rng.random() < 0.1:
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.05:
        position = rng.randrange(len(data) + 1)
        data[position:position] = bytes([rng.randrange(128, 256)])
    return bytes(data)


def _rearranged_columns(lines: list[str], rng: random.Random, duplicate: bool) -> list[str]:
    """Every line with one column copied to the end (`duplicate`) or two columns swapped, as a bad export does."""
    width = len(lines[0].rstrip("\n").split(","))
    first, second = rng.randrange(width), rng.randrange(width)
    rearranged = []
    for line in lines:
        fields = line.rstrip("\n").split(",")
        if len(fields) == width:
            if duplicate:
                fields.append(fields[first])
            else:
                fields[first], fields[second] = fields[second], fields[first]
        rearranged.append(",".join(fields) + "\n")
    return rearranged


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


TINY = Config(target="y", lookback=16, horizon=4, batch_size=8, epochs=1, units=4, head_units=4, stream_chunks=2)
TINY_FLAGS = ["--target", "y", "--lookback", "8", "--horizon", "2", "--batch-size", "8", "--epochs", "1"]


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz")
    source = store / "series.csv"
    source.write_text("".join(synthetic_lines(300)), encoding="utf-8")
    train(source, TINY, store / "model")
    return store


class Hang(Exception):
    pass


def _raise_hang(signum, frame):
    raise Hang


def invoke(arguments: list[str], seconds: int = 60):
    """The command in process, as the installed `forecast` runs it; a run longer than `seconds` is a hang."""
    previous = signal.signal(signal.SIGALRM, _raise_hang)
    signal.alarm(seconds)
    try:
        return CliRunner().invoke(app, [str(argument) for argument in arguments])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_outcome(result, data: bytes, path) -> str:
    """Exit 0 or one error line (exit 1), never an exception; a file cut off mid-line is refused or its partial last
    line left out with a warning. Returns "refused" or "accepted"."""
    assert not isinstance(result.exception, Hang), f"{path} hung"
    assert result.exit_code in (0, 1) and (result.exception is None or isinstance(result.exception, SystemExit)), (
        f"{path}: exit {result.exit_code}, {result.exception!r}\n{result.output}"
    )
    assert "Traceback" not in result.output
    cut_off = bool(data) and not data.endswith(b"\n")
    if result.exit_code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}"), result.stderr
        return "refused"
    assert not cut_off or "left out the last line" in result.stderr, result.stderr
    return "accepted"


def fuzzed(tmp_path, cases: int, make, arguments):
    """For each case, the file `make()` gives written to `tmp_path` and the command `arguments(path, case)` run on
    it (checked by `check_outcome`): yields the case, the path, the result and "refused" or "accepted"."""
    for case in range(cases):
        path = tmp_path / f"mangled_{case}.csv"
        data = make()
        path.write_bytes(data)
        result = invoke(arguments(path, case))
        yield case, path, result, check_outcome(result, data, path)


@pytest.mark.parametrize("seed", range(3))
def test_predict_on_mangled_files_forecasts_or_refuses_in_one_line(fuzz_store, tmp_path, seed):
    lines = synthetic_lines(300)
    rng = random.Random(100 + seed)
    outcomes = {"refused": 0, "accepted": 0}
    for _, _, result, outcome in fuzzed(tmp_path, 100, lambda: mangle(lines, rng),
                                     lambda path, case: ["predict", path, "--model", "model", "--store", fuzz_store]):
        if outcome == "accepted":
            forecast = pd.read_csv(io.StringIO(result.stdout))
            assert len(forecast) == TINY.horizon and np.isfinite(forecast["y"]).all(), result.stdout
        outcomes[outcome] += 1
    assert outcomes["refused"] > 10 and outcomes["accepted"] > 2, outcomes


def test_train_on_mangled_files_trains_or_refuses_in_one_line(tmp_path):
    lines = synthetic_lines(200)
    rng = random.Random(7)
    outcomes = {"refused": 0, "accepted": 0}
    for case in range(50):
        path = tmp_path / f"mangled_{case}.csv"
        data = mangle(lines, rng)
        path.write_bytes(data)
        gaps = ["--gaps", "mask", "--max-gap", "100"] if case % 2 else []  # half the files: gaps are not refused
        result = invoke(["train", path, *TINY_FLAGS, *gaps, "--model-dir", "model", "--store", tmp_path / "store",
                         "--verbose", "0"])
        outcomes[check_outcome(result, data, path)] += 1
    assert not (tmp_path / "store" / "model" / ".staging").exists()
    assert outcomes["refused"] > 5 and outcomes["accepted"] > 5, outcomes
