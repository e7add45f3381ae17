"""One trial of a settings search (`forecast tune`), run by Ray Tune in its own worker: the run's configuration with
the trial's settings, trained through the ordinary library path (`training.train`) into the trial's own model folder,
so that the linear start, early stopping and the keep/discard gate run as in `forecast train`.

Each epoch reports its validation score (`val_mse`, what early stopping reads) to Ray Tune, whose scheduler stops the
trials that fall behind; a trial that ends writes what it became (`OUTCOME`) into its folder, where the search reads
it. TensorFlow is imported only inside the trial, so the search's own process stays light.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from forecast.config import Config
from forecast.data_cache import DataCache
from forecast.errors import ForecastError
from forecast.search_space import plain

REPORTED = "val_mse"  # the per-epoch score the scheduler compares trials on
OUTCOME = "outcome.json"


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a search needs: the data file (an absolute path), the run's configuration (each trial's
    settings go on top), the folder that holds the trials' model folders and the working directory of the search (the
    configuration's relative paths, such as `static`, are read from it) and the store's data cache (None: each trial
parses the file)."""

    data: str
    config: Config
    folder: str
    workdir: str
    cache: DataCache | None = None

    def trial_root(self, trial_id: str) -> Path:
        """The model folder trial `trial_id` trains into."""
        return Path(self.folder) / trial_id


def run_trial(settings: dict, job: TrialJob) -> None:
    """Trains the run's configuration with `settings` (a searched setting's name -> its value) as Ray Tune's trial
    function, on `config.cpus_per_task` threads, and writes its outcome: the kept model's validation score (`score`,
    `criterion.score`), its kind, the epochs trained, the seconds taken and the Ray node it ran on, or the one-line
    `error` that ended it."""
    import ray
    from ray import tune

    from forecast.executor import limit_threads
    from forecast.training import train

    from forecast import backend

    started = time.monotonic()
    limit_threads(job.config.cpus_per_task)
    backend.keras().backend.clear_session()  # Ray Tune runs the trials one after another in a worker it keeps
    os.chdir(job.workdir)  # Ray Tune starts a trial in a folder of its own
    node = ray.get_runtime_context().get_node_id()
    root = job.trial_root(tune.get_context().get_trial_id())
    root.mkdir(parents=True, exist_ok=True)
    outcome: dict = {"node": node}
    try:
        # The trial itself is the Ray task: its networks train in it, one after the other.
        config = job.config.replace(executor="local", **{name: plain(value) for name, value in settings.items()})
        result = train(job.data, config, root, extra_callbacks=(_epoch_report(node),), cache=job.cache)
        outcome.update(score=result.metrics["validation"]["model"]["score"], kind=result.metrics["model_kind"],
                       epochs=result.metrics["epochs_run"])
    except ForecastError as exc:
        outcome["error"] = str(exc)
    except Exception as exc:  # a fault in one trial is its row in the results, not the end of the search
        text = str(exc).strip()
        outcome["error"] = f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"
    outcome["seconds"] = time.monotonic() - started
    (root / OUTCOME).write_text(json.dumps(outcome, default=float) + "\n", encoding="utf-8")


def read_outcome(root: Path) -> dict | None:
    """The outcome a trial wrote into its model folder `root`; None where it wrote none (stopped before the end)."""
    try:
        outcome = json.loads((root / OUTCOME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) else None


def _epoch_report(node: str):
    """A Keras callback that reports each epoch's validation score to Ray Tune, with the epochs trained so far and the
    node; all but a network's last epoch, after which the trial saves its outcome."""
    from ray import tune

    from forecast import backend

    class EpochReport(backend.keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = 0  # an ensemble's networks report one after the other, so the count runs on

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1
            if epoch + 1 >= self.params.get("epochs", math.inf):
                return  # a network's last epoch: the scheduler must not stop the trial as it is about to be scored
            value = (logs or {}).get(REPORTED)
            tune.report({REPORTED: float(value) if value is not None else math.nan, "epoch": self.epochs,
                         "node": node})

    return EpochReport()
