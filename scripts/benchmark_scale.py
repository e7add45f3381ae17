"""The data path at scale: what each phase of a training run costs as the number of series grows.

    python scripts/benchmark_scale.py [--series 10,100,1000,10000] [--rows 2000] [--steps 200] [--rounds 3]
        [--format csv] [--cached] [--data FILE --settings JSON]

Generated long files (hourly, `--rows` rows per series: a target with a daily cycle and persistent noise, a past
covariate and a sim column), the defaults (lookback 96, horizon 24, batch 32, 4 chunks per stream, the decoder). Each
size runs in its own process, so that its peak resident memory is its own. Per size, in one table:

- read: the file into a collection (`data.load_collection`, with its checks; with `--cached`, from the data cache
  in `--work`, filled by a process before, as `forecast train` reads a file of 4 MiB or more from its second run
  on: the series are views of the mapped arrays and the features are built in memory-mapped files); prepare: split, scaled and stacked
  (`training_data.prepare`); layout: one epoch's streams and batches (`StreamPlan.batches`); a batch served alone,
  without training, pulled by TensorFlow's own loop as the compiled training step pulls it: by the tf.data pipeline
  (`dataset.training_batches`) and by the PyDataset through Keras' adapter (and its `__getitem__` alone), the mean
  over `--steps` batches once each runs;
- linear start: the ridge fit with its choice of inputs (`executor.shared_linear_start`);
- epoch: `--steps` training steps fed by the tool's tf.data pipeline (the default), by its PyDataset, and the same
  batches fed as in-memory arrays, in turn in the same process, `--rounds` times after a first round that traces
  (the median counts), extrapolated to the epoch's batches; a throughput ratio is arrays' time / the pipeline's;
- validation: the validation pass Keras runs each epoch (`--steps` batches, extrapolated);
- gate: what a run does after its last epoch, in full: the gate between the trained network and its linear start on
  the forecasts predict would make at every validation origin (`kept_model`), the metrics and interval calibration;
- peak RSS, and the raw float32 feature arrays for comparison; and the peak of each phase (imports, read, prepare,
  layout and batches, tf.data batches, PyDataset batches, validation streams, linear start, training, validation, gate),
  from Linux's VmHWM reset between phases, and of each the peak own (anonymous) and mapped file pages, sampled.

Results go to stdout as a markdown table and, one JSON line per size, to `--results`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = ROOT.parent / "scale-work"
GENERATED = {"target": "y", "id_column": "id", "sim": ["s"]}  # the generated files' columns, the other settings default


def generate(path: Path, n_series: int, rows: int) -> None:
    """A long file of `n_series` hourly series of `rows` rows each: id, date, y (target), x (past covariate), s (sim)."""
    rng = np.random.default_rng(n_series)
    hours = np.arange(rows)
    cycle = np.sin(2 * np.pi * hours / 24)[None, :]
    level = rng.normal(10, 3, (n_series, 1))
    sim = cycle * rng.uniform(0.5, 2, (n_series, 1)) + 0.3 * rng.standard_normal((n_series, rows))
    noise = rng.standard_normal((n_series, rows))
    persistent = np.empty_like(noise)
    persistent[:, 0] = noise[:, 0]
    for step in range(1, rows):  # AR(1) noise: the history carries information the sim does not
        persistent[:, step] = 0.9 * persistent[:, step - 1] + 0.4 * noise[:, step]
    target = level + 2 * cycle + 0.8 * sim + persistent
    covariate = np.roll(target, 1, axis=1) * 0.5 + rng.standard_normal((n_series, rows))
    frame = pd.DataFrame({
        "id": np.repeat([f"S{index:05d}" for index in range(n_series)], rows),
        "date": np.tile(pd.date_range("2020-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M"), n_series),
        "y": target.reshape(-1).round(4), "x": covariate.reshape(-1).round(4), "s": sim.reshape(-1).round(4),
    })
    temporary = path.with_suffix(path.suffix + ".partial")
    if path.suffix == ".parquet":
        frame.to_parquet(temporary, index=False)
    else:
        frame.to_csv(temporary, index=False)
    temporary.rename(path)


def timed(function, *arguments):
    began = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - began


def _served(dataset, steps: int) -> float:
    """Seconds per batch that `dataset` serves with nothing consuming it but TensorFlow's own loop (as Keras' compiled
    training step takes its next batch), once it runs."""
    import tensorflow as tf

    count = lambda total, *batch: total + 1  # noqa: E731

    def pass_over(batches: int) -> float:
        began = time.perf_counter()
        dataset.take(batches).reduce(tf.constant(0, tf.int64), count)
        return time.perf_counter() - began

    pass_over(20)  # traced
    # A pass starts the pipeline afresh: the difference of a long pass and a short one is the batches alone (the
    # median of three, so that a busy moment of the machine does not decide it).
    return float(np.median([pass_over(20 + steps) - pass_over(20) for _ in range(3)])) / steps


class PhasePeaks:
    """The peak resident memory of each phase of this process: Linux's VmHWM, reset at the end of each phase through
    /proc/self/clear_refs (so the next phase's peak is its own); and, sampled every 20 ms by a thread, the peaks of its
    own (anonymous) pages and of mapped file pages (the data cache's, which the kernel can drop) within the phase."""

    def __init__(self):
        self.peaks: dict[str, float] = {}
        self.own: dict[str, float] = {}
        self.file: dict[str, float] = {}
        self._own = self._file = 0.0
        self._lock = threading.Lock()
        threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def _status() -> dict[str, float]:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return {key: int(status[key].split()[0]) / 2**10 for key in ("VmHWM", "RssAnon", "RssFile")}

    def _sample(self) -> None:
        while True:
            status = self._status()
            with self._lock:
                self._own = max(self._own, status["RssAnon"])
                self._file = max(self._file, status["RssFile"])
            time.sleep(0.02)

    def end(self, phase: str) -> None:
        status = self._status()
        with self._lock:
            self.peaks[phase] = status["VmHWM"]
            self.own[phase] = max(self._own, status["RssAnon"])
            self.file[phase] = max(self._file, status["RssFile"])
            self._own = self._file = 0.0
        Path("/proc/self/clear_refs").write_text("5")


def measure(path: Path, steps: int, rounds: int, settings: dict, cached: bool) -> dict:
    """Every phase for the file at `path` under the configuration `settings` (run in a process of its own), the file
    read from the data cache where `cached`."""
    phases = PhasePeaks()
    from forecast import backend
    from forecast.data import load_collection
    from forecast.dataset import WindowDataset, release_feature_tensors, training_batches, validation_batches
    from forecast.executor import shared_linear_start
    from forecast.kept_model import ValidationOrigins, interval_calibration, keep_and_score, validation_metrics
    from forecast.linear_start import freeze_linear_terms
    from forecast.members import MemberRun, validation_streams
    from forecast.model import build_model, compile_model
    from forecast.training_data import prepare

    keras = backend.keras()
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    phases.end("imports")

    config = configured(settings)
    quiet = lambda message: None  # noqa: E731
    if cached:
        collection, read_seconds = timed(load_cached, path, config)
    else:
        collection, read_seconds = timed(load_collection, path, config)
    phases.end("read")
    data, prepare_seconds = timed(prepare, collection, config, None, quiet)
    phases.end("prepare")
    batcher = data.batcher(config)
    train_plan, val_plan = data.stream_plans(config)
    (origins, scored), layout_seconds = timed(train_plan.batches, 0)
    dataset = WindowDataset(batcher, train_plan)
    dataset[0]  # the first call lays out epoch 0
    began = time.perf_counter()
    for index in range(1, steps + 1):
        dataset[index]
    batch_seconds = (time.perf_counter() - began) / steps
    phases.end("layout and batches")

    gathered_seconds = _served(training_batches(batcher, train_plan), steps)
    phases.end("tf.data batches")
    adapted_seconds = _served(PyDatasetAdapter(WindowDataset(batcher, train_plan), shuffle=False).get_tf_dataset(), steps)
    phases.end("PyDataset batches")

    streams, origin_weights = validation_streams(batcher, val_plan, data.series_index)
    phases.end("validation streams")
    run = MemberRun(data.layout, batcher, train_plan, val_plan, streams, origin_weights, path.parent, None, 1, "train",
                    None, False, (), 0, quiet, str(path))
    linear, linear_seconds = timed(shared_linear_start, run, config)
    phases.end("linear start")

    model = build_model(config, data.layout, config.batch_size)
    if linear is not None:  # as a fresh network starts: the linear terms the ridge fit, frozen
        for name, weights in linear.terms.items():
            model.get_layer(name).set_weights(weights)
        freeze_linear_terms(model)
    start_weights = model.get_weights()
    compile_model(model, config)
    seconds = {}

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.setdefault(self.name, []).append(time.perf_counter() - self.began)

    batches = [batcher.batch(origins[index], scored[index]) for index in range(steps)]
    arrays = ({name: np.concatenate([batch[0][name] for batch in batches]) for name in batches[0][0]},
              {"prediction": np.concatenate([batch[1]["prediction"] for batch in batches])})
    weight = {"prediction": np.concatenate([batch[2] for batch in batches])}
    feeds = {
        "tfdata": lambda: dict(x=training_batches(batcher, train_plan), steps_per_epoch=steps),
        "pydataset": lambda: dict(x=WindowDataset(batcher, train_plan), steps_per_epoch=steps),
        "arrays": lambda: dict(x=arrays[0], y=arrays[1], sample_weight=weight, batch_size=config.batch_size),
    }
    # Round after round, each feed in turn, so that a busy spell of the machine hits all three alike; the first round
    # traces the training step for each feed's shapes and is not counted.
    for _ in range(rounds + 1):
        for name, feed in feeds.items():
            timer = EpochTimer()
            timer.name = name
            model.fit(**feed(), epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    step_tfdata, step_pydataset, step_arrays = (float(np.median(seconds[name][1:])) / steps for name in feeds)
    phases.end("training (three feeds)")

    validation = validation_batches(run.validation, run.origin_weights)
    val_steps = min(steps, run.validation.n_batches)
    began = time.perf_counter()
    model.evaluate(validation, steps=val_steps, verbose=0)
    model.evaluate(validation, steps=val_steps, verbose=0)
    val_step = (time.perf_counter() - began) / (2 * val_steps)
    phases.end("validation")

    # The end of a run (training.py): the pipelines' tensors released, the gate between the trained network and its
    # linear start judged on the forecasts predict would make at every validation origin, the kept model's metrics
    # and its interval calibration.
    del dataset, batches, feeds, validation
    release_feature_tensors(data.features)
    began = time.perf_counter()
    judged = ValidationOrigins.of(batcher, val_plan.ranges, config.chunks_per_stream, data.target_stats,
                                  config.target_min, config.target_max)
    forecast, _, _ = keep_and_score(model, judged, start_weights, "the linear start", tuple(data.collection.ids),
                                    config.horizon, quiet, linear_start=linear is not None)
    validation_metrics(forecast, judged, len(collection.series))
    interval_calibration(forecast, judged, config.quantiles, config.lookback, config.horizon, quiet)
    gate_seconds = time.perf_counter() - began
    phases.end("gate")

    features = data.features
    raw = sum(array.nbytes for array in (features.history, features.target, features.sim, features.bg))
    return {
        "series": len(collection.series), "rows": int(features.n_rows), "raw_mib": raw / 2**20, "cached": cached,
        "read_s": read_seconds, "prepare_s": prepare_seconds, "layout_s": layout_seconds,
        "batch_ms": batch_seconds * 1e3, "gathered_ms": gathered_seconds * 1e3, "adapted_ms": adapted_seconds * 1e3, "batches": int(train_plan.n_batches),
        "linear_start_s": linear_seconds, "linear_start": linear.fit if linear else None,
        "step_tfdata_ms": step_tfdata * 1e3, "step_pydataset_ms": step_pydataset * 1e3,
        "step_arrays_ms": step_arrays * 1e3,
        "epoch_tfdata_s": step_tfdata * train_plan.n_batches + layout_seconds,
        "epoch_arrays_s": step_arrays * train_plan.n_batches,
        "throughput_ratio": step_arrays / step_tfdata, "pydataset_ratio": step_arrays / step_pydataset,
        "val_batches": int(run.validation.n_batches), "validation_s": val_step * run.validation.n_batches,
        "gate_s": gate_seconds,
        # The process's peak is its highest phase's: resetting VmHWM between phases resets what getrusage reports.
        "peak_rss_mib": max(phases.peaks.values()), "phase_peaks_mib": phases.peaks,
        "phase_own_mib": phases.own, "phase_file_mib": phases.file,
    }


def configured(settings: dict):
    """The `forecast.config.Config` of the JSON `settings` (lists as tuples)."""
    from forecast.config import Config

    return Config(**{key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()})


def load_cached(path: Path, config):
    """The collection of `path` through the data cache beside it (`--work`/.cache), as a store's commands read it."""
    from forecast import data_cache

    return data_cache.load(path, config, cache=data_cache.DataCache(path.parent / ".cache"))


def table(results: list[dict]) -> str:
    rows = [
        ("series", lambda r: f"{r['series']:,}"), ("rows", lambda r: f"{r['rows']:,}"),
        ("read", lambda r: f"{r['read_s']:.1f} s"), ("prepare", lambda r: f"{r['prepare_s']:.1f} s"),
        ("epoch layout", lambda r: f"{r['layout_s']:.2f} s"), ("a batch served alone, tf.data / PyDataset (its `__getitem__`)",
         lambda r: f"{r['gathered_ms']:.2f} / {r['adapted_ms']:.2f} ({r['batch_ms']:.2f}) ms"),
        ("linear start", lambda r: f"{r['linear_start_s']:.1f} s"),
        ("training step, tf.data / PyDataset / arrays",
         lambda r: f"{r['step_tfdata_ms']:.1f} / {r['step_pydataset_ms']:.1f} / {r['step_arrays_ms']:.1f} ms"),
        ("throughput against arrays, tf.data / PyDataset",
         lambda r: f"{r['throughput_ratio']:.2f} / {r['pydataset_ratio']:.2f}"),
        ("epoch (batches), tf.data / arrays",
         lambda r: f"{r['epoch_tfdata_s']:,.0f} / {r['epoch_arrays_s']:,.0f} s ({r['batches']:,})"),
        ("validation pass (batches)", lambda r: f"{r['validation_s']:,.0f} s ({r['val_batches']:,})"),
        ("the gate, metrics and intervals at the end of a run", lambda r: f"{r['gate_s']:,.0f} s"),
        ("peak RSS (raw float32 features)", lambda r: f"{r['peak_rss_mib']:,.0f} MiB ({r['raw_mib']:,.0f} MiB)"),
        ("peak RSS by phase: " + ", ".join(results[0]["phase_peaks_mib"]),
         lambda r: " / ".join(f"{peak:,.0f}" for peak in r["phase_peaks_mib"].values()) + " MiB"),
        ("of which own (anonymous) / mapped file pages, sampled",
         lambda r: " / ".join(f"{r['phase_own_mib'][phase]:,.0f}+{r['phase_file_mib'][phase]:,.0f}"
                              for phase in r["phase_peaks_mib"]) + " MiB"),
    ]
    lines = ["| | " + " | ".join(f"{r['series']:,} series" for r in results) + " |",
             "|---" * (len(results) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(cell(r) for r in results) + " |" for label, cell in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default="10,100,1000")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200, help="training and validation steps timed per feeding")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the three feeds (the median counts)")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--cached", action="store_true", help="read each file from the data cache (filled first)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the generated files are kept")
    parser.add_argument("--results", type=Path, default=ROOT / "scripts" / "results" / "benchmark_scale.jsonl")
    parser.add_argument("--data", type=Path, help="measure this file instead of generated ones (with --settings)")
    parser.add_argument("--settings", default=json.dumps(GENERATED),
                        help="the configuration as JSON (default: the generated files' columns)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    settings = json.loads(arguments.settings)
    if arguments.fill:
        load_cached(arguments.fill, configured(settings))
        return
    if arguments.measure:
        print(json.dumps(measure(arguments.measure, arguments.steps, arguments.rounds, settings, arguments.cached)))
        return
    arguments.work.mkdir(parents=True, exist_ok=True)
    results = []
    paths = [arguments.data] if arguments.data else [
        arguments.work / f"scale_{n_series}x{arguments.rows}.{arguments.format}"
        for n_series in (int(part) for part in arguments.series.split(","))]
    for path in paths:
        if not path.exists():
            generate(path, int(path.stem.split("_")[1].split("x")[0]), arguments.rows)
        if arguments.cached:
            filled = subprocess.run([sys.executable, __file__, "--fill", str(path), "--settings", arguments.settings],
                                    capture_output=True, text=True)
            if filled.returncode:
                sys.exit(f"{path} could not be cached:\n{filled.stderr[-3000:]}")
        output = subprocess.run([sys.executable, __file__, "--measure", str(path), "--steps", str(arguments.steps),
                                 "--rounds", str(arguments.rounds), "--settings", arguments.settings,
                                 *(["--cached"] if arguments.cached else [])], capture_output=True, text=True)
        if output.returncode:
            sys.exit(f"{path} failed:\n{output.stderr[-3000:]}")
        result = json.loads(output.stdout.strip().splitlines()[-1])
        result["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True).stdout.strip()
        results.append(result)
        with arguments.results.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
