"""Bad files and bad model directories: one clear line, a non-zero exit code, no traceback, nothing on disk changed."""

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from forecast.config import Config
from forecast.data import load_series

from conftest import BEIJING, ETTH1, run_forecast

ROWS = 400
TRAIN = ["--target", "OT", "--lookback", "24", "--horizon", "6", "--batch-size", "8", "--epochs", "1"]


def ett_lines(rows: int = ROWS) -> list[str]:
    with ETTH1.open(encoding="utf-8") as reader:
        return [next(reader) for _ in range(rows + 1)]


def with_cell(lines: list[str], row: int, column: int, value: str) -> list[str]:
    """`lines` with data row `row` (0-based), field `column` replaced."""
    fields = lines[row + 1].rstrip("\n").split(",")
    fields[column] = value
    return lines[: row + 1] + [",".join(fields) + "\n"] + lines[row + 2 :]


def drop_column(lines: list[str], column: int) -> list[str]:
    return [",".join(field for index, field in enumerate(line.rstrip("\n").split(",")) if index != column) + "\n"
            for line in lines]


def tree_digest(directory: Path) -> dict[str, str]:
    """Every file's hash and every symlink's target under `directory`."""
    return {str(path.relative_to(directory)): os.readlink(path) if path.is_symlink()
            else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_symlink() or path.is_file()}


