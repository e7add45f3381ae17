"""Windowing: stream layout, contiguity of stateful batches, sample weights, zero-copy views."""

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.data import load_series
from forecast.features import Features, build_features, fit_scaler
from forecast.sampler import PADDING, OriginRange, StreamPlan, batch_layout, stream_layout
from forecast.windowing import WindowBatcher, window_generator

from conftest import span, BEIJING, ETTH1


def toy_features(rows: int = 60) -> Features:
    history = np.stack([np.arange(rows), np.ones(rows)], axis=1).astype("float32")
    target = np.arange(rows, dtype="float32")
    return Features(
        history=history, target=target, sim=np.arange(rows, dtype="float32")[:, None], bg=np.zeros((rows, 1), "float32"),
        time=pd.date_range("2020", periods=rows, freq="h"),
    )


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_every_origin_is_scored_exactly_once(phase):
    origins, scored = stream_layout((OriginRange(0, 5, 40, 3),), chunk=4, chunks=3, phase=phase)
    assert sorted(origins[scored].tolist()) == list(range(5, 41))
    warmup = origins[~scored & (origins != PADDING)]
    assert ((warmup >= 3) & (warmup < 5)).all()
    # One chunk apart, except after a warm-up chunk that would start before the series' first whole window: it
    # repeats that first window (origin 3), the rule evaluation and prediction follow too.
    walked = (origins[:, 1:] != PADDING) & (origins[:, :-1] != PADDING)
    steps = np.diff(origins, axis=1)[walked & (origins[:, :-1] != 3)]
    assert (steps == 4).all()


def test_batches_walk_groups_of_streams_in_step():
    origins = np.arange(12).reshape(4, 3) * 10
    walked, scored = batch_layout(origins, np.ones_like(origins, bool), batch_size=2, n_streams=5, rng=None)
    assert walked.shape == (9, 2)  # 3 groups x 3 chunks
    np.testing.assert_array_equal(walked[:3], [[0, 30], [10, 40], [20, 50]])
    assert (walked[6:] == PADDING).all() and not scored[6:].any()


def test_consecutive_stateful_batches_continue_each_row():
    """Row i of batch k+1 starts exactly one step after row i of batch k ended, within each stream group."""
    series = load_series(ETTH1, Config(target="OT"))
    features = build_features(series, fit_scaler(series, 2000), horizon=24)
    lookback, chunks = 48, 4
    batcher = WindowBatcher(features, lookback, 24)
    plan = StreamPlan(span(47, 2000, lookback), lookback, chunks, batch_size=8, shuffle=True, seed=3)
    generator = window_generator(batcher, plan)
    batches = [next(generator) for _ in range(plan.n_batches)]
    origins, scored = plan.batches(0)
    checked = 0
    for index in range(len(batches) - 1):
        if (index + 1) % chunks == 0:
            continue  # the next batch starts new streams, after a state reset
        now, following = batches[index][0]["lstm"], batches[index + 1][0]["lstm"]
        for row in range(8):
            if origins[index, row] == PADDING or origins[index + 1, row] == PADDING:
                continue
            if origins[index, row] == lookback - 1 and not scored[index, row]:
                continue  # warm-up before the series' first whole window repeats that window
            end = origins[index, row]
            np.testing.assert_array_equal(now[row, -1], features.history[end])
            np.testing.assert_array_equal(following[row, 0], features.history[end + 1])
            checked += 1
    assert checked > 100


def test_shuffled_layout_changes_by_epoch_but_not_by_run():
    plan = StreamPlan(span(47, 500, 48), 48, 4, 8, shuffle=True, seed=1)
    first, again, second = plan.batches(0)[0], plan.batches(0)[0], plan.batches(1)[0]
    np.testing.assert_array_equal(first, again)
    assert first.shape == second.shape and not np.array_equal(first, second)


