"""`forecast tune`: a search of the settings on the validation rows with Ray Tune, as a user would pick them (the test
rows, after `val_end`, are never read), whose best trial becomes the model's next version.

The search runs on Ray: on this machine, or on the cluster `ray_address` names (`executor.ray_runtime`), each trial a
task of `cpus_per_task` CPUs and `gpus_per_task` GPUs. Ray Tune draws each trial's settings from the search space
(`search_space.SearchSpace`) at random, seeded by the run's `seed`; every trial trains with that seed through the
ordinary library path (`tune_trial`), and the ASHA scheduler stops the trials whose per-epoch validation score falls
behind the others' at the same epoch. A finished trial is scored as `forecast train` scores a run: the kept model's
validation score (`criterion.score`: the MSE for one series, each series' errors against its own spread for many).
The best finished trial's version is published as the model's next version, as `forecast train` would have saved it
with those settings, with `tune.csv` and `tune.png` in it and the search in its metrics.json (`tune`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forecast.config import Config
from forecast.data_cache import DataCache, load
from forecast.errors import ForecastError
from forecast.executor import MAX_RETRIES, ray_runtime
from forecast.search_space import SearchSpace, plain, settings_text, shown
from forecast.store import (CONFIG_FILE, METRICS_FILE, VERSIONS, current_version, locked, publish, staging_dir,
                            write_json)
from forecast.training_data import check_trainable, training_series
from forecast.tune_trial import REPORTED, TrialJob, read_outcome, run_trial

Log = Callable[[str], None]

TUNE_DIR = ".tune"  # the trials' model folders and Ray Tune's records while a search runs; removed at its end
TUNE_TABLE = "tune.csv"
TUNE_PLOT = "tune.png"
GRACE_EPOCHS = 3  # ASHA stops no trial before it has reported this many epochs
REDUCTION = 3  # ASHA keeps the best third of the trials at each of its rungs
COLUMNS = ("trial", "status", "score", "epochs", "seconds")


@dataclass(frozen=True)
class TuneResult:
    """A finished search: the version it saved (`model_dir`, named `version`), one row per trial that ran (`trials`:
    the columns of tune.csv) and the number of the trial that version is."""

    model_dir: Path
    version: str
    trials: pd.DataFrame
    best: int

    def table(self) -> str:
        """The leaderboard: the finished trials from the best score down, then those stopped early and those
        failed."""
        return leaderboard(self.trials)


def tune(csv_path: str | Path, config: Config, space: SearchSpace, root: str | Path, log: Log | None = None,
         cache: DataCache | None = None) -> TuneResult:
    """Searches `space` around `config` on the data at `csv_path` and publishes the best trial as the next version of
    the model at `root`. The data and the search are checked, and Ray started or joined, before any trial; a search in
    which no trial finishes fails in one line and leaves the current version serving. Holds the model's lock
    throughout. With `cache` (forecast.data_cache), the file is parsed once here and every trial maps it."""
    log = log or (lambda message: None)
    _check_ray_tune()
    root = Path(root)
    data = Path(csv_path).resolve()  # the trials read it from their own folders, perhaps on other nodes
    check_trainable(training_series(load(data, config, cache=cache), config.holdout_series), config, fresh=True)
    with locked(root):
        folder = (root / TUNE_DIR).resolve()
        shutil.rmtree(folder, ignore_errors=True)  # a killed search's trials
        folder.mkdir(parents=True)
        staged = False
        try:
            # The trials log nothing of the cache: their lines would go to Ray's worker logs.
            trial_cache = None if cache is None else DataCache(cache.folder, keep=cache.keep, min_bytes=cache.min_bytes)
            job = TrialJob(str(data), config, str(folder), os.getcwd(), trial_cache)
            with ray_runtime(config) as where:
                log(f"searching the settings in {space.trials} trial{'s' if space.trials > 1 else ''} on Ray Tune, "
                    f"{where}: {space.describe()}"
                    + (f"; time budget {space.time_budget:g} s" if space.time_budget else ""))
                rows = _search(job, space, config, log)
            if not rows:
                budget = (f" within its time budget of {space.time_budget:g} s; raise time_budget" if space.time_budget
                          else "")
                raise ForecastError(f"{data}: no trial of the search trained an epoch{budget}")
            trials = pd.DataFrame(rows).sort_values("trial", ignore_index=True)
            best = _best(trials, data)
            staged = True  # the staging folder holds this search's version now, no longer an interrupted train's
            version = publish(_stage(job.trial_root(best["ray_trial"]), root, config, space, trials, best), root,
                              config.keep_versions)
        except ForecastError:
            if staged:
                shutil.rmtree(staging_dir(root), ignore_errors=True)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    trials = trials.drop(columns="ray_trial")
    log(f"saved {root} version {version} from trial {best['trial']} ({settings_text(_settings(best, space))}): "
        f"{best['kind']}, validation score {best['score']:.4f}; {TUNE_TABLE} and {TUNE_PLOT} in it")
    return TuneResult(root / VERSIONS / version, version, trials, int(best["trial"]))


def _check_ray_tune() -> None:
    """Ray Tune can be imported; one line where it cannot (Ray installed without its `tune` extra)."""
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        raise ForecastError('forecast tune needs Ray Tune, which `pip install .` brings; install it with '
                            '`pip install "ray[tune]>=2.41"`') from None


def _search(job: TrialJob, space: SearchSpace, config: Config, log: Log) -> list[dict]:
    """Runs the trials on the Ray runtime that is up; returns a row per trial that ran, in the order they ended."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Ray Tune's older progress reporter, which verbose = 0 keeps quiet: the search's lines are its own. Ctrl-C stops
    # the command, as it stops train, instead of ending the search early and publishing its best trial so far.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    rows: list[dict] = []
    epochs = config.epochs * config.members  # an ensemble's networks report their epochs one after the other
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, job=job),
                            {"cpu": config.cpus_per_task, "gpu": config.gpus_per_task}),
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=REPORTED, mode="min", num_samples=space.trials, time_budget_s=space.time_budget,
            reuse_actors=True,  # a worker that has loaded TensorFlow runs the next trial
            search_alg=BasicVariantGenerator(random_state=config.seed),
            # max_t above the epochs a trial can report: ASHA stops a trial that reaches it, before it saves its outcome
            scheduler=ASHAScheduler(max_t=epochs + 1, grace_period=min(GRACE_EPOCHS, epochs),
                                    reduction_factor=REDUCTION),
        ),
        run_config=tune.RunConfig(name="search", storage_path=str(Path(job.folder) / "ray"), verbose=0,
                                  callbacks=[_progress(job, space, rows, log)],
                                  failure_config=tune.FailureConfig(max_failures=MAX_RETRIES)),
    )
    quiet = logging.getLogger("ray.tune")  # a failed trial's traceback: its row and line say what ended it
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        tuner.fit()
    finally:
        quiet.setLevel(level)
    return rows


