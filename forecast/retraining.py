"""Nightly retraining: check the grown CSV, train a candidate, promote it only when it scores as well as the current one
and as its fixed reference, the version its line of warm retrains started from.

The current version keeps serving `forecast predict` throughout; the candidate becomes a version, and `current` moves to
it in one rename, only after it has been scored. The model's lock keeps two runs from overlapping.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from forecast.config import Config
import pandas as pd

from forecast.criterion import series_score
from forecast.data import Collection, Series
from forecast.data_cache import DataCache
from forecast.errors import ForecastError, IncompatibleWeights
from forecast.evaluation import evaluate
from forecast.backtest import range_forecasts
from forecast.intervals import ArrayTruths, Calibration, calibrate, candidate_spans
from forecast.runner import load_model_file, open_saved
from forecast.store import (
    CONFIG_FILE,
    INTERVALS_FILE,
    METRICS_FILE,
    VERSIONS,
    Schema,
    SeriesRecord,
    current_version,
    locked,
    publish,
    read_metrics,
    read_saved,
    staging_dir,
    versions,
    with_network,
    write_json,
)
from forecast.training import Log, train_collection
from forecast.validation import DIGEST_BLOCK, line_of, row_digests

DECISIONS_FILE = "retrain.jsonl"


@dataclass(frozen=True)
class RetrainOptions:
    """How a retrain runs: `epochs` more epochs from the current weights, or (`full`) a fresh model trained for the
    configured epochs; the last `holdout` rows (default: four horizons) are scored, and the candidate is promoted when
    its MSE there is at most the current model's and the reference version's, each times (1 + tolerance)."""

    epochs: int = 3
    full: bool = False
    holdout: int | None = None
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ForecastError(f"retrain: --epochs must be at least 1, got {self.epochs}")
        if self.holdout is not None and self.holdout < 1:
            raise ForecastError(f"retrain: --holdout must be at least 1 row, got {self.holdout}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0.0):
            raise ForecastError(f"retrain: --tolerance must be a finite number of at least 0, got {self.tolerance}")


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    version: str | None = None
    current_mse: float | None = None
    candidate_mse: float | None = None
    reference_mse: float | None = None


def check_appended(collection: Collection, schema: Schema, skip_rows: int = 0) -> int:
    """Each series the current model was trained on must still hold its training rows, unchanged, followed by new
    ones (a series new to the file is all new); returns how many rows are new over all series."""
    missing = [record.id for record in schema.series if record.id not in collection.ids]
    if missing:
        raise ForecastError(
            f"{collection.path}: series {missing[0]!r}, which the current model was trained on, is not in the file; "
            "check the file (or train a new model with `forecast train`)"
        )
    new_rows = 0
    for series in collection.series:
        record = schema.record(series.id)
        if record is None:
            new_rows += series.n_observed if series.id not in schema.holdout else 0
            continue
        _check_series_appended(series, record, None if collection.id_name else skip_rows)
        new_rows += series.n_observed - record.rows
    return new_rows


def _check_series_appended(series: Series, record: SeriesRecord, skip_rows: int | None) -> None:
    """`series` must begin with the `record.rows` rows the model was trained on, unchanged; `skip_rows` turns row
    numbers into file lines (None in a long file, whose rows of one series are spread over it: times only)."""
    if series.n_observed < record.rows:
        raise ForecastError(
            f"{series.where}: {series.n_observed} observed rows, fewer than the {record.rows} the current model was "
            "trained on; rows were removed, so check the file (or train a new model with `forecast train`)"
        )
    digests = row_digests(series.time, series.values, record.rows)
    for block, (now, before) in enumerate(zip(digests, record.digests)):
        if now != before:
            first = block * DIGEST_BLOCK
            last = min(first + DIGEST_BLOCK, record.rows) - 1
            lines = f"rows {line_of(first, skip_rows)} to {line_of(last, skip_rows)} " if skip_rows is not None else ""
            raise ForecastError(
                f"{series.where}: {lines}({series.time[first]} to {series.time[last]}) differ from "
                "the data the current model was trained on; history was rewritten, so check the file or train a new "
                "model with `forecast train`"
            )


def retrain(
    csv_path: str | Path, root: str | Path, options: RetrainOptions, log: Log | None = None, verbose: int = 0,
    extra_callbacks: tuple = (), cache: DataCache | None = None,
) -> Decision:
    """Validates, trains a candidate, scores both models on the newest rows and promotes or keeps; logs and records
    the decision in `root/retrain.jsonl`. The file is read through `cache` (forecast.data_cache), every time."""
    log = log or (lambda message: None)
    root = Path(root)
    with locked(root):
        current = current_version(root)
        # The whole current version is checked first: it is what the candidate starts from and is scored against.
        with_network(read_saved(current), load_model_file)
        opened = open_saved(csv_path, root, version=current, cache=cache)
        config, schema, collection = opened.saved.config, opened.saved.schema, opened.collection
        new_rows = check_appended(collection, schema, config.skip_rows)
        if new_rows == 0:
            last_time = max(record.last_time for record in schema.series)
            log(f"{csv_path}: no new rows since {last_time}; kept version {current.name}")
            return Decision(promoted=False, reason="no new rows")
        holdout = options.holdout or 4 * config.horizon
        training = collection.without(schema.holdout)
        cut = _holdout_cut(training, holdout, config, csv_path)
        candidate_config = _candidate_config(config, current, options, cut)
        overlaps = holdout_overlap(schema, cut)
        if overlaps:
            log(f"the holdout after {cut} overlaps version {current.name}'s validation rows, which chose it: its "
                "holdout score is flattering; retrain when more new rows have come")
        mode = "full retrain" if options.full else f"warm start at epoch {candidate_config.initial_epoch + 1}"
        log(f"{csv_path}: {new_rows} new rows; training a candidate ({mode}), holding out the last {holdout} rows")
        staging = staging_dir(root)
        series_ids = training.ids if collection.id_name else None
        try:
            trained, options = _train_candidate(training, candidate_config, config, current, options, cut, root, log,
                                                verbose, extra_callbacks)
            scores = _holdout_scores(csv_path, root, current, trained.model_dir, cut, series_ids, log, cache)
        except ForecastError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": str(csv_path),
            "rows": sum(series.n_observed for series in collection.series), "new_rows": new_rows,
            "holdout_rows": holdout, "mode": "full" if options.full else "warm",
            "epochs": int(trained.metrics["last_epoch"]), "kept_start_weights": trained.metrics["kept_start_weights"],
            "gate": trained.metrics["gate"], "current_version": current.name, **scores,
            "split": {"train_end": candidate_config.train_end, "val_end": candidate_config.val_end},
            "holdout_overlaps_validation": overlaps,
            "tolerance": options.tolerance,
        }
        return _decide(record, trained, options, csv_path, root, current, series_ids, config.keep_versions, log, cache)


def _holdout_cut(training: Collection, holdout: int, config: Config, csv_path) -> str:
    """The time after which rows are held out: the newest `holdout` steps in time, the same stretch for every series
    (the candidate still needs training and validation rows before it)."""
    latest = max(training.series, key=lambda series: series.time[series.n_observed - 1])
    scored_from = latest.n_observed - holdout
    if scored_from < config.lookback + 2 * config.horizon:
        raise ForecastError(f"{csv_path}: too little data for a holdout of {holdout} rows; lower --holdout")
    return str(latest.time[scored_from - 1])


def _train_candidate(training: Collection, candidate_config: Config, config: Config, current: Path,
                     options: RetrainOptions, cut: str, root: Path, log: Log, verbose: int, extra_callbacks: tuple):
    """The candidate trained on the rows up to `cut` with `candidate_config` (warm from `current`, or afresh with
    `options.full`, or afresh from `config` when the current weights no longer fit the network), and the options it
    was trained with."""
    try:
        trained = train_collection(training, candidate_config, root, log, verbose, extra_callbacks,
                                   start_from=None if options.full else current, purpose="retrain")
    except IncompatibleWeights as exc:
        log(f"{exc}; training a fresh candidate instead")
        options = dataclasses.replace(options, full=True)
        trained = train_collection(training, _candidate_config(config, current, options, cut), root, log, verbose,
                                   extra_callbacks, purpose="retrain")
    _keep_configured_epochs(trained.model_dir, config.epochs)
    return trained, options


def _holdout_scores(csv_path, root: Path, current: Path, candidate: Path, cut: str, series_ids, log: Log,
                    cache: DataCache | None) -> dict:
    """The holdout score (`_holdout_mse`) of the current version, the candidate and the current line's reference
    version."""
    current_mse = _holdout_mse(csv_path, current, cut, series_ids, cache)
    candidate_mse = _holdout_mse(csv_path, candidate, cut, series_ids, cache)
    reference = reference_version(root, current)
    if reference is None:
        log(f"{root}: the reference version of {current.name} is no longer kept; comparing with it alone")
        reference = current
    reference_mse = current_mse if reference == current else _holdout_mse(csv_path, reference, cut, series_ids, cache)
    return {"current_mse": current_mse, "candidate_mse": candidate_mse, "reference_version": reference.name,
            "reference_mse": reference_mse}


def _decide(record: dict, trained, options: RetrainOptions, csv_path, root: Path, current: Path, series_ids,
            keep_versions: int, log: Log, cache: DataCache | None) -> Decision:
    """Promotes the candidate (recalibrating its intervals on the newest rows) when it is within tolerance of both the
    current and the reference version on the holdout, else discards it; appends `record` to the decisions file."""
    candidate_mse, current_mse, reference_mse = (record[key] for key in ("candidate_mse", "current_mse",
                                                                         "reference_mse"))
    bound = 1.0 + options.tolerance
    # A warm candidate whose training did not clearly beat the current weights carries them on: nothing to promote.
    unchanged = not options.full and trained.metrics["kept_start_weights"]
    promoted = not unchanged and candidate_mse <= current_mse * bound and candidate_mse <= reference_mse * bound
    record["promoted"] = promoted
    version = None
    if promoted:
        # A warm candidate keeps its line's fixed reference; a full retrain starts a new line (it is its own).
        metrics = {**trained.metrics, "holdout": record,
                   "reference_version": None if options.full else record["reference_version"]}
        calibration = recalibrate(csv_path, trained.model_dir, series_ids, cache=cache)
        if calibration is not None:
            metrics["intervals"] = calibration.summary()
            log(f"recalibrated on the validation and holdout rows: {calibration.describe()}")
        write_json(trained.model_dir / METRICS_FILE, metrics)
        version = publish(trained.model_dir, root, keep_versions)
        record["version"] = version
        reason = (f"candidate holdout MSE {candidate_mse:.4f} vs current {current_mse:.4f} and reference "
                  f"{record['reference_version']} {reference_mse:.4f}: promoted to version {version}")
    else:
        shutil.rmtree(staging_dir(root), ignore_errors=True)
        reason = (f"candidate holdout MSE {candidate_mse:.4f} is worse than current {current_mse:.4f} or reference "
                  f"{record['reference_version']} {reference_mse:.4f} by more than {options.tolerance:.0%}: kept "
                  f"version {current.name}")
        if unchanged:
            reason = (f"candidate holdout MSE {candidate_mse:.4f} vs current {current_mse:.4f}, but its training did "
                      f"not clearly beat the current weights on validation: kept version {current.name}")
    with (root / DECISIONS_FILE).open("a", encoding="utf-8") as writer:
        writer.write(json.dumps(record) + "\n")
    log(reason)
    return Decision(promoted, reason, version, current_mse, candidate_mse, reference_mse)


def reference_version(root: Path, current: Path) -> Path | None:
    """The fixed reference a warm retrain must also stay within tolerance of: the version its line started from (the
    last one trained afresh, by `forecast train` or a full retrain), so that nights of small losses cannot add up.
    None when that version is no longer kept."""
    name = read_metrics(current).get("reference_version") or current.name
    if name == current.name:
        return current
    if name not in versions(root):  # only a kept version's name, never a path
        return None
    return root / VERSIONS / name


def _candidate_config(config: Config, current: Path, options: RetrainOptions, cut: str) -> Config:
    """The current configuration with the split moved to the grown data (`candidate_split`: validation ends at the
    time `cut`, the last row before the holdout) and the epochs continued (or restarted)."""
    train_end, val_end = candidate_split(config, cut)
    moved = dataclasses.replace(config, train_end=train_end, val_end=val_end)
    if options.full:
        return dataclasses.replace(moved, initial_epoch=0)
    last_epoch = _last_epoch(current / METRICS_FILE)
    return dataclasses.replace(moved, initial_epoch=last_epoch, epochs=last_epoch + options.epochs)


def candidate_split(config: Config, cut: str) -> tuple[str | None, str]:
    """The candidate's (train_end, val_end): the model's own split rule on the grown data, validation ending at the
    time `cut`. Dated splits stay dated: with both ends dates, the validation stretch keeps its length; with a dated
    train_end alone, training keeps its end and validation runs to the cut. Otherwise (row counts, or the default
    fraction) validation is the last `validation_fraction` of the rows before the cut."""
    dated = [bound is not None and not bound.isdigit() for bound in (config.train_end, config.val_end)]
    if dated[0] and dated[1]:
        stretch = _end_of(config.val_end) - _end_of(config.train_end)
        return str(_end_of(cut) - stretch), cut
    if dated[0]:
        return config.train_end, cut
    return None, cut


def _end_of(value: str) -> pd.Timestamp:
    """The last instant a date bound includes (`2006-09-30`: that whole day), as `split.row_bound` reads it."""
    try:
        return pd.Period(value).end_time
    except ValueError:
        return pd.Timestamp(value)


def holdout_overlap(schema: Schema, cut: str) -> bool:
    """Whether the holdout (rows after `cut`) reaches into the current version's validation rows, which chose it: its
    holdout score then flatters it."""
    ends = [pd.Timestamp(record.val_time) for record in schema.series if record.val_time]
    return bool(ends) and pd.Timestamp(cut) < max(ends)


def _last_epoch(path: Path) -> int:
    """The epoch the current version's weights come from, which a warm start continues counting from."""
    try:
        last_epoch = json.loads(path.read_text(encoding="utf-8"))["last_epoch"]
        if isinstance(last_epoch, int) and not isinstance(last_epoch, bool) and last_epoch >= 0:
            return last_epoch
        problem = f"last_epoch is {last_epoch!r}, not a count of epochs"
    except FileNotFoundError:
        problem = "missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"not readable ({type(exc).__name__}: {exc})"
    raise ForecastError(f"{path}: {problem}; retrain with --full, or roll back to a complete version")


