"""Writing result tables (forecasts, backtests) as CSV or Parquet, chosen by the file's extension."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from forecast.errors import ForecastError

PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    """Whether `path` is (or is to be written as) Parquet: by its extension, or for an existing file by the magic bytes
    Parquet files begin with."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:
        with path.open("rb") as reader:
            return reader.read(4) == b"PAR1"
    except OSError:
        return False


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Writes `frame` to `path` (Parquet for `.parquet`/`.pq`, else CSV) through a temporary file beside it, renamed
    over `path` at the end, so a reader of `path` never sees half a file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if is_parquet(path):
            frame.to_parquet(partial, index=False, engine="pyarrow")
        else:
            frame.to_csv(partial, index=False)
        partial.replace(path)
    except ImportError:
        partial.unlink(missing_ok=True)
        raise ForecastError(f"{path}: writing Parquet needs pyarrow; pip install pyarrow, or write a .csv") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ForecastError(f"{path}: cannot write ({exc.strerror or exc}); choose another path") from None
