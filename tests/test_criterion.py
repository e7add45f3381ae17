"""The run's one score (forecast.criterion) and the keep/discard gate that judges by it (forecast.gate)."""

import numpy as np
import pandas as pd
import pytest

from forecast.criterion import (
    Improvement,
    best_epoch,
    capped_weights,
    improvement,
    improves,
    origin_losses,
    origin_weights,
    score,
    score_weights,
    series_score,
    streamed_origin_weights,
)
from forecast import criterion
from forecast.error_sums import ErrorSums, TargetSums
from forecast.metrics import nse, origin_errors, weighted_errors
from forecast.gate import judge, keep_the_better


def _judged(series, target, weight, n_series):
    """The gate's view of whole (n, H) arrays: the targets' sums and a function from a forecast to its error sums."""
    def cut(part):
        return target[part], weight[part]

    targets = TargetSums.of(series, cut, n_series)
    return targets, lambda forecasts: ErrorSums.of(forecasts, cut, series, targets)


def test_improvement_needs_a_gain_beyond_noise():
    rng = np.random.default_rng(0)
    baseline = rng.gamma(2.0, 1.0, size=2000)
    origins = rng.permutation(2000)  # the statistic sorts by origin itself
    noise = rng.normal(0.0, 0.3, size=2000)
    assert improvement(baseline, baseline * 0.8, origins, block=24).t > 10
    assert abs(improvement(baseline, baseline + noise, origins, block=24).t) < 3
    assert improvement(baseline, baseline * 1.2, origins, block=24).t < -10
    with_padding = np.where(origins % 7 == 0, np.nan, baseline)
    assert improvement(with_padding, with_padding * 0.8, origins, block=24).t > 10
    assert improvement(baseline[:30], baseline[:30] * 0.5, origins[:30], block=24).t == 0.0


def test_a_gain_over_few_blocks_is_not_clear():
    rng = np.random.default_rng(1)
    baseline = rng.gamma(2.0, 1.0, size=72)  # three blocks of 24 origins, as a weekly series' validation rows
    few = improvement(baseline, baseline * 0.7 + rng.normal(0.0, 0.05, 72), np.arange(72), block=24)
    assert few.blocks == 3 and few.t > 3 and not few.clear and "fewer than the 10 blocks" in few.describe()
    long = rng.gamma(2.0, 1.0, size=720)
    assert improvement(long, long * 0.7, np.arange(720), block=24).clear
    assert Improvement(2.1, 200, 24).clear and not Improvement(2.1, 10, 24).clear  # 9 df need t above 2.26
    assert Improvement(2.3, 10, 24).clear and not Improvement(1.9, 10_000, 24).clear


def test_for_one_series_the_score_is_the_mse_and_the_losses_its_per_origin_errors():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(200, 5))
    forecast = target + rng.normal(0.0, 0.5, size=target.shape)
    weight = (rng.random(target.shape) > 0.1).astype("float32")
    weight[:3] = 0.0  # padding
    weights = score_weights(np.zeros(200, int), target, weight)
    np.testing.assert_array_equal(weights, weight)  # exactly 1 for one series: nothing changes
    assert score(forecast, target, weights) == pytest.approx(weighted_errors(forecast, target, weight)["mse"])
    losses = origin_losses(forecast, target, weights)
    assert np.isnan(losses[:3]).all() and np.nanmean(losses) == pytest.approx(score(forecast, target, weights))
    whole = np.ones_like(weight)  # whole horizons observed: the losses are the per-origin MSEs
    np.testing.assert_allclose(origin_losses(forecast, target, whole), origin_errors(forecast, target, whole))
    assert series_score(np.array([0.7]), np.array([10.0]), np.array([3.0])) == 0.7


def test_no_series_outweighs_the_cap_times_the_median():
    weights = capped_weights(np.array([1.0, 0.5, 2.0, 0.001, np.nan]), cap=3.0)
    median = np.median([1.0, 2.0, 0.5, 1000.0])
    np.testing.assert_allclose(weights, [1.0, 2.0, 0.5, 3.0 * median, median])
    series = np.repeat(np.arange(3), 50)
    target = np.concatenate([np.random.default_rng(0).normal(size=(50, 2)) * scale for scale in (1.0, 2.0, 0.01)])
    per_origin = origin_weights(series, target, np.ones_like(target))
    assert per_origin.mean() == pytest.approx(1.0)  # averages 1 over the scored steps: the score reads as an MSE
    ratios = per_origin[::50] / np.median(per_origin[::50])
    assert ratios.max() == pytest.approx(3.0)  # the near-constant series is held at three times the median


