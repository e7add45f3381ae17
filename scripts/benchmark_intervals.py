"""Interval benchmark: the 80 % interval (quantiles 0.1 and 0.9) of protocols A (ETTh1, L=96, H=24) and B (CAMELS
13331500, H=7) of ../shared/BENCHMARKS.md, trained as scripts/benchmark_accuracy.py trains them, scored on the test
rows next to the naive interval (Repeat plus the quantiles of its validation errors per step).

    python scripts/benchmark_intervals.py [--only A|B] [--epochs N] [--plots FOLDER]

Prints a markdown table: the method validation chose, the test coverage averaged over the horizon and its lowest and
highest step, the mean width and the Winkler score in the target's units, and the same for the naive interval. With
--plots, writes the evaluation's per-step picture and a forecast picture per protocol there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_accuracy import CAMELS, CONFIG_A, CONFIG_B, ETTH1, TEST_A, TEST_B, trained  # noqa: E402

from forecast.evaluation import evaluate  # noqa: E402
from forecast.intervals import Calibration  # noqa: E402

INTERVAL = "80%"
PROTOCOLS = {
    "A": ("ETTh1, L=96, H=24", ETTH1, CONFIG_A, TEST_A),
    "B": ("CAMELS 13331500, L=365, H=7", CAMELS, CONFIG_B.replace(horizon=7), TEST_B),
}


def interval_rows(name: str, csv: Path, config, test: tuple[str, str], model_dir: Path, plots: Path | None) -> list[str]:
    """Trains, scores the test rows and returns the table's rows for the model's and the naive interval."""
    metrics, _ = trained(csv, config, model_dir)
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
    if plots is not None:
        from forecast.plots import plot_forecast, plot_steps
        from forecast.prediction import forecast_from

        plots.mkdir(parents=True, exist_ok=True)
        plot_steps(result.per_step, f"{name}: test rows", plots / f"{model_dir.name}_steps.png")
        # The first test forecast: inside the data, so the truth is drawn (the file's last row has no sim after it).
        plot_forecast(forecast_from(csv, model_dir, result.first_time), plots / f"{model_dir.name}_forecast.png")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=tuple(PROTOCOLS))
    parser.add_argument("--epochs", type=int, help="override the default epoch limit")
    parser.add_argument("--plots", type=Path, help="folder for the pictures of each protocol's test rows")
    args = parser.parse_args()
    rows = [f"| protocol | interval | test coverage ({INTERVAL}, mean over steps) | lowest step | highest step | "
            "mean width | Winkler | pinball |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as store:
        for key, (name, csv, config, test) in PROTOCOLS.items():
            if args.only in (None, key):
                config = config.replace(epochs=args.epochs) if args.epochs else config
                rows += interval_rows(name, csv, config, test, Path(store) / key, args.plots)
                print("\n".join(rows), file=sys.stderr, flush=True)
    print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
