"""Rolling-origin evaluation: the metrics on small arrays, and protocol A's Repeat baseline reproduced through the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.baselines import choose_season, repeat_forecast, seasonal_naive_forecast
from forecast.metrics import nse, weighted_errors

from conftest import ETTH1, assert_png, run_forecast, synthetic_lines
from saved_models import untrained_model


def test_the_season_follows_the_cycles_the_training_rows_cover():
    hour, day, week = pd.Timedelta(hours=1), pd.Timedelta(days=1), pd.Timedelta(days=7)
    steps = np.arange(3 * 365)
    yearly = np.sin(2 * np.pi * steps / 365.25) + 0.01 * np.sin(steps)  # a temperature-like annual cycle
    season = choose_season(day, day * len(steps), yearly, horizon=7)
    assert (season.steps, season.cycle, season.candidates) == (365, "day_of_year", ("day_of_week", "day_of_year"))
    assert "a season of 365 steps, a year" in season.describe()
    assert choose_season(day, day * 400, yearly[:400], horizon=7).steps == 7  # one year of training: a week
    weekly = np.arange(150.0)
    assert choose_season(week, week * 150, weekly, horizon=4).steps == 52  # not 1, which would be Repeat again
    none = choose_season(week, week * 60, weekly[:60], horizon=4)
    assert none.cycle is None and "so it is left out" in none.describe()
    hourly = np.tile(np.r_[np.zeros(12), np.ones(12)], 60)
    assert choose_season(hour, hour * len(hourly), hourly, horizon=24).steps == 24


def test_seasonal_naive_repeats_the_last_observed_season():
    values = np.arange(20.0)
    forecast = seasonal_naive_forecast(values, np.array([9]), horizon=5, season=3)
    np.testing.assert_array_equal(forecast, [[7, 8, 9, 7, 8]])
    np.testing.assert_array_equal(repeat_forecast(np.array([4.0]), 3), [[4, 4, 4]])


def test_seasonal_naive_does_not_wrap_to_the_end_before_one_season():
    forecast = seasonal_naive_forecast(np.arange(20.0), np.array([2]), horizon=4, season=7)
    np.testing.assert_array_equal(np.isnan(forecast), [[True, True, True, True]])  # rows -4..-1 do not exist
    np.testing.assert_array_equal(seasonal_naive_forecast(np.arange(20.0), np.array([5]), 3, 7), [[np.nan, 0, 1]])


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
    # Repeat needs no training: an untrained model directory with the protocol's split is all evaluate reads.
    config = Config(target="OT", past=(), lookback=336, horizon=96, batch_size=64, units=4, head_units=4, stateful=False)
    untrained_model(ETTH1, config, tmp_path / "ett336" / "versions" / "0001", train_rows=8640, val_end=11520)
    (tmp_path / "ett336" / "current").symlink_to("versions/0001")
    result = run_forecast("evaluate", ETTH1, "--model", "ett336", "--store", tmp_path, "--start", "11520", "--end", "14400",
                          "--output-dir", tmp_path / "evaluation")
    assert result.stdout.startswith("2785 origins, targets 2017-10-24 00:00:00 to 2018-02-20 23:00:00")
    metrics = json.loads((tmp_path / "evaluation" / "ett336.json").read_text())["metrics"]
    assert round(metrics["repeat"]["mse"], 3) == 0.069 and round(metrics["repeat"]["mae"], 3) == 0.203
    # A stateless model has no state to reset; its LSTM and its correction are ablated.
    assert set(metrics) == {"model", "lstm_zeroed", "linear_only", "repeat", "seasonal_naive"}
    assert all(np.isfinite(value) for scores in metrics.values() for value in scores.values())
    steps = pd.read_csv(tmp_path / "evaluation" / "ett336_steps.csv")
    assert len(steps) == 96 and steps["repeat_mse"].iloc[0] < steps["repeat_mse"].iloc[-1]


SMALL = Config(target="OT", past=(), lookback=24, horizon=6, batch_size=8, units=4, head_units=4)


@pytest.fixture(scope="module")
def ett_600(tmp_path_factory):
    from conftest import head_csv

    return head_csv(ETTH1, 600, tmp_path_factory.mktemp("eval") / "ett.csv")


def test_evaluate_defaults_to_the_rows_after_validation(tmp_path, ett_600):
    from forecast.evaluation import evaluate

    model = untrained_model(ett_600, SMALL, tmp_path / "m", train_rows=300, val_end=450)
    result = evaluate(ett_600, model)
    assert result.warning is None
    assert result.origins == 600 - 450 - 6 + 1 and result.first_time == "2016-07-19 18:00:00"  # row 450
    flagged = evaluate(ett_600, model, validation_rows=True)
    assert flagged.origins == 450 - 300 - 6 + 1 and "validation rows" in flagged.warning


def test_evaluate_without_rows_after_validation_asks_for_start(tmp_path, ett_600):
    from forecast.errors import ForecastError
    from forecast.evaluation import evaluate

    model = untrained_model(ett_600, SMALL, tmp_path / "m", train_rows=480, val_end=600)
    with pytest.raises(ForecastError, match="no rows after the model's validation rows .* pass --start"):
        evaluate(ett_600, model)
    assert evaluate(ett_600, model, start="500").origins == 100 - 6 + 1
    assert evaluate(ett_600, model, start="500").warning.startswith(
        "warning: rows 500 to 600 of this range are the model's validation rows")
    assert "model's training and validation rows" in evaluate(ett_600, model, start="100").warning


def test_a_schema_saved_before_val_end_loads_and_evaluate_asks_for_start(tmp_path, ett_600):
    from forecast.errors import ForecastError
    from forecast.evaluation import evaluate
    from forecast.store import Schema

    model = untrained_model(ett_600, SMALL, tmp_path / "m", train_rows=300, val_end=450)
    saved = json.loads((model / "schema.json").read_text())
    # The layout of a schema saved before series had ids and before val_end was kept: the record at the top level.
    record = saved.pop("series")[0]
    for key in ("id", "val_end", "val_time"):
        del record[key]
    (model / "schema.json").write_text(json.dumps(saved | record))
    assert Schema.from_json(model / "schema.json").record("").val_end is None
    with pytest.raises(ForecastError, match="does not record where its validation rows end .*; pass --start"):
        evaluate(ett_600, model)
    assert evaluate(ett_600, model, start="300").origins == 300 - 6 + 1


def test_the_cli_prints_the_validation_warning_above_the_table(tmp_path, ett_600):
    untrained_model(ett_600, SMALL, tmp_path / "store" / "m", train_rows=300, val_end=450)
    result = run_forecast("evaluate", ett_600, "--model", "m", "--store", tmp_path / "store", "--validation-rows",
                          "--output-dir", tmp_path / "evaluation")
    assert result.stdout.startswith("warning: rows 300 to 450 are the validation rows")
    assert result.stdout.splitlines()[1].startswith("145 origins")
    assert_png(tmp_path / "evaluation" / "m_steps.png", (1000, 500))  # no intervals: the error panel alone


def test_evaluate_names_the_season_and_skips_steps_before_the_first_row(tmp_path):
    from forecast.evaluation import evaluate

    # A daily cycle that a day-ago value forecasts better than the last one (ETTh1's OT over 6 hours does not).
    data = tmp_path / "daily.csv"
    data.write_text("".join(synthetic_lines(600)), encoding="utf-8")
    model = untrained_model(data, SMALL.replace(target="y", lookback=12), tmp_path / "m", train_rows=300, val_end=450)
    result = evaluate(data, model, start="0", end="100")
    assert result.season.steps == 24 and "seasonal naive: a season of 24 steps, a day" in result.notes[0]
    assert "12 of the first origins lack a season of history" in result.notes[1]  # origins 11 to 22
    assert result.to_json()["seasonal_naive_season"] == {"steps": 24, "cycle": "hour_of_day"}
    assert result.to_json()["notes"] == list(result.notes)
    assert np.isfinite(list(result.summary["seasonal_naive"].values())).all()


def test_a_season_that_errs_more_than_repeat_on_the_training_rows_is_left_out(tmp_path, ett_600):
    from forecast.baselines import _training_error
    from forecast.evaluation import evaluate

    day = pd.Timedelta(days=1)
    river = 5 + np.cumsum(np.random.default_rng(1).normal(size=800)) * 0.1  # persistent: last week is a worse guess
    season = choose_season(day, day * len(river), river, horizon=7)
    assert season.steps == 7 and season.worse_than_repeat and not season.scored
    assert season.describe().endswith("a year), errs more than Repeat on the training rows, so it is left out")
    assert _training_error(river, 7, 7) > _training_error(river, 1, 7)
    # Over 6 hours ETTh1's OT is such a series: no row, a note, and MASE still scaled by the day-ago error.
    model = untrained_model(ett_600, SMALL.replace(lookback=12), tmp_path / "m", train_rows=300, val_end=450)
    result = evaluate(ett_600, model, start="0", end="100")
    assert "seasonal_naive" not in result.summary and "seasonal naive" not in result.table().split("\n\n")[0]
    assert result.notes[0].endswith("a day, errs more than Repeat on the training rows, so it is left out")
    training = pd.read_csv(ett_600)["OT"].to_numpy()[:300]
    scale = np.mean(np.abs(training[24:] - training[:-24]))
    truth, repeat = result.summary["repeat"]["mae_original"], result.summary["repeat"]["mase"]
    assert repeat == pytest.approx(truth / scale)


def test_a_date_only_end_includes_the_whole_day(ett_600):
    from forecast.data import load_series
    from forecast.split import resolve_split, row_bound

    series = load_series(ett_600, SMALL)  # hourly from 2016-07-01 00:00
    assert row_bound(series, "2016-07-02", "end") == 48  # both days: up to 2016-07-02 23:00
    assert row_bound(series, "2016-07-02 05:00", "end") == 30
    assert row_bound(series, "2016-07-02", "start", first=True) == 24
    split = resolve_split(series, SMALL.replace(train_end="2016-07-10", val_end="2016-07-20"))
    assert (split.train_end, split.val_end) == (240, 480)


def test_forecasts_are_clipped_to_the_bounds_in_predict_and_evaluate(tmp_path, ett_600):
    from forecast.evaluation import evaluate
    from forecast.prediction import predict

    last = pd.read_csv(ett_600)["OT"].iloc[-1]  # the untrained model forecasts the last value
    free = untrained_model(ett_600, SMALL, tmp_path / "free", train_rows=300, val_end=450)
    capped = untrained_model(ett_600, SMALL.replace(target_max=float(last) - 1.0), tmp_path / "capped", 300, 450)
    np.testing.assert_allclose(predict(ett_600, free)["OT"], last, rtol=1e-5)
    np.testing.assert_allclose(predict(ett_600, capped)["OT"], last - 1.0, rtol=1e-6)
    scores = [evaluate(ett_600, model).summary for model in (free, capped)]
    assert scores[0]["model"]["mse"] == pytest.approx(scores[0]["repeat"]["mse"], rel=1e-4)
    assert scores[1]["model"]["mse"] != pytest.approx(scores[1]["repeat"]["mse"], rel=1e-2)  # clipped where above


def test_a_target_never_negative_in_training_is_bounded_at_zero():
    from forecast.errors import ForecastError
    from forecast.training_data import detect_bounds

    lines = []
    config = Config(target="flow")
    assert detect_bounds(config, np.array([0.0, 3.0, np.nan]), lines.append).target_min == 0.0
    assert lines == ["flow is never negative in the training rows: forecasts are clipped at 0 "
                     "(set target_min = -inf to allow negative forecasts)"]
    assert detect_bounds(config, np.array([-0.1, 3.0]), lines.append).target_min is None
    assert detect_bounds(config, np.array([np.nan, np.nan]), lines.append).target_min is None  # nothing to go by
    assert detect_bounds(config.replace(target_min=-np.inf), np.array([1.0]), lines.append).target_min == -np.inf
    assert len(lines) == 1
    assert Config.from_dict(json.loads(Config(target_min=-np.inf).to_json()), "saved").target_min == -np.inf
    with pytest.raises(ForecastError, match="target_min \\(5.0\\) must be below target_max \\(1.0\\)"):
        Config(target_min=5.0, target_max=1.0)
