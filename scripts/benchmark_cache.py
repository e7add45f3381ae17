"""The data cache measured (forecast.data_cache): a long file read without the cache, then through it twice.

    python scripts/benchmark_cache.py [--series 1000,10000] [--rows 2000] [--work DIR] [--steps N] [--linear-start]

For each size, a generated long CSV (`benchmark_scale.generate`: hourly, `--rows` rows per series: id, date, target
y, past covariate x, sim s) is read and turned into the training features (`data_cache.load` and `training_data.prepare`, the defaults) three
times, each in a process of its own so that its peak resident memory is its own: without the cache, through an empty
cache (parsed, then written), and through the cache again (mapped). Each prints seconds to read and to prepare, the
peak resident memory (VmHWM) and, once the features are built, how much of the resident memory is anonymous (what
the process holds itself) and how much is file pages (the mapped cache and feature files, which the kernel can drop).
With `--steps N`, the third run then trains: the steps of the run before the first epoch (the origins counted, the
validation streams laid out, the network built; with `--linear-start` its ridge fit on the training and validation
origins as `forecast train` fits it, else none) and N training steps and N validation steps of the first epoch, the
peak resident memory taken after them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmark_scale import generate  # the same generated files as the data path's benchmark

PROBE = """
import json, sys, time
from pathlib import Path
from forecast.config import Config
from forecast.data_cache import DataCache, load
from forecast.training_data import prepare

def memory():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {name: int(status[name].split()[0]) * 1024 for name in ("VmHWM", "RssAnon", "RssFile")}

path, folder, steps, linear = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cache = None if folder == "none" else DataCache(Path(folder), print)
config = Config(target="y", id_column="id", sim=("s",), linear_start=linear)
began = time.perf_counter()
collection = load(path, config, cache=cache)
read = time.perf_counter() - began
began = time.perf_counter()
data = prepare(collection, config, None, lambda message: None)
result = {"read": read, "prepare": time.perf_counter() - began, **memory(),
          "features": sum(getattr(data.features, name).nbytes for name in ("history", "target", "sim", "bg"))}
if steps:
    from forecast.dataset import ValidationBatches, training_data
    from forecast.members import log_run, validation_streams
    from forecast.model import build_model, compile_model

    began = time.perf_counter()
    batcher = data.batcher(config)
    train_plan, val_plan = data.stream_plans(config)
    log_run(batcher, train_plan, val_plan, len(data.collection.series), 1, config, lambda message: None)
    streams, weights = validation_streams(batcher, val_plan, data.series_index)
    if linear:
        from forecast.executor import shared_linear_start
        from forecast.members import MemberRun

        run = MemberRun(data.layout, batcher, train_plan, val_plan, streams, weights, path.parent, None, 1, "train",
                        None, False, (), 0, lambda message: None, str(path))
        fitted = time.perf_counter()
        start = shared_linear_start(run, config)
        result.update(linear_start=time.perf_counter() - fitted, linear_peak=memory()["VmHWM"])
    model = build_model(config, data.layout, config.batch_size)
    if linear and start is not None:  # the network starts from the fit, its linear terms frozen, as in train
        from forecast.linear_start import freeze_linear_terms

        for name, terms in start.terms.items():
            model.get_layer(name).set_weights(terms)
        freeze_linear_terms(model)
    compile_model(model, config)
    result["set_up"] = time.perf_counter() - began
    began = time.perf_counter()
    model.fit(training_data(batcher, train_plan, config, 0), epochs=1, steps_per_epoch=steps,
              validation_data=ValidationBatches(streams, weights), validation_steps=steps, shuffle=False, verbose=0)
    result.update(fit=time.perf_counter() - began, batches=train_plan.n_batches, val_batches=streams.n_batches,
                  fit_peak=memory()["VmHWM"])
print(json.dumps(result))
"""


def probe(path: Path, folder: str, steps: int = 0, linear_start: bool = False) -> dict:
    output = subprocess.run([sys.executable, "-c", PROBE, str(path), folder, str(steps), str(int(linear_start))],
                            capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default="1000,10000")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/forecast_benchmark_cache"))
    parser.add_argument("--steps", type=int, default=0, help="then train N steps (and N validation steps) too")
    parser.add_argument("--linear-start", action="store_true", help="with --steps, fit the linear start first")
    arguments = parser.parse_args()
    arguments.work.mkdir(parents=True, exist_ok=True)
    print("| series | file | run | read s | prepare s | peak RSS | anonymous / file pages after prepare | features |")
    print("|---|---|---|---|---|---|---|---|")
    for n_series in map(int, arguments.series.split(",")):
        path = arguments.work / f"long_{n_series}x{arguments.rows}.csv"
        if not path.is_file():
            generate(path, n_series, arguments.rows)
        folder = arguments.work / f"cache_{n_series}"
        shutil.rmtree(folder, ignore_errors=True)
        runs = {"no cache": probe(path, "none"), "cache, first run": probe(path, str(folder)),
                "cache, second run": probe(path, str(folder), arguments.steps, arguments.linear_start)}
        for name, run in runs.items():
            print(f"| {n_series:,} | {path.stat().st_size / 2**20:,.0f} MiB | {name} | {run['read']:.2f} | "
                  f"{run['prepare']:.1f} | {run['VmHWM'] / 2**30:.2f} GiB | {run['RssAnon'] / 2**30:.2f} / "
                  f"{run['RssFile'] / 2**30:.2f} GiB | {run['features'] / 2**30:.2f} GiB |", flush=True)
        trained = runs["cache, second run"]
        if "fit" in trained:
            print(f"  {n_series:,} series, second run: {trained['batches']:,} training and {trained['val_batches']:,} "
                  f"validation batches an epoch; set up {trained['set_up']:.1f} s, {arguments.steps} + "
                  f"{arguments.steps} steps {trained['fit']:.1f} s, peak RSS {trained['fit_peak'] / 2**30:.2f} GiB"
                  + (f"; linear start {trained['linear_start']:.0f} s, peak RSS after it "
                     f"{trained['linear_peak'] / 2**30:.2f} GiB" if "linear_start" in trained else ""), flush=True)


if __name__ == "__main__":
    main()
