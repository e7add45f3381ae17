"""The linear start: ridge regression in closed form, and the model's linear terms set from it and frozen."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from forecast.config import Config
from forecast.data import load_series
from forecast.features import InputLayout, build_features, fit_scaler
from forecast.linear_start import LINEAR_TERMS, fit_linear_start, ridge_path
from forecast.model import build_model, summary_spans
from forecast.windowing import WindowBatcher

from conftest import span, CAMELS, head_csv


def test_ridge_path_matches_sklearn_for_each_penalty():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) + 3.0
    y = x @ rng.normal(size=(6, 2)) + 1.5 + rng.normal(scale=0.1, size=(200, 2))
    for penalty, (weights, intercept) in zip((1e-4, 0.1, 10.0), ridge_path(x, y, np.array([1e-4, 0.1, 10.0]))):
        reference = Ridge(alpha=penalty * len(x)).fit(x, y)
        np.testing.assert_allclose(weights, reference.coef_.T, atol=1e-8)
        np.testing.assert_allclose(intercept, reference.intercept_, atol=1e-8)


@pytest.fixture(scope="module")
def camels(tmp_path_factory):
    config = Config(target="OBS_RUN", sim=("MOD_RUN",), past=("PRCP",), lookback=30, horizon=3, batch_size=8,
                    units=4, head_units=4)
    series = load_series(head_csv(CAMELS, 700, tmp_path_factory.mktemp("linear") / "camels.csv"), config)
    features = build_features(series, fit_scaler(series, 500), config.horizon)
    layout = InputLayout.from_roles(series.roles, series.freq)
    return config, layout, WindowBatcher(features, config.lookback, config.horizon)


def test_the_started_model_forecasts_the_ridge_fit_and_freezes_it(camels):
    config, layout, batcher = camels
    model = build_model(config, layout, batch_size=8)
    fit = fit_linear_start(model, batcher, np.arange(29, 497), np.arange(499, 697), len(layout.calendar))
    n_spans = len(summary_spans(30))
    n_calendar = len(layout.calendar)
    history = 30 if fit.history == "lags" else n_spans
    covariates = 2 * n_spans if fit.covariates else 0  # PRCP and MOD_RUN
    assert fit.windows == 468 and fit.features == history + covariates + 3 * (1 + n_calendar * fit.calendar) + 2
    # Only the chosen inputs have weights.
    calendar_rows = model.get_layer("sim_residual").kernel.numpy().reshape(3, len(layout.sim), 3)[:, 1:, :]
    assert layout.sim[1:] == layout.calendar and (np.abs(calendar_rows).max() > 0) == fit.calendar
    summary = np.abs(model.get_layer("history_summary").kernel.numpy())
    assert (np.abs(model.get_layer("history_highway").kernel.numpy()).max() > 0) == (fit.history == "lags")
    assert (summary[:n_spans].max() > 0) == (fit.history == "means")
    assert (summary[n_spans:].max() > 0) == fit.covariates
    present = [name for name in LINEAR_TERMS if any(layer.name == name for layer in model.layers)]
    assert present == list(LINEAR_TERMS[:4])  # one series without attributes: no attribute terms
    assert all(not model.get_layer(name).trainable for name in present)
    assert np.abs(model.get_layer("sim_error_decay").kernel.numpy()).max() > 0
    origins = np.arange(499, 697)
    padded = np.pad(origins, (0, -len(origins) % 8), mode="edge")
    forecast = np.concatenate([np.asarray(model(batcher.inputs(batch))["prediction"]) for batch in padded.reshape(-1, 8)])
    target, _ = batcher.targets(origins, np.ones(len(origins), bool))
    # The correction starts at zero, so the model's forecast is the ridge fit's.
    assert np.mean((forecast[: len(origins)] - target) ** 2) == pytest.approx(fit.val_mse, rel=1e-4)
    repeat_mse = np.mean((target - batcher.last_values(origins)[:, None]) ** 2)
    assert fit.val_mse < repeat_mse  # daily runoff: the simulation's change beats persistence


def test_with_more_validation_origins_than_the_cap_the_choice_is_scored_on_all_of_them(camels, monkeypatch):
    """Above MAX_VALIDATION_ORIGINS the inputs are chosen on whole blocks of H, and the chosen fit's validation score,
    streamed a chunk of designs at a time, is its score on every validation origin."""
    from forecast import linear_start

    config, layout, batcher = camels
    origins = np.arange(499, 697)
    monkeypatch.setattr(linear_start, "MAX_VALIDATION_ORIGINS", 60)
    monkeypatch.setattr(linear_start, "DESIGN_CHUNK", 16)
    assert len(linear_start._thinned_blocks(origins, config.horizon)) == 60
    model = build_model(config, layout, batch_size=8)
    fit = fit_linear_start(model, batcher, np.arange(29, 497), origins, len(layout.calendar))
    padded = np.pad(origins, (0, -len(origins) % 8), mode="edge")
    forecast = np.concatenate([np.asarray(model(batcher.inputs(batch))["prediction"]) for batch in padded.reshape(-1, 8)])
    target, _ = batcher.targets(origins, np.ones(len(origins), bool))
    assert np.mean((forecast[: len(origins)] - target) ** 2) == pytest.approx(fit.val_mse, rel=1e-4)


def _started(tmp_path, covariate_drives_target: bool) -> object:
    """A daily series whose target is the mean of a covariate's last four values plus noise, or noise beside it."""
    rng = np.random.default_rng(3)
    driver = rng.normal(size=900)
    target = np.convolve(driver, np.ones(4) / 4)[:900] + 0.1 * rng.normal(size=900)
    if not covariate_drives_target:
        driver = rng.normal(size=900)
    frame = pd.DataFrame({"date": pd.date_range("2001-01-01", periods=900, freq="D"), "y": target, "x": driver})
    frame.to_csv(tmp_path / "series.csv", index=False)
    config = Config(target="y", past=("x",), lookback=16, horizon=2, batch_size=8, units=4, head_units=4)
    series = load_series(tmp_path / "series.csv", config)
    features = build_features(series, fit_scaler(series, 600), config.horizon, calendar=())
    layout = InputLayout.from_roles(series.roles, series.freq).with_calendar(())
    model = build_model(config, layout, batch_size=8)
    batcher = WindowBatcher(features, config.lookback, config.horizon)
    return fit_linear_start(model, batcher, np.arange(15, 597), np.arange(599, 897))


