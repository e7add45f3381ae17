"""Pure data transforms on small arrays: scaling, calendar features, carrying values forward."""

import numpy as np
import pytest
import pandas as pd

from forecast.calendar import calendar_features, calendar_names, future_times
from forecast.evaluation import improvement
from forecast.features import carry_forward
from forecast.scaling import Scaler


def test_scaler_uses_training_rows_ignores_gaps_and_round_trips(tmp_path):
    values = np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, 5.0]])
    scaler = Scaler.fit(("a", "b"), values)
    assert scaler.mean == (2.0, 5.0) and scaler.std == (1.0, 1.0)  # constant column: std 1, not 0
    scaled = scaler.transform(("a", "b"), np.array([[4.0, 6.0]]))
    np.testing.assert_allclose(scaled, [[2.0, 1.0]])
    np.testing.assert_allclose(scaler.inverse("a", scaled[:, 0]), [4.0])
    path = tmp_path / "scaler.json"
    path.write_text(scaler.to_json())
    assert Scaler.from_json(path) == scaler


def test_carry_forward_fills_gaps_from_above_and_leading_gaps_with_zero():
    values = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [4.0, 3.0]])
    np.testing.assert_array_equal(carry_forward(values), [[0.0, 1.0], [2.0, 1.0], [2.0, 1.0], [4.0, 3.0]])


def test_calendar_cycles_follow_the_frequency():
    assert calendar_names(pd.Timedelta(hours=1))[:2] == ("hour_of_day_sin", "hour_of_day_cos")
    assert "hour_of_day_sin" not in calendar_names(pd.Timedelta(days=1))
    assert calendar_names(pd.Timedelta(days=7)) == ("day_of_year_sin", "day_of_year_cos")
    time = pd.date_range("2020-01-06", periods=48, freq="h")
    features = calendar_features(time, calendar_names(pd.Timedelta(hours=1)))
    assert features.shape == (48, 6)
    np.testing.assert_allclose(features[0, :2], [0.0, 1.0], atol=1e-12)  # midnight
    np.testing.assert_allclose(features[24, :2], features[0, :2], atol=1e-12)  # one day later


def test_a_cycle_enters_only_when_training_covers_it_twice():
    hourly = pd.Timedelta(hours=1)
    one_year = calendar_names(hourly, span=pd.Timedelta(days=360))  # ETTh1's training rows
    assert one_year == ("hour_of_day_sin", "hour_of_day_cos", "day_of_week_sin", "day_of_week_cos")
    assert calendar_names(hourly, span=pd.Timedelta(days=731))[-2:] == ("day_of_year_sin", "day_of_year_cos")
    assert calendar_names(hourly, span=pd.Timedelta(days=10)) == ("hour_of_day_sin", "hour_of_day_cos")
    assert calendar_features(pd.date_range("2020-01-01", periods=5, freq="D"), ()).shape == (5, 0)


def test_future_times_continue_the_series():
    times = future_times(pd.Timestamp("2010-12-31"), pd.Timedelta(days=1), 3)
    assert list(times) == list(pd.date_range("2011-01-01", periods=3, freq="D"))


def test_improvement_needs_a_gain_beyond_noise():
    rng = np.random.default_rng(0)
    baseline = rng.gamma(2.0, 1.0, size=2000)
    origins = rng.permutation(2000)  # the statistic sorts by origin itself
    noise = rng.normal(0.0, 0.5, size=2000)
    assert improvement(baseline, baseline * 0.8, origins, block=24).t > 10
    assert abs(improvement(baseline, baseline + noise, origins, block=24).t) < 3
    assert improvement(baseline, baseline * 1.2, origins, block=24).t < -10
    with_padding = np.where(origins % 7 == 0, np.nan, baseline)
    assert improvement(with_padding, with_padding * 0.8, origins, block=24).t > 10
    assert improvement(baseline[:30], baseline[:30] * 0.5, origins[:30], block=24).t == 0.0


