"""An ensemble (`members = N`): N networks from seeds seed, seed + 1, ... averaged in one Keras model, which saves,
reloads, carries and resets its members' states, ablates, resumes and retrains as one network does."""

import json

import numpy as np
import pandas as pd
import pytest

from forecast import backend
from forecast.config import Config
from forecast.data import load_series
from forecast.features import InputLayout, build_features, fit_scaler
from forecast.windowing import WindowBatcher

from conftest import ETTH1, counted_calls, head_csv, randomised, run_forecast, span, train_until_killed

keras = backend.keras()
from forecast.ablation import without_correction, zeroed_lstm  # noqa: E402  (after the backend is pinned)
from forecast.ensemble import combine, members_of  # noqa: E402
from forecast.model import build_model, copy_model, has_network, reset_states, stateful_layers  # noqa: E402
from forecast.runner import load_model_file  # noqa: E402

CONFIG = Config(target="OT", lookback=24, horizon=6, batch_size=4, stream_chunks=3, units=8, head_units=8, epochs=2)
FLAGS = ["--target", "OT", "--lookback", "48", "--horizon", "12", "--batch-size", "16", "--epochs", "3",
         "--patience", "10", "--seed", "7", "--members", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = head_csv(ETTH1, 600, tmp_path_factory.mktemp("ensemble") / "ett.csv")
    series = load_series(path, CONFIG)
    features = build_features(series, fit_scaler(series, 400), CONFIG.horizon)
    return InputLayout.from_roles(series.roles, series.freq), WindowBatcher(features, CONFIG.lookback, CONFIG.horizon)


def members(layout, count: int = 2):
    return [randomised(build_model(CONFIG, layout, batch_size=4), seed) for seed in range(count)]


def predict(model, batcher, origins):
    inputs = batcher.inputs(np.asarray(origins))
    return np.asarray(model([inputs[tensor.name] for tensor in model.inputs])["prediction"])


def test_the_ensemble_forecasts_the_mean_of_its_members_and_survives_a_reload(setup, tmp_path):
    layout, batcher = setup
    networks = members(layout)
    origins = [100, 150, 200, 250]
    expected = np.mean([predict(network, batcher, origins) for network in networks], axis=0)
    for network in networks:
        reset_states(network)
    ensemble = combine(networks)
    assert [tensor.name for tensor in ensemble.inputs] == ["sim", "lstm", "bg"]
    assert [tuple(tensor.shape) for tensor in ensemble.inputs] == [tuple(t.shape) for t in networks[0].inputs]
    np.testing.assert_allclose(predict(ensemble, batcher, origins), expected, atol=1e-6)
    assert [member.name for member in members_of(ensemble)] == ["member_0", "member_1"]
    assert members_of(networks[0]) == [networks[0]]
    # The members' weights, in order, are the ensemble's.
    flat = [weight for network in networks for weight in network.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(ensemble.get_weights(), flat, strict=True))

    ensemble.save(tmp_path / "model.keras")
    reloaded = load_model_file(tmp_path / "model.keras")
    reset_states(reloaded)
    np.testing.assert_allclose(predict(reloaded, batcher, origins), expected, atol=1e-6)


def test_each_members_state_carries_resets_and_copies_to_batch_one(setup):
    layout, batcher = setup
    ensemble = combine(members(layout))
    assert len(stateful_layers(ensemble)) == 2  # one history LSTM in each member

    def states(model):
        return [keras.ops.convert_to_numpy(v) for layer in stateful_layers(model) for v in layer.states]

    single = copy_model(ensemble, batch_size=1)
    assert [tuple(tensor.shape)[0] for tensor in single.inputs] == [1, 1, 1]
    for origin in (100, 124, 148):  # one stream, three chunks: the state carries from each to the next
        batch_out = predict(ensemble, batcher, [origin, origin + 1, origin + 2, origin + 3])[0]
        np.testing.assert_allclose(predict(single, batcher, [origin])[0], batch_out, atol=1e-5)
    assert all(np.abs(state).max() > 1e-6 for state in states(ensemble))
    reset_states(ensemble)
    assert all((state == 0).all() for state in states(ensemble))


def test_the_ablations_reach_every_member(setup):
    layout, batcher = setup
    networks = members(layout)
    ensemble = combine([build_model(CONFIG, layout, batch_size=4) for _ in networks])
    ensemble.set_weights([weight for network in networks for weight in network.get_weights()])
    origins = [100, 150, 200, 250]
    for ablated, parts in ((zeroed_lstm, "history LSTM"), (without_correction, "correction head")):
        expected = []
        for network in networks:
            reset_states(network)
            expected.append(predict(ablated(network), batcher, origins))
        reset_states(ensemble)
        np.testing.assert_allclose(predict(ablated(ensemble), batcher, origins), np.mean(expected, axis=0), atol=1e-6,
                                   err_msg=f"every member's {parts}")


def test_the_ablations_run_in_one_pass_and_each_forecasts_what_it_forecasts_alone(setup, monkeypatch):
    from forecast.ablation import ablation_forecasts
    from forecast.runner import forecasts_at

    layout, batcher = setup
    ensemble = combine(members(layout))
    ranges, chunks = span(100, 140, CONFIG.lookback), CONFIG.chunks_per_stream
    alone = {"model": forecasts_at(ensemble, batcher, ranges, chunks),
             "state_reset": forecasts_at(ensemble, batcher, ranges, 1),
             "lstm_zeroed": forecasts_at(zeroed_lstm(ensemble), batcher, ranges, chunks),
             "linear_only": forecasts_at(without_correction(ensemble), batcher, ranges, chunks)}
    calls = counted_calls(monkeypatch)
    together = ablation_forecasts(ensemble, batcher, ranges, chunks)
    assert list(together) == list(alone)
    for label, forecast in alone.items():
        assert np.array_equal(together[label], forecast), label
    # 11 groups of 4 streams: K chunks to the origin, then the origin three more ways (alone: 3 K + 1 a group).
    assert len(calls) == 11 * (chunks + 3)


def test_a_larger_batch_copy_warms_up_every_members_state_and_forecasts_the_same(setup):
    from forecast.bulk import bulk_network, state_advancer
    from forecast.runner import forecasts_at

    layout, batcher = setup
    ensemble = combine(members(layout))
    ranges, chunks = span(100, 200, CONFIG.lookback), CONFIG.chunks_per_stream
    inputs = batcher.inputs(np.arange(100, 104))
    ensemble.predict_on_batch(inputs)
    called = [keras.ops.convert_to_numpy(v) for layer in stateful_layers(ensemble) for v in layer.states]
    reset_states(ensemble)
    state_advancer(ensemble)(inputs)
    advanced = [keras.ops.convert_to_numpy(v) for layer in stateful_layers(ensemble) for v in layer.states]
    assert len(advanced) == 4 and all(np.abs(state).max() > 1e-3 for state in advanced)  # h and c of each member
    for state, expected_state in zip(advanced, called):
        np.testing.assert_allclose(state, expected_state, atol=1e-6)
    expected = forecasts_at(ensemble, batcher, ranges, chunks)
    np.testing.assert_allclose(forecasts_at(ensemble, batcher, ranges, chunks, state_advancer(ensemble)), expected,
                               atol=1e-6)
    bulk, advance = bulk_network(ensemble, 101, batcher)
    assert int(bulk.inputs[0].shape[0]) == 104 and advance is not None  # all 101 origins in one batch
    np.testing.assert_allclose(forecasts_at(bulk, batcher, ranges, chunks, advance), expected, atol=1e-6)


def test_a_network_that_never_beat_its_linear_start_kept_epoch_zero():
    from forecast.members import kept_epoch

    history = pd.DataFrame({"epoch": [1, 2, 3], "val_mse": [0.52, 0.50, 0.51]})
    assert kept_epoch(history) == 2
    assert kept_epoch(history, 0.55) == 2
    assert kept_epoch(history, 0.50) == 0  # early stopping needs a strictly lower score


@pytest.mark.slow
def test_an_ensemble_trains_exactly_the_networks_its_seeds_train_alone(tmp_path, ett_small):
    from forecast.training import train

    # Without the linear start there is no gate, so every network is saved as trained and can be compared as it is.
    config = Config(target="OT", lookback=48, horizon=12, batch_size=16, epochs=2, seed=11, linear_start=False)
    ensemble = train(ett_small, config.replace(members=2), tmp_path / "ensemble")
    alone = [train(ett_small, config.replace(seed=seed), tmp_path / f"seed{seed}") for seed in (11, 12)]
    saved = members_of(load_model_file(ensemble.model_dir / "model.keras"))
    for member, single in zip(saved, alone, strict=True):
        for a, b in zip(member.get_weights(), load_model_file(single.model_dir / "model.keras").get_weights()):
            np.testing.assert_array_equal(a, b)
    assert list(ensemble.history["member"].unique()) == [0, 1]
    assert ensemble.metrics["member_epochs"] == [single.metrics["epochs"] for single in alone]
    assert "the mean LSTM correction of 2 networks" in ensemble.metrics["model_kind"]


@pytest.mark.slow
def test_an_ensemble_killed_in_its_second_network_resumes_to_the_uninterrupted_result(tmp_path, ett_small):
    checkpoints = tmp_path / "interrupted" / ".staging" / "checkpoints"
    state = checkpoints / "member_1" / "state.json"
    returncode = train_until_killed([ett_small, *FLAGS, "--model-dir", "interrupted", "--store", tmp_path], state, 1)
    assert returncode == -9, "training ended before it could be killed in its second network"
    assert json.loads((checkpoints / "state.json").read_text())["epoch"] == 3  # the first network had finished

    resumed = run_forecast("train", ett_small, "--resume", "--model-dir", "interrupted", "--store", tmp_path)
    assert resumed.stderr.count("resuming") == 2  # the first network (finished) and the second
    run_forecast("train", ett_small, *FLAGS, "--model-dir", "whole", "--store", tmp_path)
    models = [load_model_file(tmp_path / name / "current" / "model.keras") for name in ("interrupted", "whole")]
    for resumed_weight, whole_weight in zip(*(model.get_weights() for model in models), strict=True):
        np.testing.assert_allclose(resumed_weight, whole_weight, atol=1e-6)
    metrics = [json.loads((tmp_path / name / "current" / "metrics.json").read_text()) for name in ("interrupted", "whole")]
    assert metrics[0]["model_kind"] == metrics[1]["model_kind"]
    assert not (tmp_path / "interrupted" / ".staging").exists()


@pytest.mark.slow
def test_an_ensemble_predicts_evaluates_and_continues_each_network_in_a_warm_run(tmp_path, ett_small):
    run_forecast("train", ett_small, *FLAGS, "--model-dir", "ens", "--store", tmp_path)
    metrics = json.loads((tmp_path / "ens" / "current" / "metrics.json").read_text())
    assert metrics["model_kind"] in run_forecast("models", "list", "--model", "ens", "--store", tmp_path).stdout
    run_forecast("predict", ett_small, "--model", "ens", "--store", tmp_path, "--output", tmp_path / "forecast.csv")
    assert len(pd.read_csv(tmp_path / "forecast.csv")) == 12
    shown = run_forecast("evaluate", ett_small, "--model", "ens", "--store", tmp_path, "--validation-rows",
                         "--output-dir", tmp_path / "scores").stdout
    forecasters = set(pd.read_csv(tmp_path / "scores" / "ens_series.csv")["forecaster"])
    linear = metrics["kept_linear_start"]
    saved = load_model_file(tmp_path / "ens" / "current" / "model.keras")
    if linear:  # the ensemble is its linear start, saved without the networks: nothing to ablate, and both say so
        assert not has_network(saved) and len(stateful_layers(saved)) == 0
        assert "the model is its linear start" in shown and not {"state_reset", "lstm_zeroed"} & forecasters
        assert "no LSTM runs" in run_forecast("predict", ett_small, "--model", "ens", "--store", tmp_path).stderr
    else:  # every member's LSTM zeroed, every member's head (tests/test_ensemble.py checks the values)
        assert len(members_of(saved)) == 2
        assert {"model", "state_reset", "lstm_zeroed", "linear_only"} <= forecasters

    warm = run_forecast("train", ett_small, *FLAGS, "--epochs", "4", "--initial-epoch", "3", "--model-dir", "ens",
                        "--store", tmp_path)
    # Each network continues its own weights, or from a linear start, its linear terms with the network afresh.
    assert warm.stderr.count("continuing from the linear start of" if linear else "continuing from the weights of") == 2
    if has_network(load_model_file(tmp_path / "ens" / "current" / "model.keras")):
        refused = run_forecast("train", ett_small, *FLAGS[:-2], "--epochs", "5", "--initial-epoch", "4", "--model-dir",
                               "ens", "--store", tmp_path, check=False)
        assert refused.returncode == 1
        assert "averages 2 networks, and this configuration trains 1 (set members = 2 to continue it)" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "ens" / ".staging").exists()
