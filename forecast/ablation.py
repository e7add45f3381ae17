"""The state ablation: one trained model scored four ways on the same origins, to measure what its parts add.

- as it runs: each origin's state warmed up over the `chunks - 1` chunks before it, as `predict` does;
- state reset: the state reset before every chunk, so nothing is carried from one chunk to the next;
- LSTM zeroed: the LSTM's output held at 0, so the forecast is the linear terms and the head without the history's
  encoding;
- linear only: the head's correction held at 0, so the forecast is the linear terms alone: the linear start (the
  ridge fit, which training keeps frozen), or for a model trained with `linear_start = false` the linear terms it
  learnt.

If resetting the state costs nothing, the stateful machinery buys nothing; if zeroing the LSTM costs nothing, the LSTM
does not earn its place in the forecast.
"""

from __future__ import annotations

import numpy as np

from forecast.ensemble import members_of
from forecast.model import all_layers, copy_model, has_network, reset_states
from forecast.runner import forecasts_at, stream_outputs
from forecast.sampler import OriginRange
from forecast.windowing import WindowBatcher

# The LSTM's bias is laid out as the input, forget, cell and output gates, `units` each; a very negative output gate
# bias makes the output gate exactly 0 in float32, so h = o * tanh(c) = 0 whatever the input.
_CLOSED_GATE = -1e4
# The dense layers that read the head out into the forecast (one in z-units, one scaled by the window's spread).
CORRECTION_LAYERS = ("head_correction", "head_scaled_correction")


def zeroed_lstm(model):
    """A copy of `model` (same batch size and weights) whose LSTM (each member's, in an ensemble) always outputs 0."""
    copy = copy_model(model)
    for member in members_of(copy):
        lstm = member.get_layer("history_lstm")
        kernel, recurrent, bias = lstm.get_weights()
        units = recurrent.shape[0]
        closed = np.zeros_like(bias)
        closed[3 * units :] = _CLOSED_GATE
        lstm.set_weights([np.zeros_like(kernel), np.zeros_like(recurrent), closed])
    return copy


def without_correction(model):
    """A copy of `model` whose correction head (each member's) outputs 0: the linear terms alone."""
    copy = copy_model(model)
    for layer in all_layers(copy):
        if layer.name in CORRECTION_LAYERS:
            layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    return copy


def ablation_forecasts(model, batcher: WindowBatcher, ranges: tuple[OriginRange, ...], chunks: int
                       ) -> dict[str, np.ndarray]:
    """The scaled forecasts (n_origins, H) of each way (`runner.forecasts_at`), keyed "model", "state_reset" (absent
    for a stateless model, where it is the same as "model"), "lstm_zeroed" and "linear_only".

    One pass over the streams: each group's state is warmed up as `forecasts_at` warms it, then its origins' chunk
    runs every way. The ways without warm-up get it from a fresh state, which is what they forecast after a warm-up
    too: a state reset is a fresh state at the origin, a zeroed LSTM's state stays exactly 0, and the linear terms
    never read the state (the correction they go without is exactly 0 whatever the state)."""
    if not has_network(model):  # a kept linear start: no state, LSTM or correction to take away
        return {"model": forecasts_at(model, batcher, ranges, chunks)}
    variants = {"lstm_zeroed": zeroed_lstm(model), "linear_only": without_correction(model)}

    def every_way(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = {"model": model.predict_on_batch(inputs)["prediction"]}
        if chunks > 1:
            reset_states(model)
            outputs["state_reset"] = model.predict_on_batch(inputs)["prediction"]
        for label, variant in variants.items():
            reset_states(variant)
            outputs[label] = variant.predict_on_batch(inputs)["prediction"]
        return outputs

    labels = ["model", *(["state_reset"] if chunks > 1 else []), *variants]
    outputs = stream_outputs(model, batcher, ranges, chunks, finish=every_way)
    return {label: outputs.get(label, np.empty((0, batcher.horizon), dtype="float32")) for label in labels}
