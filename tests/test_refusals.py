"""Nothing wrong is ever accepted: cut lines, duplicate headers, tampered store files, out-of-range settings, a resumed
retrain, paths out of the store. Each case ends in one line naming the file and what to do, a non-zero exit code, no
traceback, and nothing on disk changed; each failed on the code before it was fixed.

Everything here runs on a small generated hourly series (`date,x1,x2,y`), so it needs no data outside the repository.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecast.config import Config
from forecast.data import load_series
from forecast.errors import ForecastError

from conftest import ROOT, run_forecast, synthetic_lines

ROWS = 800
TRAIN = ["--target", "y", "--lookback", "24", "--horizon", "6", "--batch-size", "8", "--epochs", "1"]


LINES = synthetic_lines(ROWS)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


def tree(directory: Path) -> dict[str, str]:
    """Every file's bytes and every symlink's target under `directory`: what a refused command must leave as it was."""
    return {str(path.relative_to(directory)): os.readlink(path) if path.is_symlink() else path.read_bytes().hex()
            for path in sorted(directory.rglob("*")) if path.is_symlink() or path.is_file()}


def assert_refused(result: subprocess.CompletedProcess, message: str, code: int = 1) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with one model trained on the generated series; every test works on its own copy of it."""
    store = tmp_path_factory.mktemp("refusals")
    run_forecast("train", write(store / "series.csv", LINES), *TRAIN, "--model-dir", "model", "--store", store)
    return store


@pytest.fixture
def copy(store, tmp_path) -> Path:
    """A private store holding a copy of the trained model and its data."""
    private = tmp_path / "store"
    shutil.copytree(store, private, symlinks=True)
    return private


def version_dir(store: Path) -> Path:
    return (store / "model" / "current").resolve()


# Data files


def test_a_last_line_without_line_end_is_refused_by_train_and_left_out_by_predict(copy, tmp_path):
    cut = LINES[:-1] + [LINES[-1].rstrip("\n")[:-3]]  # the writer had not finished the last value
    path = write(tmp_path / "cut.csv", cut)
    before = tree(copy)
    assert_refused(run_forecast("train", path, *TRAIN, "--model-dir", "model", "--store", copy, check=False),
                   "has no line end, so it may still be being written")
    assert_refused(run_forecast("retrain", path, "--model", "model", "--store", copy, check=False),
                   "has no line end, so it may still be being written")
    assert tree(copy) == before

    partial = run_forecast("predict", path, "--model", "model", "--store", copy)
    whole = run_forecast("predict", write(tmp_path / "whole.csv", LINES[:-1]), "--model", "model", "--store", copy)
    assert "warning: " in partial.stderr and "left out the last line" in partial.stderr
    assert partial.stdout == whole.stdout


def test_duplicate_column_names_are_refused(tmp_path):
    path = write(tmp_path / "dup.csv", ["date,x1,y,y\n", *(line.split(",", 1)[0] + ",1,2,3\n" for line in LINES[1:50])])
    with pytest.raises(ForecastError, match="columns 3 and 4 are both named 'y'; give each column its own name"):
        load_series(path, Config(target="y"))


def test_a_trailing_comma_is_not_a_column_but_an_unnamed_column_of_values_is_refused(tmp_path):
    trailing = write(tmp_path / "trailing.csv", [line.rstrip("\n") + ",\n" for line in LINES])
    series = load_series(trailing, Config(target="y"))
    assert series.roles.past == ("x1", "x2") and series.columns == ("date", "x1", "x2", "y")

    unnamed = write(tmp_path / "unnamed.csv", [LINES[0].rstrip("\n") + ",\n"] + [line.rstrip("\n") + ",5\n" for line in LINES[1:]])
    with pytest.raises(ForecastError, match="column 5 has values but no name in the header"):
        load_series(unnamed, Config(target="y"))


def test_rows_with_more_fields_than_the_header_are_refused(tmp_path):
    path = write(tmp_path / "wide_rows.csv", [LINES[0]] + [line.rstrip("\n") + ",9\n" for line in LINES[1:]])
    with pytest.raises(ForecastError, match="rows have more fields than the header's 4 names"):
        load_series(path, Config(target="y"))


