"""Forecast time series in CSV files with a multi-input, stateful LSTM."""

__version__ = "0.1.0"