LINES = ett_lines()
TRAIN_CASES = {
    "empty file": (b"", [], "the file is empty"),
    "header only": (LINES[0].encode(), [], "the file has a header but no rows"),
    "no time column": ("".join(drop_column(LINES, 0)).encode(), [], "no time column found"),
    "unparseable date": ("".join(with_cell(LINES, 49, 0, "2016-07-03 25:61:00")).encode(), [],
                         "row 51: cannot read '2016-07-03 25:61:00' in column 'date' as a date"),
    "rows out of order": ("".join(LINES[:20] + [LINES[21], LINES[20]] + LINES[22:]).encode(), [],
                          "row 22: timestamp 2016-07-01 19:00:00 goes back in time"),
    "duplicated hour": ("".join(LINES[:31] + [LINES[30]] + LINES[31:]).encode(), [],
                        "row 32: timestamp 2016-07-02 05:00:00 repeats the row before (a clock change? export times in UTC)"),
    "irregular step": ("".join(with_cell(LINES, 99, 0, "2016-07-05 03:30:00")).encode(), [],
                       "row 101: timestamp 2016-07-05 03:30:00 is 1 h 30 min after the row before, not a multiple of the "
                       "series step, 1 h"),
    "short gap refused": ("".join(LINES[:60] + LINES[62:]).encode(), [],
                          "row 61: 2 missing step(s) between 2016-07-03 10:00:00 and 2016-07-03 13:00:00; fill the gap"),
    "long gap masked": ("".join(LINES[:60] + LINES[160:]).encode(), ["--gaps", "mask"],
                        "100 missing steps between 2016-07-03 10:00:00 and 2016-07-07 15:00:00, more than max_gap = 24"),
    "target absent": ("".join(drop_column(LINES, 7)).encode(), [], "column 'OT' not found; the file has: date, HUFL"),
    "target all empty": ("".join(line.rsplit(",", 1)[0] + ",\n" if index else line
                                 for index, line in enumerate(LINES)).encode(), [], "target column 'OT' has no values"),
    "target constant": ("".join(line.rsplit(",", 1)[0] + ",7.5\n" if index else line
                                for index, line in enumerate(LINES)).encode(), [], "target column 'OT' is constant (7.5)"),
    "text in a number": ("".join(with_cell(LINES, 9, 3, "n/a?")).encode(), [],
                         "row 11: column 'MUFL' holds 'n/a?', not a number"),
    "infinite value": ("".join(with_cell(LINES, 19, 2, "inf")).encode(), [], "row 21: column 'HULL' is infinite"),
    "too few rows": ("".join(LINES[:31]).encode(), [], "too little data: 24 training rows and 6 validation rows"),
    "cut off mid-line": ("".join(LINES)[:-40].encode(), [], "has no line end, so it may still be being written"),
    "not UTF-8": ("".join(LINES[:1] + ["2016-07-01 00:00:00,5.8,2.0,1.6,0.46,4.2,1.34,30.5\n"] + LINES[2:])
                  .replace("5.8,", "5.8\u00e9,", 1).encode("latin-1"), [], "line 2 is not UTF-8 text; re-save the file as UTF-8 CSV"),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A model store holding one real trained model, which no failed command may touch."""
    store = tmp_path_factory.mktemp("store")
    source = store / "source.csv"
    source.write_text("".join(LINES), encoding="utf-8")
    run_forecast("train", source, *TRAIN, "--model-dir", "existing", "--store", store)
    return store


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_bad_training_file(case, store, tmp_path):
    content, flags, message = TRAIN_CASES[case]
    before = tree_digest(store)
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = run_forecast("train", path, *TRAIN, *flags, "--model-dir", "existing", "--store", store, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: {path}: ") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert tree_digest(store) == before


def test_categorical_column_given_a_numeric_role(store, tmp_path):
    config = tmp_path / "beijing.toml"
    config.write_text('target = "pm2.5"\ntime_columns = ["year", "month", "day", "hour"]\nbg = ["cbwd"]\n')
    result = run_forecast("train", BEIJING, "--config", config, "--model-dir", "existing", "--store", store, check=False)
    assert result.returncode == 1 and "row 2: column 'cbwd' holds 'NW', not a number" in result.stderr


def test_predict_file_must_match_the_model(store, tmp_path):
    before = tree_digest(store)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("".join([LINES[0].replace("HUFL", "HUFL_kw")] + LINES[1:]), encoding="utf-8")
    result = run_forecast("predict", renamed, "--model", "existing", "--store", store, check=False)
    assert result.returncode == 1 and "column 'HUFL' not found; the file has: date, HUFL_kw" in result.stderr

    daily = tmp_path / "daily.csv"
    frame = pd.read_csv(ETTH1, nrows=ROWS)
    frame["date"] = pd.date_range("2016-07-01", periods=ROWS, freq="D").astype(str)
    frame.to_csv(daily, index=False)
    result = run_forecast("predict", daily, "--model", "existing", "--store", store, check=False)
    assert result.returncode == 1 and "steps by 1 day, but the model was trained on steps of 1 h" in result.stderr
    assert tree_digest(store) == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.keras").write_bytes((d / "model.keras").read_bytes()[:5000]), "cannot load the model"),
        (lambda d: (d / "scaler.json").unlink(), "not a complete model directory (missing scaler.json)"),
        (lambda d: (d / "config.json").write_text("{ half"), "cannot read the saved configuration"),
        (lambda d: (d / "schema.json").write_text('{"freq": 3}'), "cannot read the saved schema"),
    ],
    ids=["truncated model", "missing scaler", "broken config", "broken schema"],
)
def test_damaged_model_directory(store, tmp_path, damage, message):
    copy = store / f"damaged_{tmp_path.name}"
    shutil.copytree(store / "existing", copy, symlinks=True)
    damage(copy / "current")
    result = run_forecast("predict", store / "source.csv", "--model", copy.name, "--store", store, check=False)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    shutil.rmtree(copy)


@pytest.mark.parametrize("name", ["../escaped", "/tmp/elsewhere", "existing/../../escaped"])
def test_model_paths_outside_the_store_are_refused(store, name):
    for command in (["predict", store / "source.csv", "--model", name], ["train", store / "source.csv", *TRAIN, "--model-dir", name]):
        result = run_forecast(*command, "--store", store, check=False)
        assert result.returncode == 1 and "is outside the model store" in result.stderr


def test_short_gaps_can_be_masked_or_interpolated(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("".join(LINES[:60] + LINES[62:]), encoding="utf-8")
    masked = load_series(path, Config(target="OT", gaps="mask"))
    interpolated = load_series(path, Config(target="OT", gaps="interpolate"))
    original = load_series(ETTH1, Config(target="OT"))
    for series in (masked, interpolated):
        assert len(series.time) == ROWS and (series.time == original.time[:ROWS]).all()
    assert masked.values["OT"].iloc[59:61].isna().all()
    # Interpolation fills from the past only: a covariate carries its last value into the gap, never one read from
    # the row after it, and the target stays empty there (a filled target is not an observation: weight 0).
    assert interpolated.values["OT"].iloc[59:61].isna().all()
    assert (interpolated.values["HUFL"].iloc[59:61] == original.values["HUFL"].iloc[58]).all()
    changed = tmp_path / "changed.csv"
    row = LINES[62].split(",")
    changed.write_text("".join(LINES[:60] + [",".join([row[0], *(str(float(v) * 5) for v in row[1:])]) + "\n"]
                               + LINES[63:]), encoding="utf-8")
    after_gap = load_series(changed, Config(target="OT", gaps="interpolate"))
    pd.testing.assert_frame_equal(after_gap.values.iloc[:61], interpolated.values.iloc[:61])
