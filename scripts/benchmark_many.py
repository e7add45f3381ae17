"""Many-series benchmark: protocol C of ../shared/BENCHMARKS.md (19 CAMELS basins, one global model) and the memory and
time of the data path for 10, 100 and 1,000 generated series.

    python scripts/benchmark_many.py global   [--results FILE] [--epochs N] [--lookback T --chunks K]
    python scripts/benchmark_many.py holdout  [--results FILE]   # test_basins.txt kept out of training
    python scripts/benchmark_many.py per-basin --basins 01013500,02046000 [--results FILE]   # one model per basin
    python scripts/benchmark_many.py ensemble --names global,global_seed1 [--store DIR]   # the mean of saved models
    python scripts/benchmark_many.py table    [--results FILE]   # the table from the saved results
    python scripts/benchmark_many.py memory                      # peak memory and seconds per epoch

Each part appends its per-basin test NSE (day 1 and day 7) to the results file (JSON lines), so that the per-basin
models, which take hours on two cores, can be trained a few basins per run and combined by `table`. Settings are the
shipped defaults except the protocol's split, lookback and horizon (and what --lookback/--chunks choose, on the
validation years only); the test years are for reporting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CAMELS = SHARED / "camels_us_19"
WORK = Path("/tmp/forecast_benchmark_many")
FORCINGS = ("PRCP", "SRAD", "Tmax", "Tmin", "Vp", "Dayl")
TRAIN_END, VAL_END, TEST_START, TEST_END = "2003-09-30", "2006-09-30", "2006-10-01", "2013-09-30"
ANCHORS = {  # ../shared/BENCHMARKS.md section C, test set, median / mean NSE over the 19 basins (day 1, day 7)
    "persistence": ((0.615, 0.611), (-0.323, -0.140)),
    "ridge per basin (alpha to 1e5)": ((0.782, 0.743), (0.482, 0.486)),
    "ridge pooled over basins": ((0.740, 0.685), (0.415, 0.344)),
    "plain global Keras LSTM(64)": ((0.752, 0.730), (0.485, 0.426)),
}


def prepared() -> tuple[Path, Path]:
    """The long CSV and the attributes CSV of the 19 basins (written once by scripts/prepare_camels.py)."""
    data, static = WORK / "camels_us_19.csv", WORK / "camels_us_19_static.csv"
    if not data.is_file():
        sys.path.insert(0, str(ROOT / "scripts"))
        from prepare_camels import prepare

        prepare(CAMELS, data, static)
    return data, static


def config_for(arguments, **changes):
    from forecast.config import Config

    return Config(
        target="QObs", id_column="basin", sim=FORCINGS, lookback=arguments.lookback, horizon=7,
        stateful=arguments.chunks > 1, stream_chunks=max(arguments.chunks, 1), epochs=arguments.epochs,
        train_end=TRAIN_END, val_end=VAL_END, verbose=2, **changes,
    )


def score(data: Path, model_dir: Path, ablation: bool = True, series: tuple[str, ...] | None = None):
    from forecast.evaluation import evaluate

    return evaluate(data, model_dir, TEST_START, TEST_END, ablation=ablation, series_ids=series)


def record(results: Path, part: str, rows: pd.DataFrame, extra: dict) -> None:
    """Appends one line per forecaster and basin of `rows` (an evaluation's per-series table: series, forecaster,
    held_out, nse_first_step, nse_last_step): NSE at day 1 and day 7 (on the test years, or with `extra`'s
    "range" = "validation", on the validation years)."""
    with results.open("a", encoding="utf-8") as writer:
        for _, row in rows.iterrows():
            writer.write(json.dumps({
                "part": part, "series": row["series"], "forecaster": row["forecaster"], "held_out": bool(row["held_out"]),
                "nse_day1": row["nse_first_step"], "nse_day7": row["nse_last_step"], **extra,
            }) + "\n")


def train_and_score(arguments, part: str, name: str, series: tuple[str, ...] | None = None, **changes) -> None:
    from forecast.training import train

    data, static = prepared()
    config = config_for(arguments, static=str(static), **json.loads(arguments.settings), **changes)
    store = WORK / "models"
    log = lambda message: print(message, flush=True)  # noqa: E731
    if series is not None:  # one model per basin: the same file, the other basins held out
        frame_ids = tuple(pd.read_csv(data, usecols=["basin"], dtype=str)["basin"].unique())
        config = config.replace(holdout_series=tuple(basin for basin in frame_ids if basin not in series))
    began = time.perf_counter()
    trained = train(data, config, store / name, log, verbose=2)
    seconds = time.perf_counter() - began
    extra = {"name": name, "model_kind": trained.metrics["model_kind"], "seconds": round(seconds),
             "epochs": trained.metrics["epochs"], "lookback": config.lookback, "chunks": config.chunks_per_stream,
             "settings": arguments.settings}
    from forecast.evaluation import evaluate

    validation = evaluate(data, store / name, validation_rows=True, ablation=False, series_ids=series)
    print(validation.table(), flush=True)
    record(arguments.results, part, validation.per_series, {**extra, "range": "validation"})
    result = score(data, store / name, ablation=series is None, series=series)
    print(result.table(), flush=True)
    record(arguments.results, part, result.per_series, {**extra, "range": "test"})


def ensemble(arguments) -> None:
    """Scores the mean of the saved global models `--names` (the same settings but the seed) on the validation and
    the test years: how much of the gap between seeds an ensemble closes. Appends one line per basin, as the other
    parts do, named ensemble(NAME+NAME...)."""
    import numpy as np

    from forecast.metrics import nse

    from forecast.backtest import range_forecasts

    data, _ = prepared()
    names = arguments.names.split(",")
    label = f"ensemble({'+'.join(names)})"
    for span, where in (("validation", {"validation_rows": True}), ("test", {"start": TEST_START, "end": TEST_END})):
        runs = [range_forecasts(data, arguments.store / name, ablation=False, intervals=False, **where) for name in names]
        if any(not np.array_equal(run.ends, runs[0].ends) for run in runs):
            raise SystemExit(f"{label}: the models score different origins; give models of one configuration")
        forecast, first = np.mean([run.models["model"] for run in runs], axis=0), runs[0]
        rows = []
        for index, series in enumerate(first.collection.series):
            origins = first.series_index == index
            day1, day7 = (nse(forecast[origins, step], first.target[origins, step], first.weight[origins, step])
                          for step in (0, -1))
            rows.append({"series": series.id, "forecaster": "model", "nse_first_step": day1, "nse_last_step": day7,
                         "held_out": series.id in first.saved.config.holdout_series})
            print(f"{label} {span} {series.id}: NSE day 1 {day1:.3f}, day 7 {day7:.3f}", flush=True)
        record(arguments.results, "ensemble", pd.DataFrame(rows), {"name": label, "range": span})


def table(results: Path) -> None:
    """Median / mean test NSE over basins per model, next to the anchors."""
    rows = pd.DataFrame([json.loads(line) for line in results.read_text().splitlines() if line.strip()])
    print("| model | day 1 median / mean | day 7 median / mean | basins |")
    print("|---|---|---|---|")
    for name, ((m1, a1), (m7, a7)) in ANCHORS.items():
        print(f"| {name} (BENCHMARKS.md) | {m1:.3f} / {a1:.3f} | {m7:.3f} / {a7:.3f} | 19 |")
    rows["range"] = rows.get("range", pd.Series("test", index=rows.index)).fillna("test")
    latest = rows.drop_duplicates(["part", "name", "range", "series", "forecaster"], keep="last")
    for (part, name, span, forecaster, held_out), group in latest.groupby(
            ["part", "name", "range", "forecaster", "held_out"], sort=False):
        if part == "per-basin":
            continue  # one line for all per-basin models, below
        label = f"{name} ({span}): {forecaster}{' (held out)' if held_out else ''}"
        print(f"| {label} | {group.nse_day1.median():.3f} / {group.nse_day1.mean():.3f} | "
              f"{group.nse_day7.median():.3f} / {group.nse_day7.mean():.3f} | {len(group)} |")
    own = latest[(latest.part == "per-basin") & (latest.forecaster == "model") & ~latest.held_out].copy()
    own["prefix"] = own["name"].str.rsplit("_", n=1).str[0]  # per-basin models are named PREFIX_BASIN
    for (prefix, span), group in own.groupby(["prefix", "range"], sort=False):
        print(f"| one model per basin, {prefix} ({span}) | {group.nse_day1.median():.3f} / {group.nse_day1.mean():.3f} | "
              f"{group.nse_day7.median():.3f} / {group.nse_day7.mean():.3f} | {len(group)} |")


MEMORY_PROBE = """
import resource, sys, time
import numpy as np, pandas as pd
from forecast.features import Features, stack
from forecast.sampler import StreamPlan, origin_ranges
from forecast.windowing import WindowBatcher
n_series, rows, columns = int(sys.argv[1]), 10_000, 8
rng = np.random.default_rng(0)
parts = []
for index in range(n_series):
    values = rng.standard_normal((rows, columns)).astype("float32")
    parts.append(Features(history=values, target=values[:, 0].copy(), sim=values[:, :2].copy(),
                          bg=np.zeros((rows, 1), "float32"), time=pd.date_range("2000", periods=rows, freq="h")))
