"""The cache of parsed data files (forecast.data_cache): a second run maps the parsed series instead of reading the
file, gets exactly what parsing gives, and never trusts an entry that is stale or damaged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast import data_cache
from forecast.config import Config
from forecast.data import Collection, load_collection
from forecast.data_cache import DataCache, load
from forecast.errors import ForecastError
from forecast.features import fit_scaler

CONFIG = Config(target="y", id_column="id", sim=("s",))


def long_file(path: Path, n_series: int = 5, rows: int = 240, gap: bool = False) -> Path:
    """A long file of `n_series` hourly series (id, date, y, x, s), the series' lengths differing, a few cells empty;
    with `gap`, one series misses two hours."""
    rng = np.random.default_rng(n_series)
    parts = []
    for index in range(n_series):
        count = rows - 10 * index
        hours = np.arange(count)
        frame = pd.DataFrame({
            "id": f"0{index}", "date": pd.date_range("2021-03-01", periods=count, freq="h").strftime("%Y-%m-%d %H:%M"),
            "y": (np.sin(2 * np.pi * hours / 24) + rng.standard_normal(count)).round(3),
            "x": rng.standard_normal(count).round(3), "s": rng.standard_normal(count).round(3),
        })
        frame.loc[rng.integers(0, count, 3), "y"] = np.nan
        parts.append(frame.drop(index=[50, 51]) if gap and index == 1 else frame)
    pd.concat(parts).to_csv(path, index=False)
    return path


def cache_at(folder: Path, lines: list[str] | None = None, **settings) -> DataCache:
    """A cache for files of any size, its log lines appended to `lines`."""
    return DataCache(folder, (lines if lines is not None else []).append, min_bytes=0, **settings)


def assert_same(cached: Collection, parsed: Collection) -> None:
    """Two collections hold the same series, value for value, with the same times, steps, roles and columns."""
    assert (cached.path, cached.id_name, cached.ids) == (parsed.path, parsed.id_name, parsed.ids)
    for mapped, read in zip(cached.series, parsed.series):
        pd.testing.assert_index_equal(mapped.time, read.time, exact=True)
        assert mapped.time.freq == read.time.freq
        pd.testing.assert_frame_equal(mapped.values, read.values, check_exact=True)
        assert (mapped.path, mapped.time_name, mapped.roles, mapped.freq, mapped.freq.unit, mapped.columns,
                mapped.left_out, mapped.business_days, mapped.id) == (
            read.path, read.time_name, read.roles, read.freq, read.freq.unit, read.columns, read.left_out,
            read.business_days, read.id)
        # the same sums: a column's rows lie in the same order in memory, so the scalers agree to the last bit
        assert fit_scaler(mapped, len(read.time) // 2) == fit_scaler(read, len(read.time) // 2)


def entries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def refuse_parsing(monkeypatch) -> None:
    """Any parse of a file from here on fails the test."""
    def refused(*args, **kwargs):
        raise AssertionError("the file was parsed again")

    monkeypatch.setattr(data_cache, "load_collection", refused)
    monkeypatch.setattr(pd, "read_csv", refused)


@pytest.mark.parametrize("case", ["long", "gaps masked", "gaps interpolated", "one series", "parquet", "business days"])
def test_a_second_run_maps_what_parsing_gave_without_reading_the_file(tmp_path, monkeypatch, case):
    config = CONFIG
    if case.startswith("gaps"):
        path = long_file(tmp_path / "data.csv", gap=True)
        config = config.replace(gaps=case.split()[1].replace("masked", "mask").replace("interpolated", "interpolate"))
    elif case == "one series":
        path = tmp_path / "one.csv"
        pd.read_csv(long_file(tmp_path / "data.csv"), dtype={"id": str}).query("id == '00'").drop(
            columns="id").to_csv(path, index=False)
        config = Config(target="y")
    elif case == "parquet":
        path = tmp_path / "data.parquet"
        pd.read_csv(long_file(tmp_path / "data.csv"), dtype={"id": str}).to_parquet(path, index=False)
    else:
        frame = pd.read_csv(long_file(tmp_path / "data.csv"), dtype={"id": str})
        days = pd.bdate_range("2021-03-01", periods=frame.groupby("id").size().max())
        frame["date"] = np.concatenate([days[: len(group)].strftime("%Y-%m-%d") for _, group in frame.groupby(
            "id", sort=False)])
        path = tmp_path / "days.csv"
        frame.to_csv(path, index=False)
    parsed = load_collection(path, config)
    lines = []
    cache = cache_at(tmp_path / "cache", lines)
    assert_same(load(path, config, cache=cache), parsed)
    assert case != "business days" or parsed.first.business_days
    refuse_parsing(monkeypatch)
    assert_same(load(path, config, cache=cache), parsed)
    # as predict asks for it: with the past columns and the step the first read resolved
    resolved = config.replace(past=parsed.first.roles.past)
    assert_same(load(path, resolved, parsed.first.business_days, cache=cache), parsed)
    assert lines == []


def test_the_series_are_views_of_the_mapped_arrays(tmp_path):
    path = long_file(tmp_path / "data.csv")
    cache = cache_at(tmp_path / "cache")
    config = CONFIG.replace(past=("x",))  # the settings resolved: one entry
    load(path, config, False, cache=cache)
    collection = load(path, config, False, cache=cache)
    (entry,) = entries(tmp_path / "cache")
    for series in collection.series:
        assert str(mapping(series.values.to_numpy()).filename) == str((entry / "values.npy").resolve())
        assert str(mapping(series.time.asi8).filename) == str((entry / "time.npy").resolve())


def test_the_series_pages_leave_the_resident_memory_once_the_features_are_built(tmp_path):
    """prepare reads a cached collection once into the features and then drops its mapped pages out of the process's
    resident memory (they stay in the page cache); the series read the same afterwards."""
    from forecast.training_data import prepare

    path = long_file(tmp_path / "data.csv", n_series=40, rows=2000)
    cache = cache_at(tmp_path / "cache")
    config = CONFIG.replace(past=("x",), lookback=24, horizon=6)
    load(path, config, False, cache=cache)
    collection = load(path, config, False, cache=cache)
    (entry,) = entries(tmp_path / "cache")
    before = [series.values.to_numpy().copy() for series in collection.series]
    assert resident_kib(entry / "values.npy") > 0.9 * (entry / "values.npy").stat().st_size / 1024
    prepare(collection, config, None, lambda message: None)
    assert resident_kib(entry / "values.npy") < 8 and resident_kib(entry / "time.npy") < 8
    for series, values in zip(collection.series, before):
        np.testing.assert_array_equal(series.values.to_numpy(), values)
    data_cache.release_pages(load_collection(path, config))  # a collection in memory is left as it is


def resident_kib(path: Path) -> int:
    """KiB of this process's mappings of `path` resident in memory (Linux's /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping's header line
            inside = line.endswith(str(path.resolve()))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def mapping(array: np.ndarray) -> np.memmap | None:
    """The mapped file `array` is a view of, if any."""
    while array is not None and not isinstance(array, np.memmap):
        array = array.base
    return array