def test_a_file_with_an_extra_column_does_not_match_the_model(copy, tmp_path):
    extra = write(tmp_path / "extra.csv", [LINES[0].rstrip("\n") + ",x3\n"] + [line.rstrip("\n") + ",1.5\n" for line in LINES[1:]])
    before = tree(copy)
    for command in ("retrain", "predict"):
        assert_refused(run_forecast(command, extra, "--model", "model", "--store", copy, check=False),
                       "the columns differ from the training file's (x3 not in it)")
    assert tree(copy) == before


def test_values_beyond_float32_are_refused_before_training_leaves_anything(copy, tmp_path):
    last = LINES[-1].rsplit(",", 1)[0] + ",1e308\n"
    assert_refused(run_forecast("predict", write(tmp_path / "huge.csv", LINES[:-1] + [last]), "--model", "model",
                                "--store", copy, check=False), "column 'y' holds 1e+308, beyond the")
    cell = LINES[100].rsplit(",", 1)[0] + ",1e308\n"
    path = write(tmp_path / "huge_train.csv", LINES[:100] + [cell] + LINES[101:])
    assert_refused(run_forecast("train", path, *TRAIN, "--model-dir", "fresh", "--store", copy, check=False),
                   "row 101: column 'y' holds 1e+308")
    assert not (copy / "fresh").exists() and not (copy / "model" / ".staging").exists()


def test_a_header_without_the_target_is_answered_in_one_short_line(tmp_path):
    names = [f"c{index}" for index in range(100_000)]
    path = write(tmp_path / "wide.csv", ["date," + ",".join(names) + "\n", "2020-01-01," + ",".join("1" * len(names)) + "\n"])
    with pytest.raises(ForecastError) as error:
        load_series(path, Config(target="y"))
    assert "column 'y' not found; the file has: date, c0, c1" in str(error.value)
    assert "and 99989 more" in str(error.value) and len(str(error.value)) < 400


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff".encode() + "".join(LINES).encode())
    assert load_series(path, Config(target="y")).columns[0] == "date"


def test_a_value_beyond_float32_names_its_file_line_after_skipped_lines(tmp_path):
    path = write(tmp_path / "skipped.csv", ["station 7\n", *LINES[:5], LINES[5].rsplit(",", 1)[0] + ",1e300\n", *LINES[6:]])
    with pytest.raises(ForecastError, match="row 7: column 'y' holds 1e\\+300"):
        load_series(path, Config(target="y", skip_rows=1))


@pytest.mark.parametrize("bounds", [{"target_min": float("nan")}, {"target_max": float("nan")},
                                    {"target_min": float("inf")}, {"target_max": float("-inf")}])
def test_bounds_must_be_numbers(bounds):
    with pytest.raises(ForecastError, match="must be a number"):
        Config(target="y", **bounds)


def test_messages_name_the_real_cause(tmp_path):
    semicolons = write(tmp_path / "semicolons.csv", [line.replace(",", ";") for line in LINES])
    with pytest.raises(ForecastError, match="separated by semicolons, not commas"):
        load_series(semicolons, Config(target="y"))

    day_first = [LINES[0]] + [
        pd.Timestamp(line.split(",", 1)[0]).strftime("%d/%m/%Y %H:%M") + "," + line.split(",", 1)[1] for line in LINES[1:]
    ]
    series = load_series(write(tmp_path / "day_first.csv", day_first), Config(target="y"))
    assert series.time[0] == pd.Timestamp("2020-01-01") and series.time[-1] == pd.Timestamp("2020-02-03 07:00")


