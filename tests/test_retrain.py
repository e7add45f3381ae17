"""Nightly retraining: versions, promotion by score, the lock, cron's environment, and crashes at the worst moments."""

import dataclasses
import re
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ETTH1, FORECAST, ROOT, head_csv, run_forecast

BASE_ROWS = 1200
FLAGS = ["--target", "OT", "--lookback", "48", "--horizon", "12", "--batch-size", "16", "--epochs", "2"]
pytestmark = pytest.mark.slow


def grown(tmp_path: Path, extra: int) -> Path:
    return head_csv(ETTH1, BASE_ROWS + extra, tmp_path / f"grown_{extra}.csv")


def records(root: Path) -> list[dict]:
    path = root / "retrain.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def current(root: Path) -> str:
    return os.readlink(root / "current")


def metrics(root: Path) -> dict:
    return json.loads((root / "current" / "metrics.json").read_text())


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """A store with one model trained on the first 1,200 hours of ETTh1 (copied from a trained original per test)."""
    original = tmp_path_factory.getbasetemp() / "retrain_original"
    if not original.exists():
        data = head_csv(ETTH1, BASE_ROWS, tmp_path_factory.getbasetemp() / "base.csv")
        run_forecast("train", data, *FLAGS, "--model-dir", "ett", "--store", original)
    store = tmp_path_factory.mktemp("store")
    shutil.copytree(original / "ett", store / "ett", symlinks=True)
    return store


def test_two_nightly_retrains_record_versions_continue_epochs_and_follow_the_scores(store, tmp_path):
    root = store / "ett"
    first_epoch = metrics(root)["last_epoch"]
    for night, extra in enumerate((24, 48), start=1):
        before = current(root)
        result = run_forecast("retrain", grown(tmp_path, extra), "--model", "ett", "--store", store, "--epochs", "1")
        record = records(root)[-1]
        new_rows = 24 if night == 1 or records(root)[0]["promoted"] else 48  # counted from the current version
        assert len(records(root)) == night and record["new_rows"] == new_rows
        within = [record["candidate_mse"] <= record[f"{other}_mse"] * 1.02 for other in ("current", "reference")]
        assert record["promoted"] == (all(within) and not record["kept_start_weights"])
        assert record["reference_version"] == "0001"
        assert record["gate"]["blocks"] > 0 and isinstance(record["kept_start_weights"], bool)  # gated like train
        assert f"{record['candidate_mse']:.4f}" in result.stderr and f"{record['current_mse']:.4f}" in result.stderr
        if record["promoted"]:
            assert current(root) == f"versions/{record['version']}" != before
            assert metrics(root)["last_epoch"] == record["epochs"]
            history = pd.read_csv(root / "current" / "history.csv")
            assert list(history["epoch"]) == list(range(1, record["epochs"] + 1))
        else:
            assert current(root) == before
    assert records(root)[0]["epochs"] == first_epoch + 1  # warm start continues the epoch count
    listing = run_forecast("models", "list", "--model", "ett", "--store", store).stdout
    assert listing.count("\n") == 1 + len(os.listdir(root / "versions")) and "* " in listing


def test_a_worse_candidate_is_not_promoted(store, tmp_path, monkeypatch):
    """A candidate trained on shuffled targets scores worse on the newest rows and is discarded."""
    from forecast import retraining
    from forecast.retraining import RetrainOptions, retrain

    original_train = retraining.train_collection

    def train_on_shuffled_targets(collection, config, *args, **kwargs):
        series = collection.first
        values = series.values.copy()
        target = series.roles.target
        values[target] = np.random.default_rng(0).permutation(values[target].to_numpy())
        shuffled = dataclasses.replace(collection, series=(dataclasses.replace(series, values=values),))
        return original_train(shuffled, config, *args, **kwargs)

    monkeypatch.setattr(retraining, "train_collection", train_on_shuffled_targets)
    root = store / "ett"
    before = current(root)
    decision = retrain(grown(tmp_path, 24), root, RetrainOptions(epochs=2, full=True))
    assert not decision.promoted and decision.candidate_mse > decision.current_mse * 1.02
    assert current(root) == before and os.listdir(root / "versions") == [before.split("/")[1]]
    assert not (root / ".staging").exists() and records(root)[-1]["promoted"] is False