def test_windows_are_views_and_batches_hold_the_right_rows():
    features = toy_features()
    batcher = WindowBatcher(features, lookback=5, horizon=3)
    assert np.shares_memory(batcher._history, features.history)
    x, y, weight = batcher.batch(np.array([10, PADDING]), np.array([True, True]))
    np.testing.assert_array_equal(x["lstm"][0, :, 0], [6, 7, 8, 9, 10])
    np.testing.assert_array_equal(x["sim"][0, :, 0], [11, 12, 13])
    np.testing.assert_array_equal(y["prediction"][0], [11, 12, 13])
    assert x["lstm"].shape == (2, 5, 2) and x["sim"].shape == (2, 3, 1) and x["bg"].shape == (2, 1)
    np.testing.assert_array_equal(weight, [[1, 1, 1], [1, 1, 1]])  # PADDING is only weighted 0 via `scored`


def test_missing_pm25_targets_get_weight_zero():
    config = Config(target="pm2.5", time_columns=("year", "month", "day", "hour"), exclude=("No",))
    series = load_series(BEIJING, config)
    features = build_features(series, fit_scaler(series, 30000), horizon=24)
    batcher = WindowBatcher(features, lookback=48, horizon=24)
    origins = np.arange(47, 5000)
    x, y, weight = batcher.batch(origins, np.ones(len(origins), bool))
    missing = np.isnan(np.lib.stride_tricks.sliding_window_view(features.target, 24)[origins + 1])
    assert missing.sum() > 1000
    np.testing.assert_array_equal(weight == 0, missing)
    assert np.isfinite(y["prediction"]).all() and all(np.isfinite(value).all() for value in x.values())


def test_targets_refuse_origins_without_a_whole_horizon():
    batcher = WindowBatcher(toy_features(60), lookback=5, horizon=3)  # origins 4 to 56
    batcher.targets(np.array([4, 56, PADDING]), np.ones(3, bool))
    for outside in (57, 60, 3):
        with pytest.raises(ValueError, match="no whole window inside its series"):
            batcher.targets(np.array([10, outside]), np.ones(2, bool))


def test_every_pipeline_feeds_the_same_batches_epoch_by_epoch():
    """One seed, one run: epoch k trains on the plan's layout k whichever pipeline serves it."""
    from forecast import backend
    from forecast.dataset import training_data

    keras = backend.keras()

    class Recorder(keras.Model):
        """Keeps the targets and weights of every batch it is fed, and trains nothing."""

        def __init__(self):
            super().__init__()
            self.fed = []

        def train_step(self, data):
            _, y, weight = data
            self.fed.append((np.asarray(y["prediction"]), np.asarray(weight)))
            return {"batches": len(self.fed)}

    features = toy_features(200)
    batcher = WindowBatcher(features, lookback=6, horizon=3)
    plan = StreamPlan(span(5, 180, 6), 6, 3, batch_size=4, shuffle=True, seed=5)
    expected = [batcher.batch(*[part[index] for part in plan.batches(epoch)])[1:] for epoch in (0, 1)
                for index in range(plan.n_batches)]
    for pipeline, workers in (("tfdata", 1), ("pydataset", 1), ("pydataset", 2), ("generator", 1)):
        model = Recorder()
        model.compile(optimizer="sgd", run_eagerly=True)
        config = Config(target="y", data_pipeline=pipeline, workers=workers)
        model.fit(training_data(batcher, plan, config, 0), epochs=2, steps_per_epoch=plan.n_batches,
                  shuffle=False, verbose=0)
        assert len(model.fed) == 2 * plan.n_batches, pipeline
        for index, ((target, weight), (want_y, want_weight)) in enumerate(zip(model.fed, expected)):
            np.testing.assert_array_equal(target, want_y["prediction"], err_msg=f"{pipeline} batch {index}")
            np.testing.assert_array_equal(weight, want_weight, err_msg=f"{pipeline} batch {index}")


