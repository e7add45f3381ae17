"""The Keras model: inputs, cuDNN-friendly defaults, state handling, validation order."""

import numpy as np
import pytest

from forecast import backend
from forecast.config import Config
from forecast.data import load_series
from forecast.features import InputLayout, build_features, fit_scaler
from forecast.sampler import StreamPlan
from forecast.windowing import WindowBatcher, materialise

from conftest import randomised, span, CAMELS, ETTH1, head_csv

keras = backend.keras()
from forecast.model import (  # noqa: E402  (after the backend is pinned)
    StateResetter,
    build_model,
    compile_model,
    copy_model,
    input_names,
    reset_states,
    stateful_layers,
)

CONFIG = Config(target="OT", lookback=24, horizon=6, batch_size=4, stream_chunks=3, units=8, head_units=8, epochs=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = head_csv(ETTH1, 600, tmp_path_factory.mktemp("model") / "ett.csv")
    series = load_series(path, CONFIG)
    features = build_features(series, fit_scaler(series, 400), CONFIG.horizon)
    layout = InputLayout.from_roles(series.roles, series.freq)
    return features, layout, WindowBatcher(features, CONFIG.lookback, CONFIG.horizon)


def lstm_state(model):
    return [keras.ops.convert_to_numpy(variable) for layer in stateful_layers(model) for variable in layer.states]


def test_inputs_have_fixed_batch_shapes_and_names(setup):
    _, layout, _ = setup
    model = build_model(CONFIG, layout, batch_size=4)
    shapes = {tensor.name: tuple(tensor.shape) for tensor in model.inputs}
    assert shapes == {"sim": (4, 6, len(layout.sim)), "lstm": (4, 24, len(layout.history)), "bg": (4, len(layout.bg))}
    assert model.output_names == ["prediction"] and list(model.output) == ["prediction"]


def test_lstm_defaults_keep_the_cudnn_kernel(setup):
    _, layout, _ = setup
    lstm = build_model(Config(target="OT", dropout=0.1), layout, batch_size=4).get_layer("history_lstm")
    config = lstm.get_config()
    assert config["activation"] == "tanh" and config["recurrent_activation"] == "sigmoid"
    assert config["recurrent_dropout"] == 0 and config["unroll"] is False and config["use_bias"] is True
    assert config["stateful"] is True


@pytest.mark.parametrize("decoder", [False, True])
def test_the_untrained_model_forecasts_the_last_value(setup, decoder):
    _, layout, batcher = setup
    model = build_model(CONFIG.replace(decoder=decoder), layout, batch_size=4)
    origins = np.array([30, 60, 90, 120])
    forecast = np.asarray(model(batcher.inputs(origins))["prediction"])
    np.testing.assert_allclose(forecast, np.repeat(batcher.last_values(origins)[:, None], CONFIG.horizon, axis=1), atol=1e-6)


def test_a_sim_column_adds_a_linear_term_on_the_origin_values(tmp_path):
    config = Config(target="OBS_RUN", sim=("MOD_RUN",), past=("PRCP",), lookback=30, horizon=3, units=4, head_units=4)
    series = load_series(head_csv(CAMELS, 200, tmp_path / "camels.csv"), config)
    features = build_features(series, fit_scaler(series, 150), config.horizon)
    layout = InputLayout.from_roles(series.roles, series.freq)
    model = randomised(build_model(config, layout, batch_size=2))
    origins = np.array([50, 80])
    inputs = WindowBatcher(features, config.lookback, config.horizon).inputs(origins)
    reset_states(model)
    before = np.asarray(model(inputs)["prediction"])
    reset_states(model)
    error_term = model.get_layer("sim_error_decay")
    assert error_term.kernel.shape == (2, config.horizon)  # the target and MOD_RUN at the origin
    error_term.kernel.assign(error_term.kernel + 1.0)
    after = np.asarray(model(inputs)["prediction"])
    origin_values = inputs["lstm"][:, -1, [0, layout.history.index("MOD_RUN")]]
    np.testing.assert_allclose(after - before, np.repeat(origin_values.sum(axis=1, keepdims=True), 3, axis=1), atol=1e-5)


def test_the_decoder_walks_the_horizon_from_the_history_state(tmp_path):
    """A forcing at horizon step k moves the decoder's correction at steps k and later only, with one set of weights
    for any horizon; the history reaches it through the history LSTM's state alone."""
    config = Config(target="OBS_RUN", sim=("MOD_RUN",), past=("PRCP",), lookback=30, horizon=5, units=6,
                    decoder=True)
    series = load_series(head_csv(CAMELS, 200, tmp_path / "camels.csv"), config)
    features = build_features(series, fit_scaler(series, 150), config.horizon)
    layout = InputLayout.from_roles(series.roles, series.freq)
    model = build_model(config, layout, batch_size=2)
    assert "head_hidden" not in [layer.name for layer in model.layers]
    assert model.get_layer("head_correction").kernel.shape == (6, 1)
    rng = np.random.default_rng(1)
    correction_layers = ("history_lstm", "horizon_lstm", "head_correction", "head_scaled_correction")
    for name in correction_layers:  # the linear terms stay at 0: what moves is the correction alone
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(0.0, 0.5, weight.shape).astype("float32") for weight in layer.get_weights()])
    inputs = WindowBatcher(features, config.lookback, config.horizon).inputs(np.array([50, 80]))

    def forecast(values):
        reset_states(model)
        return np.asarray(model(values)["prediction"])

    before = forecast(inputs)
    stormy = {**inputs, "sim": inputs["sim"].copy()}
    stormy["sim"][:, 2, layout.sim.index("MOD_RUN")] += 3.0
    moved = np.abs(forecast(stormy) - before)
    assert moved[:, :2].max() < 1e-6 and moved[:, 2:].min() > 1e-6
    earlier = {**inputs, "lstm": inputs["lstm"].copy()}
    earlier["lstm"][:, -5:, layout.history.index("PRCP")] += 3.0
    assert np.abs(forecast(earlier) - before).min() > 1e-4


