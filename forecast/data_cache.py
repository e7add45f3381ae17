"""A cache of parsed data files beside the model store: a long file is parsed and checked once, then memory-mapped.

    STORE/.cache/<key>/
        meta.json     the file's fingerprint, the reading settings, the collection's columns, roles, ids and steps,
                      and each array file's size and CRC-32
        time.npy      int64 (n_rows,): every series' timestamps, one series after the other, in its own unit
        values.npy    float64 (n_columns, n_rows): every series' role columns (`Roles.numeric`), NaN where empty,
                      a column's rows contiguous as in a parsed frame, so that sums over them add in the same order

`key` hashes the file's fingerprint (resolved path, size, modification time, inode and a hash of its first and last
BLOCK bytes, so that an edit in place is caught) with the settings `data.load_collection` reads, so a second run with
the same file and settings skips parsing and checking it and reads the series as views of the mapped arrays: their
pages are read from disk as they are used and belong to the page cache, which the kernel can drop, so the resident
memory of the series does not grow with the file. An entry is written into a temporary folder and renamed into place
(two processes racing write one each, and the first rename wins), checked whole before it is used (sizes, CRC-32 of
every file, shapes), and a damaged one is removed with one log line and the file read again. At most `keep` entries
stay; the least recently used go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast import __version__
from forecast.config import Config
from forecast.data import Collection, Roles, Series, load_collection
from forecast.tables import is_parquet

FORMAT = 1  # raised whenever what an entry holds, or what parsing gives, changes
BLOCK = 2**20  # bytes hashed at each end of a data file, and read at a time for a checksum
KEEP = 8  # entries kept in a cache folder
MIN_BYTES = 4 * 2**20  # smaller files are parsed each time: that takes about as long as checking an entry
STALE_SECONDS = 24 * 3600  # a temporary folder this old was left by a killed writer
# The settings `data.load_collection` reads; any other setting leaves the parsed series as they are.
READ_SETTINGS = ("target", "time_column", "time_columns", "sim", "bg", "past", "exclude", "sim_in_history", "gaps",
                 "max_gap", "skip_rows", "id_column")
ARRAYS = ("time.npy", "values.npy")
META = "meta.json"

Log = Callable[[str], None]


def quiet(message: str) -> None:
    """A log that drops its lines (a module function, so that a cache pickles with the standard library too)."""


@dataclass(frozen=True)
class DataCache:
    """Where parsed files are cached (`folder`, e.g. STORE/.cache) and how: `log` says when an entry was damaged or
    could not be written; at most `keep` entries stay; files under `min_bytes` are not cached."""

    folder: Path
    log: Log = quiet
    keep: int = KEEP
    min_bytes: int = MIN_BYTES


def load(path: str | Path, config: Config, business_days: bool | None = None, warn: Log | None = None,
         cache: DataCache | None = None) -> Collection:
    """`data.load_collection(path, config, business_days, warn)`, from `cache` where it holds the file as it is now
    with these settings; otherwise parsed, and cached for the next run. A file without a line end on its last line
    (still being written) or under `cache.min_bytes` is parsed each time."""
    path = Path(path)
    source = None if cache is None else fingerprint(path, cache.min_bytes)
    if source is None:
        return load_collection(path, config, business_days, warn)
    key = entry_key(source, _settings(config, business_days))
    found = _read(cache, key, path)
    if found is not None:
        return found
    collection = load_collection(path, config, business_days, warn)
    if fingerprint(path, cache.min_bytes) != source:
        return collection  # rewritten while it was parsed: what was parsed belongs to neither version
    # Saved with the past columns and the step it resolved to, as predict and retrain then ask for it.
    resolved = entry_key(source, _settings(config.replace(past=collection.first.roles.past),
                                           collection.first.business_days))
    if not (cache.folder / resolved).is_dir() and not _write(cache, resolved, collection, source):
        return collection
    if resolved != key:
        _link(cache, resolved, key)
    _evict(cache, keep={resolved, key})
    return _read(cache, resolved, path) or collection


def fingerprint(path: Path, min_bytes: int = 0) -> dict | None:
    """What identifies the file's contents without reading it all: resolved path, size, modification time (ns), inode
    and a hash of its first and last BLOCK bytes; None for a file not to cache (missing, under `min_bytes`, or a CSV
    whose last line has no line end)."""
    try:
        status = path.stat()
        if status.st_size < max(min_bytes, 1):
            return None
        digest = hashlib.sha256()
        with path.open("rb") as reader:
            digest.update(reader.read(BLOCK))
            reader.seek(max(status.st_size - BLOCK, 0))
            tail = reader.read(BLOCK)
        digest.update(tail)
    except OSError:
        return None
    if not tail.endswith(b"\n") and not is_parquet(path):
        return None
    return {"path": str(path.resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns,
            "inode": status.st_ino, "ends": digest.hexdigest()}


def entry_key(source: dict, settings: dict) -> str:
    """The entry's folder name: a hash of the file's `fingerprint`, the reading `settings`, FORMAT and the version."""
    record = json.dumps({"format": FORMAT, "version": __version__, "source": source, "settings": settings},
                        sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()[:32]


def _settings(config: Config, business_days: bool | None) -> dict:
    return {**{name: getattr(config, name) for name in READ_SETTINGS}, "business_days": business_days}


def _write(cache: DataCache, key: str, collection: Collection, source: dict) -> bool:
    """Writes `collection` as entry `key`, through a temporary folder renamed into place; False, with one log line,
    where it cannot be written (the run goes on with the parsed series)."""
    series = collection.series
    rows = [len(item.time) for item in series]
    columns = list(series[0].roles.numeric)
    temporary = None
    try:
        cache.folder.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".writing-", dir=cache.folder))
        times = np.lib.format.open_memmap(temporary / "time.npy", "w+", np.int64, (sum(rows),))
        values = np.lib.format.open_memmap(temporary / "values.npy", "w+", np.float64, (len(columns), sum(rows)))
        start = 0
        for item, count in zip(series, rows):  # one series at a time: no second copy of the whole file in memory
            times[start : start + count] = item.time.asi8
            values[:, start : start + count] = item.values[columns].to_numpy(dtype=np.float64).T
            start += count
        times.flush()
        values.flush()
        del times, values
        first = series[0]
        meta = {
            "format": FORMAT, "source": source, "id_name": collection.id_name, "roles": _roles_record(first.roles),
            "columns": list(first.columns), "left_out": [list(pair) for pair in first.left_out],
            "time_name": first.time_name, "freq": [first.freq.isoformat(), first.freq.unit],
            "business_days": first.business_days,
            "series": {"ids": [item.id for item in series], "rows": rows, "units": [item.time.unit for item in series],
                       "names": [item.time.name for item in series],
                       "freqs": [item.time.freqstr for item in series]},
            "files": {name: _file_record(temporary / name) for name in ARRAYS},
        }
        (temporary / META).write_text(json.dumps(meta), encoding="utf-8")
        try:
            temporary.rename(cache.folder / key)
        except OSError:
            if not (cache.folder / key).is_dir():  # else another process wrote the same entry first
                raise
            shutil.rmtree(temporary, ignore_errors=True)
        return True
    except OSError as exc:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        cache.log(f"{cache.folder}: cannot write the data cache ({exc.strerror or exc}); the file is parsed again "
                  "next time (free disk space, or turn the cache off with --no-data-cache)")
        return False


def _read(cache: DataCache, key: str, path: Path) -> Collection | None:
    """Entry `key` as the collection of `path`, its series views of the mapped arrays; None where there is none, or
    where it is damaged (then removed, with one log line)."""
    entry = cache.folder / key
    if not (entry / META).is_file():
        return None
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        for name in ARRAYS:
            if _file_record(entry / name) != meta["files"][name]:
                raise ValueError(f"{name} is not as it was written")
        collection = _collection(meta, np.load(entry / "time.npy", mmap_mode="r"),
                                 np.load(entry / "values.npy", mmap_mode="r"), path, cache.folder)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        if not entry.is_dir():
            return None  # evicted by another process while it was read
        cache.log(f"{entry}: the cached data of {path} is damaged ({exc}); removed it, reading the file again")
        _remove(entry)
        return None
    with contextlib.suppress(OSError):  # a cache on a read-only disk is still read
        os.utime(entry / META)  # its time of last use, for eviction
    return collection


def _collection(meta: dict, times: np.ndarray, values: np.ndarray, path: Path, folder: Path) -> Collection:
    """The collection an entry of the cache `folder` holds, read as from `path`, its features to be built in
    `folder`; ValueError where the entry does not hold together."""
    if meta["format"] != FORMAT:
        raise ValueError(f"format {meta['format']}, expected {FORMAT}")
    roles = Roles(**{**meta["roles"], **{name: tuple(meta["roles"][name]) for name in ("past", "sim", "bg")}})
    columns = list(roles.numeric)
    listed = meta["series"]
    rows = np.asarray(listed["rows"], dtype=np.int64)
    if len({len(listed[name]) for name in ("ids", "units", "names", "freqs")} | {len(rows)}) != 1 or not len(rows):
        raise ValueError("the series' lists differ in length")
    if (rows < 2).any() or times.shape != (rows.sum(),) or values.shape != (len(columns), rows.sum()):
        raise ValueError(f"arrays of shapes {times.shape} and {values.shape} for {rows.sum()} rows")
    if times.dtype != np.int64 or values.dtype != np.float64:
        raise ValueError(f"arrays of types {times.dtype} and {values.dtype}")
    freq = pd.Timedelta(meta["freq"][0]).as_unit(meta["freq"][1])
    ends = np.cumsum(rows)
    series = tuple(
        Series(
            path=str(path),
            time=pd.DatetimeIndex(times[end - count : end].view(f"datetime64[{unit}]"), copy=False, name=name,
                                  freq=index_freq),
            time_name=meta["time_name"],
            values=pd.DataFrame(values[:, end - count : end].T, columns=columns, copy=False),
            roles=roles, freq=freq, columns=tuple(meta["columns"]),
            left_out=tuple((str(column), str(why)) for column, why in meta["left_out"]),
            business_days=bool(meta["business_days"]), id=str(series_id),
        )
        for series_id, count, end, unit, name, index_freq in zip(listed["ids"], rows, ends, listed["units"],
                                                                listed["names"], listed["freqs"])
    )
    return Collection(str(path), series, meta["id_name"], folder)


def release_pages(collection: Collection) -> None:
    """Drops the pages of the mapped arrays that `collection`'s series are views of (a collection read from the cache)
    out of this process's resident memory, once they are read (the features built): they stay in the page cache, and
    a later read maps them back. A collection held in memory is left as it is."""
    maps = {}
    for series in collection.series:
        for array in (series.values.to_numpy(), series.time.asi8):
            while array is not None:
                if isinstance(array, np.memmap) and isinstance(getattr(array, "_mmap", None), mmap.mmap):
                    maps[id(array._mmap)] = array._mmap
                    break
                array = array.base if isinstance(array.base, np.ndarray) else None
    for mapped in maps.values():
        with contextlib.suppress(OSError, ValueError):  # a closed map, or a system without madvise
            mapped.madvise(mmap.MADV_DONTNEED)


def _roles_record(roles: Roles) -> dict:
    return {"target": roles.target, "past": list(roles.past), "sim": list(roles.sim), "bg": list(roles.bg),
            "sim_in_history": roles.sim_in_history}


def _file_record(path: Path) -> dict:
    """A file's size and CRC-32, read BLOCK bytes at a time (the page cache holds them, not this process)."""
    checksum, size = 0, 0
    with path.open("rb") as reader:
        while chunk := reader.read(BLOCK):
            checksum = zlib.crc32(chunk, checksum)
            size += len(chunk)
    return {"size": size, "crc32": checksum}