def test_both_validation_pipelines_serve_the_score_weights_and_targets_of_the_validation_set():
    """Validation gathered by tf.data from the origins and their weights in the score serves, batch by batch, the
    targets of the `ValidationSet` and the step weights `criterion.score_weights` makes, as the PyDataset does: with
    many series of different spreads, target gaps and per-series training weights."""
    from forecast.criterion import score_weights
    from forecast.dataset import ValidationBatches, validation_batches
    from forecast.features import stack
    from forecast.members import validation_streams
    from forecast.sampler import origin_ranges

    rng = np.random.default_rng(4)
    parts = []
    for scale in (0.2, 1.0, 5.0):
        part = toy_features(90)
        target = (rng.standard_normal(90) * scale).astype("float32")
        target[rng.choice(90, 9, replace=False)] = np.nan
        parts.append(Features(history=part.history, target=target, sim=part.sim, bg=part.bg, time=part.time))
    features = stack(parts)
    lookback, horizon = 6, 3
    ranges = origin_ranges(features.starts, features.lengths, [(60, 90)] * 3, lookback, horizon)
    plan = StreamPlan(ranges, lookback, chunks=2, batch_size=4, shuffle=False)
    batcher = WindowBatcher(features, lookback, horizon, series_weight=np.array([0.5, 1.0, 2.0]))
    validation, origin_weights = validation_streams(batcher, plan, features.series_of)
    targets, weights = validation.cut(slice(None))
    expected = score_weights(features.series_of(np.where(validation.origins < 0, 0, validation.origins)), targets,
                             weights)
    assert len(np.unique(expected[expected > 0])) == 3  # each series weighs differently
    gathered = iter(validation_batches(validation, origin_weights))
    cut = ValidationBatches(validation, origin_weights)
    for index in range(validation.n_batches):
        rows = validation.rows(index)
        for inputs, target, weight in (next(gathered), cut[index]):
            np.testing.assert_array_equal(np.asarray(target["prediction"]), targets[rows])
            np.testing.assert_array_equal(np.asarray(weight), expected[rows])
            for name, array in validation.inputs(index).items():
                np.testing.assert_array_equal(np.asarray(inputs[name]), array)


@pytest.mark.parametrize("mapped", [False, True])
def test_tensorflow_reads_the_stacked_features_in_place_and_copies_what_it_cannot(tmp_path, mapped):
    """The tf.data pipelines gather from the stacked arrays themselves, in memory or memory-mapped (no second copy of
    the features); an array TensorFlow cannot read in place (misaligned, strided) is copied, with the same values."""
    from forecast.dataset import feature_tensors, shared_tensor
    from forecast.features import stack

    features = stack([toy_features(50), toy_features(70)], scratch=tmp_path if mapped else None)
    assert isinstance(features.history, np.memmap) == mapped
    history, sim, bg, target = feature_tensors(features)
    assert feature_tensors(features)[0] is history  # once per Features
    features.history[3, 0] = 1234.0  # only to show the memory is shared: nothing writes to the features
    assert float(history[3, 0]) == 1234.0
    np.testing.assert_array_equal(np.asarray(target), features.target)
    for tensor, array in ((history, features.history), (sim, features.sim), (bg, features.bg)):
        np.testing.assert_array_equal(np.asarray(_gather(tensor)), array[[1, 0]])
    misaligned = np.zeros(101, dtype="float32")[1:]
    strided = np.arange(30, dtype="float32").reshape(10, 3)[:, :2]
    for array in (misaligned, strided):
        tensor = shared_tensor(array)
        array[0] = 7.0
        assert float(np.asarray(tensor).reshape(-1)[0]) != 7.0  # a copy
        np.testing.assert_array_equal(np.asarray(_gather(tensor)), np.asarray(tensor)[[1, 0]])


