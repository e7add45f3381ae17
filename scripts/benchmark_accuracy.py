"""Accuracy benchmark: protocols A (ETTh1) and B (CAMELS 13331500) of ../shared/BENCHMARKS.md, end to end through the
library, printed as a markdown table next to Repeat, a ridge NLinear fitted here, and the published numbers.

    python scripts/benchmark_accuracy.py [--only A|B] [--epochs N] [--settings JSON] [--horizons 1,7] [--no-memory]

Models are trained with the shipped defaults except for the protocol's split, lookback and horizon; settings are chosen
on the validation range only, and the test range is used for reporting alone. Each trained model is scored as it runs,
with its state reset before every chunk, with its LSTM zeroed and as its linear start alone (forecast.ablation), next
to Repeat; on CAMELS day 7 a stateful model with a short lookback (30 days x 12 chunks) is set against a stateless one
that sees the whole year at once.
"""

from __future__ import annotations

import argparse
import json
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
# The protocols' settings (../shared/BENCHMARKS.md); B's horizon is set per run.
CONFIG_A = Config(target="OT", past=(), lookback=96, horizon=24, train_end="8640", val_end="11520")
CONFIG_B = Config(target="OBS_RUN", sim=("MOD_RUN",), past=("PRCP", "TAIR", "PET"), lookback=365,
                  train_end="1995-09-30", val_end="2000-09-30")
TEST_A, TEST_B = ("11520", "14400"), ("2000-10-01", "2010-12-31")


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


VARIANTS = (("model", "as it runs"), ("state_reset", "state reset every chunk"), ("lstm_zeroed", "LSTM zeroed"),
            ("linear_only", "linear start alone"), ("repeat", "Repeat"))


def trained(csv: Path, config: Config, model_dir: Path) -> tuple[dict, float]:
    """Trains with the library's log on stderr; returns metrics.json and the seconds per epoch."""
    start = time.perf_counter()
    result = train(csv, config, model_dir, log=lambda message: print(message, file=sys.stderr, flush=True))
    return result.metrics, (time.perf_counter() - start) / max(result.metrics["epochs_run"], 1)


def ablation_rows(label: str, metrics: dict, validation, test, score) -> list[str]:
    """One row per way of running the model: `score(evaluation, variant)` on validation and test, and the test t
    statistic that the model as it runs beats the variant."""
    rows = [f"| {label} | kept: {metrics['model_kind']}, weights of epoch {metrics['epochs']} | | | |"]
    for variant, name in VARIANTS:
        if variant not in test.summary:
            continue
        verdict = (test.ablation or {}).get(variant)
        t = f"{verdict.t:.1f} ({verdict.blocks} blocks)" if verdict else "-"
        rows.append(f"| {label} | {name} | {score(validation, variant)} | {score(test, variant)} | {t} |")
    return rows


def protocol_a(store: Path, epochs: int | None, settings: dict) -> list[str]:
    rows = ["| setting | model | val MSE | test MSE | t, as run beats it (test) |", "|---|---|---|---|---|"]
    config = CONFIG_A.replace(epochs=epochs, **settings)
    series = load_series(ETTH1, config)
    ridge = ridge_nlinear(series, config, 8640, 11520, 14400)
    metrics, per_epoch = trained(ETTH1, config, store / "A")
    validation = evaluate(ETTH1, store / "A", validation_rows=True)
    test = evaluate(ETTH1, store / "A", *TEST_A)
    rows += ablation_rows("L=96, H=24", metrics, validation, test,
                          lambda result, variant: f"{result.summary[variant]['mse']:.4f}")
    rows.append(f"| L=96, H=24 | ridge NLinear fitted here (alpha {ridge['alpha']}) | {ridge['val_mse']:.4f} | "
                f"{ridge['mse']:.4f} | |")
    rows.append(f"| L=96, H=24 | {per_epoch:.0f} s per epoch, {metrics['epochs_run']} epochs | | | |")
    return rows


