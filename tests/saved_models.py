"""Model directories for tests that need a saved model but not a trained one."""


def untrained_model(csv, config, root, train_rows: int, val_end: int | None, business_days: bool | None = None):
    """A complete model directory without training: the untrained network forecasts the last value (Repeat).
    `business_days` forces the grid the file is read on (None: detected, as training does)."""
    from forecast.data import load_series
    from forecast.features import InputLayout, fit_scaler
    from forecast.model import build_model
    from forecast.store import Schema, SeriesRecord
    from forecast.validation import row_digests

    series = load_series(csv, config, business_days)
    config = config.replace(past=series.roles.past)
    layout = InputLayout.from_roles(series.roles, series.freq)
    root.mkdir(parents=True)
    build_model(config, layout, config.batch_size).save(root / "model.keras")
    (root / "config.json").write_text(config.to_json())
    (root / "scaler.json").write_text(fit_scaler(series, train_rows).to_json())
    n = series.n_observed
    record = SeriesRecord("", train_rows, n, str(series.time[n - 1]), row_digests(series.time, series.values, n), val_end,
                          None if val_end is None else str(series.time[val_end - 1]))
    schema = Schema(series.freq, layout, (record,), series.columns, series.business_days)
    (root / "schema.json").write_text(schema.to_json())
    return root


def calibrated_model(csv, config, root, train_rows: int = 300, val_end: int = 450):
    """An untrained model (it forecasts the last value) with intervals calibrated on its validation rows."""
    from forecast.retraining import recalibrate

    model = untrained_model(csv, config, root, train_rows, val_end)
    recalibrate(csv, model, end=str(val_end))
    return model
