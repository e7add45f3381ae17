"""The end of a training run alone: the keep/discard gate, the validation metrics and the interval calibration.

    python scripts/benchmark_gate.py [--series 1000] [--rows 2000] [--steps 40] [--max-rows N] [--cached]

On a generated long file of `benchmark_scale.py` (made there if missing, read through the data cache with `--cached`)
with the defaults, this builds the run as `forecast train` does, trains a network for `--steps` steps from an untrained
start, then times what `training.py` runs after the last epoch (`kept_model`: the gate between the trained network
and its start, judged on the forecasts predict would make at every validation origin, the metrics and the interval
calibration) and reads the process's resident memory before it and its peak during it (Linux's VmHWM, reset first).
`--max-rows` caps the rows of the bulk copy the forecasts run through (`bulk.MAX_ROWS`).

To measure another version's `kept_model` with the same procedure, put its checkout first on the path:
`PYTHONPATH=<checkout> python scripts/benchmark_gate.py ...`. One JSON line goes to stdout and to `--results`, with
the verdict, the metrics and the calibration, so that two versions' numbers can be compared digit by digit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmark_scale import DEFAULT_WORK, GENERATED, ROOT, configured, generate, load_cached


def memory() -> dict[str, int]:
    """The process's resident memory now and its peak since the last reset, in MiB."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in lines if line.startswith(("VmRSS", "VmHWM"))}


def measure(path: Path, steps: int, max_rows: int | None, cached: bool) -> dict:
    import forecast.bulk
    from forecast import backend
    from forecast.data import load_collection
    from forecast.dataset import release_feature_tensors, training_batches
    from forecast.kept_model import ValidationOrigins, interval_calibration, keep_and_score, validation_metrics
    from forecast.model import build_model, compile_model
    from forecast.training_data import prepare

    if max_rows:
        forecast.bulk.MAX_ROWS = max_rows
    config = configured(GENERATED)
    collection = load_cached(path, config) if cached else load_collection(path, config)
    data = prepare(collection, config, None, lambda message: None)
    batcher = data.batcher(config)
    train_plan, val_plan = data.stream_plans(config)
    backend.keras().utils.set_random_seed(0)
    model = build_model(config, data.layout, config.batch_size)
    start_weights = model.get_weights()
    compile_model(model, config)
    model.fit(training_batches(batcher, train_plan), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    release_feature_tensors(data.features)

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the resident memory now
    before, lines = memory(), []
    began = time.perf_counter()
    judged = ValidationOrigins.of(batcher, val_plan.ranges, config.chunks_per_stream, data.target_stats,
                                  config.target_min, config.target_max)
    kept_forecast, kept_start, verdict = keep_and_score(model, judged, start_weights, "the start",
                                                        tuple(data.collection.ids), config.horizon, lines.append)
    metrics = validation_metrics(kept_forecast, judged, len(collection.series))
    calibration = interval_calibration(kept_forecast, judged, config.quantiles, config.lookback, config.horizon,
                                       lines.append)
    seconds = time.perf_counter() - began
    after = memory()
    return {
        "series": len(collection.series), "origins": int(len(judged.origins)), "steps": steps,
        "max_rows": forecast.bulk.MAX_ROWS, "seconds": seconds, "rss_before_mib": before["VmRSS"],
        "peak_mib": after["VmHWM"], "kept_start": kept_start, "verdict": verdict.to_json(), "metrics": metrics,
        "calibration": calibration.summary() if calibration else None, "log": lines,
        "forecast_sum": float(np.asarray(kept_forecast, dtype="float64").sum()),
        "kept_model": str(Path(sys.modules["forecast.kept_model"].__file__).resolve()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=40, help="training steps before the gate")
    parser.add_argument("--max-rows", type=int, help="rows a call of the bulk copy (default: bulk.MAX_ROWS)")
    parser.add_argument("--cached", action="store_true", help="read the file from the data cache (filled first)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the generated files are kept")
    parser.add_argument("--results", type=Path, default=ROOT / "scripts" / "results" / "benchmark_gate.jsonl")
    arguments = parser.parse_args()
    arguments.work.mkdir(parents=True, exist_ok=True)
    path = arguments.work / f"scale_{arguments.series}x{arguments.rows}.csv"
    if not path.exists():
        generate(path, arguments.series, arguments.rows)
    if arguments.cached:  # filled in a process of its own, so that parsing the file leaves nothing in this one
        subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_scale.py"), "--fill", str(path),
                        "--settings", json.dumps(GENERATED)], check=True, capture_output=True)
    result = measure(path, arguments.steps, arguments.max_rows, arguments.cached)
    result["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()
    line = json.dumps(result, default=float)
    print(line)
    arguments.results.parent.mkdir(parents=True, exist_ok=True)
    with arguments.results.open("a") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