def test_state_changes_after_a_batch_and_resets(setup):
    _, layout, batcher = setup
    model = build_model(CONFIG, layout, batch_size=4)
    x, _, _ = batcher.batch(np.array([30, 60, 90, 120]), np.ones(4, bool))
    assert all((state == 0).all() for state in lstm_state(model))
    model(x)
    assert any(np.abs(state).max() > 1e-6 for state in lstm_state(model))
    reset_states(model)
    assert all((state == 0).all() for state in lstm_state(model))


@pytest.mark.parametrize("decoder", [False, True])
def test_batch_one_copy_matches_the_trained_model_for_the_same_state(setup, decoder):
    _, layout, batcher = setup
    model = build_model(CONFIG.replace(decoder=decoder), layout, batch_size=4)
    compile_model(model, CONFIG)
    plan = StreamPlan(span(23, 350, 24), 24, 3, 4, shuffle=True, seed=0)
    origins, scored = plan.batches(0)
    model.fit(
        (batcher.batch(origins[i], scored[i]) for i in range(len(origins))), steps_per_epoch=len(origins),
        callbacks=[StateResetter(3)], shuffle=False, verbose=0,
    )
    single = copy_model(model, batch_size=1)
    reset_states(model)
    reset_states(single)
    stream = [100, 124, 148]
    for step, origin in enumerate(stream):
        rows = np.array([origin, origin + 1, origin + 2, origin + 3])
        batch_out = np.asarray(model(batcher.inputs(rows))["prediction"])[0]
        single_out = np.asarray(single(batcher.inputs(np.array([origin])))["prediction"])[0]
        np.testing.assert_allclose(single_out, batch_out, atol=1e-5, err_msg=f"chunk {step}")
    assert step == 2


