"""Forecast intervals and pictures: split-conformal calibration on arrays with a known answer, the quantiles that
predict and evaluate give a saved model, the calibration file's checks, and every picture rendered to PNG.

The saved models here are untrained (they forecast the last value) and calibrated without training, so nothing trains.
"""

import json

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.errors import ForecastError
from forecast.intervals import (ArrayTruths, Calibration, RowTruths, calibrate, candidate_spans, conformal_quantile,
                                fit, score_intervals)

from conftest import CAMELS, ETTH1, assert_png, head_csv
from saved_models import calibrated_model

SMALL = Config(target="OT", past=(), lookback=24, horizon=6, batch_size=8, units=4, head_units=4)


def stormy_walk(rows: int, seed: int) -> np.ndarray:
    """A random walk whose steps are four times larger in every other stretch of 300 rows: calm and stormy weather."""
    rng = np.random.default_rng(seed)
    spread = np.where(np.arange(rows) // 300 % 2 == 0, 0.1, 0.4)
    return np.cumsum(spread * rng.standard_normal(rows))


def repeat_windows(series: np.ndarray, origins: np.ndarray, horizon: int):
    """Repeat's forecasts (n, H), the truth (n, H) and full weights at `origins`."""
    truth = np.lib.stride_tricks.sliding_window_view(series, horizon)[origins + 1]
    return np.repeat(series[origins][:, None], horizon, axis=1), truth, np.ones_like(truth)


def test_the_conformal_quantile_takes_the_finite_sample_rank():
    scores = np.arange(1.0, 10.0)  # 9 scores: ranks (9 + 1) q
    assert conformal_quantile(scores, 0.9) == 9.0 and conformal_quantile(scores, 0.1) == 1.0
    assert conformal_quantile(scores, 0.5) == 5.0 and conformal_quantile(scores, 0.95) == 9.0  # clamped to the sample


def test_coverage_is_near_nominal_on_a_generated_series_and_the_scaled_width_wins_in_changing_weather():
    series, horizon = stormy_walk(8000, seed=3), 6
    calibration_origins, test_origins = np.arange(50, 4000), np.arange(4000, 7990)
    repeat = repeat_windows(series, calibration_origins, horizon)[0]
    truths = RowTruths(series, calibration_origins, horizon)  # the truths are the series' next rows
    calibration = calibrate(repeat, truths, series, calibration_origins, (0.1, 0.9), candidate_spans(48, horizon),
                            np.zeros(len(calibration_origins), dtype=int))
    assert calibration.method == "recent" and calibration.checked["plain"] > min(calibration.checked.values())
    forecast, truth, weight = repeat_windows(series, test_origins, horizon)
    scored = score_intervals(calibration.bounds(forecast, series, test_origins), truth, weight, (0.1, 0.9))
    assert 0.77 <= scored.intervals["80%"]["coverage"] <= 0.83
    assert ((scored.coverage_by_step["80%"] > 0.75) & (scored.coverage_by_step["80%"] < 0.85)).all()
    plain = fit("plain", 8, repeat, truths, series, calibration_origins, (0.1, 0.9))
    plain_scores = score_intervals(plain.bounds(forecast, series, test_origins), truth, weight, (0.1, 0.9))
    assert 0.75 <= plain_scores.intervals["80%"]["coverage"] <= 0.85  # right on average, wrong in each weather
    assert scored.intervals["80%"]["winkler"] < 0.9 * plain_scores.intervals["80%"]["winkler"]


def test_quantiles_never_cross_and_a_median_level_is_allowed():
    rng = np.random.default_rng(0)
    history, origins = rng.standard_normal(500), np.arange(30, 400)
    forecast = rng.standard_normal((len(origins), 4))
    truth = forecast + rng.standard_normal((len(origins), 4)) * rng.uniform(0.1, 2.0, (len(origins), 1))
    calibration = calibrate(forecast, ArrayTruths(truth, np.ones_like(truth)), history, origins, (0.05, 0.5, 0.9),
                            (8, 32), origins % 2)  # two series, half the origins each: a window of 185
    assert calibration.window == 185
    bounds = calibration.bounds(forecast, history, origins)
    assert bounds.shape == (len(origins), 3, 4) and (np.diff(bounds, axis=1) >= 0).all()
    assert (np.diff(calibration.naive_bounds(forecast), axis=1) >= 0).all()


def test_the_calibration_reads_its_arrays_in_place_as_it_would_read_the_scored_origins_in_order():
    """calibrate picks the scored origins and puts them in time order through positions into its arrays, instead of
    copies of (n, H): the same calibration, to the bit, as on the copies; fit on positions is fit on the rows."""
    rng = np.random.default_rng(4)
    history, n, horizon = np.cumsum(rng.standard_normal(3000)).astype("float32"), 900, 5
    origins = np.concatenate([np.arange(100, 1000, 2), np.arange(1500, 2400, 2)])  # two series, 450 origins each
    series = np.repeat([0, 1], n // 2)
    forecast = (history[origins][:, None] + rng.standard_normal((n, horizon))).astype("float32")
    truth = (history[origins][:, None] + 1.5 * rng.standard_normal((n, horizon))).astype("float32")
    weight = (rng.random((n, horizon)) > 0.2).astype("float32")
    weight[::7] = 0  # origins without a scored step
    weight[:, 3] = 0  # a step never observed: it gets the pooled residuals of all steps
    shuffled = rng.permutation(n)
    arrays = (forecast[shuffled], ArrayTruths(truth[shuffled], weight[shuffled]), history, origins[shuffled])
    calibration = calibrate(*arrays, (0.1, 0.5, 0.9), (8, 32), series[shuffled])
    kept = weight.any(axis=1)
    copies = (forecast[kept], ArrayTruths(truth[kept], weight[kept]), history, origins[kept])
    assert calibration.to_json() == calibrate(*copies, (0.1, 0.5, 0.9), (8, 32), series[kept]).to_json()
    rows = np.flatnonzero(kept)[5:300]
    on_rows = fit("recent", 8, forecast, ArrayTruths(truth, weight), history, origins, (0.1, 0.9), rows=rows)
    sliced = fit("recent", 8, forecast[rows], ArrayTruths(truth[rows], weight[rows]), history, origins[rows],
                 (0.1, 0.9))
    assert on_rows.to_json() == sliced.to_json() and on_rows.origins == len(rows)
    plain = fit("plain", 8, forecast, ArrayTruths(truth, weight), history, origins, (0.1, 0.9), rows=rows)
    residuals = (truth[rows] - forecast[rows]).astype("float64")[weight[rows] > 0]  # every step's, pooled
    assert plain.offsets[:, 3].tolist() == [conformal_quantile(residuals, 0.1), conformal_quantile(residuals, 0.9)]


def test_truths_read_from_the_target_rows_calibrate_as_the_windows_cut_from_them():
    """A training run calibrates on the truths its origins read from the target rows a step at a time (`RowTruths`,
    no (n, H) copy): the same calibration, to the bit, as on the windows cut from those rows, gaps included."""
    rng = np.random.default_rng(8)
    target = np.cumsum(rng.standard_normal(4000)).astype("float32")
    target[rng.choice(4000, 400, replace=False)] = np.nan
    target[2990:3010] = np.nan  # a stretch whose origins have no observed step
    history = np.where(np.isfinite(target), target, 0).astype("float32")
    origins, horizon = np.concatenate([np.arange(50, 1900), np.arange(2050, 3900)]), 4
    series = (origins > 2000).astype(int)
    windows = np.lib.stride_tricks.sliding_window_view(target, horizon)[origins + 1]
    truth, weight = np.nan_to_num(windows, nan=0.0), np.isfinite(windows).astype("float32")
    forecast = (history[origins][:, None] + rng.standard_normal((len(origins), horizon))).astype("float32")
    rows = RowTruths(target, origins, horizon)
    np.testing.assert_array_equal(rows.any_observed(), weight.any(axis=1))
    cut, observed = rows.block(np.arange(10, 500))
    np.testing.assert_array_equal(cut, truth[10:500])
    np.testing.assert_array_equal(observed, weight[10:500] > 0)
    arguments = (history, origins, (0.1, 0.5, 0.9), (8, 32), series)
    from_rows = calibrate(forecast, rows, *arguments)
    assert from_rows.to_json() == calibrate(forecast, ArrayTruths(truth, weight), *arguments).to_json()
    assert from_rows.origins == int(weight.any(axis=1).sum())


def test_the_recent_change_is_the_mean_absolute_change_over_the_span():
    from forecast.intervals import recent_change

    rng = np.random.default_rng(6)
    history = (3 * rng.standard_normal((5000, 3))).astype("float32")[:, 0]  # a column, as the features' target
    origins = rng.integers(0, len(history), 400)
    running = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(history.astype("float64"))))])
    first = np.maximum(origins - 40, 0)
    expected = (running[origins] - running[first]) / np.maximum(origins - first, 1)
    np.testing.assert_array_equal(recent_change(history, origins, 40), expected)
    assert recent_change(history, np.array([10]), 4)[0] == pytest.approx(np.abs(np.diff(history[6:11])).mean())