def _keep_configured_epochs(model_dir: Path, epochs: int) -> None:
    """A warm start runs to `last_epoch + --epochs`; the candidate's saved configuration (as training wrote it, with
    the bounds it detected) keeps the configured epoch budget instead, so that a later --full retrain trains as long
    as the first training did, however many warm starts came between."""
    saved = dataclasses.replace(Config.from_json(model_dir / CONFIG_FILE), epochs=epochs, initial_epoch=0)
    (model_dir / CONFIG_FILE).write_text(saved.to_json() + "\n", encoding="utf-8")


def _holdout_mse(csv_path, model_dir: Path, cut: str, series_ids: tuple[str, ...] | None,
                 cache: DataCache | None) -> float:
    """The holdout score (the rows after the time `cut`) by the run's one criterion (`criterion.series_score`), each
    series' MSE in the target's own units, since a full retrain fits new scalers and z-scored errors would not compare;
    for one series, its MSE."""
    start = str(pd.Timestamp(cut) + pd.Timedelta(microseconds=1))
    scored = evaluate(csv_path, model_dir, start, ablation=False, series_ids=series_ids, cache=cache)
    per_series = scored.per_series[scored.per_series["forecaster"] == "model"]
    return series_score(per_series["mse_original"].to_numpy(), per_series["steps"].to_numpy(),
                        per_series["variance_original"].to_numpy())


def recalibrate(csv_path, model_dir: Path, series_ids: tuple[str, ...] | None = None, end: str | None = None,
                cache: DataCache | None = None) -> Calibration | None:
    """Calibrates the intervals of the model at `model_dir` again on every origin after each series' training rows,
    up to `end` (a row count or the last date to include; None: the newest row): in a retrain, its validation rows and
    the holdout, which no part of it was fitted on, so that the intervals follow the newest errors. Writes
    intervals.json; None (and nothing written) for a model without quantiles."""
    saved = read_saved(model_dir)
    if not saved.config.quantiles:
        return None
    ranged = range_forecasts(csv_path, model_dir, end=end, ablation=False, series_ids=series_ids, after_training=True,
                             intervals=False, cache=cache)
    if not ranged.weight.any():
        return None  # no observed target after the training rows: the calibration from training stays
    calibration = calibrate(
        ranged.models["model"], ArrayTruths(ranged.target, ranged.weight), ranged.features.history[:, 0], ranged.ends,
        saved.config.quantiles, candidate_spans(saved.config.lookback, saved.config.horizon), ranged.series_index,
    )
    (model_dir / INTERVALS_FILE).write_text(calibration.to_json() + "\n", encoding="utf-8")
    return calibration
