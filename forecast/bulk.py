"""Forecasting thousands of origins at once: training's gate and validation metrics, and the recent errors an interval
is recalibrated on.

A saved network runs at the batch size it was trained with (its stateful LSTM keeps B rows of state), so
`runner.forecasts_at` feeds it B origins a call, each after its warm-up chunks. The gate at the end of training (every
validation origin, for the trained network and for its start), the run's validation metrics and interval calibration,
and the errors a forecast's interval is calibrated on (forecast.recent_errors) need the forecasts at thousands of
origins (hundreds of thousands with many series), so `bulk_network` gives `forecasts_at` a copy of the network at a
larger batch instead: the same layers and weights, whose forecasts differ from the network's only by float rounding (a
matrix product groups its sums by the batch's shape), and whose warm-up chunks run through the stateful layers alone
(`state_advancer`: the head's forecast from a warm-up chunk is never used). Every forecast a command writes, and every
score `evaluate` prints, comes from the saved network itself.

Origins are rows of the feature arrays (`Features.starts`), as in forecast.sampler; forecasts are z-scored by each
origin's series.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from forecast.windowing import WindowBatcher

Advance = Callable[[dict[str, np.ndarray]], None]

# Past about this many rows a batch gains nothing (each step's gates fall out of the CPU's cache) and takes longer to
# trace; the bytes bound the history a batch holds for a long lookback with many channels.
MAX_ROWS = 2048
MAX_HISTORY_BYTES = 64 * 2**20
# Below this many batches of the network's own size, building and tracing a copy costs more than the calls it saves.
MIN_BATCHES = 8


def bulk_batch_size(n_origins: int, batch_size: int, history_bytes: int) -> int:
    """The batch size that forecasts `n_origins` origins in as few calls as `MAX_ROWS` and `MAX_HISTORY_BYTES` (with
    `history_bytes` per origin: T x history channels x 4) allow, split evenly, a multiple of the network's `batch_size`
    (B); B itself where fewer than `MIN_BATCHES` batches of B hold them all."""
    if math.ceil(n_origins / batch_size) < MIN_BATCHES:
        return batch_size
    rows = max(batch_size, min(MAX_ROWS, MAX_HISTORY_BYTES // max(history_bytes, 1)) // batch_size * batch_size)
    calls = math.ceil(n_origins / rows)
    return math.ceil(math.ceil(n_origins / calls) / batch_size) * batch_size


def state_advancer(model) -> Advance:
    """A function of a batch of inputs (by name, as `WindowBatcher.inputs` cuts them) that moves the state of every
    stateful layer of `model` (those of an ensemble's members too) exactly as a call of `model` would, without the
    rest of the network: one model per network holding stateful layers, from its inputs to those layers' outputs,
    sharing their state variables."""
    from forecast import backend
    from forecast.model import all_layers

    keras = backend.keras()
    networks = [model, *(layer for layer in all_layers(model) if isinstance(layer, keras.Model))]
    parts = []
    for network in networks:
        outputs = [layer.output for layer in network.layers if getattr(layer, "stateful", False)]
        if outputs:
            parts.append(keras.Model(network.inputs, [output[0] if isinstance(output, list) else output
                                                      for output in outputs]))

    def advance(inputs: dict[str, np.ndarray]) -> None:
        for part in parts:
            part.predict_on_batch({tensor.name: inputs[tensor.name] for tensor in part.inputs})

    return advance


def bulk_network(model, n_origins: int, batcher: WindowBatcher) -> tuple[object, Advance | None]:
    """The network and the warm-up (`runner.forecasts_at`'s `model` and `advance`) that forecast `n_origins` origins
    cut by `batcher` as `model` would, up to float rounding: a copy of `model` at `bulk_batch_size` with its
    `state_advancer`, or `model` itself (and None) where that is its own batch size or where `model` has no state
    (a kept linear start: one cheap call per B origins, no warm-up, no copy to build and trace)."""
    from forecast.model import copy_model, stateful_layers

    batch_size = int(model.inputs[0].shape[0])
    history = batcher.features.history
    size = bulk_batch_size(n_origins, batch_size, batcher.lookback * history.shape[1] * history.itemsize)
    if size == batch_size or not stateful_layers(model):
        return model, None
    copy = copy_model(model, size)
    return copy, state_advancer(copy)
