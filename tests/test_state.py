"""A state that carries: on a series whose next values depend on an input more than 2·T steps back, the stateful model
with lookback T learns what its stateless twin cannot, and the state carries alike in training, in evaluation and at
any batch size the runner is given."""

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.evaluation import evaluate
from forecast.training import train

LOOKBACK = 8
ROWS = 6000
pytestmark = pytest.mark.slow


def latch_series(rows: int, seed: int = 0) -> pd.DataFrame:
    """y_t = s_t * x_t + noise. The sign s_t is set by the last pulse (+1 or -1 in the past column `pulse`), which lies
    2T+1 to 60 steps back, mostly beyond a window of T; x is known over the horizon (sim) but not part of the history,
    so y's own history does not reveal s. Only a state carried across chunks knows it."""
    rng = np.random.default_rng(seed)
    pulse, sign = np.zeros(rows), np.ones(rows)
    current, next_pulse = 1.0, int(rng.integers(2 * LOOKBACK + 1, 61))
    for step in range(rows):
        if step == next_pulse:
            current = float(rng.choice([-1.0, 1.0]))
            pulse[step] = current
            next_pulse = step + int(rng.integers(2 * LOOKBACK + 1, 61))
        sign[step] = current
    x = rng.standard_normal(rows)
    y = sign * x + 0.1 * rng.standard_normal(rows)
    return pd.DataFrame({"date": pd.date_range("2020-01-01", periods=rows, freq="h"), "pulse": pulse, "x": x, "y": y})