def _progress(job: TrialJob, space: SearchSpace, rows: list[dict], log: Log):
    """A Ray Tune callback (run by the search's own process) that adds each trial's row to `rows` as it ends and logs
    its line."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.best: dict[str, float] = {}  # each trial's best epoch score so far, for one stopped early

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(REPORTED)
            if isinstance(value, float) and math.isfinite(value):
                self.best[trial.trial_id] = min(value, self.best.get(trial.trial_id, math.inf))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trials.index(trial) + 1, trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trials.index(trial) + 1, trial, f"its Ray worker failed {MAX_RETRIES + 1} times")

        def on_experiment_end(self, trials, **info):
            # The time budget ends the search without ending its trials one by one: those that reported an epoch
            # stopped early; the others timed out before their first epoch (or before they began).
            ended = {row["ray_trial"] for row in rows}
            for number, trial in enumerate(trials, start=1):
                if trial.trial_id not in ended:
                    self._ended(number, trial, None)

        def _ended(self, number: int, trial, failure: str | None) -> None:
            settings = {name: plain(trial.config[name]) for name in space.settings}
            row = trial_row(number, settings, read_outcome(job.trial_root(trial.trial_id)), trial.last_result or {},
                            self.best.get(trial.trial_id, math.nan), failure)
            rows.append({**row, "ray_trial": trial.trial_id})
            log(describe(row, space))

    return Progress()


def trial_row(number: int, settings: dict, outcome: dict | None, last: dict, best: float, failure: str | None) -> dict:
    """A trial's row of tune.csv: finished (its `outcome` without an error), failed (an error in its outcome, or the
    `failure` of its worker), stopped early (no outcome: the scheduler or the time budget ended it; its score is
    its best epoch's, `best`) or timed out (the time budget ended it before it reported an epoch); `last` is the
    last result it reported."""
    status = "stopped" if "epoch" in last else "timed out"
    row = {"trial": number, "status": status, "score": best, "epochs": int(last.get("epoch", 0)),
           "seconds": float(last.get("time_total_s", math.nan)), **settings, "kind": "", "node": last.get("node", ""),
           "error": ""}
    if outcome is not None:
        row.update(seconds=float(outcome.get("seconds", math.nan)), node=outcome.get("node", row["node"]))
        if "error" in outcome:
            row.update(status="failed", score=math.nan, error=str(outcome["error"]))
        else:
            row.update(status="finished", score=float(outcome["score"]), epochs=int(outcome["epochs"]),
                       kind=str(outcome["kind"]))
    elif failure is not None:
        row.update(status="failed", score=math.nan, error=failure)
    return row


def describe(row: dict, space: SearchSpace) -> str:
    """A trial's progress line."""
    settings = settings_text(_settings(row, space))
    head = f"trial {row['trial']} of {space.trials}"
    if row["status"] == "finished":
        return (f"{head}: validation score {row['score']:.4f}, {row['kind']}; {row['epochs']} epochs in "
                f"{row['seconds']:.0f} s; {settings}")
    if row["status"] == "failed":
        return f"{head} failed: {row['error']}; {settings}"
    if row["status"] == "timed out":
        return f"{head} timed out: the time budget ended the search before its first epoch; {settings}"
    return (f"{head} stopped early after {row['epochs']} epoch{'s' if row['epochs'] != 1 else ''} (best epoch's "
            f"score {row['score']:.4f}); {settings}")


def leaderboard(trials: pd.DataFrame) -> str:
    """The trials as a table, best first: rank (finished trials only), trial, status, score, epochs, seconds, their
    settings and what each kept (or the error that ended it)."""
    order = {"finished": 0, "stopped": 1, "timed out": 2, "failed": 3}
    ranked = trials.assign(order=trials["status"].map(order)).sort_values(["order", "score", "trial"])
    settings = [name for name in ranked.columns if name not in (*COLUMNS, "kind", "node", "error", "order",
                                                                 "ray_trial")]
    header = ["rank", *COLUMNS, *settings, "kept (or error)"]
    lines = []
    for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
        lines.append([str(rank) if row["status"] == "finished" else "-", str(row["trial"]), row["status"],
                      _number(row["score"], ".4f"), str(row["epochs"]), _number(row["seconds"], ".0f"),
                      *(shown(plain(row[name])) for name in settings), row["kind"] or row["error"]])
    widths = [max(len(line[index]) for line in [header, *lines]) for index in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(line, widths)), line[-1]]).rstrip()
                     for line in [header, *lines])