# Settings


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "-1"], "learning_rate must be above 0 and at most 1, got -1.0"),
        (["--learning-rate", "nan"], "learning_rate must be above 0 and at most 1, got nan"),
        (["--patience", "-1"], "patience must be at least 0, got -1"),
        (["--seed", "-1"], "seed must be between 0 and 4294967295, got -1"),
        (["--members", "0"], "members must be at least 1, got 0"),
        (["--seed", "4294967295", "--members", "2"], "seed + members - 1 must be below 2**32, got 4294967296"),
    ],
)
def test_out_of_range_training_settings_are_refused(copy, flags, message):
    before = tree(copy)
    assert_refused(run_forecast("train", copy / "series.csv", *TRAIN, *flags, "--model-dir", "model", "--store", copy,
                                check=False), message)
    assert tree(copy) == before


def test_out_of_range_settings_in_a_config_file_are_refused(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("learning_rate = -0.5\n")
    with pytest.raises(ForecastError, match="settings.toml: config: learning_rate must be above 0"):
        Config.from_toml(path)


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--tolerance", "nan"], "--tolerance must be a finite number of at least 0, got nan"),
     (["--tolerance", "-0.1"], "--tolerance must be a finite number of at least 0, got -0.1"),
     (["--epochs", "0"], "--epochs must be at least 1, got 0"),
     (["--holdout", "-5"], "--holdout must be at least 1 row, got -5")],
)
def test_out_of_range_retrain_settings_are_refused(copy, flags, message):
    before = tree(copy)
    assert_refused(run_forecast("retrain", copy / "series.csv", "--model", "model", "--store", copy, *flags,
                                check=False), message)
    assert tree(copy) == before


# The store


def test_rollback_accepts_only_version_names_and_a_current_pointing_out_is_refused(copy, tmp_path):
    root = copy / "model"
    outside = tmp_path / "outside" / "model"
    shutil.copytree(version_dir(copy), outside)
    before = tree(copy)
    assert_refused(run_forecast("models", "rollback", "--model", "model", "--to", "../../../outside/model",
                                "--store", copy, check=False), "no complete version '../../../outside/model'")
    assert tree(copy) == before

    (root / "current").unlink()
    os.symlink(outside, root / "current")
    assert_refused(run_forecast("predict", copy / "series.csv", "--model", "model", "--store", copy, check=False),
                   "which is not a version of this model; `forecast models rollback --to VERSION` points it back")
    run_forecast("models", "rollback", "--model", "model", "--to", "0001", "--store", copy)
    run_forecast("predict", copy / "series.csv", "--model", "model", "--store", copy)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_std(index: int, value: float):
    return lambda data: data["series"][""]["std"].__setitem__(index, value)


