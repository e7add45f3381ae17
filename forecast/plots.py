"""Pictures, written as PNG files: a forecast with its interval bands and its sim columns, a training run's learning
curves, and an evaluation's error per horizon step and, for many series, its distribution of NSE over series.

Each picture is built by a `*_figure` function (which tests inspect) and written by its `plot_*` function.

matplotlib is imported inside each function, with the non-interactive Agg backend, so that commands which draw nothing
never load it and no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.errors import ForecastError
from forecast.intervals import interval_name, interval_pairs

if TYPE_CHECKING:
    from forecast.prediction import Forecast

SIZE = (10, 5)  # inches; at DPI 100 every picture is 1000 x 500 pixels (the forecast's taller by its sim panels)
DPI = 100
MODEL_COLOUR, TRUTH_COLOUR, HISTORY_COLOUR, SIM_COLOUR = "tab:blue", "black", "0.35", "tab:green"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _save(figure, path: Path) -> Path:
    """Writes the figure to `path` (a PNG) through a temporary file, so a reader never sees half a picture."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ForecastError(f"{path}: pictures are written as PNG; give a file name ending in .png")
    if not path.parent.is_dir():
        raise ForecastError(f"{path}: the folder {path.parent} does not exist; create it or name another")
    partial = path.with_name(f".{path.stem}.partial.png")
    figure.savefig(partial, dpi=DPI, format="png")
    _pyplot().close(figure)
    partial.replace(path)
    return path


def context_rows(horizon: int, lookback: int) -> int:
    """How much history a forecast picture shows before the origin: four horizons, at least 48 rows, at most the
    window the model reads."""
    return min(lookback, max(4 * horizon, 48))


def plot_forecast(forecast: Forecast, path: Path) -> Path:
    """Draws `forecast_figure` into the PNG file `path`."""
    return _save(forecast_figure(forecast), path)


def forecast_figure(forecast: Forecast):
    """The last stretch of history, the point forecast with its interval bands (the outermost pair lightest), the
    truth where the data holds it (an origin inside the data), and below it the sim columns over history and horizon,
    each in a small panel on its own scale (`sim_panels`); values in the target's units. The title names the series,
    the target and its units (`target_units`, where set) and the panel how the origin was chosen."""
    from forecast.prediction import time_label

    pyplot = _pyplot()
    series, frame, config = forecast.series, forecast.frame, forecast.saved.config
    target, time_name = series.roles.target, series.time_name
    first = max(forecast.origin + 1 - context_rows(config.horizon, config.lookback), 0)
    shown = slice(first, forecast.origin + 1)
    ahead = slice(forecast.origin + 1, forecast.origin + 1 + config.horizon)
    panels = sim_panels(forecast.saved.schema.layout.sim_columns)
    # The sim panels take an inch each, and together at least SIM_HEIGHT inches.
    below = max(SIM_HEIGHT, float(len(panels))) if panels else 0.0
    figure, axes = pyplot.subplots(
        1 + len(panels), 1, figsize=(SIZE[0], SIZE[1] + below), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [SIZE[1]] + [below / max(len(panels), 1)] * len(panels)}, layout="constrained",
    )
    top = axes[0, 0]
    history = series.values[target].to_numpy()
    top.plot(series.time[shown], history[shown], color=HISTORY_COLOUR, linewidth=1.2, label="history")
    times = pd.DatetimeIndex(frame[time_name])
    # The bands and the line start at the last observation, so the forecast visibly continues the history.
    joined = times.insert(0, series.time[forecast.origin])
    last = history[forecast.origin]
    columns = forecast.quantile_columns
    if columns:
        quantiles = forecast.saved.intervals.quantiles
        pairs = interval_pairs(quantiles)
        for depth, (low, high) in enumerate(pairs):
            top.fill_between(
                joined, np.r_[last, frame[columns[low]]], np.r_[last, frame[columns[high]]], color=MODEL_COLOUR,
                alpha=0.15 + 0.2 * depth / max(len(pairs), 1), linewidth=0,
                label=f"{interval_name(quantiles[low], quantiles[high])} interval",
            )
    top.plot(joined, np.r_[last, frame[target]], color=MODEL_COLOUR, linewidth=2, marker="o", markersize=3,
             label="forecast")
    truth = history[ahead]
    if np.isfinite(truth).any():
        top.plot(series.time[ahead], truth, color=TRUTH_COLOUR, linewidth=1.2, marker="x", markersize=4,
                 label="observed")
    top.axvline(series.time[forecast.origin], color="0.6", linestyle=":", linewidth=1)
    units = config.target_units.replace("$", r"\$")  # not matplotlib's math
    measured = f"{target} ({units})" if units else target
    top.set_ylabel(measured)
    name = series.id or Path(series.path).stem
    figure.suptitle(f"{name}: {measured}, forecast of {config.horizon} steps from {time_label(series, forecast.origin)}")
    if forecast.origin_note:
        top.set_title(forecast.origin_note, fontsize="small", color="0.3")
    top.legend(loc="best", fontsize="small", framealpha=0.8)
    top.grid(alpha=0.3)
    span = slice(first, forecast.origin + 1 + config.horizon)
    for axis, names in zip(axes[1:, 0], panels):
        _sim_panel(axis, series, names, span)
        axis.axvspan(series.time[forecast.origin], times[-1], color=SIM_COLOUR, alpha=0.08, linewidth=0)
        axis.axvline(series.time[forecast.origin], color="0.6", linestyle=":", linewidth=1)
    figure.autofmt_xdate()
    return figure


