"""Shared fixtures: the real data files in the repository's data/ folder, small slices of them, a generated series,
and the installed command. The tests need nothing outside the repository; only scripts/ benchmarks read ../shared."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
ETTH1 = DATA / "ETTh1.csv"
CAMELS = DATA / "camels_13331500_seed05.csv"
BEIJING = DATA / "beijing_pm25.csv"
FORECAST = Path(sys.executable).with_name("forecast")
SYNTHETIC_ROWS = 1000


def train_until_killed(args: list, state: Path, epoch: int, timeout: float = 300) -> int:
    """Runs `forecast train ARGS` and kills it (SIGKILL) once the checkpoint state file `state` records at least
    `epoch` epochs; returns the exit code (-9 when it was killed)."""
    process = subprocess.Popen([str(FORECAST), "train", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= epoch:
            process.kill()
            break
        time.sleep(0.01)
    return process.wait()


def randomised(model, seed: int = 0):
    """Random weights everywhere, so that every input moves the output (the built model's linear terms start at 0)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.1, weight.shape).astype("float32") for weight in model.get_weights()])
    return model


def counted_calls(monkeypatch) -> list[int]:
    """Records the batch size of every call of any Keras model's `predict_on_batch` from now on (to the test's end)."""
    from forecast import backend

    keras = backend.keras()
    calls = []
    real = keras.Model.predict_on_batch

    def counting(self, x):
        calls.append(int(self.inputs[0].shape[0]))
        return real(self, x)

    monkeypatch.setattr(keras.Model, "predict_on_batch", counting)
    return calls


def span(first: int, last: int, lookback: int) -> tuple:
    """The origin ranges of a plan over origins first..last of a single series starting at row 0."""
    from forecast.sampler import OriginRange

    return (OriginRange(0, first, last, lookback - 1),)


def head_csv(source: Path, rows: int, destination: Path) -> Path:
    """The header and the first `rows` rows of `source`, byte for byte."""
    with source.open(encoding="utf-8") as reader:
        lines = [next(reader) for _ in range(rows + 1)]
    destination.write_text("".join(lines), encoding="utf-8")
    return destination


def synthetic_lines(rows: int) -> list[str]:
    """The header and first `rows` rows of an hourly series whose target follows a daily cycle and the first
    covariate, with noise; every line has its line end. A longer series continues a shorter one unchanged."""
    rng = np.random.default_rng(7)
    hours = np.arange(SYNTHETIC_ROWS)
    x1 = np.sin(2 * np.pi * hours / 24) + 0.1 * rng.standard_normal(len(hours))
    x2 = rng.standard_normal(len(hours))
    y = 30 + 3 * x1 + 0.5 * np.roll(x2, 1) + 0.3 * rng.standard_normal(len(hours))
    values = pd.DataFrame({"x1": x1, "x2": x2, "y": y}).round(3)
    time = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=len(hours), freq="h")})
    return pd.concat([time, values], axis=1).to_csv(index=False).splitlines(keepends=True)[: rows + 1]


def assert_png(path: Path, size: tuple[int, int]) -> None:
    """`path` is a complete PNG image (decoded to its last byte) of `size` = (width, height) pixels."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size, (path, image.format, image.size)
        image.load()


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


BASIN_IDS = ("01022500", "01547700", "02064000", "NA")  # the fourth sample basin renamed: a real station name


def tiny_basins(folder: Path, days: int = 60) -> tuple[Path, Path]:
    """The first `days` days of the four basins of the bundled sample (three columns of forcing), the fourth named
    NA, and their attribute table: three numeric columns and a text one. Returns the long file and the table."""
    frame = pd.read_csv(DATA / "camels_us_nh.csv", dtype={"basin": str})
    frame = frame.groupby("basin").head(days)[["basin", "date", "QObs", "PRCP", "Tmax"]]
    frame["basin"] = frame.basin.map(dict(zip(sorted(frame.basin.unique()), BASIN_IDS)))
    static = pd.read_csv(DATA / "camels_us_nh_static.csv", dtype={"basin": str})
    static = static[["basin", "area_gages2", "elev_mean", "frac_snow"]].assign(climate=["snow", "rain", "rain", "snow"])
    static["basin"] = static.basin.map(dict(zip(sorted(static.basin), BASIN_IDS)))
    frame.to_csv(folder / "basins.csv", index=False)
    static.to_csv(folder / "basins_static.csv", index=False)
    return folder / "basins.csv", folder / "basins_static.csv"


TINY_BASINS = ["--target", "QObs", "--id-column", "basin", "--lookback", "8", "--horizon", "2", "--batch-size", "16",
               "--epochs", "1", "--verbose", "0"]


@pytest.fixture(scope="session")
def basins_store(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A store with a tiny model `basins` trained (in process) on `tiny_basins`, with attributes: the data, the
    attribute table and the store. Tests work on copies of the store."""
    from forecast.config import Config
    from forecast.training import train

    folder = tmp_path_factory.mktemp("basins")
    data, static = tiny_basins(folder)
    config = Config(target="QObs", id_column="basin", static=str(static), lookback=8, horizon=2, batch_size=16,
                    epochs=1, units=4, head_units=4, stream_chunks=2)
    train(data, config, folder / "store" / "basins")
    return data, static, folder / "store"


def trained(csv, config, root, monkeypatch):
    """Trains in process (the networks where `config.executor` says); returns the result, every network's weights as
    trained (before the keep/discard gate) and the log lines."""
    from forecast import training

    networks, combined = [], training.combined

    def recording(members):
        networks.append([member.model.get_weights() for member in members])
        return combined(members)

    monkeypatch.setattr(training, "combined", recording)
    lines = []
    return training.train(csv, config, root, log=lines.append), networks[0], lines


def closed_port() -> int:
    """A port on the loopback where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
