"""Importing Keras on the TensorFlow backend, the only one that carries the LSTM state between batches."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from forecast.errors import ForecastError


def keras() -> ModuleType:
    """Keras 3 on TensorFlow; another backend is refused because it silently drops the stateful LSTM's state."""
    _refuse(os.environ.setdefault("KERAS_BACKEND", "tensorflow"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_native_stderr():
        import keras as keras_module

    _refuse(keras_module.backend.backend())
    return keras_module


def _refuse(backend: str) -> None:
    if backend != "tensorflow":
        raise ForecastError(
            f"Keras is set to the {backend!r} backend (KERAS_BACKEND or ~/.keras/keras.json), which silently drops a "
            "stateful LSTM's state; forecast needs 'tensorflow': set KERAS_BACKEND=tensorflow"
        )


def device_name() -> str:
    """The device training runs on, for the log: the first GPU when TensorFlow sees one, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """TensorFlow's C++ start-up notes ("Could not find cuda drivers ...") bypass its log level; keep them out of logs."""
    if "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
