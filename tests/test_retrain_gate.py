"""The nightly retrain's promotion rule: within tolerance of the current version and of a fixed reference."""

import json
import os
import shutil

import pandas as pd

from forecast.config import Config
from forecast.store import staging_dir
from forecast.training import TrainResult

from conftest import ETTH1, head_csv
from saved_models import untrained_model

SMALL = Config(target="OT", past=(), lookback=24, horizon=6, batch_size=8, units=4, head_units=4, keep_versions=1)


def test_warm_retrains_cannot_ratchet_away_from_the_reference(tmp_path, monkeypatch):
    from forecast import retraining
    from forecast.retraining import RetrainOptions, retrain

    root = tmp_path / "store" / "ett"
    untrained_model(head_csv(ETTH1, 600, tmp_path / "base.csv"), SMALL, root / "versions" / "0001", 300, 450)
    (root / "versions" / "0001" / "metrics.json").write_text(json.dumps({"last_epoch": 2}))
    os.symlink("versions/0001", root / "current")
    holdout = {"0001": 1.0}  # holdout MSE by version; the candidate's is set per night

    def candidate(series, config, root, log, *args, start_from=None, **kwargs):
        """A candidate that is the current model again, with the scores the test chooses."""
        staging = staging_dir(root)
        shutil.copytree(start_from, staging)
        metrics = {"last_epoch": config.epochs, "kept_start_weights": False, "gate": {"t": 3.0, "blocks": 12}}
        return TrainResult(model_dir=staging, metrics=metrics, history=None)

    monkeypatch.setattr(retraining, "train_collection", candidate)
    monkeypatch.setattr(retraining, "_holdout_mse", lambda csv, model_dir, first, end, cache: holdout[model_dir.name])
    lines = []
    holdout[".staging"] = 1.015  # 1.5 % worse than current and reference 0001: within 2 %
    first = retrain(head_csv(ETTH1, 624, tmp_path / "night1.csv"), root, RetrainOptions(epochs=1), lines.append)
    assert first.promoted and first.version == "0002" and first.reference_mse == 1.0
    assert json.loads((root / "versions" / "0002" / "metrics.json").read_text())["reference_version"] == "0001"
    assert (root / "versions" / "0001").is_dir()  # keep_versions = 1, but the reference is kept
    holdout["0002"], holdout[".staging"] = 1.015, 1.03  # within 2 % of 0002, 3 % worse than the reference
    second = retrain(head_csv(ETTH1, 648, tmp_path / "night2.csv"), root, RetrainOptions(epochs=1), lines.append)
    assert not second.promoted and os.readlink(root / "current") == "versions/0002"
    assert "or reference 0001 1.0000 by more than 2%: kept version 0002" in lines[-1]
    record = json.loads((root / "retrain.jsonl").read_text().splitlines()[-1])
    assert (record["reference_version"], record["reference_mse"], record["current_mse"]) == ("0001", 1.0, 1.015)
    assert record["gate"] == {"t": 3.0, "blocks": 12} and record["kept_start_weights"] is False


def test_a_warm_candidate_that_kept_the_current_weights_is_not_promoted(tmp_path, monkeypatch):
    from forecast import retraining
    from forecast.retraining import RetrainOptions, retrain

    root = tmp_path / "store" / "ett"
    untrained_model(head_csv(ETTH1, 600, tmp_path / "base.csv"), SMALL, root / "versions" / "0001", 300, 450)
    (root / "versions" / "0001" / "metrics.json").write_text(json.dumps({"last_epoch": 2}))
    os.symlink("versions/0001", root / "current")

    def unchanged(series, config, root, log, *args, start_from=None, **kwargs):
        shutil.copytree(start_from, staging_dir(root))
        metrics = {"last_epoch": config.epochs, "kept_start_weights": True, "gate": {"t": 0.4, "blocks": 12}}
        return TrainResult(model_dir=staging_dir(root), metrics=metrics, history=None)

    monkeypatch.setattr(retraining, "train_collection", unchanged)
    monkeypatch.setattr(retraining, "_holdout_mse", lambda csv, model_dir, first, end, cache: 1.0)
    lines = []
    decision = retrain(head_csv(ETTH1, 624, tmp_path / "night.csv"), root, RetrainOptions(epochs=1), lines.append)
    assert not decision.promoted and os.listdir(root / "versions") == ["0001"] and not staging_dir(root).exists()
    assert lines[-1] == ("candidate holdout MSE 1.0000 vs current 1.0000, but its training did not clearly beat the "
                         "current weights on validation: kept version 0001")
    assert json.loads((root / "retrain.jsonl").read_text())["kept_start_weights"] is True


def test_a_retrain_keeps_the_model_s_split_rule():
    from forecast.config import Config
    from forecast.retraining import candidate_split

    dated = Config(target="y", train_end="2003-09-30", val_end="2006-09-30")
    train_end, val_end = candidate_split(dated, "2014-09-30 00:00:00")  # three years of validation, as trained
    assert val_end == "2014-09-30 00:00:00" and pd.Timestamp(train_end).floor("D") == pd.Timestamp("2011-09-30")
    assert candidate_split(Config(target="y", train_end="2003-09-30"), "2014-09-30") == ("2003-09-30", "2014-09-30")
    assert candidate_split(Config(target="y", train_end="8640", val_end="11520"), "2020-01-01") == (None, "2020-01-01")
    assert candidate_split(Config(target="y"), "2020-01-01") == (None, "2020-01-01")


def test_a_holdout_reaching_into_the_current_validation_rows_is_recorded():
    from types import SimpleNamespace

    from forecast.retraining import holdout_overlap

    schema = SimpleNamespace(series=[SimpleNamespace(val_time="2006-09-30 00:00:00"),
                                     SimpleNamespace(val_time="2006-08-31 00:00:00")])
    assert holdout_overlap(schema, "2006-09-01")
    assert not holdout_overlap(schema, "2006-09-30")
    assert not holdout_overlap(SimpleNamespace(series=[SimpleNamespace(val_time=None)]), "2000-01-01")
