"""Importing Keras on the TensorFlow backend, the only one that carries the LSTM state between batches."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

from forecast.errors import ForecastError

QUIET_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL that keeps TensorFlow's C++ notes, warnings and errors off the terminal


def keras() -> ModuleType:
    """Keras 3 on TensorFlow; another backend is refused because it silently drops the stateful LSTM's state."""
    _refuse(os.environ.setdefault("KERAS_BACKEND", "tensorflow"))
    quiet_tensorflow_start()
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


def quiet_tensorflow_start() -> None:
    """Keeps TensorFlow's start-up lines ("Could not find cuda drivers", "failed call to cuInit", "absl::InitializeLog")
    off the terminal, wherever TensorFlow is first imported in this process.

    TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow loads, and Abseil writes its first lines to file descriptor 2
    before any level applies, so the first `import tensorflow` runs with that descriptor held in a temporary file,
    shown only if the import fails. A user who sets TF_CPP_MIN_LOG_LEVEL to anything but 3 sees TensorFlow's lines.
    """
    if os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL) != QUIET_LEVEL or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the path finder does, with a loader that runs its import under `_held_native_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or name in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, finder: _QuietTensorFlowFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)  # once: the first import is the one that prints
        with _held_native_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


@contextlib.contextmanager
def _held_native_stderr() -> Iterator[None]:
    """File descriptor 2 (C++ code's standard error, and Python's) goes to a temporary file while the block runs; what
    was written there is shown only if the block raises, so a failed import still says why."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                sys.stderr.flush()
                os.dup2(saved, 2)
                held.seek(0)
                os.write(2, held.read())
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
