"""Protocol C's epochs with tf.data's default graph rewrites off (as `forecast train` runs) and on, alternating.

    python scripts/benchmark_rewrites.py basins.csv basins_static.csv [--rounds 3] [--epochs 3] [--work DIR]

The two files are protocol C's (`python scripts/prepare_camels.py ../shared/data/camels_us_19 --output basins.csv`).
Each round trains docs/benchmarks.md's protocol-C command (seed 0, `--epochs` epochs) twice, each in a fresh
process: as released, and with `forecast.dataset._unrewritten` returning its pipeline unchanged, so that tf.data
applies its default rewrites; the order alternates from round to round, so that a drift of the shared machine falls
on both. Prints one JSON line per run (its epoch seconds from Keras's epoch lines, the kept model's validation MSE and
gate t, which must not differ between the two) and one per variant (every epoch's seconds, their sum and median).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

COMMAND = ("train {csv} --target QObs --id-column basin --static {static} --sim PRCP,SRAD,Tmax,Tmin,Vp,Dayl "
           "--lookback 30 --stream-chunks 13 --horizon 7 --train-end 2003-09-30 --val-end 2006-09-30 --seed 0 "
           "--epochs {epochs} --model-dir {model} --store {store}")
LAUNCH = {
    "off": "from forecast.cli import app; app(prog_name='forecast')",
    "on": "import forecast.dataset as d; d._unrewritten = lambda dataset: dataset; "
          "from forecast.cli import app; app(prog_name='forecast')",
}
EPOCH_LINE = re.compile(r"(\d+)/\1 - (\d+)s")


def run(variant: str, csv: Path, static: Path, epochs: int, store: Path, name: str) -> dict:
    """Trains the protocol-C command in a fresh process with the rewrites `variant` ("off" or "on")."""
    arguments = COMMAND.format(csv=csv, static=static, epochs=epochs, model=name, store=store).split()
    done = subprocess.run([sys.executable, "-c", LAUNCH[variant], *arguments], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name}: forecast train failed:\n{done.stderr[-2000:]}")
    output = (done.stdout + done.stderr).replace("\r", "\n")
    metrics = json.loads((store / name / "current" / "metrics.json").read_text())
    gate = metrics.get("gate") or {}
    return {"run": name, "rewrites": variant, "epoch_s": [int(seconds) for _, seconds in EPOCH_LINE.findall(output)],
            "validation_mse": metrics["validation"]["model"]["mse"], "t": gate.get("t")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("static", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("rewrites-store"))
    args = parser.parse_args()
    epochs = {"off": [], "on": []}
    for round_index in range(args.rounds):
        order = ("off", "on") if round_index % 2 == 0 else ("on", "off")
        for variant in order:
            result = run(variant, args.csv.resolve(), args.static.resolve(), args.epochs, args.work.resolve(),
                         f"rewrites_{variant}_{round_index + 1}")
            epochs[variant] += result["epoch_s"]
            print(json.dumps(result), flush=True)
    for variant, seconds in epochs.items():
        print(json.dumps({"rewrites": variant, "epoch_s": seconds, "sum_s": sum(seconds),
                          "median_s": statistics.median(seconds)}), flush=True)


if __name__ == "__main__":
    main()