def test_an_edited_file_is_read_again(tmp_path):
    path = long_file(tmp_path / "data.csv")
    cache = cache_at(tmp_path / "cache")
    load(path, CONFIG, cache=cache)
    lines = path.read_text().splitlines(keepends=True)
    stat = path.stat()
    # the same size and modification time: an edit in place that only the hash of the file's first block sees
    fields = lines[1].split(",")
    fields[3] = fields[3][:-1] + ("1" if fields[3][-1] != "1" else "2")
    lines[1] = ",".join(fields)
    path.write_text("".join(lines))
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert_same(load(path, CONFIG, cache=cache), load_collection(path, CONFIG))
    # an appended row: a new size and time
    with path.open("a") as writer:
        writer.write("04,2021-03-09 08:00,1.0,2.0,3.0\n")
    assert_same(load(path, CONFIG, cache=cache), load_collection(path, CONFIG))


@pytest.mark.parametrize("damage", ["values.npy", "time.npy", "meta.json", "missing"])
def test_a_damaged_entry_is_rebuilt_with_one_line(tmp_path, damage):
    path = long_file(tmp_path / "data.csv")
    config = CONFIG.replace(past=("x",))  # the settings resolved: one entry
    lines = []
    cache = cache_at(tmp_path / "cache", lines)
    load(path, config, False, cache=cache)
    (entry,) = entries(tmp_path / "cache")
    if damage == "missing":
        (entry / "time.npy").unlink()
    else:
        with (entry / damage).open("r+b") as writer:  # one byte in the middle of the file
            writer.seek((entry / damage).stat().st_size // 2)
            byte = writer.read(1)
            writer.seek(-1, os.SEEK_CUR)
            writer.write(bytes([byte[0] ^ 0x55]))
    assert_same(load(path, config, False, cache=cache), load_collection(path, config))
    assert len(lines) == 1 and "damaged" in lines[0] and str(path) in lines[0], lines
    assert_same(load(path, config, False, cache=cache), load_collection(path, config))
    assert len(lines) == 1 and len(entries(tmp_path / "cache")) == 1


def test_a_file_the_checks_refuse_is_refused_as_before_and_not_cached(tmp_path):
    path = long_file(tmp_path / "data.csv")
    lines = path.read_text().splitlines(keepends=True)
    lines[7] = lines[7].replace(lines[7].split(",")[2], "n/a?")
    path.write_text("".join(lines))
    with pytest.raises(ForecastError) as parsed:
        load_collection(path, CONFIG)
    with pytest.raises(ForecastError) as cached:
        load(path, CONFIG, cache=cache_at(tmp_path / "cache"))
    assert str(cached.value) == str(parsed.value) and "row 8" in str(parsed.value)
    assert not (tmp_path / "cache").exists() or not entries(tmp_path / "cache")


def test_a_last_line_still_being_written_is_never_cached(tmp_path):
    path = long_file(tmp_path / "data.csv")
    path.write_bytes(path.read_bytes() + b"04,2021-03-10 10:00,1.0")
    warnings = []
    collection = load(path, CONFIG, warn=warnings.append, cache=cache_at(tmp_path / "cache"))
    assert len(warnings) == 1 and len(collection.series) == 5
    assert not (tmp_path / "cache").exists()


def test_small_files_are_parsed_each_time(tmp_path):
    path = long_file(tmp_path / "data.csv")
    load(path, CONFIG, cache=DataCache(tmp_path / "cache", min_bytes=path.stat().st_size + 1))
    assert not (tmp_path / "cache").exists()


def test_old_entries_are_evicted(tmp_path):
    cache = cache_at(tmp_path / "cache", keep=2)
    config = CONFIG.replace(past=("x",))
    for index in range(4):
        load(long_file(tmp_path / f"data{index}.csv", n_series=2 + index), config, False, cache=cache)
    kept = entries(tmp_path / "cache")
    assert len(kept) == 2
    assert {str(tmp_path / "data3.csv"), str(tmp_path / "data2.csv")} == {
        load(tmp_path / f"data{index}.csv", config, False, cache=cache).path for index in (2, 3)}


def test_a_cache_that_cannot_be_written_says_so_and_the_run_goes_on(tmp_path):
    path = long_file(tmp_path / "data.csv")
    (tmp_path / "file").write_text("not a folder")
    lines = []
    collection = load(path, CONFIG, cache=cache_at(tmp_path / "file" / "cache", lines))
    assert_same(collection, load_collection(path, CONFIG))
    assert len(lines) == 1 and "cannot write the data cache" in lines[0] and "--no-data-cache" in lines[0]


def test_two_writers_of_one_entry_leave_one(tmp_path):
    path = long_file(tmp_path / "data.csv")
    cache = cache_at(tmp_path / "cache")
    config = CONFIG.replace(past=("x",))
    collection = load_collection(path, config, False)
    source = data_cache.fingerprint(path)
    key = data_cache.entry_key(source, data_cache._settings(config, False))
    assert data_cache._write(cache, key, collection, source)
    assert data_cache._write(cache, key, collection, source)
    assert [entry.name for entry in entries(tmp_path / "cache")] == [key]
    assert not [path for path in (tmp_path / "cache").iterdir() if path.name.startswith(".")]


def test_a_model_trained_from_the_cache_is_the_one_trained_from_the_file(tmp_path, monkeypatch):
    from forecast.backtest import range_forecasts
    from forecast.runner import load_model_file
    from forecast.training import train

    path = long_file(tmp_path / "data.csv", n_series=3, rows=200)
    config = Config(target="y", id_column="id", sim=("s",), lookback=8, horizon=3, batch_size=8, epochs=1, units=4,
                    head_units=4, stream_chunks=2)
    store = tmp_path / "store"
    cache = cache_at(store / ".cache")
    plain = train(path, config, store / "plain")
    expected = range_forecasts(path, store / "plain", validation_rows=True, ablation=False).models["model"]
    first = train(path, config, store / "first", cache=cache)
    refuse_parsing(monkeypatch)
    second = train(path, config, store / "second", cache=cache)
    for run in (first, second):
        assert run.metrics["validation"] == plain.metrics["validation"]
        weights = load_model_file(run.model_dir / "model.keras").get_weights()
        assert all(np.array_equal(mine, theirs) for mine, theirs in zip(
            weights, load_model_file(plain.model_dir / "model.keras").get_weights(), strict=True))
    # evaluate asks with the settings training resolved and saved: the entry training wrote answers it
    backtest = range_forecasts(path, store / "second", validation_rows=True, ablation=False, cache=cache)
    assert np.array_equal(backtest.models["model"], expected)


def test_the_features_of_cached_series_are_mapped_and_the_same(tmp_path):
    from forecast.training_data import prepare

    path = long_file(tmp_path / "data.csv")
    cache = cache_at(tmp_path / "cache")
    config = CONFIG.replace(lookback=8, horizon=3)
    load(path, config, cache=cache)
    cached = prepare(load(path, config, cache=cache), config, None, lambda message: None).features
    parsed = prepare(load_collection(path, config), config, None, lambda message: None).features
    for name in ("history", "target", "sim", "bg"):
        mine, theirs = getattr(cached, name), getattr(parsed, name)
        assert mapping(mine) is not None and mapping(theirs) is None, name
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs, equal_nan=True), name
    # in a folder of the cache, but without a name there: the system removes them with the arrays
    assert mapping(cached.time.asi8) is not None and mapping(cached.time.asi8).filename is None
    assert [path.name for path in (tmp_path / "cache").iterdir() if path.is_file()] == []
    pd.testing.assert_index_equal(cached.time, parsed.time, exact=True)
    assert np.array_equal(cached.starts, parsed.starts)


