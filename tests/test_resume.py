"""Interrupted training resumes to the same result, and a seed makes training reproducible."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_forecast, train_until_killed

FLAGS = ["--target", "OT", "--lookback", "48", "--horizon", "12", "--batch-size", "16", "--epochs", "4",
         "--patience", "10", "--seed", "7"]


def weights(model_dir):
    from forecast.runner import load_model_file

    return load_model_file(model_dir / "current" / "model.keras").get_weights()


@pytest.mark.slow
def test_killed_after_epoch_two_resumes_to_the_uninterrupted_result(tmp_path, ett_small):
    state = tmp_path / "interrupted" / ".staging" / "checkpoints" / "state.json"
    returncode = train_until_killed([ett_small, *FLAGS, "--model-dir", "interrupted", "--store", tmp_path], state, 2)
    assert returncode == -9, "training ended before it could be killed after epoch 2"
    assert json.loads(state.read_text())["epoch"] in (2, 3)
    assert not (tmp_path / "interrupted" / "current").exists()  # nothing half-trained was published

    resumed = run_forecast("train", ett_small, "--resume", "--model-dir", "interrupted", "--store", tmp_path)
    assert "resuming" in resumed.stderr
    run_forecast("train", ett_small, *FLAGS, "--model-dir", "whole", "--store", tmp_path)

    history = [pd.read_csv(tmp_path / name / "current" / "history.csv") for name in ("interrupted", "whole")]
    assert list(history[0]["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(history[0]["val_mse"], history[1]["val_mse"], rtol=1e-6)
    for resumed_weight, whole_weight in zip(weights(tmp_path / "interrupted"), weights(tmp_path / "whole")):
        np.testing.assert_allclose(resumed_weight, whole_weight, atol=1e-6)
    starts = [json.loads((tmp_path / name / "current" / "metrics.json").read_text())["linear_start"]
              for name in ("interrupted", "whole")]
    assert starts[0] is not None and starts[0] == starts[1]
    assert not (tmp_path / "interrupted" / ".staging").exists()


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, ett_small):
    result = run_forecast("train", ett_small, "--resume", "--model-dir", "none", "--store", tmp_path, check=False)
    assert result.returncode == 1 and "no interrupted training to resume" in result.stderr


@pytest.mark.slow
def test_same_seed_same_weights(tmp_path, ett_small):
    from forecast.config import Config
    from forecast.training import train

    # Without a linear start the gate has nothing to keep instead, so the saved weights are the network's own.
    config = Config(target="OT", lookback=48, horizon=12, batch_size=16, epochs=2, seed=11, linear_start=False)
    for name in ("first", "second"):
        train(ett_small, config, tmp_path / name)
    for first, second in zip(weights(tmp_path / "first"), weights(tmp_path / "second")):
        np.testing.assert_array_equal(first, second)
    train(ett_small, config.replace(seed=12), tmp_path / "other")
    assert not all(np.array_equal(a, b) for a, b in zip(weights(tmp_path / "first"), weights(tmp_path / "other")))


@pytest.mark.slow
def test_the_pipelines_train_the_same_weights(tmp_path, ett_small):
    """The batches gathered by tf.data are the ones the PyDataset cuts, in the same order: same seed, same weights."""
    from forecast.config import Config
    from forecast.training import train

    config = Config(target="OT", lookback=48, horizon=12, batch_size=16, epochs=2, seed=3, linear_start=False)
    for pipeline in ("tfdata", "pydataset"):
        train(ett_small, config.replace(data_pipeline=pipeline), tmp_path / pipeline)
    for gathered, cut in zip(weights(tmp_path / "tfdata"), weights(tmp_path / "pydataset")):
        np.testing.assert_array_equal(gathered, cut)
    histories = [pd.read_csv(tmp_path / pipeline / "current" / "history.csv") for pipeline in ("tfdata", "pydataset")]
    np.testing.assert_array_equal(histories[0]["val_mse"], histories[1]["val_mse"])


def test_a_resume_refuses_a_changed_model_setting_but_not_a_setting_of_the_run():
    from types import SimpleNamespace

    from forecast.config import Config
    from forecast.errors import ResumeRefused
    from forecast.members import _check_resumable

    saved = Config(target="OT", lookback=12)
    state = SimpleNamespace(purpose="train", config=json.loads(saved.to_json()))
    _check_resumable(saved.replace(target_units="kW", epochs=9, executor="ray"), state, "ckpt", "train")
    with pytest.raises(ResumeRefused, match="lookback = 12, not 24"):
        _check_resumable(saved.replace(lookback=24), state, "ckpt", "train")
