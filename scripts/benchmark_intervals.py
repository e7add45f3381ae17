"""Interval benchmark: the 80 % interval (quantiles 0.1 and 0.9) of protocols A (ETTh1, L=96, H=24) and B (CAMELS
13331500, H=7) of ../shared/BENCHMARKS.md, trained as scripts/benchmark_accuracy.py trains them, scored on the test
rows next to the naive interval (Repeat plus the quantiles of its validation errors per step).

    python scripts/benchmark_intervals.py [--only A|B] [--epochs N] [--plots FOLDER] [--store FOLDER]

Prints a markdown table: the method validation chose, the test coverage averaged over the horizon and its lowest and
highest step, the mean width and the Winkler score in the target's units, and the same for the naive interval; and on
the later half of the validation origins, the interval calibrated on the earlier half, held fixed and slid forward. With
--plots, writes the evaluation's per-step picture and a forecast picture per protocol there. With --store, the models
are kept in that folder and a protocol whose model is already there is scored again without training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_accuracy import CAMELS, CONFIG_A, CONFIG_B, ETTH1, TEST_A, TEST_B, trained  # noqa: E402

from forecast.evaluation import evaluate  # noqa: E402

from forecast.backtest import range_forecasts  # noqa: E402
from forecast.intervals import ArrayTruths, Calibration, fit, score_intervals  # noqa: E402

INTERVAL = "80%"
PROTOCOLS = {
    "A": ("ETTh1, L=96, H=24", ETTH1, CONFIG_A, TEST_A),
    "B": ("CAMELS 13331500, L=365, H=7", CAMELS, CONFIG_B.replace(horizon=7), TEST_B),
}


def interval_rows(name: str, csv: Path, config, test: tuple[str, str], model_dir: Path, plots: Path | None) -> list[str]:
    """Trains, scores the test rows and returns the table's rows for the model's and the naive interval."""
    metrics_file = model_dir / "current" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else trained(csv, config, model_dir)[0]
    calibration = Calibration.from_json(model_dir / "current" / "intervals.json", config.horizon)
    result = evaluate(csv, model_dir, *test, ablation=False)
    rows = []
    for label, scored in result.intervals.items():
        values, by_step = scored.intervals[INTERVAL], scored.coverage_by_step[INTERVAL]
        method = f"{calibration.method}" + (f" (span {calibration.span})" if calibration.method == "recent" else "")
        rows.append(
            f"| {name} | {label if label == 'naive' else metrics['model_kind'].split(' (')[0] + ', ' + method} | "
            f"{values['coverage']:.3f} | {np.nanmin(by_step):.3f} | {np.nanmax(by_step):.3f} | {values['width']:.4g} | "
            f"{values['winkler']:.4g} | {scored.pinball:.4g} |"
        )
    checked = ", ".join(f"{method} {loss:.4f}" for method, loss in calibration.checked.items())
    rows.append(f"| {name} | validation pinball, later half: {checked} | | | | | | |")
    rows += sliding_check(name, csv, model_dir, calibration)
    if plots is not None:
        from forecast.plots import plot_forecast, plot_steps
        from forecast.prediction import forecast_from

        plots.mkdir(parents=True, exist_ok=True)
        plot_steps(result.per_step, f"{name}: test rows", plots / f"{model_dir.name}_steps.png")
        # The first test forecast: inside the data, so the truth is drawn (the file's last row has no sim after it).
        plot_forecast(forecast_from(csv, model_dir, result.first_time), plots / f"{model_dir.name}_forecast.png")
    return rows


def sliding_check(name: str, csv: Path, model_dir: Path, calibration: Calibration) -> list[str]:
    """On validation only: the chosen method calibrated on the earlier half of the validation origins, then scored on
    the later half held fixed and slid forward (a window of the earlier half's size), in z-units."""
    ranged = range_forecasts(csv, model_dir, validation_rows=True, ablation=False, intervals=False)
    forecast, truth, weight, origins = ranged.models["model"], ranged.target, ranged.weight, ranged.ends
    history, half = ranged.features.history[:, 0], len(origins) // 2
    early = fit(calibration.method, calibration.span, forecast[:half], ArrayTruths(truth[:half], weight[:half]),
                history, origins[:half], calibration.quantiles, window=half)
    later = slice(half, None)
    errors = (truth - forecast) / early.scale(history, origins)[:, None]
    offsets = {"held": None, "slid": early.sliding_offsets(errors, weight, origins, origins[later])}
    rows = []
    for label, offset in offsets.items():
        bounds = early.bounds(forecast[later], history, origins[later], offset)
        scored = score_intervals(bounds, truth[later], weight[later], calibration.quantiles)
        values, by_step = scored.intervals[INTERVAL], scored.coverage_by_step[INTERVAL]
        rows.append(f"| {name} | validation, later half, {label} (z-units) | {values['coverage']:.3f} | "
                    f"{np.nanmin(by_step):.3f} | {np.nanmax(by_step):.3f} | {values['width']:.4g} | "
                    f"{values['winkler']:.4g} | {scored.pinball:.4g} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=tuple(PROTOCOLS))
    parser.add_argument("--epochs", type=int, help="override the default epoch limit")
    parser.add_argument("--plots", type=Path, help="folder for the pictures of each protocol's test rows")
    parser.add_argument("--store", type=Path, help="folder that keeps the trained models (default: a temporary one)")
    args = parser.parse_args()
    rows = [f"| protocol | interval | test coverage ({INTERVAL}, mean over steps) | lowest step | highest step | "
            "mean width | Winkler | pinball |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as temporary:
        store = args.store or Path(temporary)
        for key, (name, csv, config, test) in PROTOCOLS.items():
            if args.only in (None, key):
                config = config.replace(epochs=args.epochs) if args.epochs else config
                rows += interval_rows(name, csv, config, test, store / key, args.plots)
                print("\n".join(rows), file=sys.stderr, flush=True)
    print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