SIM_HEIGHT = 1.5  # inches
MAX_SIM_PANELS = 6


def sim_panels(sims: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The sim columns of each small panel: one each, or with more than MAX_SIM_PANELS columns, the first ones each
    alone and the rest together in the last panel, each of those scaled to [0, 1]."""
    if len(sims) <= MAX_SIM_PANELS:
        return [(name,) for name in sims]
    return [(name,) for name in sims[: MAX_SIM_PANELS - 1]] + [tuple(sims[MAX_SIM_PANELS - 1 :])]


def _sim_panel(axis, series, names: tuple[str, ...], span: slice) -> None:
    """One small panel: a sim column on its own scale (the units are not known: the column names it), or several,
    each scaled to [0, 1], so that a column of large numbers (day length in seconds) cannot flatten a small one."""
    for name in names:
        values = series.values[name].to_numpy()[span]
        if len(names) > 1:
            low, high = np.nanmin(values), np.nanmax(values)
            values = (values - low) / (high - low) if high > low else values - low
        axis.plot(series.time[span][: len(values)], values, color=SIM_COLOUR if len(names) == 1 else None,
                  linewidth=1.2, label=name)
    label = names[0] if len(names) == 1 else "scaled to 0-1"
    axis.text(0.005, 0.92, f"{label} (sim)", transform=axis.transAxes, fontsize="small", va="top",
              bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
    if len(names) > 1:
        axis.legend(loc="upper right", fontsize="x-small", frameon=False, ncol=min(len(names), 4))
    axis.tick_params(labelsize="x-small")
    axis.grid(alpha=0.3)


def plot_training(history: pd.DataFrame, metrics: dict, path: Path) -> Path:
    """Draws `training_figure` into the PNG file `path`."""
    return _save(training_figure(history, metrics), path)


def training_figure(history: pd.DataFrame, metrics: dict):
    """Training loss and validation MSE per epoch (z-units; an ensemble's for each network), with Repeat's and the
    linear start's validation MSE as horizontal lines, and the epoch whose weights were kept marked; where the gate
    kept the start instead (`discarded_network`), the title and a box say that the network was discarded."""
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=SIZE, layout="constrained")
    # An ensemble's history holds each network's epochs in turn (its `member` column): one pair of curves each.
    networks = history.groupby("member") if "member" in history else [(None, history)]
    for index, (member, epochs) in enumerate(networks):
        suffix = "" if member is None else f", network {member + 1}"
        alpha = 1.0 if index == 0 else 0.45
        axis.plot(epochs["epoch"], epochs["loss"], marker="o", markersize=3, color="tab:orange", alpha=alpha,
                  label=f"training loss{suffix}" if index == 0 else None)
        axis.plot(epochs["epoch"], epochs["val_mse"], marker="o", markersize=3, color=MODEL_COLOUR, alpha=alpha,
                  label=f"validation MSE{suffix}" if index == 0 else None)
    repeat = metrics.get("validation", {}).get("repeat", {}).get("mse")
    linear = (metrics.get("linear_start") or {}).get("val_mse")
    for level, label, style in ((repeat, "Repeat (last value)", "--"), (linear, "linear start", "-.")):
        if level is not None:
            axis.axhline(level, color="0.3", linestyle=style, linewidth=1.2, label=f"{label}: {level:.4f}")
    kept = metrics.get("member_epochs") or [metrics.get("epochs")]
    for index, epoch in enumerate(epoch for epoch in kept if epoch):
        label = f"kept: epoch {epoch}" if len(kept) == 1 else "kept: each network's epoch" if index == 0 else None
        axis.axvline(epoch, color="tab:green", linestyle=":", linewidth=1.2, label=label)
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlim(0, max(int(history["epoch"].max()), 1) + 0.5)  # epoch 0 is the linear start
    levels = np.array([*history["loss"], *history["val_mse"], *(level for level in (repeat, linear) if level)], float)
    levels = levels[np.isfinite(levels) & (levels > 0)]
    if levels.size and levels.max() > 10 * levels.min():
        axis.set_yscale("log")  # Repeat often lies far above the rest; a log scale keeps the curves apart
    axis.set_xlabel("epoch")
    axis.set_ylabel("MSE (z-scored)")
    axis.set_title(f"training: {metrics.get('model_kind', '')}", fontsize="medium")
    discarded = discarded_network(metrics)
    if discarded:
        # The curves show what the network reached, which the gate judged no better than the start: say what was kept.
        figure.suptitle(discarded, color="tab:red", fontsize="large")
        axis.text(0.5, 0.5, "network discarded\n" + ("linear start kept" if metrics.get("kept_linear_start")
                                                   else "start weights kept"),
                  transform=axis.transAxes, ha="center", va="center", fontsize="x-large", color="tab:red", alpha=0.8,
                  bbox={"facecolor": "white", "edgecolor": "tab:red", "alpha": 0.85, "boxstyle": "round"})
    axis.legend(loc="best", fontsize="small", framealpha=0.85)  # a frame keeps it readable over the level lines
    axis.grid(alpha=0.3)
    return figure


def discarded_network(metrics: dict) -> str:
    """What `training.png` says where the gate discarded the trained network and kept the weights it started from
    (the linear start, or a warm retrain's current version); "" where the network was kept."""
    if metrics.get("kept_linear_start"):
        return "the network was discarded: the model is its linear start, which the gate kept"
    if metrics.get("kept_start_weights"):
        return "the network was discarded: the gate kept the weights it started from"
    return ""


STEP_LABELS = {"model": "model", "repeat": "Repeat", "seasonal_naive": "seasonal naive", "linear_only": "linear start",
               "lstm_zeroed": "LSTM zeroed", "state_reset": "state reset"}


SERIES_FORECASTERS = {"model": "model", "repeat": "Repeat", "seasonal_naive": "seasonal naive"}


def plot_series_nse(per_series: pd.DataFrame, title: str, path: Path) -> Path:
    """Draws `series_nse_figure` into the PNG file `path`."""
    return _save(series_nse_figure(per_series, title), path)


def series_nse_figure(per_series: pd.DataFrame, title: str):
    """The distribution over series of NSE at the first and the last horizon step (evaluate's per-series table), one
    line per forecaster (the model and the baselines, not the ablations): NSE sorted against the fraction of series
    at or below it, clipped to [-1, 1] so that one very poor series does not squash the rest against 1."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(1, 2, figsize=SIZE, sharey=True, squeeze=False, layout="constrained")
    for axis, (column, name) in zip(axes[0], (("nse_first_step", "step 1"), ("nse_last_step", "last step"))):
        for label, shown in SERIES_FORECASTERS.items():
            values = np.sort(per_series.loc[per_series["forecaster"] == label, column].dropna().to_numpy())
            if values.size:
                # From 0 at the lowest NSE, rising by 1/n at each series' NSE.
                fraction = np.arange(values.size + 1) / values.size
                axis.step(np.clip(np.r_[values[0], values], -1, 1), fraction, where="post",
                          linewidth=2.2 if label == "model" else 1.2,
                          label=f"{shown} (median {np.median(values):.2f})")
        axis.set_xlim(-1.02, 1.02)
        axis.set_ylim(0, 1)
        axis.set_xlabel(f"NSE at {name} (clipped to [-1, 1])")
        axis.set_title(f"NSE per series, {name}", fontsize="medium")
        axis.legend(loc="upper left", fontsize="small", frameon=False)
        axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel("fraction of series")
    figure.suptitle(title)
    return figure


def plot_steps(per_step: pd.DataFrame, title: str, path: Path) -> Path:
    """Draws `steps_figure` into the PNG file `path`."""
    return _save(steps_figure(per_step, title), path)


def steps_figure(per_step: pd.DataFrame, title: str):
    """MSE per horizon step (z-units) of the model and each baseline in `per_step` (evaluate's table), and where the
    model has intervals, each interval's coverage per step for the model and the naive interval next to its nominal."""
    pyplot = _pyplot()
    coverage = [column for column in per_step if "_coverage_" in column]
    figure, axes = pyplot.subplots(1, 2 if coverage else 1, figsize=SIZE, squeeze=False, layout="constrained")
    errors = axes[0, 0]
    for label, name in STEP_LABELS.items():
        if f"{label}_mse" in per_step:
            errors.plot(per_step["step"], per_step[f"{label}_mse"], marker="o", markersize=3, label=name,
                        linewidth=2.2 if label == "model" else 1.2)
    errors.set_xlabel("horizon step")
    errors.set_ylabel("MSE (z-scored)")
    errors.set_title("error per step", fontsize="medium")
    errors.legend(fontsize="small", frameon=False)
    errors.grid(alpha=0.3)
    if coverage:
        covered = axes[0, 1]
        for column in coverage:
            label, interval = column.split("_coverage_")
            covered.plot(per_step["step"], per_step[column], marker="o", markersize=3,
                         linestyle="-" if label == "model" else "--", label=f"{label} {interval}")
            covered.axhline(float(interval.rstrip("%")) / 100, color="0.5", linestyle=":", linewidth=1)
        covered.set_xlabel("horizon step")
        covered.set_ylabel("coverage")
        covered.set_ylim(0, 1)
        covered.set_title("interval coverage per step (dotted: nominal)", fontsize="medium")
        covered.legend(fontsize="small", frameon=False, loc="lower left")
        covered.grid(alpha=0.3)
    figure.suptitle(title)
    return figure


def plot_tune(trials: pd.DataFrame, path: Path) -> Path:
    """Draws `tune_figure` into the PNG file `path`."""
    return _save(tune_figure(trials), path)


TRIAL_MARKS = {"finished": ("o", MODEL_COLOUR), "stopped": ("v", "0.55")}


def tune_figure(trials: pd.DataFrame):
    """A settings search (`forecast tune`'s table: `trial`, `status`, `score`): each trial's validation score against
    its number, the finished trials' best so far as a step line, the best trial starred; the trials stopped early
    at their best epoch's score, and the failed ones named at the bottom."""
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=SIZE, layout="constrained")
    for status, (marker, colour) in TRIAL_MARKS.items():
        shown = trials[(trials["status"] == status) & np.isfinite(trials["score"].astype(float))]
        label = "finished (the kept model's score)" if status == "finished" else "stopped early (best epoch's score)"
        axis.scatter(shown["trial"], shown["score"], marker=marker, color=colour, s=36, label=label, zorder=3)
    finished = trials[trials["status"] == "finished"].sort_values("trial")
    if len(finished):
        axis.step(finished["trial"], finished["score"].cummin(), where="post", color=MODEL_COLOUR, alpha=0.5,
                  label="best so far")
        best = finished.loc[finished["score"].idxmin()]
        axis.scatter([best["trial"]], [best["score"]], marker="*", s=220, color="tab:green", zorder=4,
                     label=f"best: trial {int(best['trial'])}, {best['score']:.4f}")
    failed = trials[trials["status"] == "failed"]["trial"]
    for number in failed:
        axis.annotate("failed", (number, 0.02), xycoords=("data", "axes fraction"), ha="center", color="tab:red",
                      fontsize="small")
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlim(0.5, max(int(trials["trial"].max()), 1) + 0.5)
    axis.set_xlabel("trial")
    axis.set_ylabel("validation score (lower is better)")
    axis.set_title(f"settings search: {len(trials)} trials, {len(finished)} finished", fontsize="medium")
    axis.legend(loc="best", fontsize="small", framealpha=0.85)
    axis.grid(alpha=0.3)
    return figure