def test_validation_arrays_follow_the_models_own_input_order(setup):
    _, layout, batcher = setup
    plan = StreamPlan(span(399, 593, 24), 24, 3, 4, shuffle=False)
    inputs, target, weight, _ = materialise(batcher, plan)
    losses = []
    network = randomised(build_model(CONFIG, layout, batch_size=4))
    for order in (("sim", "lstm", "bg"), ("bg", "lstm", "sim")):
        # The same layers behind inputs in another order, as a model saved with that order would have them.
        reordered = [network.inputs[input_names(network).index(name)] for name in order]
        model = keras.Model(reordered, {"prediction": network.get_layer("prediction").output})
        compile_model(model, CONFIG)
        assert input_names(model) == list(order)
        arrays = [inputs[name] for name in input_names(model)]
        losses.append(model.evaluate(arrays, {"prediction": target}, sample_weight={"prediction": weight}, batch_size=4,
                                     callbacks=[StateResetter(3)], verbose=0, return_dict=True)["mse"])
        if order[0] == "bg":
            with pytest.raises(ValueError):
                model.evaluate([inputs[name] for name in ("sim", "lstm", "bg")], {"prediction": target}, batch_size=4,
                               verbose=0)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_states_are_reset_at_epoch_start_stream_groups_and_before_validation(setup):
    _, layout, batcher = setup
    model = build_model(CONFIG, layout, batch_size=4)
    compile_model(model, CONFIG)
    train_plan = StreamPlan(span(23, 350, 24), 24, 3, 4, shuffle=True)
    val_plan = StreamPlan(span(399, 593, 24), 24, 3, 4, shuffle=False)
    inputs, target, weight, _ = materialise(batcher, val_plan)
    seen = []

    class Spy(keras.callbacks.Callback):
        def _record(self, phase, batch):
            seen.append((phase, batch, all((state == 0).all() for state in lstm_state(self.model))))

        def on_train_batch_begin(self, batch, logs=None):
            self._record("train", batch)

        def on_test_batch_begin(self, batch, logs=None):
            self._record("test", batch)

    from forecast.dataset import WindowDataset

    model.fit(
        WindowDataset(batcher, train_plan), epochs=2, steps_per_epoch=train_plan.n_batches,
        validation_data=([inputs[n] for n in input_names(model)], {"prediction": target}, {"prediction": weight}),
        validation_batch_size=4, callbacks=[StateResetter(3), Spy()], shuffle=False, verbose=0,
    )
    assert {phase for phase, _, _ in seen} == {"train", "test"}
    for phase, batch, is_zero in seen:
        assert is_zero == (batch % 3 == 0), (phase, batch)


def test_continuing_from_weights_that_do_not_fit_is_refused(setup, tmp_path):
    from forecast.errors import IncompatibleWeights
    from forecast.store import MODEL_FILE
    from forecast.members import load_start, start_members

    _, layout, _ = setup
    build_model(CONFIG.replace(units=4), layout, batch_size=4).save(tmp_path / MODEL_FILE)
    model = build_model(CONFIG, layout, batch_size=4)
    (start,) = start_members(tmp_path, 1)
    with pytest.raises(IncompatibleWeights, match="do not fit the network"):
        load_start(model, start, tmp_path, CONFIG, log=lambda message: None)
    with pytest.raises(IncompatibleWeights, match="its model is one network, and this configuration trains 2"):
        start_members(tmp_path, 2)


def test_multi_scale_means_average_each_channel_over_the_last_rows():
    from forecast.model import MultiScaleMeans, summary_spans

    assert summary_spans(365) == (1, 2, 4, 8, 16, 32, 64, 128, 256, 365)
    assert summary_spans(8) == (1, 2, 4, 8) and summary_spans(2) == (1, 2) and summary_spans(1) == (1,)
    window = np.arange(2 * 5 * 3, dtype="float32").reshape(2, 5, 3)
    means = np.asarray(MultiScaleMeans((1, 2, 5), channels=(0, 2))(window))
    expected = [[window[row, -span:, channel].mean() for channel in (0, 2) for span in (1, 2, 5)] for row in (0, 1)]
    np.testing.assert_allclose(means, expected)


def test_the_epoch_logs_carry_one_validation_number(setup, tmp_path):
    from forecast.checkpoint import ResumeState
    from forecast.members import training_callbacks

    _, layout, batcher = setup
    model = build_model(CONFIG, layout, batch_size=4)
    compile_model(model, CONFIG)
    train_plan = StreamPlan(span(23, 350, 24), 24, 3, 4, shuffle=True)
    inputs, target, weight, _ = materialise(batcher, StreamPlan(span(399, 593, 24), 24, 3, 4, shuffle=False))
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(set(logs))

    state = ResumeState()
    callbacks = training_callbacks(keras, CONFIG.replace(checkpoints=False), tmp_path, 3, state, resumed=False)
    origins, scored = train_plan.batches(0)
    model.fit(
        (batcher.batch(origins[i], scored[i]) for i in range(len(origins))), steps_per_epoch=len(origins),
        validation_data=([inputs[n] for n in input_names(model)], {"prediction": target}, {"prediction": weight}),
        validation_batch_size=4, callbacks=[*callbacks, Spy()], shuffle=False, verbose=0,
    )
    # One validation number, and the learning rate the epoch ran at (it halves after plateaus with lr_patience)
    assert seen == [{"loss", "mse", "val_mse", "learning_rate"}]
    assert set(state.history[0]) == {"epoch", "loss", "mse", "val_mse", "learning_rate"}