def test_the_tfdata_pipelines_hold_no_copy_of_the_features_while_they_run():
    """tf.data's default graph rewrites serialise a pipeline when its iterator starts, and with it part of the feature
    tensors its gathers capture: memory of the process's own that grows with the feature arrays (about half their
    bytes) and stays while the pipeline runs. The pipelines run without those rewrites, so pulling batches from both
    adds little to the resident memory. Measured in a fresh process, as a command runs: a test worker's memory moves
    with what the tests before it left."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import test_windowing; print(test_windowing.pipeline_growth_mib())"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                          check=True)
    assert float(done.stdout.strip().splitlines()[-1]) < 20


def pipeline_growth_mib() -> float:
    """MiB of own pages that a training and a validation pipeline over 114 MiB of features add while they run."""
    from forecast.dataset import training_batches, validation_batches
    from forecast.features import stack
    from forecast.sampler import origin_ranges
    from forecast.windowing import ValidationSet

    lookback, horizon, rows = 16, 4, 2_000_000
    features = stack([toy_features(rows) for _ in range(3)])
    batcher = WindowBatcher(features, lookback, horizon)
    ranges = origin_ranges(features.starts, features.lengths, [(0, 2000)] * 3, lookback, horizon)
    plan = StreamPlan(ranges, lookback, chunks=4, batch_size=8, shuffle=False)
    validation = ValidationSet.of(batcher, plan)
    before = _own_mib()
    training = iter(training_batches(batcher, plan))
    checked = iter(validation_batches(validation, np.ones(len(validation.origins))))
    for _ in range(20):
        next(training), next(checked)
    return _own_mib() - before


def test_an_epoch_layout_reaches_tensorflow_aligned_so_that_it_is_not_copied_again():
    from forecast.dataset import aligned
    from forecast.features import ALIGNMENT, allocated

    buffer = allocated((1001,), np.int64, None)
    buffer[:] = np.arange(1001)
    misaligned = buffer[1:].reshape(50, 20)  # 8 bytes past an aligned start
    assert misaligned.ctypes.data % ALIGNMENT
    copy = aligned(misaligned)
    assert copy.ctypes.data % ALIGNMENT == 0 and copy.dtype == misaligned.dtype
    np.testing.assert_array_equal(copy, misaligned)
    assert aligned(copy) is copy


def _own_mib() -> float:
    """This process's resident anonymous memory (Linux's RssAnon), in MiB."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def _gather(tensor):
    import tensorflow as tf

    return tf.gather(tensor, [1, 0])


def _dataset_of(n_series: int, rows: int = 400):
    from forecast.dataset import WindowDataset
    from forecast.features import stack
    from forecast.sampler import origin_ranges

    features = stack([toy_features(rows) for _ in range(n_series)])
    lookback, horizon = 16, 4
    ranges = origin_ranges(features.starts, features.lengths, [(0, rows)] * n_series, lookback, horizon)
    plan = StreamPlan(ranges, lookback, chunks=4, batch_size=32, shuffle=True, seed=0)
    return WindowDataset(WindowBatcher(features, lookback, horizon), plan)


def test_a_batch_costs_the_same_for_ten_series_and_for_three_hundred():
    """The data path's cost per batch must not grow with the number of series (the epoch layout is computed once per
    epoch, the batch count once per plan): the best of several timings, so a busy machine does not decide it."""
    import time

    def per_batch(dataset) -> float:
        dataset[0]  # the epoch's layout, computed once
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            for index in range(1, 41):
                dataset[index]
            best = min(best, time.perf_counter() - began)
        return best / 40

    few, many = per_batch(_dataset_of(10)), per_batch(_dataset_of(300))
    assert many < 2.0 * few, f"{many * 1e3:.3f} ms per batch at 300 series against {few * 1e3:.3f} ms at 10"


def test_an_epoch_layout_of_3000_series_takes_array_arithmetic_not_a_loop_per_series():
    """The layout walks every origin of every series once per epoch; built by array arithmetic it stays a small part of
    an epoch even for thousands of series (a Python loop per series and residue class did not)."""
    import time

    from forecast.sampler import origin_ranges

    rows, n_series = 2000, 3000
    starts = np.arange(n_series, dtype=np.int64) * rows
    ranges = origin_ranges(starts, np.full(n_series, rows), [(0, rows)] * n_series, 96, 24)
    began = time.perf_counter()
    origins, scored = stream_layout(ranges, 96, 4, 2)
    assert time.perf_counter() - began < 10
    assert scored.sum() == sum(span.size for span in ranges)