def protocol_b(store: Path, epochs: int | None, settings: dict, horizons: tuple[int, ...], memory: bool) -> list[str]:
    rows = ["| horizon | model | val NSE | test NSE | t, as run beats it (test, all steps) |", "|---|---|---|---|---|"]
    base = CONFIG_B.replace(epochs=epochs, **settings)
    for horizon in horizons:
        model_dir = store / f"B_{horizon}"
        metrics, per_epoch = trained(CAMELS, base.replace(horizon=horizon), model_dir)
        validation = evaluate(CAMELS, model_dir, validation_rows=True)
        test = evaluate(CAMELS, model_dir, *TEST_B)
        rows += ablation_rows(f"day {horizon}", metrics, validation, test,
                              lambda result, variant: f"{result.per_step[f'{variant}_nse'].iloc[horizon - 1]:.3f}")
        rows.append(f"| day {horizon} | {per_epoch:.0f} s per epoch, {metrics['epochs_run']} epochs | | | |")
        print("\n".join(rows), file=sys.stderr, flush=True)
    if not memory:
        return rows
    rows += ["", "| day 7 | memory | val NSE | test NSE | s per epoch | kept |", "|---|---|---|---|---|---|"]
    memories = (("stateful, lookback 30 x 12 chunks", base.replace(horizon=7, lookback=30, stream_chunks=12)),
                ("stateless, lookback 365", base.replace(horizon=7, stateful=False)))
    for index, (name, config) in enumerate(memories):
        metrics, per_epoch = trained(CAMELS, config, store / f"B_memory_{index}")
        validation = evaluate(CAMELS, store / f"B_memory_{index}", validation_rows=True)
        test = evaluate(CAMELS, store / f"B_memory_{index}", *TEST_B)
        rows.append(f"| day 7 | {name} | {validation.per_step['model_nse'].iloc[6]:.3f} | "
                    f"{test.per_step['model_nse'].iloc[6]:.3f} | {per_epoch:.0f} | {metrics['model_kind']} |")
    series = load_series(CAMELS, Config(target="OBS_RUN", sim=("MOD_RUN",)))
    test_rows = (series.time >= "2000-10-01") & (series.time <= "2010-12-31")
    observed, simulated = series.values["OBS_RUN"][test_rows].to_numpy(), series.values["MOD_RUN"][test_rows].to_numpy()
    sim_nse = 1 - np.sum((simulated - observed) ** 2) / np.sum((observed - observed.mean()) ** 2)
    rows += ["", f"MOD_RUN alone, test NSE {sim_nse:.3f}; published NeuralForecast LSTM 0.980 (day 1) / 0.850 (day 7)"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("A", "B"))
    parser.add_argument("--epochs", type=int, help="override the default epoch limit")
    parser.add_argument("--settings", default="{}", help="other settings as JSON, e.g. '{\"members\": 3}'")
    parser.add_argument("--horizons", default="1,7", help="protocol B's horizons, comma-separated")
    parser.add_argument("--no-memory", action="store_true", help="skip protocol B's stateful/stateless comparison")
    args = parser.parse_args()
    settings = json.loads(args.settings)
    horizons = tuple(int(horizon) for horizon in args.horizons.split(","))
    with tempfile.TemporaryDirectory() as store:
        if args.only in (None, "A"):
            print("\n## A. ETTh1, univariate OT, L=96, H=24, test rows [11520, 14400), z-scored MSE\n")
            print("\n".join(protocol_a(Path(store), args.epochs, settings)), flush=True)
        if args.only in (None, "B"):
            print("\n## B. CAMELS 13331500, lookback 365, test 2000-10-01..2010-12-31, NSE in original units\n")
            print("\n".join(protocol_b(Path(store), args.epochs, settings, horizons, not args.no_memory)), flush=True)


if __name__ == "__main__":
    main()