def test_the_loss_weighs_every_scored_step_the_same_in_any_batch():
    from forecast.model import MaskedMSE

    truth = np.zeros((2, 3), "float32")
    forecast = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], "float32")
    sparse = np.array([[1, 0, 0], [0, 0, 0]], "float32")  # one scored step of six
    dense = np.ones((2, 3), "float32")
    loss = MaskedMSE()
    assert float(loss(truth, forecast, sample_weight=sparse)) == pytest.approx(1.0 / 6)  # not 1.0: divided by B x H
    assert float(loss(truth, forecast, sample_weight=dense)) == pytest.approx((3 * 1 + 3 * 4) / 6)


def test_batches_without_a_scored_step_leave_the_weights_unchanged(setup):
    from forecast.model import SkipUnscoredBatches

    _, layout, batcher = setup
    model = randomised(build_model(CONFIG.replace(head_dropout=0.0), layout, batch_size=4))
    compile_model(model, CONFIG)
    origins = np.array([[30, 60, 90, 120], [54, 84, 114, 144], [78, 108, 138, 162]] * 2)
    scored = np.ones(origins.shape, dtype=bool)
    scored[1] = scored[4] = False  # two batches of warm-up only: loss 0, but Adam would still step
    moved = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.before = [np.array(w) for w in self.model.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            after = self.model.get_weights()
            moved.append(any(not np.array_equal(a, b) for a, b in zip(self.before, after)))

    model.fit(
        (batcher.batch(origins[i], scored[i]) for i in range(len(origins))), steps_per_epoch=len(origins),
        callbacks=[SkipUnscoredBatches(lambda epoch: ~scored.any(axis=1)), Watch()], shuffle=False, verbose=0,
    )
    assert moved == [True, False, True, True, False, True]
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(CONFIG.learning_rate)


def test_early_stopping_compares_with_the_linear_start():
    from forecast.checkpoint import ResumableEarlyStopping, ResumeState
    from forecast.members import training_callbacks

    class Weights:
        """What early stopping needs of a model: weights that change each epoch, and the stop flag."""

        stop_training = False
        weights = [np.zeros(1)]

        def get_weights(self):
            return self.weights

        def set_weights(self, weights):
            self.weights = weights

    start = [np.full(1, -1.0)]
    state = ResumeState(linear_start={"val_mse": 0.5})
    callbacks = training_callbacks(keras, CONFIG.replace(patience=2, checkpoints=False), None, 3, state, False, start)
    stopping = next(callback for callback in callbacks if isinstance(callback, ResumableEarlyStopping))
    model = Weights()
    stopping.set_model(model)
    stopping.on_train_begin()
    for epoch, val_mse in enumerate([0.9, 0.8, 0.7, 0.6]):  # improving, but never better than the start
        model.weights = [np.full(1, float(epoch))]
        stopping.on_epoch_end(epoch, {"val_mse": val_mse})
        if model.stop_training:
            break
    assert epoch == 1 and model.stop_training  # patience 2 epochs past the start, not past its own best
    stopping.on_train_end()
    np.testing.assert_array_equal(model.weights[0], start[0])  # the start's weights are restored


def test_the_learning_rate_halves_after_each_plateau_and_resumes_from_the_history():
    from forecast.checkpoint import PlateauLearningRate, ResumeState, plateau_learning_rate

    val_mse = [0.9, 0.6, 0.7, 0.65, 0.55, 0.58, 0.59, 0.6, 0.61]
    rates = [plateau_learning_rate(val_mse[:epoch], 0.8, 1e-3, patience=2) for epoch in range(len(val_mse) + 1)]
    # 0.9 does not beat the start (0.8), 0.6 does; two epochs without gain halve the rate, and the count restarts
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4])
    assert plateau_learning_rate(val_mse, None, 1e-3, patience=0) == 1e-3

    class Holder:  # what the callback needs of a model: its optimizer
        optimizer = keras.optimizers.Adam(1e-3)

    holder = Holder()
    state = ResumeState(history=[{"epoch": epoch + 1, "val_mse": value} for epoch, value in enumerate(val_mse[:7])])
    callback = PlateauLearningRate(state, 1e-3, 2, 0.0, start_mse=0.8)
    callback.set_model(holder)
    callback.on_epoch_begin(7)
    logs = {}
    callback.on_epoch_end(7, logs)
    assert logs["learning_rate"] == pytest.approx(2.5e-4)  # a resumed run at epoch 8 continues at the same rate
