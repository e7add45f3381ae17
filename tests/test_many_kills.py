"""SIGKILL at random moments of a many-series train or retrain (with attributes) always leaves the current version
complete and forecasting; `train --resume` finishes a train killed after a checkpoint."""

import random
import shutil
import subprocess
import time

import numpy as np
import pytest

from forecast.prediction import predict
from forecast.store import current_version

from conftest import BASIN_IDS, FORECAST, TINY_BASINS, tiny_basins, train_until_killed


def killed_at_random(arguments: list, staging, rng: random.Random, timeout: float = 300) -> int:
    """Runs `forecast ARGUMENTS` and kills it (SIGKILL) at a random moment of its work: up to two seconds after it
    starts assembling a version in `staging` (TensorFlow's import before that is no moment of interest)."""
    process = subprocess.Popen([str(FORECAST), *map(str, arguments)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while process.poll() is None and not staging.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 2.0))
    process.kill()
    return process.wait()


@pytest.mark.slow
def test_sigkill_during_many_series_runs_leaves_a_working_current_version_and_resume_finishes(basins_store, tmp_path):
    data, static, trained = basins_store
    store = tmp_path / "store"
    shutil.copytree(trained, store, symlinks=True)
    root = store / "basins"
    settings = tmp_path / "tiny.toml"
    settings.write_text("units = 4\nhead_units = 4\nstream_chunks = 2\n")
    train = ["train", data, *TINY_BASINS, "--config", settings, "--static", static, "--epochs", "3", "--model-dir",
             "basins", "--store", store]
    rng = random.Random(27)
    codes = []
    for trial in range(8):
        if trial % 2:
            grown = tmp_path / f"grown_{trial}"
            grown.mkdir()
            arguments = ["retrain", tiny_basins(grown, days=60 + 5 * trial)[0], "--model", "basins", "--store", store,
                         "--epochs", "2"]
        else:
            arguments = train
        codes.append(killed_at_random(arguments, root / ".staging", rng))
        version = current_version(root)
        forecast = predict(data, root)
        assert sorted(forecast.basin.unique()) == sorted(BASIN_IDS), (trial, version)
        assert np.isfinite(forecast[["QObs", "QObs_q0.1", "QObs_q0.9"]].to_numpy()).all(), (trial, version)
    assert codes.count(-9) >= 4, codes  # most runs were killed, not finished

    before = current_version(root).name
    state = root / ".staging" / "checkpoints" / "state.json"
    assert train_until_killed(train[1:], state, 1) == -9
    result = subprocess.run([str(FORECAST), "train", data, "--resume", "--model-dir", "basins", "--store", store],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert current_version(root).name > before and not (root / ".staging").exists()
    assert np.isfinite(predict(data, root)["QObs"]).all()