def test_a_sliding_offset_is_the_conformal_quantile_of_the_last_errors_known_at_its_origin():
    rng = np.random.default_rng(1)
    errors, weight = rng.standard_normal((300, 3)), np.ones((300, 3))
    weight[100:120, 1] = 0  # a gap in the truth of step 2
    error_origins = np.arange(1000, 1300)
    fallback = np.array([[-9.0, -9.0, -9.0], [9.0, 9.0, 9.0]])
    calibration = Calibration((0.1, 0.9), "plain", 8, 1.0, fallback, fallback, 5, {}, window=50)
    origins = np.array([1030, 1050, 1053, 1150, 1299, 1300, 1400])
    offsets = calibration.sliding_offsets(errors, weight, error_origins, origins)
    for row, origin in enumerate(origins):
        for step in range(3):
            known = (error_origins + step + 1 <= origin) & (weight[:, step] > 0)
            if known.sum() < 50:  # too few known: the saved offsets
                assert offsets[row, :, step].tolist() == [-9.0, 9.0]
                continue
            last = errors[known, step][-50:]
            assert offsets[row, :, step].tolist() == [conformal_quantile(last, 0.1), conformal_quantile(last, 0.9)]
    assert offsets[1, 0, 0] != -9.0 and offsets[1, 0, 1] == -9.0  # at 1050: 50 errors of step 1 known, 49 of step 2