def test_a_gain_over_few_blocks_is_not_clear():
    from forecast.evaluation import Improvement, improvement

    rng = np.random.default_rng(1)
    baseline = rng.gamma(2.0, 1.0, size=72)  # three blocks of 24 origins, as a weekly series' validation rows
    few = improvement(baseline, baseline * 0.7 + rng.normal(0.0, 0.05, 72), np.arange(72), block=24)
    assert few.blocks == 3 and few.t > 3 and not few.clear and "fewer than the 10 blocks" in few.describe()
    long = rng.gamma(2.0, 1.0, size=720)
    assert improvement(long, long * 0.7, np.arange(720), block=24).clear
    assert Improvement(2.1, 200, 24).clear and not Improvement(2.1, 10, 24).clear  # 9 df need t above 2.26
    assert Improvement(2.3, 10, 24).clear and not Improvement(1.9, 10_000, 24).clear


def test_the_end_of_training_keeps_the_linear_start_when_its_gain_rests_on_few_blocks():
    from forecast.config import Config
    from forecast.training import _keep_the_better

    class Recorded:
        """Forecasts a fixed array per row: `weights[0]` (what predict_batches and get/set_weights need)."""

        layers = []

        def __init__(self, forecast):
            self.weights = [forecast]

        def get_weights(self):
            return self.weights

        def set_weights(self, weights):
            self.weights = weights

        def predict_on_batch(self, inputs):
            return {"prediction": self.weights[0][inputs["row"]]}

    rng = np.random.default_rng(2)
    n, horizon = 72, 4
    target = rng.normal(size=(n, horizon)).astype("float32")
    start = target + rng.normal(0.0, 1.0, size=(n, horizon)).astype("float32")
    trained = target + 0.5 * (start - target)  # a quarter of the start's squared error, on 72 / 4 = 18 blocks
    config = Config(target="y", horizon=horizon, batch_size=8, stream_chunks=1)
    lines = []
    arguments = ({"row": np.arange(n)}, target, np.ones((n, horizon), "float32"), np.arange(n), np.zeros(n, int),
                 config, lines.append)
    _, kept_start, _ = _keep_the_better(Recorded(trained), [start], trained, *arguments)
    assert not kept_start and "over 18 blocks of 4 origins" in lines[-1]
    few = config.replace(horizon=24)  # the same errors in blocks of 24 origins: 3 blocks
    arguments = (*arguments[:5], few, lines.append)
    _, kept_start, _ = _keep_the_better(Recorded(trained), [start], trained, *arguments)
    assert kept_start and "over 3 blocks of 24 origins, fewer than the 10 blocks" in lines[-1]


def test_the_gate_weighs_each_series_error_against_the_series_own_spread():
    from forecast.evaluation import improvement, nse_weights, origin_errors

    rng = np.random.default_rng(4)
    n, horizon = 400, 4
    series = np.repeat([0, 1], n)  # a calm series, then one whose floods make errors a hundred times larger
    spread = np.where(series == 0, 1.0, 10.0)[:, None]
    target = spread * rng.normal(size=(2 * n, horizon))
    start = target + spread * rng.normal(0.0, 0.5, size=target.shape)
    trained = target + spread * rng.normal(0.0, 0.5, size=target.shape)
    trained[series == 0] = target[series == 0] + 0.6 * (start - target)[series == 0]  # better on the calm series only
    weight, origins = np.ones_like(target), np.arange(2 * n)
    pooled = improvement(origin_errors(start, target, weight), origin_errors(trained, target, weight), origins, horizon)
    scale = nse_weights(series, target, weight)
    weighed = improvement(origin_errors(start, target, weight) * scale, origin_errors(trained, target, weight) * scale,
                          origins, horizon)
    assert not pooled.clear and weighed.clear  # the flood series' noise hid a gain on half the series
    alone = improvement(origin_errors(start, target, weight)[:n] * 3.0, origin_errors(trained, target, weight)[:n] * 3.0,
                        origins[:n], horizon)
    same = improvement(origin_errors(start, target, weight)[:n], origin_errors(trained, target, weight)[:n],
                       origins[:n], horizon)
    assert alone.t == pytest.approx(same.t)  # one series: a constant weight leaves t as it was
