"""A checksum of its own contents inside each saved JSON file whose values reach a forecast (scaler.json, statics.json,
intervals.json), so that a value changed after training is refused instead of read.

A plausible edit (a mean moved by 100, an id removed) passes every range check; only a record of what training wrote
can tell it. The checksum is over the file's data as a reader parses it, so it does not depend on the indentation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from forecast.errors import ForecastError

KEY = "sha256"


def _digest(data: dict) -> str:
    canonical = json.dumps({key: value for key, value in data.items() if key != KEY}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sealed(data: dict) -> dict:
    """`data` with the checksum of its contents added (computed on the data as it will be read back)."""
    data = json.loads(json.dumps(data))
    return {**data, KEY: _digest(data)}


def check_sealed(path: Path) -> None:
    """Refuses the file at `path` when its contents no longer match its checksum; a file written before files were
    sealed (no checksum) is read as it is."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ForecastError(f"{path}: not readable ({exc}); roll back or retrain the model") from None
    if not isinstance(data, dict) or KEY not in data:
        return
    if data[KEY] != _digest(data):
        raise ForecastError(
            f"{path}: changed after training (its contents no longer match the checksum training wrote into it); "
            "roll back or retrain the model"
        )
