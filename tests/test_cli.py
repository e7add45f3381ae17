"""End to end through the installed `forecast` command, on slices of the real data."""

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import BEIJING, CAMELS, FORECAST, assert_png, head_csv, run_forecast

TINY = ["--lookback", "48", "--horizon", "12", "--batch-size", "16", "--epochs", "2"]


def test_help_answers_without_importing_tensorflow_or_pandas():
    probe = (
        "import sys, time; start = time.perf_counter(); from typer.testing import CliRunner; from forecast.cli import app; "
        "result = CliRunner().invoke(app, ['train', '--help']); assert result.exit_code == 0, result.output; "
        "assert '--lookback' in result.output; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    start = time.perf_counter()
    run_forecast("--help")
    assert time.perf_counter() - start < 3.0  # well under a second when the machine is quiet; 3 s allows for noise


def test_argument_error_exits_non_zero_with_one_line():
    result = run_forecast("train", check=False)
    assert result.returncode == 2 and "Missing argument" in result.stderr


@pytest.mark.slow
def test_train_then_predict_on_etth1(tmp_path, ett_small):
    model_dir = tmp_path / "ett_model"
    trained = run_forecast("train", ett_small, "--target", "OT", *TINY, "--model-dir", model_dir, "--store", tmp_path)
    assert "training on CPU" in trained.stderr or "training on GPU" in trained.stderr
    assert trained.stdout.count("val_mse") == 2  # no terminal: one line per epoch
    version = model_dir / "current"
    assert version.resolve() == model_dir / "versions" / "0001"
    for name in ("model.keras", "config.json", "scaler.json", "schema.json", "history.csv", "metrics.json",
                 "intervals.json"):
        assert (version / name).is_file(), name
    assert_png(version / "training.png", (1000, 500))
    assert not (model_dir / ".staging").exists()
    assert json.loads((version / "schema.json").read_text())["series"][0]["val_end"] == 1500  # evaluate's default starts there
    metrics = json.loads((version / "metrics.json").read_text())
    assert {"model", "repeat"} <= set(metrics["validation"]) and np.isfinite(metrics["validation"]["model"]["mse"])
    assert metrics["linear_start"]["history"] in ("lags", "means") and metrics["linear_start"]["val_mse"] > 0
    history = pd.read_csv(version / "history.csv")
    assert list(history["epoch"]) == [1, 2] and np.isfinite(history[["loss", "val_mse"]].to_numpy()).all()
    assert "val_loss" not in history and "val_loss" not in trained.stdout  # val_mse is the one validation number

    output = tmp_path / "forecast.csv"
    run_forecast("predict", ett_small, "--model", model_dir, "--store", tmp_path, "--output", output)
    forecast = pd.read_csv(output, parse_dates=["date"])
    assert len(forecast) == 12 and list(forecast["step"]) == list(range(1, 13))
    last = pd.read_csv(ett_small, parse_dates=["date"])["date"].iloc[-1]
    assert list(forecast["date"]) == list(pd.date_range(last + pd.Timedelta(hours=1), periods=12, freq="h"))
    assert np.isfinite(forecast["OT"]).all() and (forecast["OT_q0.1"] <= forecast["OT_q0.9"]).all()


@pytest.mark.slow
def test_camels_feeds_sim_history_and_bg_and_forecasts_the_future_rows(tmp_path):
    path = tmp_path / "camels.csv"
    frame = pd.read_csv(CAMELS).iloc[-1500:]
    frame.loc[frame.index[-7:], "OBS_RUN"] = np.nan  # the last week: simulation known, observation not yet
    frame.to_csv(path, index=False)
    model_dir = tmp_path / "camels_model"
    run_forecast(
        "train", path, "--target", "OBS_RUN", "--sim", "MOD_RUN", "--bg", "SWE", "--lookback", "30", "--horizon", "7",
        "--batch-size", "16", "--epochs", "2", "--model-dir", model_dir, "--store", tmp_path,
    )
    schema = json.loads((model_dir / "current" / "schema.json").read_text())
    assert schema["layout"]["sim"][0] == "MOD_RUN" and schema["layout"]["bg"][0] == "SWE"
    assert schema["layout"]["history"][:2] == ["OBS_RUN", "PRCP"] and "MOD_RUN" in schema["layout"]["history"]
    result = run_forecast("predict", path, "--model", model_dir, "--store", tmp_path)
    forecast = pd.read_csv(pd.io.common.StringIO(result.stdout), parse_dates=["date"])
    assert len(forecast) == 7
    assert list(forecast["date"]) == list(pd.to_datetime(frame["date"].iloc[-7:]))

    frame.iloc[:-7].to_csv(path, index=False)  # no future rows: the simulation for the horizon is missing
    missing = run_forecast("predict", path, "--model", model_dir, "--store", tmp_path, check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().count("\n") == 0
    assert "sim column 'MOD_RUN' has no value for 2010-12-25, 2010-12-26, 2010-12-27 and 4 more" in missing.stderr


@pytest.mark.slow
def test_beijing_gaps_get_weight_zero_and_the_loss_stays_finite(tmp_path):
    config = tmp_path / "beijing.toml"
    config.write_text(
        'target = "pm2.5"\ntime_columns = ["year", "month", "day", "hour"]\nexclude = ["No"]\n', encoding="utf-8"
    )
    path = head_csv(BEIJING, 3000, tmp_path / "beijing.csv")  # starts with a day of empty pm2.5
    model_dir = tmp_path / "beijing_model"
    trained = run_forecast("train", path, "--config", config, *TINY, "--model-dir", model_dir, "--store", tmp_path)
    assert "columns left out: No (excluded), cbwd (text; give it a role to use it)" in trained.stderr
    assert "pm2.5 is never negative in the training rows: forecasts are clipped at 0" in trained.stderr
    history = pd.read_csv(model_dir / "current" / "history.csv")
    assert np.isfinite(history[["loss", "mse", "val_mse"]].to_numpy()).all()
    saved = json.loads((model_dir / "current" / "config.json").read_text())
    assert saved["target_min"] == 0.0
    assert saved["time_columns"] == ["year", "month", "day", "hour"] and saved["past"] == ["DEWP", "TEMP", "PRES", "Iws", "Is", "Ir"]
    result = run_forecast("predict", path, "--model", model_dir, "--store", tmp_path)
    assert np.isfinite(pd.read_csv(pd.io.common.StringIO(result.stdout))["pm2.5"]).all()


@pytest.mark.slow
def test_a_new_process_predicts_the_same_numbers_as_the_training_process(tmp_path, ett_small):
    model_dir = tmp_path / "model"
    script = (
        "import sys; from forecast.config import Config; from forecast.training import train; "
        "from forecast.prediction import predict; "
        "train(sys.argv[1], Config(target='OT', lookback=48, horizon=12, batch_size=16, epochs=2), sys.argv[2]); "
        "predict(sys.argv[1], sys.argv[2]).to_csv(sys.argv[3], index=False)"
    )
    in_training = tmp_path / "in_training.csv"
    subprocess.run([sys.executable, "-c", script, ett_small, model_dir, in_training], check=True, capture_output=True)
    fresh = run_forecast("predict", ett_small, "--model", model_dir, "--store", tmp_path)
    np.testing.assert_allclose(
        pd.read_csv(pd.io.common.StringIO(fresh.stdout))["OT"], pd.read_csv(in_training)["OT"], rtol=0, atol=1e-6
    )


def test_user_errors_are_one_line_without_traceback(tmp_path, ett_small):
    result = run_forecast("train", ett_small, "--target", "NOPE", "--model-dir", tmp_path / "m", "--store", tmp_path, check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "column 'NOPE' not found" in result.stderr and not (tmp_path / "m").exists()
    missing = run_forecast("predict", ett_small, "--model", tmp_path / "none", "--store", tmp_path, check=False)
    assert missing.returncode == 1 and "none: no model here; train one with `forecast train DATA.csv`" in missing.stderr
    assert FORECAST.exists()