def test_the_sliding_calibration_follows_errors_that_grow_after_validation():
    rng = np.random.default_rng(2)
    origins = np.arange(4000)
    spread = np.where(origins < 2000, 1.0, 2.0)  # the errors double after the validation origins
    truth = spread[:, None] * rng.standard_normal((4000, 2))
    forecast, weight, history = np.zeros((4000, 2)), np.ones((4000, 2)), np.zeros(4000)
    calibration = fit("plain", 8, forecast[:1000], ArrayTruths(truth[:1000], weight[:1000]), history, origins[:1000],
                      (0.1, 0.9), window=1000)
    later = origins[2500:]
    offsets = calibration.sliding_offsets(truth, weight, origins, later)
    saved = score_intervals(calibration.bounds(forecast[later], history, later), truth[later], weight[later], (0.1, 0.9))
    sliding = score_intervals(calibration.bounds(forecast[later], history, later, offsets), truth[later],
                              weight[later], (0.1, 0.9))
    assert saved.intervals["80%"]["coverage"] < 0.55  # the validation width, half the errors' spread now
    assert 0.77 <= sliding.intervals["80%"]["coverage"] <= 0.83
    assert sliding.intervals["80%"]["winkler"] < 0.9 * saved.intervals["80%"]["winkler"]


@pytest.fixture(scope="module")
def ett_600(tmp_path_factory):
    return head_csv(ETTH1, 600, tmp_path_factory.mktemp("intervals") / "ett.csv")