def settings(stateful: bool) -> Config:
    return Config(
        target="y", sim=("x",), sim_in_history=False, lookback=LOOKBACK, horizon=2, batch_size=32, stream_chunks=16,
        units=32, head_dropout=0.0, learning_rate=0.003, epochs=60, patience=15, stateful=stateful,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("state")
    path = folder / "latch.csv"
    latch_series(ROWS).to_csv(path, index=False, float_format="%.4f")
    models = {stateful: train(path, settings(stateful), folder / f"stateful_{stateful}").model_dir
              for stateful in (True, False)}
    return path, models


def test_the_stateful_model_learns_what_lies_beyond_its_window_and_its_stateless_twin_cannot(trained):
    path, models = trained
    stateful = evaluate(path, models[True], validation_rows=True)
    stateless = evaluate(path, models[False], validation_rows=True)
    assert stateful.summary["model"]["mse"] * 5 <= stateless.summary["model"]["mse"], (
        stateful.summary["model"]["mse"], stateless.summary["model"]["mse"])
    # The carried state is what it learned: reset before every chunk, the same model is no better than the twin.
    assert stateful.summary["state_reset"]["mse"] > 3 * stateful.summary["model"]["mse"]
    assert stateful.ablation["state_reset"].clear and stateful.ablation["lstm_zeroed"].clear
    assert "state_reset" not in stateless.summary


def stateful_saved(trained):
    """The stateful model of `trained`, loaded, and a batcher over its series' features."""
    from forecast.data import load_series
    from forecast.features import build_features
    from forecast.runner import load_model_file
    from forecast.store import read_saved, with_network
    from forecast.windowing import WindowBatcher

    path, models = trained
    saved = with_network(read_saved(models[True]), load_model_file)
    config = saved.config
    series = load_series(path, config)
    features = build_features(series, saved.scaler.get(""), config.horizon, calendar=saved.schema.layout.calendar)
    return saved, WindowBatcher(features, config.lookback, config.horizon)


def test_the_runner_carries_the_state_alike_at_any_batch_size(trained):
    from forecast.model import copy_model, reset_states
    from forecast.runner import forecasts_at
    from forecast.sampler import OriginRange, rolling_streams

    saved, batcher = stateful_saved(trained)
    config = saved.config
    # Two origins near the start, with fewer chunks of history than a stream warms up over, and three later ones.
    ranges = tuple(OriginRange(0, origin, origin, config.lookback - 1) for origin in (30, 70, 5000, 5333, 5800))
    evaluated = forecasts_at(saved.model, batcher, ranges, config.chunks_per_stream)
    single = copy_model(saved.model, batch_size=1)
    np.testing.assert_allclose(forecasts_at(single, batcher, ranges, config.chunks_per_stream), evaluated, atol=1e-5)
    # The reference: one stream per origin walked by hand, its state reset first and carried chunk to chunk.
    streams, _ = rolling_streams(ranges, config.lookback, config.chunks_per_stream)
    predicted = []
    for stream in streams:
        reset_states(single)
        for origin in stream:
            output = single(batcher.inputs(np.array([origin])), training=False)
        predicted.append(np.asarray(output["prediction"])[0])
    predicted = np.array(predicted)
    np.testing.assert_allclose(predicted, evaluated, atol=1e-5)


def test_validation_forecasts_made_a_part_at_a_time_are_the_whole_ones(trained):
    """The gate sums the start's errors as its forecasts are made, a chunk of origins at a time: each origin is its own
    stream, so a part's forecasts are the whole's, also where a part spans two ranges."""
    from forecast.kept_model import ValidationOrigins
    from forecast.sampler import OriginRange

    saved, batcher = stateful_saved(trained)
    config = saved.config
    earliest = config.lookback - 1
    ranges = (OriginRange(0, 200, 1400, earliest), OriginRange(0, 3000, 3500, earliest))
    validation = ValidationOrigins.of(batcher, ranges, config.chunks_per_stream, np.array([[0.0, 1.0]]), None, None)
    whole = validation.forecasts(saved.model)
    forecaster = validation.forecaster(saved.model)
    parts = [slice(0, 700), slice(700, 1250), slice(1250, None)]
    assert [len(validation.ranges_of(part)) for part in parts] == [1, 2, 1]
    for part in parts:
        cut = validation.ranges_of(part)
        np.testing.assert_array_equal(np.concatenate([np.arange(span.first, span.last + 1) for span in cut]),
                                      validation.origins[part])
        np.testing.assert_allclose(forecaster(part), whole[part], atol=1e-6)


def test_the_gate_and_the_interval_calibration_judge_the_forecasts_predict_makes(trained):
    """metrics.json's validation scores (the gate's evidence) and the saved interval calibration come from the
    forecasts predict and evaluate make at the validation origins, each warmed up over the chunks before it, not from
    the validation streams Keras walks for early stopping, whose first chunk starts from a reset state."""
    from forecast.backtest import range_forecasts
    from forecast.intervals import ArrayTruths, calibrate, candidate_spans
    from forecast.store import read_metrics, read_saved

    path, models = trained
    model_dir = models[True]
    metrics, saved = read_metrics(model_dir), read_saved(model_dir)
    evaluation = evaluate(path, model_dir, validation_rows=True)
    assert abs(evaluation.summary["model"]["mse"] - metrics["validation"]["model"]["mse"]) < 1e-6
    assert evaluation.summary["state_reset"]["mse"] > 2 * evaluation.summary["model"]["mse"]  # the warm-up matters
    ranged = range_forecasts(path, model_dir, validation_rows=True, ablation=False, intervals=False)
    config = saved.config
    calibration = calibrate(ranged.models["model"], ArrayTruths(ranged.target, ranged.weight),
                            ranged.features.history[:, 0], ranged.ends, config.quantiles,
                            candidate_spans(config.lookback, config.horizon), ranged.series_index)
    assert (calibration.method, calibration.span, calibration.origins) == (saved.intervals.method,
                                                                          saved.intervals.span, saved.intervals.origins)
    np.testing.assert_allclose(calibration.offsets, saved.intervals.offsets, atol=1e-6)
    # Keras' epoch-end validation, over streams that start cold, scored the same origins worse than predict does.
    assert metrics["best_val_mse"] > metrics["validation"]["model"]["mse"] + 1e-4
