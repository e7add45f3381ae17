"""The linear start: the model's linear terms fitted in closed form by ridge regression before the network trains.

The forecast is the last value plus linear terms (the NLinear highway, the history's multi-scale means, the sim change,
the target and sims at the origin) plus the LSTM's correction. The linear terms alone are a linear model that ridge
regression fits exactly in closed form, with the penalty chosen on the validation windows; gradient descent from zero
reaches it slowly and, with the correction training beside it, overfits on its way. So train fits them first and
freezes them, and the LSTM learns only what a linear model cannot: the residual. The features are read from the
model's own graph, so they are exactly what the layers see.

Origins are rows of the feature arrays (`Features.starts`, as in forecast.sampler); targets and forecasts are z-scored
by each origin's series, and the linear terms fit the target's change from its last value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast import backend
from forecast.criterion import (improvement, origin_losses, score, score_weights, step_weights,
                                streamed_origin_weights)
from forecast.windowing import WindowBatcher

LINEAR_TERMS = ("history_highway", "history_summary", "sim_residual", "sim_error_decay", "attribute_interaction")
MAX_ORIGINS = 20_000
MAX_VALIDATION_ORIGINS = 50_000  # the choice of inputs is made on at most this many, in whole blocks of H
DESIGN_CHUNK = 8_192  # validation origins whose design rows are held at once when the chosen fit is scored on all
PENALTIES = 10.0 ** np.arange(-7.0, 1.0)


@dataclass(frozen=True)
class LinearFit:
    """The chosen inputs (`history` "lags" or "means", `covariates`, `calendar` and `attributes` in or not) and ridge
    `penalty` (per training window), the validation score `val_mse` (`criterion.score`: a weighted MSE in squared
    z-units), how surely the choice beats the plain NLinear-with-sims fit (`t`, 0 when that plain fit is the choice),
    the number of inputs it uses (`features`), the training windows it was fitted on (`windows`), and the validation
    `blocks` the choice rests on."""

    history: str
    covariates: bool
    calendar: bool
    penalty: float
    val_mse: float
    t: float
    features: int
    windows: int
    blocks: int = 0  # independent blocks of H validation origins behind the choice; fewer than MIN_BLOCKS keep lags
    attributes: bool = False  # the terms times the series' attributes (model.AttributeProducts) in


def fit_linear_start(
    model, batcher: WindowBatcher, train_origins: np.ndarray, val_origins: np.ndarray, n_calendar: int = 0
) -> LinearFit | None:
    """Sets the linear terms' weights of `model` to the ridge fit on `train_origins` (n,) and freezes them, returning
    the `LinearFit`; the correction head is untouched (it starts at zero). Windows are cut by `batcher`; origins are
    rows of the feature arrays. The fit uses, of at most MAX_ORIGINS training origins evenly spread, those whose
    whole horizon is observed; None, and nothing changed, when gaps leave fewer than two such training origins or no
    validation origin with an observed step.

    Which inputs enter is chosen on `val_origins` (m,), scored as training's validation scores them: every origin with
    an observed step, by `criterion.score` over all observed steps. The choices: the target's history as one
    coefficient per lag or as multi-scale means, the past covariates' multi-scale means or not, the calendar (the last
    `n_calendar` channels of the sim input; 0: none) or not, and for many series with attributes, the terms times the
    attributes or not. The plain fit (lags, no covariates, no calendar, no attributes) is kept unless another beats it
    clearly (`Improvement.clear`: at least MIN_BLOCKS blocks of H validation origins and a t statistic above the
    Student t threshold for their number, at least SIGNIFICANT_T): a small gain in validation MSE from more inputs is
    as often a loss on the test rows. With more than MAX_VALIDATION_ORIGINS validation origins the choice is made on
    evenly spread blocks of H consecutive ones, and the chosen fit's `val_mse` on all of them, a chunk at a time, so
    that memory stays bounded with many series.
    """
    probe = _probe(model)
    candidates = _candidates(_column_roles(model, n_calendar))
    choice_origins = _thinned_blocks(val_origins, batcher.horizon)
    chosen = _choose(probe, batcher, _thinned(train_origins), choice_origins, candidates)
    if chosen is None:
        return None
    best, best_t, blocks, penalty, weights, intercept, mse, windows = chosen
    if len(choice_origins) < len(val_origins):
        mse = _streamed_score(probe, batcher, val_origins, weights, intercept)
    start = 0
    for name in linear_terms(model):
        layer = model.get_layer(name)
        width = layer.kernel.shape[0]
        bias = intercept if name == LINEAR_TERMS[0] else np.zeros_like(intercept)
        layer.set_weights([weights[start : start + width].astype("float32"), bias.astype("float32")])
        start += width
    freeze_linear_terms(model)
    history, covariates, calendar, attributes = best
    n_inputs = int(candidates[best].sum())
    return LinearFit(
        history, covariates, calendar, float(penalty), float(mse), best_t, n_inputs, windows, blocks, attributes
    )


def _choose(probe, batcher: WindowBatcher, train_origins: np.ndarray, val_origins: np.ndarray,
            candidates: dict[tuple[str, bool, bool, bool], np.ndarray]) -> tuple | None:
    """The ridge fit of each candidate set of inputs (`_candidates`) on `train_origins` (n,), each with the penalty
    that scores best on `val_origins` (m,), and the choice among them (see `fit_linear_start`): (the choice, its t
    against the plain fit, the validation blocks, penalty, weights (features, H), intercept (H,), validation score,
    training windows fitted on); None when gaps leave fewer than two training windows or no validation origin. The
    designs live only here, so that they are freed before the chosen fit is scored on every validation origin."""
    x_train, y_train, _, _ = _design(probe, batcher, train_origins, whole_horizon=True)
    x_val, y_val, w_val, val_scored = _design(probe, batcher, val_origins, whole_horizon=False)
    if len(x_train) < 2 or len(x_val) == 0:
        return None
    horizon = y_train.shape[1]
    # Scored as the whole run scores validation (criterion.score): each series against its own spread, capped.
    val_target, _ = batcher.targets(val_scored, np.ones(len(val_scored), dtype=bool))
    scored_weights = score_weights(batcher.features.series_of(val_scored), val_target, w_val).astype("float64")
    del val_target, w_val
    fits = {}
    for choice, columns in candidates.items():
        path = ridge_path(x_train[:, columns].astype("float64"), y_train, PENALTIES)
        x_columns = x_val[:, columns].astype("float64")  # after the fit: the two copies are never held at once
        for penalty, (weights, intercept) in zip(PENALTIES, path):
            forecast = x_columns @ weights + intercept
            mse = score(forecast, y_val, scored_weights)
            if choice not in fits or mse < fits[choice][4]:
                full = np.zeros((len(columns), horizon))
                full[columns] = weights
                fits[choice] = (origin_losses(forecast, y_val, scored_weights), penalty, full, intercept, mse)
        del x_columns
    plain = ("lags", False, False, False)
    best, best_t, blocks = plain, 0.0, 0
    for choice, (errors, *_, mse) in fits.items():
        verdict = improvement(fits[plain][0], errors, val_scored, horizon)
        blocks = verdict.blocks
        if verdict.clear and mse < fits[best][4]:
            best, best_t = choice, verdict.t
    _, penalty, weights, intercept, mse = fits[best]
    return best, best_t, blocks, penalty, weights, intercept, mse, len(x_train)


def _column_roles(model, n_calendar: int) -> np.ndarray:
    """What each column of the design is: "lags" (the target's), "target_means", "covariate_means", "calendar" (the
    calendar channels of the flattened sim input), "attributes" (products with the series' attributes), or "always"
    (the sim terms every candidate has)."""
    roles = []
    for name in linear_terms(model):
        column = np.arange(model.get_layer(name).kernel.shape[0])
        role = np.full(len(column), "always", dtype=object)
        if name == "history_highway":
            role[:] = "lags"
        elif name == "history_summary":
            role[:] = np.where(column < len(model.get_layer("history_means").spans), "target_means", "covariate_means")
        elif name == "sim_residual" and n_calendar:
            n_sim = model.get_layer("sim_flat").input.shape[-1]
            role[column % n_sim >= n_sim - n_calendar] = "calendar"
        elif name == "attribute_interaction":
            role[:] = "attributes"
        roles.append(role)
    return np.concatenate(roles)


def _candidates(roles: np.ndarray) -> dict[tuple[str, bool, bool, bool], np.ndarray]:
    """The column sets to choose from, keyed by (history as "lags" or "means", covariates in, calendar in,
    attributes in)."""
    candidates = {}
    options = {role: (False, True) if (roles == role).any() else (False,)
               for role in ("covariate_means", "calendar", "attributes")}
    for history in ("lags", "means"):
        for covariates in options["covariate_means"]:
            for calendar in options["calendar"]:
                for attributes in options["attributes"]:
                    chosen = ["always", "lags" if history == "lags" else "target_means"]
                    chosen += ["covariate_means"] * covariates + ["calendar"] * calendar
                    chosen += ["attributes"] * attributes
                    candidates[(history, covariates, calendar, attributes)] = np.isin(roles, chosen)
    return candidates


def linear_terms(model) -> list[str]:
    """The names of `model`'s linear-term layers (those of LINEAR_TERMS it has), in the model's layer order."""
    return [layer.name for layer in model.layers if layer.name in LINEAR_TERMS]


def copy_linear_terms(source, model) -> None:
    """Gives `model` the linear terms of `source` (a network of the same layout) and freezes them: the members of an
    ensemble share one ridge fit, which is deterministic, so it is fitted once."""
    for name in linear_terms(source):
        model.get_layer(name).set_weights(source.get_layer(name).get_weights())
    freeze_linear_terms(model)


def freeze_linear_terms(model) -> None:
    """Makes the linear terms of `model` untrainable, so the linear fit stays fixed while the correction trains (call
    before compiling)."""
    for name in linear_terms(model):
        model.get_layer(name).trainable = False


def ridge_path(x: np.ndarray, y: np.ndarray, penalties: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge solutions of `y` (n, H) on `x` (n, p), one (weights (p, H), intercept (H,)) per penalty of `penalties`
    (k,), in order, each penalty scaled by the number of rows n; weights and intercept are in the units of `y`
    (per unit of `x` for the weights).

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


def _thinned_blocks(origins: np.ndarray, block: int) -> np.ndarray:
    """At most MAX_VALIDATION_ORIGINS of `origins` (n,), as evenly spread whole blocks of `block` consecutive ones:
    the paired test that decides the choice of inputs averages over such blocks."""
    if len(origins) <= MAX_VALIDATION_ORIGINS:
        return origins
    n_blocks = len(origins) // block
    chosen = np.linspace(0, n_blocks - 1, MAX_VALIDATION_ORIGINS // block).round().astype(int)
    return origins[(chosen[:, None] * block + np.arange(block)[None, :]).reshape(-1)]


def _streamed_score(probe, batcher: WindowBatcher, origins: np.ndarray, weights: np.ndarray, intercept: np.ndarray
                    ) -> float:
    """`criterion.score` of the linear fit (`weights` (features, H), `intercept` (H,)) over every origin of `origins`
    with an observed step, their targets and designs cut DESIGN_CHUNK origins at a time: nothing of (n, H) is held."""
    origins = batcher.scored_origins(origins)

    def targets(part: slice) -> tuple[np.ndarray, np.ndarray]:
        chosen = origins[part]
        return batcher.targets(chosen, np.ones(len(chosen), dtype=bool))

    # Each origin's series weight (as criterion.score_weights makes them), then its steps' weights a chunk at a time.
    per_origin = streamed_origin_weights(batcher.features.series_of(origins), targets)
    total = weights_sum = 0.0
    for start in range(0, len(origins), DESIGN_CHUNK):
        part = slice(start, start + DESIGN_CHUNK)
        design, change, weight, _ = _design(probe, batcher, origins[part], whole_horizon=False)
        scored_weights = step_weights(weight, per_origin[part]).astype("float64")
        forecast = design.astype("float64") @ weights + intercept
        total += float(((forecast - change) ** 2 * scored_weights).sum())
        weights_sum += float(scored_weights.sum())
    return total / weights_sum if weights_sum > 0 else float("nan")


def _probe(model):
    """The linear terms' inputs of `model` as one compiled function of a batch of its inputs (B rows, the model's
    fixed batch size): what each linear layer sees, concatenated (B, features). Compiled, because the design is cut
    batch by batch over tens of thousands of origins."""
    import tensorflow as tf

    keras = backend.keras()
    probe = keras.Model(model.inputs, [model.get_layer(name).input for name in linear_terms(model)])
    batch_size = probe.inputs[0].shape[0]

    # A direct call, not predict_on_batch: under a distribution strategy that would split the batch by replica.
    @tf.function
    def design_rows(inputs):
        outputs = probe(inputs, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return tf.concat([tf.reshape(part, (batch_size, -1)) for part in outputs], axis=1)

    design_rows.batch_size = batch_size
    return design_rows


def _design(
    probe, batcher: WindowBatcher, origins: np.ndarray, whole_horizon: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The linear terms' inputs side by side (n, features; float32, as the model computes them: half the memory of the
    float64 the fit computes in, which holds them exactly), the target change from the last value (n, H, 0 at gaps),
    its weights (n, H: 1 where observed) and the origins: those whose whole horizon is observed (`whole_horizon`, to
    fit on), else every origin with an observed step, the origins training and validation score."""
    target, weight = batcher.targets(origins, np.ones(len(origins), dtype=bool))
    observed = weight.all(axis=1) if whole_horizon else weight.any(axis=1)
    origins, target, weight = origins[observed], target[observed], weight[observed]
    batch_size = probe.batch_size
    padded = np.pad(origins, (0, -len(origins) % batch_size), mode="edge")
    design = np.empty((len(padded), 0))
    for start in range(0, len(padded), batch_size):
        rows = np.asarray(probe(batcher.inputs(padded[start : start + batch_size])))
        if not start:
            design = np.empty((len(padded), rows.shape[1]), dtype=rows.dtype)
        design[start : start + batch_size] = rows
    design = design[: len(origins)]
    change = np.where(weight > 0, target.astype("float64") - batcher.last_values(origins)[:, None], 0.0)
    return design, change, weight.astype("float64"), origins
