"""The linear start: the model's linear terms fitted in closed form by ridge regression before the network trains.

The forecast is the last value plus linear terms (the NLinear highway, the sim change, the target and sims at the
origin) plus the LSTM's correction. The linear terms alone are a linear model that ridge regression fits exactly in a
second, with the penalty chosen on the validation windows; gradient descent from zero reaches it slowly and, with the
correction training beside it, overfits on its way (on CAMELS day 1 the jointly trained model stopped below
persistence, while the same linear terms fitted by ridge beat persistence clearly). So train fits them first and
freezes them, and the LSTM learns only what a linear model cannot: the residual. The features are read from the model's
own graph, so they are exactly what the layers see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast import backend
from forecast.windowing import WindowBatcher

LINEAR_TERMS = ("history_highway", "sim_residual", "sim_error_decay")
MAX_ORIGINS = 20_000
PENALTIES = 10.0 ** np.arange(-7.0, 1.0)


@dataclass(frozen=True)
class LinearFit:
    """The chosen penalty (per training window), whether the calendar entered, and the validation MSE."""

    penalty: float
    calendar: bool
    val_mse: float
    features: int
    windows: int


def fit_linear_start(
    model, batcher: WindowBatcher, train_origins: np.ndarray, val_origins: np.ndarray, n_calendar: int = 0
) -> LinearFit | None:
    """Sets the linear terms' weights to the ridge fit on `train_origins` and freezes them; the correction head is
    untouched (it starts at zero). None, and nothing changed, when gaps leave no fully observed training or validation
    window.

    The penalty, and whether the last `n_calendar` sim channels (the calendar) enter the linear terms at all, are
    chosen on `val_origins`. A calendar term in a model of changes from the last value is a fixed drift per hour or
    weekday; where the window already shows the cycle it mostly adds coefficients to overfit (on ETTh1's validation
    rows, 0.0517 with it against 0.0516 without), while a seasonal river gains from it.
    """
    keras = backend.keras()
    probe = keras.Model(model.inputs, [model.get_layer(name).input for name in linear_terms(model)])
    x_train, y_train = _design(probe, batcher, _thinned(train_origins))
    x_val, y_val = _design(probe, batcher, val_origins)
    if len(x_train) < 2 or len(x_val) == 0:
        return None
    calendar = _calendar_columns(model, n_calendar)
    best = None
    for with_calendar in (True, False) if calendar.any() else (True,):
        columns = np.ones_like(calendar) if with_calendar else ~calendar
        for penalty, (weights, intercept) in zip(PENALTIES, ridge_path(x_train[:, columns], y_train, PENALTIES)):
            error = float(np.mean((x_val[:, columns] @ weights + intercept - y_val) ** 2))
            if best is None or error < best[0]:
                full = np.zeros((len(columns), y_train.shape[1]))
                full[columns] = weights
                best = (error, penalty, with_calendar, full, intercept)
    error, penalty, with_calendar, weights, intercept = best
    start = 0
    for name in linear_terms(model):
        layer = model.get_layer(name)
        width = layer.kernel.shape[0]
        bias = intercept if name == LINEAR_TERMS[0] else np.zeros_like(intercept)
        layer.set_weights([weights[start : start + width].astype("float32"), bias.astype("float32")])
        start += width
    freeze_linear_terms(model)
    return LinearFit(float(penalty), with_calendar, error, x_train.shape[1], len(x_train))


def _calendar_columns(model, n_calendar: int) -> np.ndarray:
    """A mask over the design's columns: True for the calendar channels of the flattened sim input."""
    masks = []
    for name in linear_terms(model):
        width = model.get_layer(name).kernel.shape[0]
        mask = np.zeros(width, dtype=bool)
        if name == "sim_residual" and n_calendar:
            n_sim = model.get_layer("sim_flat").input.shape[-1]
            mask = np.arange(width) % n_sim >= n_sim - n_calendar
        masks.append(mask)
    return np.concatenate(masks)


def linear_terms(model) -> list[str]:
    return [layer.name for layer in model.layers if layer.name in LINEAR_TERMS]


def freeze_linear_terms(model) -> None:
    """Keeps the linear fit fixed while the correction trains (call before compiling)."""
    for name in linear_terms(model):
        model.get_layer(name).trainable = False


def ridge_path(x: np.ndarray, y: np.ndarray, penalties: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge solutions (weights, intercept) of y on x for each penalty, the penalty scaled by the number of rows.

    One eigendecomposition of the centred Gram matrix serves every penalty; the intercept is not penalised.
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    eigenvalues, eigenvectors = np.linalg.eigh(xc.T @ xc)
    projected = eigenvectors.T @ (xc.T @ (y - y_mean))
    solutions = []
    for penalty in penalties:
        weights = eigenvectors @ (projected / (np.maximum(eigenvalues, 0.0) + penalty * len(x))[:, None])
        solutions.append((weights, y_mean - x_mean @ weights))
    return solutions


def _thinned(origins: np.ndarray) -> np.ndarray:
    """At most MAX_ORIGINS evenly spread origins: plenty for a few thousand coefficients, and memory stays bounded."""
    if len(origins) <= MAX_ORIGINS:
        return origins
    return origins[np.linspace(0, len(origins) - 1, MAX_ORIGINS).round().astype(int)]


def _design(probe, batcher: WindowBatcher, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linear terms' inputs side by side (n, features) and the target change from the last value (n, H), for the
    origins whose whole horizon is observed."""
    target, weight = batcher.targets(origins, np.ones(len(origins), dtype=bool))
    observed = weight.all(axis=1)
    origins, target = origins[observed], target[observed]
    batch_size = probe.inputs[0].shape[0]
    padded = np.pad(origins, (0, -len(origins) % batch_size), mode="edge")
    parts = []
    for start in range(0, len(padded), batch_size):
        # A direct call, not predict_on_batch: under a distribution strategy that would split the batch by replica.
        outputs = probe(batcher.inputs(padded[start : start + batch_size]), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        parts.append(np.concatenate([np.asarray(part).reshape(batch_size, -1) for part in outputs], axis=1))
    design = np.concatenate(parts)[: len(origins)].astype("float64")
    return design, target.astype("float64") - batcher.last_values(origins)[:, None]