TAMPERED = {
    "zero spread": ("scaler.json", set_std(0, 0.0), "cannot read the saved scaler (column 'y' has mean"),
    "NaN spread": ("scaler.json", set_std(0, float("nan")), "both must be finite numbers within float32 range, the spread above 0"),
    "negative spread": ("scaler.json", set_std(0, -2.0), "both must be finite numbers within float32 range, the spread above 0"),
    "huge mean": ("scaler.json", lambda data: data["series"][""]["mean"].__setitem__(0, 1e308), "both must be finite numbers within float32 range, the spread above 0"),
    "shortened spreads": ("scaler.json", lambda data: data["series"][""]["std"].pop(), "3 columns, 3 means and 2 spreads"),
    "target not scaled": ("scaler.json", lambda data: [data["series"][""][key].pop(0) for key in ("columns", "mean", "std")],
                          "no mean and spread for column 'y'"),
    "no digests": ("schema.json", lambda data: data["series"][0].__setitem__("digests", []), "0 digests for 800 rows"),
    "another lookback": ("config.json", lambda data: data.__setitem__("lookback", 48),
                         "the network's lstm input has shape (24, 4), but config.json and schema.json describe (48, 4)"),
    # The interval calibration, read before the network, is the first to notice.
    "another horizon": ("config.json", lambda data: data.__setitem__("horizon", 12),
                        "intervals.json: calibrated for 6 steps, but config.json says the model forecasts 12"),
    "crossing intervals": ("intervals.json", lambda data: data.__setitem__("offsets", data["offsets"][::-1]),
                           "intervals.json: cannot read the interval calibration (offsets must be finite and ascending"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_store_files_are_refused(copy, case):
    name, change, message = TAMPERED[case]
    edit_json(version_dir(copy) / name, change)
    before = tree(copy)
    for command in (["predict"], ["evaluate", "--start", "700"], ["retrain"]):
        result = run_forecast(command[0], copy / "series.csv", "--model", "model", "--store", copy, *command[1:],
                              check=False, cwd=copy)
        assert_refused(result, message)
        assert name in result.stderr and ("roll back" in result.stderr or "retrain" in result.stderr)
    assert tree(copy) == before


@pytest.mark.parametrize(("damage", "message"), [
    (lambda path: path.unlink(), "metrics.json: missing; retrain with --full, or roll back"),
    (lambda path: path.write_text("{ not json"), "metrics.json: not readable (JSONDecodeError"),
])
def test_a_warm_retrain_without_readable_metrics_is_refused(copy, tmp_path, damage, message):
    damage(version_dir(copy) / "metrics.json")
    grown = write(tmp_path / "grown.csv", synthetic_lines(ROWS + 48))
    before = tree(copy)
    assert_refused(run_forecast("retrain", grown, "--model", "model", "--store", copy, check=False), message)
    assert tree(copy) == before


def test_a_model_file_with_code_in_it_is_called_unsafe(copy):
    import keras

    inputs = keras.Input(shape=(2,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(version_dir(copy) / "model.keras")
    assert_refused(run_forecast("predict", copy / "series.csv", "--model", "model", "--store", copy, check=False),
                   "refused: the file holds code that would run on loading (a Lambda layer)")


# Runs


def test_a_killed_retrain_cannot_be_resumed_as_a_train(copy, tmp_path):
    from forecast.retraining import RetrainOptions, retrain

    import keras

    class Killed(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt  # as a SIGINT between two epochs: the checkpoint of the epoch is on disk

    grown = write(tmp_path / "grown.csv", synthetic_lines(ROWS + 48))
    with pytest.raises(KeyboardInterrupt):
        retrain(grown, copy / "model", RetrainOptions(epochs=2), extra_callbacks=(Killed(),))
    assert (copy / "model" / ".staging" / "checkpoints" / "state.json").is_file()
    current = os.readlink(copy / "model" / "current")
    assert_refused(run_forecast("train", grown, "--resume", "--model-dir", "model", "--store", copy, check=False),
                   "the interrupted run was a retrain, which cannot be resumed as a train; run `forecast retrain` again")
    assert os.readlink(copy / "model" / "current") == current and not (copy / "model" / "retrain.jsonl").exists()

    run_forecast("retrain", grown, "--model", "model", "--store", copy, "--epochs", "1")
    assert len((copy / "model" / "retrain.jsonl").read_text().splitlines()) == 1


def test_a_killed_warm_train_resumes_with_the_scaler_of_the_version_it_continued(copy, tmp_path):
    from forecast import training

    import keras

    class Killed(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    grown = write(tmp_path / "grown.csv", synthetic_lines(ROWS + 200))  # another scaler if it were fitted again
    config = Config.from_json(version_dir(copy) / "config.json").replace(initial_epoch=1, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        training.train(grown, config, copy / "model", extra_callbacks=(Killed(),))
    run_forecast("train", grown, "--resume", "--model-dir", "model", "--store", copy)
    assert os.readlink(copy / "model" / "current") == "versions/0002"
    versions = copy / "model" / "versions"
    assert (versions / "0002" / "scaler.json").read_text() == (versions / "0001" / "scaler.json").read_text()


def test_a_failed_run_leaves_no_staging(copy):
    from forecast import training

    import keras

    class Fails(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise ForecastError("data went bad")

    config = Config.from_json(version_dir(copy) / "config.json")
    with pytest.raises(ForecastError, match="data went bad"):
        training.train(copy / "series.csv", config, copy / "model", extra_callbacks=(Fails(),))
    assert not (copy / "model" / ".staging").exists()


def test_a_series_too_short_for_any_calendar_cycle_and_without_sims_trains(tmp_path):
    path = write(tmp_path / "short.csv", synthetic_lines(40))  # 32 training hours: not two days, so no calendar
    result = run_forecast("train", path, "--target", "y", "--lookback", "8", "--horizon", "2", "--batch-size", "8",
                          "--epochs", "1", "--model-dir", "short", "--store", tmp_path / "store")
    assert "saved" in result.stderr
    assert json.loads((tmp_path / "store" / "short" / "current" / "schema.json").read_text())["layout"]["sim"] == []


def test_warm_retrains_keep_the_configured_epoch_budget(tmp_path):
    from forecast.retraining import RetrainOptions, _candidate_config, _keep_configured_epochs

    configured = Config(target="y", epochs=2)
    version = tmp_path / "0007"
    version.mkdir()
    (version / "metrics.json").write_text('{"last_epoch": 12}')  # six warm retrains of two epochs each
    warm = _candidate_config(configured, version, RetrainOptions(epochs=2), "2020-01-30 03:00:00")
    assert (warm.initial_epoch, warm.epochs) == (12, 14)
    (version / "config.json").write_text(warm.replace(target_min=0.0).to_json())  # as training wrote it
    _keep_configured_epochs(version, configured.epochs)
    saved = Config.from_json(version / "config.json")
    assert (saved.epochs, saved.initial_epoch, saved.val_end, saved.target_min) == (2, 0, "2020-01-30 03:00:00", 0.0)
    full = _candidate_config(saved, version, RetrainOptions(full=True), "2020-02-03 07:00:00")
    assert (full.initial_epoch, full.epochs) == (0, 2)


def test_a_run_that_finds_the_lock_taken_stops_before_loading_tensorflow(copy, tmp_path):
    import fcntl

    fake = tmp_path / "fake_modules" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorflow was imported before the lock was taken')\n")
    environment = {**os.environ, "PYTHONPATH": str(fake.parent)}
    with (copy / "model" / ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for command in (["train", copy / "series.csv", *TRAIN, "--model-dir", "model"], ["retrain", copy / "series.csv",
                                                                                       "--model", "model"]):
            result = run_forecast(*command, "--store", copy, check=False, env=environment)
            assert_refused(result, "another train or retrain of this model is running", code=75)


def test_the_nightly_wrapper_logs_its_own_failures(copy):
    log = copy / "model.log"
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "nightly-retrain.sh"), str(copy / "series.csv"), str(copy / "model")],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"], "FORECAST": str(copy / "no-such-forecast")},
    )
    assert result.returncode == 127
    assert "error: nightly-retrain.sh: no forecast command at" in log.read_text()

    crashing = copy / "crashing-forecast"
    crashing.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'ValueError: boom' >&2\nexit 1\n")
    crashing.chmod(0o755)
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "nightly-retrain.sh"), str(copy / "series.csv"), str(copy / "model")],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"], "FORECAST": str(crashing)},
    )
    assert result.returncode == 1 and "ValueError: boom" in result.stderr
    assert "forecast retrain stopped with exit code 1 (a crash or a kill): ValueError: boom" in log.read_text()


def test_info_describes_the_model_without_loading_tensorflow(store):
    import time

    probe = (
        "import sys, time; from typer.testing import CliRunner; from forecast.cli import app; start = time.perf_counter(); "
        f"result = CliRunner().invoke(app, ['info', '--model', 'model', '--store', {str(store)!r}]); "
        "assert result.exit_code == 0, result.output; print(result.output); "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("[]"), result.stdout
    assert "version 0001, linear" in result.stdout and "target: y" in result.stdout
    assert "history (lstm): y, x1, x2, target_observed" in result.stdout and "validation MSE" in result.stdout
    assert "forecast intervals: quantiles 0.1, 0.9, split conformal per step" in result.stdout
    start = time.perf_counter()
    run_forecast("info", "--model", "model", "--store", store)
    assert time.perf_counter() - start < 5.0  # about a second on two quiet cores: pandas, no TensorFlow