def test_the_weights_taken_a_chunk_of_origins_at_a_time_are_each_series_own(monkeypatch):
    import forecast.criterion

    monkeypatch.setattr(forecast.criterion, "CHUNK_ORIGINS", 7)  # chunks that cut through series
    rng = np.random.default_rng(1)
    series = np.sort(rng.integers(0, 5, 200))
    target = rng.normal(size=(200, 3)) * np.array([0.5, 1.0, 2.0, 3.0, 0.2])[series, None]
    weight = (rng.random((200, 3)) > 0.3).astype("float32")
    variances = np.array([target[series == index][weight[series == index] > 0].var() for index in range(5)])
    expected = capped_weights(variances)[series]
    steps = weight.sum(axis=1)
    expected *= steps.sum() / (expected * steps).sum()
    np.testing.assert_allclose(origin_weights(series, target, weight), expected, rtol=1e-12)
    np.testing.assert_allclose(score_weights(series, target, weight), weight * expected[:, None], rtol=1e-6)
    # Cut a chunk at a time by a function, as the validation streams and the linear start give them: the same weights,
    # to the bit, and only chunks of origins are asked for.
    asked = []

    def targets(part):
        asked.append(len(target[part]))
        return target[part], weight[part]

    np.testing.assert_array_equal(streamed_origin_weights(series, targets), origin_weights(series, target, weight))
    assert max(asked) == 7


def test_an_epoch_counts_as_better_only_by_more_than_min_delta():
    assert improves(0.99, 1.0, 1e-3) and not improves(0.9995, 1.0, 1e-3) and improves(0.9995, 1.0, 0.0)
    assert improves(5.0, None, 1e-3) and not improves(float("nan"), None, 1e-3)
    # The knife edge of issue 22: epoch 12 undercut epoch 7 by 1.4e-5, which reset patience and moved the kept epoch.
    scores = [0.60, 0.55, 0.50, 0.49, 0.48, 0.475, 0.474, 0.4741, 0.4745, 0.4742, 0.4743, 0.473986]
    assert best_epoch(scores, 0.82, 0.0) == 11
    assert best_epoch(scores, 0.82, 1e-3) == 6
    assert best_epoch(scores, 0.45, 1e-3) is None  # none beat the start: its weights are restored


def test_early_stopping_restores_the_epoch_the_rule_keeps():
    from forecast.members import kept_epoch

    history = pd.DataFrame({"epoch": [1, 2, 3], "val_mse": [0.52, 0.50, 0.4999]})
    assert kept_epoch(history) == 3
    assert kept_epoch(history, None, 1e-3) == 2
    assert kept_epoch(history, 0.50, 1e-3) == 0


def _many_series(near_constant_penalty: float, seed: int = 5):
    """Ten series of 300 origins each (H = 4, z-units of their training rows): the network beats the start by a fifth
    of its error on the nine ordinary ones; the tenth is nearly constant over the validation rows (spread 0.05, as a
    river that ran dry), where both forecast with errors at the scale of its training spread and the network's are
    `near_constant_penalty` times the start's."""
    rng = np.random.default_rng(seed)
    n, horizon, count = 300, 4, 10
    series = np.repeat(np.arange(count), n)
    last = series == count - 1
    target = np.where(last[:, None], 0.05, 1.0) * rng.normal(size=(count * n, horizon))
    start = target + np.where(last[:, None], 0.3, 0.6) * rng.normal(size=target.shape)
    trained = target + 0.8 * (start - target) + 0.1 * rng.normal(size=target.shape)
    trained[last] = target[last] + near_constant_penalty * (start - target)[last]
    return series, target, start, trained, np.ones_like(target), np.arange(count * n), horizon


def test_one_near_constant_series_cannot_swing_the_gate():
    series, target, start, trained, weight, origins, horizon = _many_series(near_constant_penalty=1.2)
    # The old rule: each series against its own spread, uncapped; the near-constant series outweighed the nine others.
    uncapped = score_weights(series, target, weight, cap=np.inf)
    old = improvement(origin_losses(start, target, uncapped), origin_losses(trained, target, uncapped), origins,
                      horizon)
    assert not old.clear
    ids = tuple(f"s{index}" for index in range(10))
    targets, errors_of = _judged(series, target, weight, 10)
    verdict = judge(errors_of(start.__getitem__), errors_of(trained.__getitem__), targets, origins, series, ids,
                    horizon)
    assert verdict.keeps_network and verdict.trained_score < verdict.start_score
    assert [item.series for item in verdict.favoured_start] == ["s9"]  # the one series that argued against it
    assert len(verdict.favoured_network) == 3
    assert verdict.favoured_start[0].nse_trained < verdict.favoured_start[0].nse_start
    assert "most for the start: s9 (NSE" in verdict.describe_series()


