"""Mangled long files and attribute tables of the tiny four-basin sample: ids, dates, values, line order and attribute
cells. Through `predict` (150 files) each ends in exit 0 with finite forecasts for every series asked, or in one
`error:` line naming the file; through `train` (30 files and tables) in a model or one such line, with no model
directory left by a refusal. Never a traceback, never a hang.
"""

import io
import random

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.data import load_collection

from conftest import TINY_BASINS
from test_fuzz import JUNK, check_outcome, fuzzed, invoke, mangle

NAMES = ["NA", "None", "", " ", "x", "01022500", "1022500", "01022500.0", "null"]


def mangle_ids(lines: list[str], rng: random.Random) -> list[str]:
    """The lines with their ids mangled once: zeros dropped (everywhere or in one row), one cell emptied or renamed,
    a series renamed, rows moved to the end of the file, or every row shuffled."""
    lines = list(lines)
    body = range(1, len(lines))
    kind = rng.randrange(6)
    if kind == 0:
        return [lines[0], *(line.lstrip("0") for line in lines[1:])]
    row = rng.choice(body)
    if kind == 1:
        lines[row] = lines[row].lstrip("0")
    elif kind == 2:
        lines[row] = rng.choice(NAMES) + "," + lines[row].split(",", 1)[1]
    elif kind == 3:
        old = lines[row].split(",", 1)[0]
        new = rng.choice(NAMES)
        lines = [new + line[len(old):] if line.startswith(old + ",") else line for line in lines]
    elif kind == 4:
        moved = lines[row : row + rng.randint(1, 30)]
        lines = [*lines[:row], *lines[row + len(moved):], *moved]
    else:
        rows = lines[1:]
        rng.shuffle(rows)
        lines = [lines[0], *rows]
    return lines


def mangled_file(lines: list[str], rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        lines = mangle_ids(lines, rng)
    return mangle(lines, rng) if rng.random() < 0.6 else "".join(lines).encode()


@pytest.mark.parametrize("seed", range(3))
def test_predict_on_mangled_long_files_forecasts_every_series_asked_or_refuses_in_one_line(basins_store, tmp_path,
                                                                                           seed):
    data, _, store = basins_store
    config = Config.from_json(store / "basins" / "current" / "config.json")
    lines = data.read_text().splitlines(keepends=True)
    rng = random.Random(2700 + seed)
    asked = {case: (rng.choice(["01547700", "NA", "02064000"]),) if case % 3 else () for case in range(50)}
    outcomes = {"refused": 0, "accepted": 0}
    for case, path, result, outcome in fuzzed(tmp_path, 50, lambda: mangled_file(lines, rng), lambda path, case: [
            "predict", path, "--model", "basins", "--store", store, *(["--series", *asked[case]] if asked[case] else [])]):
        outcomes[outcome] += 1
        if outcome == "refused":
            continue
        forecast = pd.read_csv(io.StringIO(result.stdout), dtype={"basin": str}, keep_default_na=False)
        ids = asked[case] or load_collection(path, config, warn=lambda message: None).ids
        assert sorted(forecast.basin.unique()) == sorted(ids), (path, result.stdout)
        assert (forecast.groupby("basin").size() == config.horizon).all()
        values = forecast[["QObs", "QObs_q0.1", "QObs_q0.9"]].to_numpy(dtype="float64")
        assert np.isfinite(values).all(), result.stdout
    assert outcomes["refused"] > 5 and outcomes["accepted"] > 5, outcomes


def mangle_table(lines: list[str], rng: random.Random) -> list[str]:
    """An attribute table with one change: a cell of junk, ids without their zeros, a row dropped or repeated, or
    two columns swapped in every row."""
    lines = list(lines)
    row = rng.randrange(1, len(lines))
    kind = rng.randrange(5)
    if kind == 0:
        cells = lines[row].rstrip("\n").split(",")
        cells[rng.randrange(len(cells))] = rng.choice([*JUNK, "1e308", "NA", "N/A"])
        lines[row] = ",".join(cells) + "\n"
    elif kind == 1:
        lines = [lines[0], *(line.lstrip("0") for line in lines[1:])]
    elif kind == 2:
        del lines[row]
    elif kind == 3:
        lines.insert(row, lines[row])
    else:
        first, second = rng.sample(range(len(lines[0].split(","))), 2)
        swapped = []
        for line in lines:
            cells = line.rstrip("\n").split(",")
            cells[first], cells[second] = cells[second], cells[first]
            swapped.append(",".join(cells) + "\n")
        lines = swapped
    return lines


@pytest.mark.slow
def test_train_on_mangled_long_files_and_attribute_tables_trains_or_refuses_in_one_line(basins_store, tmp_path):
    data, static, _ = basins_store
    lines = data.read_text().splitlines(keepends=True)
    table = static.read_text().splitlines(keepends=True)
    settings = tmp_path / "tiny.toml"
    settings.write_text("units = 4\nhead_units = 4\nstream_chunks = 2\n")
    store = tmp_path / "store"
    rng = random.Random(27)
    outcomes = {"refused": 0, "accepted": 0}
    for case in range(30):
        path, attributes = tmp_path / f"mangled_{case}.csv", tmp_path / f"attributes_{case}.csv"
        content = mangled_file(lines, rng) if case % 3 else "".join(lines).encode()
        path.write_bytes(content)
        attributes.write_text("".join(mangle_table(table, rng) if case % 3 != 1 else table))
        gaps = ["--gaps", "mask", "--max-gap", "100"] if case % 2 else []
        result = invoke(["train", path, *TINY_BASINS, "--config", settings, "--static", attributes, *gaps,
                         "--model-dir", f"m{case}", "--store", store], seconds=300)
        # An error may name either file: check_outcome wants the data's, so the table's is checked here.
        named_table = any(line.startswith(f"error: {attributes}") for line in result.stderr.splitlines())
        outcome = "refused" if named_table else check_outcome(result, content, path)
        if named_table:
            assert result.exit_code == 1 and "Traceback" not in result.output
            assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 1
        outcomes[outcome] += 1
        model = store / f"m{case}"
        assert (model / "current" / "model.keras").is_file() if outcome == "accepted" else not model.exists()
        assert not (model / ".staging").exists()
    assert outcomes["refused"] > 5 and outcomes["accepted"] > 3, outcomes