features = stack(parts)
del parts
raw = sum(array.nbytes for array in (features.history, features.target, features.sim, features.bg))
ranges = origin_ranges(features.starts, features.lengths, [(0, rows)] * n_series, 96, 24)
batcher = WindowBatcher(features, 96, 24)
plan = StreamPlan(ranges, 96, 4, 32, shuffle=True)
began = time.perf_counter()
origins, scored = plan.batches(0)
layout_seconds = time.perf_counter() - began
began = time.perf_counter()
for index in range(0, 400):
    batcher.batch(origins[index], scored[index])
per_batch = (time.perf_counter() - began) / 400
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(n_series, raw, peak, plan.n_batches, layout_seconds, per_batch)
"""


def memory() -> None:
    """Peak resident memory and the data path's seconds per epoch for 10, 100 and 1,000 series of 10,000 rows."""
    measured = []
    for n_series in (10, 100, 1000):
        output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(n_series)], capture_output=True, text=True,
                                check=True).stdout.split()
        n, raw, peak, batches, layout, per_batch = int(output[0]), int(output[1]), int(output[2]), int(output[3]), \
            float(output[4]), float(output[5])
        measured.append((n, raw, peak, batches, layout + batches * per_batch))
        print(f"{n:>5} series: raw float32 arrays {raw / 2**20:8.1f} MiB, peak resident {peak / 2**20:8.1f} MiB, "
              f"{batches} batches, data path {layout + batches * per_batch:7.1f} s per epoch "
              f"({per_batch * 1e3:.2f} ms per batch, layout {layout:.1f} s)", flush=True)
    (_, raw_100, peak_100, _, epoch_100), (_, raw_1000, peak_1000, _, epoch_1000) = measured[1:]
    print(f"memory growth 100 -> 1,000 series: {(peak_1000 - peak_100) / 2**20:.0f} MiB against "
          f"{(raw_1000 - raw_100) / 2**20:.0f} MiB of raw data ({(peak_1000 - peak_100) / (raw_1000 - raw_100):.2f}x); "
          f"seconds per epoch x{epoch_1000 / epoch_100:.1f} for x10 rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("global", "holdout", "per-basin", "ensemble", "table", "memory"))
    parser.add_argument("--results", type=Path, default=ROOT / "scripts" / "results" / "benchmark_many.jsonl")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lookback", type=int, default=365)
    parser.add_argument("--chunks", type=int, default=1, help="stream chunks; 1 = stateless")
    parser.add_argument("--basins", help="per-basin: the basins to train a model for, comma-separated")
    parser.add_argument("--name", help="the model's name in the store (default: the part; per-basin: the prefix "
                        "of each basin's model, default basin)")
    parser.add_argument("--names", help="ensemble: the saved global models to average, comma-separated")
    parser.add_argument("--store", type=Path, default=WORK / "models",
                        help="ensemble: the model store the --names are in (forecast train's --store)")
    parser.add_argument("--settings", default="{}", help="other settings as JSON, e.g. '{\"units\": 128}'")
    arguments = parser.parse_args()
    arguments.results.parent.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if arguments.part == "table":
        table(arguments.results)
    elif arguments.part == "memory":
        memory()
    elif arguments.part == "ensemble":
        ensemble(arguments)
    elif arguments.part == "global":
        train_and_score(arguments, "global", arguments.name or "global")
    elif arguments.part == "holdout":
        held_out = tuple((CAMELS / "test_basins.txt").read_text().split())
        train_and_score(arguments, "holdout", arguments.name or "holdout", holdout_series=held_out)
    else:
        for basin in arguments.basins.split(","):
            train_and_score(arguments, "per-basin", f"{arguments.name or 'basin'}_{basin}", series=(basin,))


if __name__ == "__main__":
    main()