def _link(cache: DataCache, key: str, alias: str) -> None:
    """Entry `key` under a second key too (hard links: no second copy on disk), so a run that asks with the settings
    before they were resolved finds it; skipped where the filesystem has no hard links."""
    temporary = None
    try:
        temporary = Path(tempfile.mkdtemp(prefix=".writing-", dir=cache.folder))
        for name in (*ARRAYS, META):
            os.link(cache.folder / key / name, temporary / name)
        temporary.rename(cache.folder / alias)
    except OSError:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _evict(cache: DataCache, keep: set[str]) -> None:
    """Removes the least recently used entries beyond `cache.keep` (never those in `keep`), and temporary folders
    that killed writers left."""
    entries, now = [], time.time()
    for folder in cache.folder.iterdir():
        try:
            if folder.name.startswith("."):
                if now - folder.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(folder, ignore_errors=True)
            elif folder.name not in keep:
                entries.append(((folder / META).stat().st_mtime, folder))
        except OSError:
            entries.append((0.0, folder))  # without its meta.json it is no entry
    entries.sort(reverse=True)
    for _, folder in entries[max(cache.keep - len(keep), 0) :]:
        _remove(folder)


def _remove(entry: Path) -> None:
    """Removes an entry: renamed first, so that no reader ever sees half of one."""
    try:
        gone = entry.with_name(f".removing-{entry.name}-{os.getpid()}")
        entry.rename(gone)
    except OSError:
        return
    shutil.rmtree(gone, ignore_errors=True)