def test_rollback_restores_the_previous_version(store, tmp_path):
    root = store / "ett"
    # --full: a fresh candidate is a new model; a warm one that keeps the current weights is not promoted
    result = run_forecast("retrain", grown(tmp_path, 24), "--model", "ett", "--store", store, "--full", "--tolerance",
                          "1000")
    assert current(root) == "versions/0002"
    # The promoted candidate's intervals are calibrated again on every origin after its training rows: its validation
    # rows and the holdout, up to the newest row.
    schema = json.loads((root / "current" / "schema.json").read_text())["series"][0]
    calibration = json.loads((root / "current" / "intervals.json").read_text())
    assert calibration["origins"] == metrics(root)["intervals"]["origins"] == schema["rows"] - schema["train_rows"] - 11
    assert "recalibrated on the validation and holdout rows" in result.stderr
    run_forecast("models", "rollback", "--model", "ett", "--store", store)
    assert current(root) == "versions/0001"


def test_nightly_script_runs_in_crons_environment(store, tmp_path):
    script = ROOT / "scripts" / "nightly-retrain.sh"
    assert (ROOT / ".venv" / "bin" / "forecast").exists(), "the script's default command is the repository's .venv"
    result = subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", "sh", str(script), str(grown(tmp_path, 24)), str(store / "ett"), "--epochs", "1"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd="/",
    )
    assert result.returncode == 0, result.stderr
    log = (store / "ett.log").read_text().splitlines()
    assert any(re.search(r" epoch \d+: loss ", line) for line in log) and any("candidate holdout MSE" in line for line in log)
    assert all(line[:4].isdigit() and line[10] == "T" for line in log)  # every line starts with a timestamp
    assert "\x08" not in result.stderr and "━" not in result.stderr  # no progress bar without a terminal


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            return True
        time.sleep(0.001)
    return False


def start_retrain(data: Path, store: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(FORECAST), "retrain", str(data), "--model", "ett", "--store", str(store), "--epochs", "2",
         "--tolerance", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def test_a_second_retrain_exits_at_once_while_the_first_holds_the_lock(store, tmp_path):
    data = grown(tmp_path, 24)
    first = start_retrain(data, store)
    try:
        assert wait_for(store / "ett" / ".staging", first), "the first retrain never started training"
        started = time.monotonic()
        second = run_forecast("retrain", data, "--model", "ett", "--store", store, check=False)
        assert second.returncode == 75 and "another train or retrain of this model is running" in second.stderr
        assert time.monotonic() - started < 30
    finally:
        first.kill()
        first.wait()


def test_sigkill_while_training_and_while_writing_keeps_the_old_model(store, tmp_path):
    data = grown(tmp_path, 24)
    root = store / "ett"
    from forecast.prediction import predict

    old_version = current(root)
    old_forecast = predict(data, root)  # in process: each check would otherwise import TensorFlow anew

    for moment in (root / ".staging" / "checkpoints" / "state.json", root / ".staging" / "model.keras"):
        process = start_retrain(data, store)
        reached = wait_for(moment, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert reached, f"the retrain ended before {moment.name} appeared: {process.stderr.read()}"
        assert current(root) == old_version
        pd.testing.assert_frame_equal(predict(data, root), old_forecast)

    run_forecast("retrain", data, "--model", "ett", "--store", store, "--full", "--tolerance", "1000")
    assert current(root) != old_version and records(root)[-1]["promoted"] is True


def test_a_model_whose_weights_no_longer_fit_still_forecasts_and_retrains_fresh(store, tmp_path):
    """As after an upgrade that changed the network: predict runs the saved layers, a warm retrain trains afresh."""
    from forecast.config import Config
    from forecast.model import build_model
    from forecast.store import CONFIG_FILE, MODEL_FILE, SCHEMA_FILE, Schema

    version = (store / "ett" / "current").resolve()
    config = Config.from_json(version / CONFIG_FILE)
    other = build_model(config.replace(units=config.units + 4), Schema.from_json(version / SCHEMA_FILE).layout,
                        config.batch_size)
    other.save(version / MODEL_FILE)
    output = tmp_path / "forecast.csv"
    run_forecast("predict", grown(tmp_path, 0), "--model", "ett", "--store", store, "--output", output)
    assert len(pd.read_csv(output)) == 12

    result = run_forecast("retrain", grown(tmp_path, 24), "--model", "ett", "--store", store, "--epochs", "1")
    assert "do not fit the network" in result.stderr and "training a fresh candidate instead" in result.stderr
    assert records(store / "ett")[-1]["mode"] == "full"
