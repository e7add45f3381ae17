"""Pure data transforms on small arrays: scaling, calendar features, carrying values forward."""

import numpy as np
import pandas as pd

from forecast.calendar import calendar_features, calendar_names, future_times
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