def test_predict_writes_a_column_per_quantile_in_order_and_within_the_bounds(tmp_path, ett_600):
    from forecast.prediction import predict

    last = float(pd.read_csv(ett_600)["OT"].iloc[-1])
    free = predict(ett_600, calibrated_model(ett_600, SMALL, tmp_path / "free"))
    assert list(free.columns) == ["date", "step", "OT", "OT_q0.1", "OT_q0.9"]
    assert (free["OT_q0.1"] < free["OT"]).all() and (free["OT"] < free["OT_q0.9"]).all()
    # A cap just above the last value (and above every validation row, so the calibration is the same) clips the
    # upper quantiles, and the levels stay in order.
    capped = SMALL.replace(quantiles=(0.1, 0.5, 0.9), target_max=last + 0.2)
    frame = predict(ett_600, calibrated_model(ett_600, capped, tmp_path / "capped"))
    values = frame[["OT", "OT_q0.1", "OT_q0.5", "OT_q0.9"]].to_numpy()
    assert (np.diff(values[:, 1:], axis=1) >= 0).all() and (values <= last + 0.2).all()
    assert (frame["OT_q0.9"] == last + 0.2).all() and (frame["OT_q0.1"] < last).all()


def test_evaluate_scores_the_intervals_next_to_the_naive_interval(tmp_path, ett_600):
    from forecast.evaluation import evaluate

    result = evaluate(ett_600, calibrated_model(ett_600, SMALL, tmp_path / "m"), ablation=False)
    model, naive = result.intervals["model"].intervals["80%"], result.intervals["naive"].intervals["80%"]
    # The untrained model forecasts the last value: its interval is Repeat's, calibrated alike (plain or scaled).
    assert 0.6 < model["coverage"] < 0.95 and 0.6 < naive["coverage"] < 0.95 and model["width"] > 0
    assert model["winkler"] >= model["width"] and result.intervals["model"].pinball > 0
    assert list(result.per_step.columns[-2:]) == ["model_coverage_80%", "naive_coverage_80%"]
    assert "model 80%" in result.table() and "naive 80%" in result.table()
    saved = json.loads(json.dumps(result.to_json()))["intervals"]
    assert saved["model"]["80%"]["coverage"] == pytest.approx(model["coverage"])


def test_predict_draws_the_interval_evaluate_scores_at_the_same_origin(tmp_path, ett_600):
    from forecast.backtest import range_forecasts
    from forecast.prediction import forecast_from

    model = calibrated_model(ett_600, SMALL, tmp_path / "m")
    ranged = range_forecasts(ett_600, model, ablation=False)
    calibration = ranged.saved.intervals
    assert calibration.window == 145  # the validation origins of rows 300-450
    at = int(np.flatnonzero(ranged.ends == 519)[0])
    bounds = calibration.bounds(ranged.models["model"][at : at + 1], ranged.features.history[:, 0],
                                ranged.ends[at : at + 1], ranged.offsets[at : at + 1])[0]
    drawn = forecast_from(ett_600, model, "520").frame[["OT_q0.1", "OT_q0.9"]].to_numpy().T
    np.testing.assert_allclose(drawn, bounds * ranged.std[at] + ranged.mean[at], rtol=1e-5)
    assert not np.allclose(ranged.offsets[at], calibration.offsets)  # 70 origins later, the window has moved


def test_info_shows_the_calibration_and_a_changed_file_is_refused(tmp_path, ett_600):
    from forecast.info import model_info
    from forecast.prediction import predict

    model = calibrated_model(ett_600, SMALL, tmp_path / "m")
    assert "forecast intervals: quantiles 0.1, 0.9, split conformal per step" in model_info(model)
    assert "calibrated on 145 origins" in model_info(model)  # rows 300-450, horizon 6
    calibration = json.loads((model / "intervals.json").read_text())
    calibration["offsets"] = calibration["offsets"][::-1]  # the 0.9 bound below the 0.1 bound
    (model / "intervals.json").write_text(json.dumps(calibration))
    with pytest.raises(ForecastError, match="intervals.json: cannot read the interval calibration .*ascending"):
        predict(ett_600, model)
    config = json.loads((model / "config.json").read_text())
    (model / "intervals.json").write_text(json.dumps({**calibration, "offsets": calibration["offsets"][::-1]}))
    (model / "config.json").write_text(json.dumps({**config, "quantiles": [0.2, 0.8]}))
    with pytest.raises(ForecastError, match="calibrated for quantiles \\[0.1, 0.9\\], but config.json asks for"):
        model_info(model)


