"""Writing a trained version's files (the network, its JSON files and the training picture) into staging."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from forecast.config import Config
from forecast.store import (
    CONFIG_FILE,
    HISTORY_FILE,
    INTERVALS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SCALER_FILE,
    SCHEMA_FILE,
    STATICS_FILE,
    TRAINING_PLOT,
    Schema,
    SeriesRecord,
    write_json,
)
from forecast.validation import row_digests

if TYPE_CHECKING:
    from forecast.training_data import TrainingData


def write_version(staging: Path, model, config: Config, data: TrainingData, history: pd.DataFrame, metrics: dict,
                   start_from: Path | None, calibration) -> None:
    """Writes the network, its JSON files (the interval `calibration` too, where there is one) and the training
    picture into `staging`."""
    model.save(staging / MODEL_FILE)
    if calibration is not None:
        (staging / INTERVALS_FILE).write_text(calibration.to_json() + "\n", encoding="utf-8")
    (staging / CONFIG_FILE).write_text(config.to_json() + "\n", encoding="utf-8")
    (staging / SCALER_FILE).write_text(data.scalers.to_json() + "\n", encoding="utf-8")
    if data.statics is not None:
        (staging / STATICS_FILE).write_text(data.statics.to_json() + "\n", encoding="utf-8")
    records = tuple(
        SeriesRecord(series.id, split.train_end, series.n_observed, str(series.time[series.n_observed - 1]),
                     row_digests(series.time, series.values, series.n_observed), split.val_end,
                     str(series.time[split.val_end - 1]), str(series.time[split.train_end - 1]))
        for series, split in zip(data.collection.series, data.splits)
    )
    first = data.collection.first
    schema = Schema(first.freq, data.layout, records, first.columns, first.business_days, config.holdout_series)
    (staging / SCHEMA_FILE).write_text(schema.to_json() + "\n", encoding="utf-8")
    earlier = [pd.read_csv(start_from / HISTORY_FILE)] if start_from and (start_from / HISTORY_FILE).is_file() else []
    full_history = pd.concat([*earlier, history])
    full_history.to_csv(staging / HISTORY_FILE, index=False)
    write_json(staging / METRICS_FILE, metrics)
    from forecast.plots import plot_training

    plot_training(full_history, metrics, staging / TRAINING_PLOT)
