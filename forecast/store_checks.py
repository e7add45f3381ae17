"""Checks of a model directory read back from the store, beyond each file's own: nothing in it leads out of it, every
sealed file is as training wrote it (see forecast.seal), and the per-series files name the same trained series.

A series missing from one file would otherwise be read as one that took no part in training, and forecast as such.
"""

from __future__ import annotations

from pathlib import Path

from forecast.errors import ForecastError
from forecast.scaling import GLOBAL, Scalers
from forecast.seal import check_sealed

CHANGED = "the files were changed after training: roll back or retrain the model"


def check_contained(model_dir: Path) -> None:
    """No link inside `model_dir` may lead out of it (a model.keras linked to a file elsewhere would be loaded)."""
    root = model_dir.resolve()
    for path in sorted(model_dir.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            if target != root and root not in target.parents:
                raise ForecastError(f"{path}: a link to {target}, outside the model directory; nothing in a model "
                                    f"version may lead out of it: {CHANGED}")


def check_sealed_files(model_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (model_dir / name).is_file():
            check_sealed(model_dir / name)


def check_trained_ids(model_dir: Path, schema_ids: tuple[str, ...], scaler: Scalers) -> None:
    """scaler.json holds one scaler per series of schema.json's records (or one for all, with scaling = "global")."""
    scaled = set(scaler.by_id)
    if GLOBAL in scaled:
        if scaled != {GLOBAL}:
            raise ForecastError(f"{model_dir}: scaler.json holds the scaler for all series and others besides; "
                                f"{CHANGED}")
        return
    trained = set(schema_ids)
    if scaled == trained:
        return
    if trained - scaled:
        detail = f"series {sorted(trained - scaled)[0]!r} was trained (schema.json) but has no scaler (scaler.json)"
    else:
        detail = (f"series {sorted(scaled - trained)[0]!r} has a scaler (scaler.json) but no training record "
                  "(schema.json)")
    raise ForecastError(f"{model_dir}: {detail}; {CHANGED}")