@pytest.mark.slow
def test_the_commands_read_a_large_file_through_the_stores_cache_unless_told_not_to(basins_store, tmp_path):
    import shutil

    from conftest import BASIN_IDS, run_forecast

    _, _, trained = basins_store
    store = tmp_path / "store"
    shutil.copytree(trained, store, symlinks=True)
    rng = np.random.default_rng(0)
    days = 24_000  # a file over the size below which files are parsed each time
    frame = pd.DataFrame({
        "basin": np.repeat(BASIN_IDS, days), "date": np.tile(pd.date_range("2000-01-01", periods=days).strftime(
            "%Y-%m-%d"), len(BASIN_IDS)),
        "QObs": rng.gamma(2.0, 1.0, days * len(BASIN_IDS)).round(6),
        "PRCP": rng.gamma(1.0, 3.0, days * len(BASIN_IDS)).round(6),
        "Tmax": rng.normal(15.0, 8.0, days * len(BASIN_IDS)).round(6),
    })
    path = tmp_path / "large.csv"
    frame.to_csv(path, index=False)
    assert path.stat().st_size >= data_cache.MIN_BYTES
    first = run_forecast("predict", path, "--model", "basins", "--store", store,
                         env={**os.environ, "FORECAST_DATA_CACHE": "0"})  # as --no-data-cache
    assert not (store / ".cache").exists()
    assert run_forecast("predict", path, "--model", "basins", "--store", store).stdout == first.stdout
    (entry,) = entries(store / ".cache")
    os.utime(entry / "meta.json", (0, 0))
    assert run_forecast("predict", path, "--model", "basins", "--store", store).stdout == first.stdout
    assert (entry / "meta.json").stat().st_mtime > 0 and entries(store / ".cache") == [entry]  # read, not rewritten
