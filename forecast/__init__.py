"""Forecast time series in CSV files with a multi-input, stateful LSTM."""

from forecast.backend import quiet_tensorflow_start

__version__ = "0.1.0"

quiet_tensorflow_start()  # before any module imports TensorFlow, so that its start-up lines stay off the terminal
