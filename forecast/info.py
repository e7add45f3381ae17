"""What a saved model is, in a few lines, read from its JSON files alone (no TensorFlow, so it answers at once)."""

from __future__ import annotations

from pathlib import Path

from forecast.store import SavedModel, current_version, describe_versions, kept_epochs, read_metrics, read_saved
from forecast.validation import describe_grid


def model_info(root: Path) -> str:
    """A plain-text summary of the current version of the model at `root`: the model kind that was kept, its columns
    and their roles, the data it was trained on, its validation scores next to Repeat, the settings search that chose
    it (if one did), its settings, its interval calibration and its versions."""
    current = current_version(root)
    saved = read_saved(current)
    metrics = read_metrics(current)
    lines = [f"{root}: version {current.name}, {metrics.get('model_kind', 'model kind not recorded')}"]
    lines += _columns(saved)
    lines += _data_range(saved)
    lines += _scores(metrics)
    lines += _gate(metrics)
    lines += _search(metrics)
    config = saved.config
    lines.append(
        f"settings: lookback {config.lookback}, horizon {config.horizon}, batch {config.batch_size}, "
        f"{'stateful, ' + str(config.stream_chunks) + ' chunks per stream' if config.stateful else 'stateless'}, "
        f"units {config.units}, learning rate {config.learning_rate:g}, seed {config.seed}"
        + (f", an ensemble of {config.members} networks (seeds {config.seed} to {config.seed + config.members - 1})"
           if config.members > 1 else "")
    )
    lines.append(saved.intervals.describe() if saved.intervals is not None
                 else "forecast intervals: none (saved without quantiles, or before intervals; point forecasts only)")
    lines.append("versions (* current): " + ", ".join(
        f"{'*' if row['current'] else ''}{row['version']} ({row['created']}, {row['kind']})"
        for row in describe_versions(root)
    ))
    return "\n".join(lines)


def _columns(saved: SavedModel) -> list[str]:
    config, layout = saved.config, saved.schema.layout
    bounds = [f"{name.split('_')[1]} {value:g}" for name, value in
              (("target_min", config.target_min), ("target_max", config.target_max)) if value is not None]
    return [
        f"target: {config.target}" + (f" in {config.target_units}" if config.target_units else "")
        + (f" (forecasts clipped: {', '.join(bounds)})" if bounds else ""),
        f"history (lstm): {', '.join(layout.history)}",
        f"known ahead (sim): {', '.join(layout.sim_columns) or 'none'}; calendar: {', '.join(layout.calendar) or 'none'}",
        f"static (bg): {', '.join(layout.bg[: len(layout.bg) - len(layout.calendar)]) or 'none'}",
    ]


def _data_range(saved: SavedModel) -> list[str]:
    schema = saved.schema
    step = describe_grid(schema.freq, schema.business_days)
    if len(schema.series) == 1:
        record = schema.series[0]
        validation = f", validation to row {record.val_end}" if record.val_end is not None else ""
        return [f"data: {record.rows} rows of {step} up to {record.last_time}; training rows 0-{record.train_rows - 1}"
                f"{validation}"]
    rows = sum(record.rows for record in schema.series)
    validation = max((record.val_time for record in schema.series if record.val_time), default=None)
    lines = [f"data: {len(schema.series)} series ({saved.config.id_column}), {rows} rows of {step} up to "
             f"{max(record.last_time for record in schema.series)}"
             + (f"; validation up to {validation}" if validation else "")]
    if schema.holdout:
        lines.append(f"held out of training: {', '.join(schema.holdout)}")
    return lines


def _scores(metrics: dict) -> list[str]:
    validation = metrics.get("validation", {})
    model, repeat = validation.get("model"), validation.get("repeat")
    if not (isinstance(model, dict) and isinstance(repeat, dict)):
        return ["validation: not recorded"]
    return [
        f"validation MSE {_number(model.get('mse')):.4f} (Repeat {_number(repeat.get('mse')):.4f}), "
        f"RMSE in the target's units {_number(model.get('rmse_original')):.4g} "
        f"(Repeat {_number(repeat.get('rmse_original')):.4g}); weights of {kept_epochs(metrics)} kept "
        f"of {metrics.get('epochs_run', '?')} trained"
    ] + _nse_over_series(model, repeat)


def _nse_over_series(model: dict, repeat: dict) -> list[str]:
    """With many series, the median and mean validation NSE over series, next to Repeat's."""
    over = [side.get("nse_over_series") for side in (model, repeat)]
    if not all(isinstance(item, dict) and item for item in over):
        return []
    (ours, naive) = over
    return [f"validation NSE over {ours.get('series', '?')} series, median / mean: {_number(ours.get('median')):.3f} / "
            f"{_number(ours.get('mean')):.3f} (Repeat {_number(naive.get('median')):.3f} / "
            f"{_number(naive.get('mean')):.3f})"]


def _gate(metrics: dict) -> list[str]:
    """The keep/discard gate's scores and the series that argued most for each side, as the training log said them."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict) or "start_score" not in gate:
        return []
    kept = "the start" if metrics.get("kept_start_weights") else "the network"
    lines = [f"gate: kept {kept}; validation score start {_number(gate.get('start_score')):.4f}, network "
             f"{_number(gate.get('trained_score')):.4f} (t = {_number(gate.get('t')):.1f} over "
             f"{gate.get('blocks', '?')} blocks)"]
    for side, label in (("favoured_start", "start"), ("favoured_network", "network")):
        named = [item for item in gate.get(side) or () if isinstance(item, dict)]
        if named:
            lines.append(f"  argued most for the {label}: " + ", ".join(
                f"{item.get('series')} (NSE {_number(item.get('nse_start')):.2f} start, "
                f"{_number(item.get('nse_trained')):.2f} network)" for item in named))
    return lines


def _search(metrics: dict) -> list[str]:
    """The settings search (`forecast tune`) whose best trial this version is, where one chose it."""
    search = metrics.get("tune")
    if not isinstance(search, dict) or "best_trial" not in search:
        return []
    counts = ", ".join(f"{search[status]} {label}" for status, label in
                       (("finished", "finished"), ("stopped", "stopped early"), ("failed", "failed"))
                       if isinstance(search.get(status), int) and search[status])
    return [f"chosen by a settings search (forecast tune): trial {search['best_trial']} of {search.get('trials', '?')}"
            f" ({counts}), validation score {_number(search.get('best_score')):.4f}; searched "
            f"{search.get('searched', '?')}; every trial in tune.csv"]


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
