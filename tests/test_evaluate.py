"""Rolling-origin evaluation: the metrics on small arrays, and protocol A's Repeat baseline reproduced through the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from forecast.evaluation import nse, repeat_forecast, season_length, seasonal_naive_forecast, weighted_errors

from conftest import ETTH1, run_forecast


def test_season_length_follows_the_frequency():
    assert season_length(pd.Timedelta(hours=1)) == 24
    assert season_length(pd.Timedelta(minutes=15)) == 96
    assert season_length(pd.Timedelta(days=1)) == 7
    assert season_length(pd.Timedelta(days=7)) == 1


def test_seasonal_naive_repeats_the_last_observed_season():
    values = np.arange(20.0)
    forecast = seasonal_naive_forecast(values, np.array([9]), horizon=5, season=3)
    np.testing.assert_array_equal(forecast, [[7, 8, 9, 7, 8]])
    np.testing.assert_array_equal(repeat_forecast(np.array([4.0]), 3), [[4, 4, 4]])


def test_errors_and_nse_skip_weight_zero():
    truth = np.array([[1.0, 2.0], [3.0, 100.0]])
    forecast = np.array([[1.0, 3.0], [3.0, 0.0]])
    weight = np.array([[1.0, 1.0], [1.0, 0.0]])
    assert weighted_errors(forecast, truth, weight) == {"mse": pytest.approx(1 / 3), "mae": pytest.approx(1 / 3)}
    assert nse(forecast, truth, weight) == pytest.approx(1 - 1 / 2)  # SSE 1 over spread 2 of (1, 2, 3)
    assert nse(truth, truth, weight) == 1.0


@pytest.mark.slow
def test_evaluate_reproduces_the_published_repeat_baseline_on_etth1(tmp_path):
    """Protocol A at L=336, H=96, OT only: Repeat scores 0.0693 MSE on the test rows [11520, 14400)."""
    config = tmp_path / "protocol_a.toml"
    config.write_text(
        'target = "OT"\npast = []\nlookback = 336\nhorizon = 96\ntrain_end = "8640"\nval_end = "11520"\n'
        "batch_size = 64\nunits = 4\nhead_units = 4\nstateful = false\nepochs = 1\n",
        encoding="utf-8",
    )
    run_forecast("train", ETTH1, "--config", config, "--model-dir", "ett336", "--store", tmp_path)
    result = run_forecast("evaluate", ETTH1, "--model", "ett336", "--store", tmp_path, "--start", "11520", "--end", "14400",
                          "--output-dir", tmp_path / "evaluation")
    assert result.stdout.startswith("2785 origins, targets 2017-10-24 00:00:00 to 2018-02-20 23:00:00")
    metrics = json.loads((tmp_path / "evaluation" / "ett336.json").read_text())["metrics"]
    assert round(metrics["repeat"]["mse"], 3) == 0.069 and round(metrics["repeat"]["mae"], 3) == 0.203
    assert set(metrics) == {"model", "repeat", "seasonal_naive"}
    assert all(np.isfinite(value) for scores in metrics.values() for value in scores.values())
    steps = pd.read_csv(tmp_path / "evaluation" / "ett336_steps.csv")
    assert len(steps) == 96 and steps["repeat_mse"].iloc[0] < steps["repeat_mse"].iloc[-1]