def _best(trials: pd.DataFrame, data: Path) -> pd.Series:
    """The finished trial with the lowest score (the earlier on a tie); one line where none finished."""
    finished = trials[(trials["status"] == "finished") & trials["score"].map(math.isfinite)]
    if len(finished):
        return finished.sort_values(["score", "trial"]).iloc[0]
    failed = trials[trials["status"] == "failed"]
    counts = ", ".join(f"{count} {status}" for status, count in trials["status"].value_counts().items())
    detail = (f"trial {failed['trial'].iloc[0]}: {failed['error'].iloc[0]}" if len(failed) else
              "the scheduler or the time budget stopped every trial; raise time_budget or lower epochs")
    raise ForecastError(f"{data}: no trial of the search finished ({counts or 'none ran'}); {detail}")


def _stage(trial_root: Path, root: Path, config: Config, space: SearchSpace, trials: pd.DataFrame,
           best: pd.Series) -> Path:
    """The best trial's version, copied into the model's staging folder as the version to publish, with the search
    in its metrics.json (`tune`), tune.csv and tune.png."""
    from forecast.plots import plot_tune

    staging = staging_dir(root)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(current_version(trial_root), staging)
    if config.executor != "local":  # the trial trained its networks in itself; the model's later runs go where asked
        saved = Config.from_json(staging / CONFIG_FILE)
        (staging / CONFIG_FILE).write_text(saved.replace(executor=config.executor).to_json() + "\n", encoding="utf-8")
    metrics = json.loads((staging / METRICS_FILE).read_text(encoding="utf-8"))
    counts = trials["status"].value_counts()
    metrics["tune"] = {
        "trials": len(trials), "asked": space.trials, **{status: int(counts.get(status, 0))
                                                         for status in ("finished", "stopped", "failed")},
        "best_trial": int(best["trial"]), "best_score": float(best["score"]), "settings": _settings(best, space),
        "searched": space.describe(), "space": space.to_json(),
    }
    write_json(staging / METRICS_FILE, metrics)
    trials.drop(columns="ray_trial").to_csv(staging / TUNE_TABLE, index=False)
    plot_tune(trials, staging / TUNE_PLOT)
    return staging


def _settings(row, space: SearchSpace) -> dict:
    return {name: plain(row[name]) for name in space.settings}


def _number(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "-"