class Recorded:
    """A model whose forecast is its one weight array, row by row (what the gate's get/set_weights need)."""

    def __init__(self, forecast):
        self.weights = [forecast]

    def get_weights(self):
        return self.weights

    def set_weights(self, weights):
        self.weights = weights


def forecasts_of(model):
    """A `Recorded` model's forecasts at origins `part`, as its weights are when they are cut."""
    return lambda part: model.weights[0][part]


def test_the_gate_keeps_the_start_when_the_gain_rests_on_few_blocks_and_says_so():
    rng = np.random.default_rng(2)
    n, horizon = 72, 4
    target = rng.normal(size=(n, horizon)).astype("float32")
    start = target + rng.normal(0.0, 1.0, size=(n, horizon)).astype("float32")
    trained = target + 0.5 * (start - target)  # a quarter of the start's squared error, on 72 / 4 = 18 blocks
    weights = np.ones((n, horizon), "float32")
    lines = []
    arguments = (*_judged(np.zeros(n, int), target, weights, 1)[::-1], np.arange(n), np.zeros(n, int), ("only",))
    _, kept_start, _ = keep_the_better(Recorded(trained), [start], trained.__getitem__, forecasts_of,
                                       *arguments, horizon, lines.append)
    assert not kept_start and "over 18 blocks of 4 origins" in lines[-1] and len(lines) == 1  # one series: no names
    _, kept_start, verdict = keep_the_better(Recorded(trained), [start], trained.__getitem__, forecasts_of,
                                             *arguments, 24, lines.append)
    assert kept_start and "over 3 blocks of 24 origins, fewer than the 10 blocks" in lines[-1]
    assert verdict.to_json()["blocks"] == 3


def test_kept_start_names_the_series_that_argued_for_it():
    series, target, start, trained, weight, origins, horizon = _many_series(near_constant_penalty=1.0)
    worse = series < 6  # the network worse on six of ten series: the start is kept
    trained = np.where(worse[:, None], target + 1.3 * (start - target), trained)
    lines = []
    ids = tuple(f"s{index}" for index in range(10))
    _, kept_start, verdict = keep_the_better(
        Recorded(trained), [start], trained.__getitem__, forecasts_of,
        *_judged(series, target, weight, 10)[::-1], origins, series, ids, horizon, lines.append)
    assert kept_start and lines[0].startswith("kept the linear start: validation score")
    assert lines[1].startswith("series that argued most for the start: ")
    assert {item.series for item in verdict.favoured_start} <= {f"s{index}" for index in range(6)}
    assert {item.series for item in verdict.favoured_network} <= {"s6", "s7", "s8"}


def test_error_sums_a_chunk_at_a_time_are_the_whole_arrays_numbers(monkeypatch):
    monkeypatch.setattr(criterion, "CHUNK_ORIGINS", 7)  # chunks cut through series
    series, target, start, trained, weight, origins, horizon = _many_series(near_constant_penalty=1.0)
    weight = np.where(np.random.default_rng(5).random(weight.shape) < 0.1, 0.0, weight).astype("float32")
    targets, errors_of = _judged(series, target, weight, 10)
    np.testing.assert_array_equal(targets.origin_weight, origin_weights(series, target, weight))
    weights = score_weights(series, target, weight).astype("float64")  # float32 as Keras reads them; summed in float64
    spreads = np.linspace(0.5, 3.0, 10)
    for forecast in (start, trained):
        errors = errors_of(forecast.__getitem__)
        assert errors.score == pytest.approx(score(forecast, target, weights), rel=1e-12)
        np.testing.assert_allclose(errors.origin_losses(), origin_losses(forecast, target, weights), rtol=1e-12)
        expected = [nse(forecast[series == index], target[series == index], weight[series == index])
                    for index in range(10)]
        np.testing.assert_allclose(errors.series_nse(targets), expected, rtol=1e-10)
        pooled = errors.pooled(targets, spreads)
        whole = weighted_errors(forecast.astype("float64"), target, weight)
        units = weighted_errors(forecast * spreads[series, None], target * spreads[series, None], weight)
        assert (pooled["mse"], pooled["mae"]) == pytest.approx((whole["mse"], whole["mae"]), rel=1e-12)
        assert pooled["mae_original"] == pytest.approx(units["mae"], rel=1e-10)
        assert pooled["rmse_original"] == pytest.approx(units["mse"] ** 0.5, rel=1e-10)
