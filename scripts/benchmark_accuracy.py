"""Accuracy benchmark: protocols A (ETTh1) and B (CAMELS 13331500) of ../shared/BENCHMARKS.md, end to end through the
library, printed as a markdown table next to Repeat, a ridge NLinear fitted here, and the published numbers.

    python scripts/benchmark_accuracy.py [--quick] [--only A|B] [--epochs N]

Models are trained with the shipped defaults except for the protocol's split, lookback and horizon; settings are chosen
on the validation range only, and the test range is used for reporting alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge

from forecast.config import Config
from forecast.data import load_series
from forecast.evaluation import evaluate
from forecast.features import build_features, fit_scaler
from forecast.training import train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ETTH1, CAMELS = SHARED / "ETTh1.csv", SHARED / "camels_13331500_seed05.csv"
KEPT = " (linear start kept)"
PUBLISHED_A = {(96, 24): "Ridge NLinear here 0.0264 / 0.123; NF LSTM 0.0391", (336, 96): "NLinear (DLinear paper) 0.053 / 0.177"}


def ridge_nlinear(series, config: Config, train_end: int, val_end: int, test_end: int) -> dict[str, float]:
    """Ridge on the last L values minus the last one -> next H minus it; alpha chosen by validation MSE."""
    scaler = fit_scaler(series, train_end)
    target = build_features(series, scaler, config.horizon).history[:, 0].astype("float64")
    lookback, horizon = config.lookback, config.horizon

    def windows(first_row: int, end_row: int):
        origins = np.arange(max(first_row - 1, lookback - 1), end_row - horizon)
        history = np.lib.stride_tricks.sliding_window_view(target, lookback)[origins - lookback + 1]
        future = np.lib.stride_tricks.sliding_window_view(target, horizon)[origins + 1]
        last = history[:, -1:]
        return history - last, future - last, last

    x_train, y_train, _ = windows(0, train_end)
    x_val, y_val, last_val = windows(train_end, val_end)
    x_test, y_test, last_test = windows(val_end, test_end)
    best = min(
        (np.mean((Ridge(alpha=alpha).fit(x_train, y_train).predict(x_val) - y_val) ** 2), alpha)
        for alpha in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    )
    forecast = Ridge(alpha=best[1]).fit(x_train, y_train).predict(x_test)
    return {"mse": float(np.mean((forecast - y_test) ** 2)), "mae": float(np.mean(np.abs(forecast - y_test))),
            "alpha": best[1], "val_mse": float(best[0])}


def protocol_a(store: Path, epochs: int | None, quick: bool) -> list[str]:
    rows = ["| setting | model | val MSE | test MSE | test MAE | epochs | wall s |", "|---|---|---|---|---|---|---|"]
    settings = [(96, 24)] if quick else [(96, 24), (336, 96)]
    for lookback, horizon in settings:
        base = Config(target="OT", lookback=lookback, horizon=horizon, train_end="8640", val_end="11520")
        if epochs:
            base = base.replace(epochs=epochs)
        label = f"L={lookback}, H={horizon}"
        series = load_series(ETTH1, base.replace(past=()))
        start = time.perf_counter()
        ridge = ridge_nlinear(series, base, 8640, 11520, 14400)
        rows.append(f"| {label} | ridge NLinear (alpha {ridge['alpha']}) | {ridge['val_mse']:.4f} | {ridge['mse']:.4f} | "
                    f"{ridge['mae']:.4f} | - | {time.perf_counter() - start:.1f} |")
        variants = [("stateful, OT only", base.replace(past=())), ("stateless, OT only", base.replace(past=(), stateful=False)),
                    ("stateful, 7 columns in", base)]
        for index, (name, config) in enumerate(variants[:1] if quick else variants):
            model_dir = store / f"A_{lookback}_{horizon}_{index}"
            start = time.perf_counter()
            result = train(ETTH1, config, model_dir, log=lambda message: print(message, file=sys.stderr))
            wall = time.perf_counter() - start
            scores = evaluate(ETTH1, model_dir, "11520", "14400").summary
            validation = result.metrics["validation"]
            name += KEPT if result.metrics.get("kept_linear_start") else ""
            rows.append(f"| {label} | {name} | {validation['model']['mse']:.4f} | {scores['model']['mse']:.4f} | "
                        f"{scores['model']['mae']:.4f} | {result.metrics['epochs_run']} | {wall:.0f} |")
        rows.append(f"| {label} | Repeat | {validation['repeat']['mse']:.4f} | {scores['repeat']['mse']:.4f} | "
                    f"{scores['repeat']['mae']:.4f} | - | 0 |")
        rows.append(f"| {label} | published | | {PUBLISHED_A[(lookback, horizon)]} | | | |")
    return rows


def protocol_b(store: Path, epochs: int | None, quick: bool) -> list[str]:
    rows = ["| horizon | model | val NSE | test NSE | epochs | wall s |", "|---|---|---|---|---|---|"]
    for horizon in (1, 7):
        config = Config(target="OBS_RUN", sim=("MOD_RUN",), past=("PRCP", "TAIR", "PET"), lookback=365,
                        horizon=horizon, train_end="1995-09-30", val_end="2000-09-30")
        if epochs:
            config = config.replace(epochs=epochs)
        variants = [("stateful", config), ("stateless", config.replace(stateful=False))]
        for name, variant in variants[:1] if quick else variants:
            model_dir = store / f"B_{horizon}_{variant.stateful}"
            start = time.perf_counter()
            result = train(CAMELS, variant, model_dir, log=lambda message: print(message, file=sys.stderr))
            wall = time.perf_counter() - start
            name += KEPT if result.metrics.get("kept_linear_start") else ""
            val_step = evaluate(CAMELS, model_dir, "1995-10-01", "2000-09-30").per_step.iloc[horizon - 1]
            step = evaluate(CAMELS, model_dir, "2000-10-01", "2010-12-31").per_step.iloc[horizon - 1]
            rows.append(f"| day {horizon} | {name} | {val_step['model_nse']:.3f} | {step['model_nse']:.3f} | "
                        f"{result.metrics['epochs_run']} | {wall:.0f} |")
        rows.append(f"| day {horizon} | persistence | {val_step['repeat_nse']:.3f} | {step['repeat_nse']:.3f} | - | 0 |")
    series = load_series(CAMELS, Config(target="OBS_RUN", sim=("MOD_RUN",)))
    test = (series.time >= "2000-10-01") & (series.time <= "2010-12-31")
    observed, simulated = series.values["OBS_RUN"][test].to_numpy(), series.values["MOD_RUN"][test].to_numpy()
    sim_nse = 1 - np.sum((simulated - observed) ** 2) / np.sum((observed - observed.mean()) ** 2)
    rows.append(f"| any | MOD_RUN alone | | {sim_nse:.3f} | - | 0 |")
    rows.append("| day 1 / day 7 | published: NeuralForecast LSTM | | 0.980 / 0.850 | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one setting and the stateful model only")
    parser.add_argument("--only", choices=("A", "B"))
    parser.add_argument("--epochs", type=int, help="override the default epoch limit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        if args.only in (None, "A"):
            print("\n## A. ETTh1, univariate OT out, test rows [11520, 14400), z-scored\n")
            print("\n".join(protocol_a(Path(store), args.epochs, args.quick)), flush=True)
        if args.only in (None, "B"):
            print("\n## B. CAMELS 13331500, lookback 365, test 2000-10-01..2010-12-31, original units\n")
            print("\n".join(protocol_b(Path(store), args.epochs, args.quick)), flush=True)


if __name__ == "__main__":
    main()