def test_covariates_enter_the_linear_start_only_when_they_clearly_help(tmp_path):
    helping = _started(tmp_path, covariate_drives_target=True)
    assert helping.covariates and helping.t > 2
    unrelated = _started(tmp_path, covariate_drives_target=False)
    assert (unrelated.history, unrelated.covariates, unrelated.calendar, unrelated.t) == ("lags", False, False, 0.0)


def test_with_gaps_the_linear_start_scores_the_origins_and_steps_training_validates_on(tmp_path):
    """One definition of a scored origin: its validation MSE is the one the end of training computes for the start."""
    from forecast.metrics import weighted_errors
    from forecast.model import predict_batches, stacked_batches
    from forecast.sampler import StreamPlan
    from forecast.windowing import materialise

    from conftest import BEIJING

    config = Config(target="pm2.5", time_columns=("year", "month", "day", "hour"), exclude=("No",), past=(),
                    lookback=24, horizon=6, batch_size=8, stream_chunks=2, units=4, head_units=4)
    series = load_series(head_csv(BEIJING, 2000, tmp_path / "beijing.csv"), config)  # 5 % of pm2.5 empty
    layout = InputLayout.from_roles(series.roles, series.freq)
    features = build_features(series, fit_scaler(series, 1400), config.horizon, calendar=layout.calendar)
    batcher = WindowBatcher(features, config.lookback, config.horizon)
    model = build_model(config, layout, batch_size=8)
    fit = fit_linear_start(model, batcher, np.arange(23, 1393), np.arange(1399, 1993), len(layout.calendar))
    scored = batcher.scored_origins(np.arange(1399, 1993))
    assert 0 < fit.windows < len(batcher.scored_origins(np.arange(23, 1393)))
    val_plan = StreamPlan(span(1399, 1992, config.lookback), config.lookback, 2, 8, shuffle=False)
    inputs, target, weight, _ = materialise(batcher, val_plan)
    assert np.count_nonzero(weight.any(axis=1)) == len(scored)
    assert np.count_nonzero(weight.any(axis=1) & ~weight.all(axis=1)) > 5  # origins with a gap in their horizon
    forecast = predict_batches(model, stacked_batches(inputs, 8), 2)
    assert fit.val_mse == pytest.approx(weighted_errors(forecast, target, weight)["mse"], rel=1e-5)


def test_attributes_give_each_series_its_own_linear_coefficients(tmp_path):
    """Four series whose persistence grows with an attribute (AR(1) coefficients 0.1 to 0.9): one pooled fit of the
    plain terms must share one coefficient; with the terms times the attribute it fits each series."""
    rng = np.random.default_rng(5)
    attribute = np.array([-1.0, -0.3, 0.3, 1.0])
    config = Config(target="y", past=(), lookback=8, horizon=2, batch_size=8, units=4, head_units=4)
    parts = []
    for index, value in enumerate(attribute):
        level = np.zeros(700)
        for row in range(1, 700):
            level[row] = (0.5 + 0.4 * value) * level[row - 1] + rng.normal()
        path = tmp_path / f"series_{index}.csv"
        pd.DataFrame({"date": pd.date_range("2001-01-01", periods=700, freq="D"), "y": level}).to_csv(path, index=False)
        series = load_series(path, config)
        parts.append(build_features(series, fit_scaler(series, 500), config.horizon, calendar=(),
                                    static=np.array([value], dtype="float32")))
    from forecast.features import stack

    features = stack(parts)
    layout = InputLayout.from_roles(series.roles, series.freq, static=("persistence",)).with_calendar(())
    batcher = WindowBatcher(features, config.lookback, config.horizon)
    train = np.concatenate([start + np.arange(7, 497) for start in features.starts])
    validation = np.concatenate([start + np.arange(499, 697) for start in features.starts])
    model = build_model(config.replace(attribute_terms=True), layout, batch_size=8)
    fit = fit_linear_start(model, batcher, train, validation)
    assert fit.attributes and fit.t > 2
    plain = build_model(config, layout, batch_size=8)  # attribute_terms off, the default
    without = fit_linear_start(plain, batcher, train, validation)
    assert not without.attributes and fit.val_mse < 0.95 * without.val_mse
