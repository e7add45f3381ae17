"""An ensemble trained in process against the same ensemble trained as Ray tasks: wall time and results.

    python scripts/benchmark_executor.py DATA [--cpus-per-task 1] [--results FILE] -- TRAIN_FLAGS...

Runs `forecast train DATA TRAIN_FLAGS --executor local` and then `... --executor ray --cpus-per-task N` (Ray started
on this machine), each in a fresh model store of its own, one after the other (never side by side), and prints each
run's wall time, kept kind, epochs, validation score and validation MSE, the wall-time ratio ray / local and the
largest difference between the two runs' validation numbers. TRAIN_FLAGS should include `--members`: with one
network there is nothing to run side by side. Each run appends one JSON line to `--results` as it ends.

Protocol C (docs/benchmarks.md), from the repository root after `scripts/prepare_camels.py`:

    python scripts/benchmark_executor.py basins.csv -- --target QObs --id-column basin --static basins_static.csv \\
        --sim PRCP,SRAD,Tmax,Tmin,Vp,Dayl --lookback 30 --stream-chunks 13 --horizon 7 \\
        --train-end 2003-09-30 --val-end 2006-09-30 --members 3 --seed 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORECAST = [sys.executable, "-m", "forecast.cli"]


def run(data: Path, flags: list[str], executor: list[str], store: Path) -> dict:
    """One `forecast train` run in `store`: its wall time and what metrics.json says of the kept model."""
    command = [*FORECAST, "train", str(data), *flags, *executor, "--model-dir", "ensemble", "--store", str(store),
               "--verbose", "2", "--no-data-cache"]
    began = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(executor)}: forecast train failed ({finished.returncode}): "
                         f"{finished.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((store / "ensemble" / "current" / "metrics.json").read_text(encoding="utf-8"))
    validation = metrics["validation"]["model"]
    return {"executor": " ".join(executor), "seconds": round(seconds, 1), "kind": metrics["model_kind"],
            "epochs": metrics["epochs_run"], "score": validation["score"], "mse": validation["mse"],
            "ray_nodes": sorted({line.rsplit(" ", 1)[1] for line in finished.stderr.splitlines()
                                 if " trained on Ray node " in line})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--cpus-per-task", type=int, default=1, help="CPUs (TensorFlow threads) of each Ray task")
    parser.add_argument("--results", type=Path, default=Path("benchmark_executor.jsonl"))
    own, flags = (sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:]) if "--" in sys.argv else (
        sys.argv[1:], [])
    arguments = parser.parse_args(own)  # the flags after -- are forecast train's
    rows = []
    for executor in (["--executor", "local"],
                     ["--executor", "ray", "--cpus-per-task", str(arguments.cpus_per_task)]):
        store = Path(tempfile.mkdtemp(prefix="benchmark_executor_"))
        try:
            rows.append(run(arguments.data.resolve(), flags, executor, store))
        finally:
            shutil.rmtree(store, ignore_errors=True)
        with arguments.results.open("a", encoding="utf-8") as results:
            results.write(json.dumps({**rows[-1], "flags": flags}) + "\n")
        print(json.dumps(rows[-1]), flush=True)
    local, ray = rows
    print(f"wall time ray / local: {ray['seconds'] / local['seconds']:.2f} ({ray['seconds']:.0f} s / "
          f"{local['seconds']:.0f} s); kept {local['kind']} / {ray['kind']}; largest difference in the validation "
          f"score and MSE: {max(abs(ray['score'] - local['score']), abs(ray['mse'] - local['mse'])):.2e}")


if __name__ == "__main__":
    main()