def test_every_picture_is_a_png_of_its_size(tmp_path, ett_600):
    from forecast.evaluation import evaluate
    from forecast.plots import plot_forecast, plot_steps, plot_training
    from forecast.prediction import forecast_from

    model = calibrated_model(ett_600, SMALL, tmp_path / "m")
    inside = forecast_from(ett_600, model, "500")  # an origin inside the data: the truth is drawn too
    assert inside.origin == 499 and len(inside.frame) == 6
    assert_png(plot_forecast(inside, tmp_path / "inside.png"), (1000, 500))
    steps = evaluate(ett_600, model, ablation=False).per_step
    assert_png(plot_steps(steps, "steps", tmp_path / "steps.png"), (1000, 500))
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.5, 0.3, 0.25], "val_mse": [0.4, 0.35, 0.36]})
    metrics = {"validation": {"repeat": {"mse": 0.6}}, "linear_start": {"val_mse": 0.38}, "epochs": 2,
               "model_kind": "linear + LSTM correction"}
    assert_png(plot_training(history, metrics, tmp_path / "training.png"), (1000, 500))
    with pytest.raises(ForecastError, match="pictures are written as PNG"):
        plot_steps(steps, "steps", tmp_path / "steps.jpg")


def test_a_sim_driven_forecast_draws_the_sim_below_through_the_commands(tmp_path):
    from typer.testing import CliRunner

    from forecast.cli import app

    frame = pd.read_csv(CAMELS).iloc[-400:]
    frame.loc[frame.index[-7:], "OBS_RUN"] = np.nan  # the simulation known for the next week, the flow not yet
    data = tmp_path / "camels.csv"
    frame.to_csv(data, index=False)
    config = Config(target="OBS_RUN", sim=("MOD_RUN",), lookback=30, horizon=7, batch_size=8, units=4, head_units=4)
    calibrated_model(data, config, tmp_path / "store" / "camels", train_rows=200, val_end=393)
    model = ["--model", "camels", "--store", str(tmp_path / "store")]
    # In process, as the installed command runs (TensorFlow is loaded once for the module).
    drawn = CliRunner().invoke(app, ["plot", str(data), *model, "--origin", "2010-12-01", "--output",
                                     str(tmp_path / "inside.png")])
    assert drawn.exit_code == 0 and "drew the forecast from 2010-12-01 00:00:00 in" in drawn.output, drawn.output
    assert_png(tmp_path / "inside.png", (1000, 650))
    predicted = CliRunner().invoke(app, ["predict", str(data), *model, "--plot", str(tmp_path / "predict.png"),
                                         "--output", str(tmp_path / "forecast.csv")])
    assert predicted.exit_code == 0, predicted.output
    assert_png(tmp_path / "predict.png", (1000, 650))
    forecast = pd.read_csv(tmp_path / "forecast.csv")
    assert (forecast["OBS_RUN_q0.1"] >= 0).all() and (forecast["OBS_RUN_q0.1"] <= forecast["OBS_RUN_q0.9"]).all()
    refused = CliRunner().invoke(app, ["plot", str(data), *model, "--output", str(tmp_path / "forecast.svg")])
    assert refused.exit_code == 1 and "pictures are written as PNG" in refused.output


def test_the_interval_method_is_chosen_on_a_split_in_time_within_each_series():
    from forecast.intervals import earlier_half

    series = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(earlier_half(series), [True, True, False, False, True, False, False, False])
    one = np.zeros(9, dtype=int)
    assert earlier_half(one).sum() == 4 and earlier_half(one)[:4].all()  # one series: the earlier half, as before
