"""The three-input forecaster, built in one function from the configuration.

history (lstm input) -> stateful LSTM ---- final state [h, c] --------------+
sim over the horizon, one step at a time ----------------------------------+-> horizon LSTM (decoder) -> correction
bg (static columns, calendar at the origin), at every horizon step --------+
(decoder = false: a dense head over the LSTM's output, the flattened sim and bg gives the correction instead)
prediction = last target value + linear map of the window minus its last value (NLinear highway)
             + linear map of the window's means over its last 1, 2, 4, ... rows (target and covariates)
             + linear map of the sim change (the simulation's residual)
             + linear map of the target and sim values at the origin (how the simulation's current error decays)
             + linear map of the means, sim change and origin values times each series' attributes (with many series)
             + correction

Centring on the last value makes the forecast follow the series' current level, which a z-score fitted on the training
range cannot do when the level drifts; the linear terms give the network a strong start that the LSTM then corrects.
The linear terms and the correction start at zero, so the untrained model is the Repeat forecast and training moves
away from it only as far as the data support.
Dropout on the head keeps the correction from fitting the training range's noise: on ETTh1 (validation rows
8640-11520, L=96, H=24) it brought the validation MSE from 0.058 to 0.052, level with the linear terms alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from forecast import backend
from forecast.config import Config
from forecast.features import InputLayout

keras = backend.keras()
ops = keras.ops

INPUT_NAMES = ("sim", "lstm", "bg")


@keras.saving.register_keras_serializable(package="forecast")
class LevelShift(keras.layers.Layer):
    """Re-expresses the inputs relative to the last observed values.

    Returns the history with its target channel centred, the centred target alone (B, T), the sim input with each sim
    column's last history value subtracted, and the last target value repeated over the horizon (B, H).
    """

    def __init__(self, horizon: int, sim_history_index: Sequence[int] = (), **kwargs):
        super().__init__(**kwargs)
        self.horizon = horizon
        self.sim_history_index = tuple(sim_history_index)

    def call(self, inputs):
        history, sim = inputs
        level = history[:, -1:, :1]
        centred_target = history[:, :, :1] - level
        centred_history = ops.concatenate([centred_target, history[:, :, 1:]], axis=-1)
        if self.sim_history_index:
            last_sim = ops.stack([history[:, -1, index] for index in self.sim_history_index], axis=-1)
            n_columns = len(self.sim_history_index)
            sim = ops.concatenate([sim[:, :, :n_columns] - last_sim[:, None, :], sim[:, :, n_columns:]], axis=-1)
        return centred_history, centred_target[:, :, 0], sim, ops.repeat(level[:, :, 0], self.horizon, axis=1)

    def compute_output_shape(self, input_shape):
        history_shape, sim_shape = input_shape
        batch, steps, _ = history_shape
        return history_shape, (batch, steps), sim_shape, (batch, self.horizon)

    def get_config(self):
        return {**super().get_config(), "horizon": self.horizon, "sim_history_index": list(self.sim_history_index)}


@keras.saving.register_keras_serializable(package="forecast")
class WindowScale(keras.layers.Layer):
    """The spread of the centred target over the window, (B, 1), floored so that a flat window does not divide by 0."""

    def __init__(self, floor: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.floor = floor

    def call(self, centred_target):
        return ops.sqrt(ops.var(centred_target, axis=1, keepdims=True) + self.floor**2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "floor": self.floor}


@keras.saving.register_keras_serializable(package="forecast")
class ScaleTarget(keras.layers.Layer):
    """Divides the history's target channel by the window's scale (reversible instance normalisation's forward half).

    No longer built (the LSTM now reads the z-scored history), but kept registered: models saved before use it.
    """

    def call(self, inputs):
        history, scale = inputs
        return ops.concatenate([history[:, :, :1] / scale[:, :, None], history[:, :, 1:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="forecast")
class Rescale(keras.layers.Layer):
    """Multiplies the correction by the window's scale (the reverse half), so it shrinks in calm stretches."""

    def call(self, inputs):
        correction, scale = inputs
        return correction * scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def summary_spans(lookback: int) -> tuple[int, ...]:
    """1, 2, 4, ... rows back, and the whole window: a few spans that cover every scale of the window."""
    spans = [1]
    while spans[-1] * 2 < lookback:
        spans.append(spans[-1] * 2)
    return (*spans, lookback) if lookback > 1 else (1,)


@keras.saving.register_keras_serializable(package="forecast")
class MultiScaleMeans(keras.layers.Layer):
    """Each of `channels` averaged over the window's last s rows for each span s, (B, channels x spans), channel-major.

    The recent rows in detail, the distant ones as averages: a linear map of these is an autoregression at several
    resolutions, which on a long daily window (CAMELS, L=365) generalises better than one coefficient per lag, and
    which gives past covariates (rain, temperature) a compact way into the linear terms.
    """

    def __init__(self, spans: Sequence[int], channels: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.spans = tuple(spans)
        self.channels = tuple(channels)

    def call(self, history):
        selected = ops.stack([history[:, :, channel] for channel in self.channels], axis=-1)
        means = [ops.mean(selected[:, -span:, :], axis=1) for span in self.spans]
        return ops.reshape(ops.stack(means, axis=-1), (-1, len(self.channels) * len(self.spans)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.channels) * len(self.spans))

    def get_config(self):
        return {**super().get_config(), "spans": list(self.spans), "channels": list(self.channels)}


@keras.saving.register_keras_serializable(package="forecast")
class OriginValues(keras.layers.Layer):
    """The history's last row at `channels`, (B, len(channels)).

    With the target and the sim columns, a linear map of these values expresses the simulation's current error and
    its decay over the horizon, which centred inputs alone cannot: a river forecast relaxes towards the simulated
    flow as the current error fades.
    """

    def __init__(self, channels: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.channels = tuple(channels)

    def call(self, history):
        return ops.stack([history[:, -1, channel] for channel in self.channels], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.channels))

    def get_config(self):
        return {**super().get_config(), "channels": list(self.channels)}


@keras.saving.register_keras_serializable(package="forecast")
class AttributeProducts(keras.layers.Layer):
    """Each of the linear inputs (B, F) times each of the series' attributes, the first `attributes` bg columns:
    (B, F x attributes), input-major.

    A linear map of these gives every series its own linear coefficients, read from its attributes: one pooled ridge
    fit then forecasts a slow snow-fed river and a flashy one with different recessions and rain responses, as
    per-series fits would, while a series never trained on still gets coefficients from its attributes.
    """

    def __init__(self, attributes: int, **kwargs):
        super().__init__(**kwargs)
        self.attributes = attributes

    def call(self, inputs):
        values, bg = inputs
        products = values[:, :, None] * bg[:, None, : self.attributes]
        return ops.reshape(products, (-1, values.shape[-1] * self.attributes))

    def compute_output_shape(self, input_shape):
        values_shape, _ = input_shape
        return (values_shape[0], values_shape[-1] * self.attributes)

    def get_config(self):
        return {**super().get_config(), "attributes": self.attributes}


@keras.saving.register_keras_serializable(package="forecast")
class MaskedMSE(keras.losses.Loss):
    """Squared error per horizon step, weighted (weight 0 marks gaps and padding), summed and divided by the fixed
    count B x H: every scored step weighs the same whichever batch it is in. (Divided by the batch's own weight sum,
    a step in a sparse batch counted 3-4x on CAMELS.)"""

    def __init__(self, name: str = "masked_mse", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return ops.square(y_true - y_pred)


@keras.saving.register_keras_serializable(package="forecast")
class WeightedMSE(keras.metrics.Metric):
    """The exact weighted MSE over a whole epoch: sums over all batches before dividing, so that batches with
    padding count by their weight (Keras' mean of per-batch losses would count a half-empty batch fully)."""

    def __init__(self, name: str = "mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.weight = self.add_variable(shape=(), initializer="zeros", name="weight")

    def update_state(self, y_true, y_pred, sample_weight=None):
        error = ops.square(ops.cast(y_true, self.dtype) - ops.cast(y_pred, self.dtype))
        weight = ops.ones_like(error) if sample_weight is None else ops.cast(sample_weight, self.dtype)
        self.total.assign_add(ops.sum(error * weight))
        self.weight.assign_add(ops.sum(weight))

    def result(self):
        return self.total / ops.maximum(self.weight, 1e-12)

    def reset_state(self):
        self.total.assign(0.0)
        self.weight.assign(0.0)


def build_model(config: Config, layout: InputLayout, batch_size: int) -> keras.Model:
    """The forecaster with inputs of fixed batch size (the stateful LSTM needs it), in the order of INPUT_NAMES.

    The LSTM keeps Keras' defaults for activation, recurrent activation, bias and unrolling and has no recurrent
    dropout, so that TensorFlow uses the fused cuDNN kernel on a GPU.
    """
    horizon, lookback = config.horizon, config.lookback
    inputs = {
        "sim": keras.Input(batch_shape=(batch_size, horizon, len(layout.sim)), name="sim"),
        "lstm": keras.Input(batch_shape=(batch_size, lookback, len(layout.history)), name="lstm"),
        "bg": keras.Input(batch_shape=(batch_size, len(layout.bg)), name="bg"),
    }
    history, centred_target, sim, level = LevelShift(horizon, layout.sim_history_index, name="level_shift")(
        [inputs["lstm"], inputs["sim"]]
    )
    scale = WindowScale(name="window_scale")(centred_target)
    # The LSTM reads the history as z-scored on the training rows, a frame that continues from one chunk to the next,
    # so that the state carried from chunk k means the same in chunk k+1 (a window-relative frame shifts each chunk).
    encoded, *state = keras.layers.LSTM(
        config.units, stateful=config.stateful, dropout=config.dropout, return_state=True, name="history_lstm"
    )(inputs["lstm"])
    highway = keras.layers.Dense(horizon, kernel_initializer="zeros", name="history_highway")(centred_target)
    # Every history channel but the observed flag (the last), the target centred like the highway's input.
    means = MultiScaleMeans(summary_spans(lookback), range(len(layout.history) - 1), name="history_means")(history)
    summary = keras.layers.Dense(horizon, kernel_initializer="zeros", name="history_summary")(means)
    sim_flat = keras.layers.Flatten(name="sim_flat")(sim)
    terms = [level, highway, summary]
    if layout.sim:  # no sim columns and no calendar cycle: a Dense layer over zero inputs aborts oneDNN on the CPU
        terms.append(keras.layers.Dense(horizon, kernel_initializer="zeros", name="sim_residual")(sim_flat))
    attributes = len(layout.bg) - len(layout.calendar) if config.attribute_terms else 0
    if layout.sim_history_index or attributes:
        origin = OriginValues((0, *layout.sim_history_index), name="origin_values")(inputs["lstm"])
    if layout.sim_history_index:
        terms.append(keras.layers.Dense(horizon, kernel_initializer="zeros", name="sim_error_decay")(origin))
    if attributes:  # the series' attributes (static columns, bg columns) set each series' linear coefficients
        # The level at the origin too: how fast a series returns to its mean is what differs most between series.
        values = keras.layers.Concatenate(name="interacting_terms")([means, *([sim_flat] if layout.sim else []), origin])
        products = AttributeProducts(attributes, name="attribute_products")([values, inputs["bg"]])
        terms.append(keras.layers.Dense(horizon, kernel_initializer="zeros", name="attribute_interaction")(products))
    if config.decoder and (layout.sim or layout.bg):
        correction, scaled = _decoder_head(state, sim, inputs["bg"], horizon, config.head_dropout)
    else:
        correction, scaled = _dense_head(encoded, sim_flat, inputs["bg"], horizon, config.head_units,
                                         config.head_dropout)
    scaled = Rescale(name="rescaled_correction")([scaled, scale])
    prediction = keras.layers.Add(name="prediction")([*terms, correction, scaled])
    return keras.Model(
        inputs=[inputs[name] for name in INPUT_NAMES], outputs={"prediction": prediction}, name="forecaster"
    )


def _dense_head(encoded, sim_flat, bg, horizon: int, units: int, dropout: float):
    """The correction as an MLP over the history's encoding (B, units), the flattened horizon sim (B, H * S) and bg
    (B, G): two readouts (B, H), one in z-units (what the LSTM's state knows in its own frame) and one to be scaled by
    the window's spread (a correction proportional to how stormy the window is)."""
    context = keras.layers.Concatenate(name="context")([encoded, sim_flat, bg])
    context = keras.layers.Dropout(dropout, name="context_dropout")(context)
    hidden = keras.layers.Dense(units, activation="relu", name="head_hidden")(context)
    hidden = keras.layers.Dropout(dropout, name="head_dropout")(hidden)
    correction = keras.layers.Dense(horizon, kernel_initializer="zeros", name="head_correction")(hidden)
    scaled = keras.layers.Dense(horizon, kernel_initializer="zeros", name="head_scaled_correction")(hidden)
    return correction, scaled


def _decoder_head(state, sim, bg, horizon: int, dropout: float):
    """The correction as an LSTM that walks the horizon, reading each step's sim (B, H, S) and bg (B, G), started
    from the history LSTM's final state [h, c] (each (B, units)): the same weights turn each step's forcing into that
    step's correction, and what one step's forcing did carries to the next (rain on day 2 still drains on day 7).
    The sim is read as the linear terms read it, each column that is also in the history relative to its value at the
    origin (on protocol C's validation years this scored higher than the z-scored sim as the history LSTM reads it).
    Returns the two readouts (B, H) of the dense head, from one shared Dense(1) each over the steps."""
    parts = [sim] if sim.shape[-1] else []
    if bg.shape[-1]:
        parts.append(keras.layers.RepeatVector(horizon, name="bg_steps")(bg))
    steps = keras.layers.Concatenate(name="decoder_steps")(parts) if len(parts) > 1 else parts[0]
    units = state[0].shape[-1]
    decoded = keras.layers.LSTM(units, return_sequences=True, name="horizon_lstm")(steps, initial_state=state)
    decoded = keras.layers.Dropout(dropout, name="head_dropout")(decoded)
    readouts = []
    for name in ("head_correction", "head_scaled_correction"):
        step_value = keras.layers.Dense(1, kernel_initializer="zeros", name=name)(decoded)
        readouts.append(keras.layers.Reshape((horizon,), name=f"{name}_steps")(step_value))
    return readouts


def compile_model(model: keras.Model, config: Config) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss={"prediction": MaskedMSE()},
        weighted_metrics={"prediction": [WeightedMSE()]},
    )


def input_names(model: keras.Model) -> list[str]:
    """The model's own input order, which array-fed data (validation) must follow."""
    return [tensor.name for tensor in model.inputs]


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, those of the models nested in it (an ensemble's members) included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def stateful_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in all_layers(model) if getattr(layer, "stateful", False)]


def reset_states(model: keras.Model) -> None:
    """Keras 3 has no Model.reset_states: reset each stateful layer."""
    for layer in stateful_layers(model):
        layer.reset_state()


def has_network(model: keras.Model) -> bool:
    """Whether `model` (or the members of an ensemble) runs the history LSTM; a kept linear start is saved without it."""
    return any(layer.name == "history_lstm" for layer in all_layers(model))


def linear_part(model: keras.Model) -> keras.Model:
    """The linear terms of the single network `model` alone, with its inputs (names, order and batch size) and
    weights: what a kept linear start is saved as, so that predict and evaluate run no LSTM whose correction is 0."""
    terms = model.get_layer("prediction").input[:-2]  # the correction and its scaled twin are the last two addends
    prediction = keras.layers.Add(name="prediction")(list(terms))
    return keras.Model(inputs=model.inputs, outputs={"prediction": prediction}, name="linear_start")


def copy_model(model: keras.Model, batch_size: int | None = None) -> keras.Model:
    """The same network with the same weights, at `batch_size` (None: the model's own), with fresh states.

    Rebuilt from the model's own saved architecture, not from `build_model`, so that a model trained by an earlier
    version of forecast keeps forecasting with the layers it was trained with.
    """
    architecture = model.get_config()
    if batch_size is not None:
        _set_batch_size(architecture, batch_size)
    copy = keras.Model.from_config(architecture)
    copy.set_weights(model.get_weights())
    return copy


def _set_batch_size(architecture: dict, batch_size: int) -> None:
    """Rewrites a functional model's saved architecture, and those of the models nested in it, to `batch_size`."""
    for layer in architecture["layers"]:
        # Without its build record each layer is built on the new inputs: the stateful LSTM's state gets the new
        # batch size.
        layer.pop("build_config", None)
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [batch_size, *layer["config"]["batch_shape"][1:]]
        elif "layers" in layer["config"]:
            _set_batch_size(layer["config"], batch_size)


class StateResetter(keras.callbacks.Callback):
    """Resets the LSTM state when a stream group starts: at each epoch, before validation and prediction, and every
    `chunks` batches, where the next B streams begin (a series boundary or a fresh stream)."""

    def __init__(self, chunks: int):
        super().__init__()
        self.chunks = chunks

    def _reset_at(self, batch: int) -> None:
        if batch % self.chunks == 0:
            reset_states(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        reset_states(self.model)

    def on_test_begin(self, logs=None):
        reset_states(self.model)

    def on_predict_begin(self, logs=None):
        reset_states(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        self._reset_at(batch)

    def on_test_batch_begin(self, batch, logs=None):
        self._reset_at(batch)

    def on_predict_batch_begin(self, batch, logs=None):
        self._reset_at(batch)


class SkipUnscoredBatches(keras.callbacks.Callback):
    """Keeps the weights unchanged on a training batch with no scored step (all padding or warm-up): its loss and
    gradients are 0, but Adam would still move the weights along its momentum. The batch still runs, for the LSTM
    state; its learning rate is 0 (Adam's moment estimates decay by one step).

    `unscored(epoch)` gives a boolean per batch of that epoch's layout: True where nothing is scored.
    """

    def __init__(self, unscored):
        super().__init__()
        self.unscored = unscored
        self._skip = np.zeros(0, dtype=bool)
        self._rate = None

    def on_epoch_begin(self, epoch, logs=None):
        self._skip = self.unscored(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if batch < len(self._skip) and self._skip[batch]:
            self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if self._rate is not None:
            self.model.optimizer.learning_rate = self._rate  # before any checkpoint saves the optimizer
            self._rate = None


def predict_batches(model: keras.Model, batches: Iterable[dict[str, np.ndarray]], chunks: int) -> np.ndarray:
    """Forecasts (n_batches * B, H) for input batches laid out as stream groups, resetting the state between groups,
    as in training."""
    outputs = []
    for index, inputs in enumerate(batches):
        if index % chunks == 0:
            reset_states(model)
        outputs.append(model.predict_on_batch(inputs)["prediction"])
    return np.concatenate(outputs, axis=0)


def stacked_batches(inputs: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of B rows, in order, from inputs stacked batch after batch (as `windowing.materialise` returns them)."""
    rows = len(next(iter(inputs.values())))
    for start in range(0, rows, batch_size):
        yield {name: values[start : start + batch_size] for name, values in inputs.items()}
