"""Shared fixtures: the real data files in ../shared/data, small slices of them, and the installed command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FORECAST_SHARED_DATA", ROOT.parent / "shared" / "data"))
ETTH1 = SHARED / "ETTh1.csv"
CAMELS = SHARED / "camels_13331500_seed05.csv"
BEIJING = SHARED / "beijing_pm25.csv"
FORECAST = Path(sys.executable).with_name("forecast")


def pytest_collection_modifyitems(items):
    if not SHARED.is_dir():
        raise pytest.UsageError(f"the real data is missing: expected {SHARED} (set FORECAST_SHARED_DATA)")


def head_csv(source: Path, rows: int, destination: Path) -> Path:
    """The header and the first `rows` rows of `source`, byte for byte."""
    with source.open(encoding="utf-8") as reader:
        lines = [next(reader) for _ in range(rows + 1)]
    destination.write_text("".join(lines), encoding="utf-8")
    return destination


def run_forecast(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Runs the installed `forecast` command as a user would."""
    result = subprocess.run([str(FORECAST), *map(str, args)], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"forecast {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def ett_small(tmp_path_factory) -> Path:
    """The first 1,500 hours of ETTh1."""
    return head_csv(ETTH1, 1500, tmp_path_factory.mktemp("ett") / "ETTh1_small.csv")
