"""The data-starvation trap of stateful training, measured: which stream layout learns more per epoch and per second.

    python scripts/benchmark_layout.py [--epochs 8]

ETTh1, OT only, L=96, H=24, protocol A's split (training origins 95..8615); validation MSE (z-scored) after the same
number of epochs:
- shifted grid (the default): every origin ends one chunk per epoch, the chunk grid moves each epoch;
- fixed grid: contiguous non-overlapping chunks from row 0, so only every T-th origin is ever trained on;
- stateless: independent shuffled windows (K = 1).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from forecast import sampler
from forecast.config import Config
from forecast.training import train

ETTH1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ETTh1.csv"


SHIFTED_GRID = sampler.stream_layout


def fixed_grid(ranges, chunk, chunks, phase):
    """Only the origins on the grid from each range's first: what a naive stateful generator walks (each origin once
    per T epochs)."""
    origins, scored = SHIFTED_GRID(ranges, chunk, chunks, 0)
    firsts = np.array([span.first for span in ranges])
    # A stream's range: the last range whose first origin is at or before the stream's first origin.
    first = firsts[np.searchsorted(firsts, origins[:, 0], side="right") - 1]
    keep = (origins[:, 0] - first) % chunk == 0
    return origins[keep], scored[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    base = Config(target="OT", past=(), lookback=96, horizon=24, train_end="8640", val_end="11520", epochs=args.epochs,
                  patience=args.epochs)
    print("| layout | origins trained per epoch | val MSE | epochs |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as store:
        for name, config, layout in (
            ("shifted grid (default)", base, SHIFTED_GRID),
            ("fixed grid", base, fixed_grid),
            ("stateless windows", base.replace(stateful=False), SHIFTED_GRID),
        ):
            sampler.stream_layout = layout  # StreamPlan.batches looks the layout up at call time
            span = (sampler.OriginRange(0, 95, 8640 - 25, 95),)
            trained = int(layout(span, 96, config.chunks_per_stream, 0)[1].sum())
            result = train(ETTH1, config, Path(store) / name.split()[0])
            sampler.stream_layout = SHIFTED_GRID
            mse = result.metrics["validation"]["model"]["mse"]
            print(f"| {name} | {trained} | {mse:.4f} | {result.metrics['epochs_run']} |", flush=True)


if __name__ == "__main__":
    main()
