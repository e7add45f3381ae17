"""What the `forecast` commands share: the logger (standard error, and a log file for cron), the one-line failure,
the parsing of lists and series ids, the refusal of outputs inside a model directory, and the common options."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from forecast.errors import ForecastError

DataArg = Annotated[Path, typer.Argument(help="The series as CSV: a time column and value columns.", show_default=False)]
StoreOption = Annotated[
    Path, typer.Option(envvar="FORECAST_STORE", help="The model store; model names and paths must lie inside it.")
]
DataCacheOption = Annotated[bool, typer.Option(
    "--data-cache/--no-data-cache", envvar="FORECAST_DATA_CACHE",
    help="Keep a large data file parsed in the store's .cache folder, so the next run maps it instead of reading it.")]


def stamped(message: str) -> str:
    return f"{datetime.now().isoformat(timespec='seconds')} {message}"


def log_line(message: str) -> None:
    typer.echo(stamped(message), err=True)


def append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as writer:
        writer.write(line + "\n")


def file_logger(path: Path):
    """Logs to standard error and appends the same timestamped line to `path` (for cron, which keeps no terminal)."""

    def log(message: str) -> None:
        line = stamped(message)
        typer.echo(line, err=True)
        append_line(path, line)

    return log


def progress(verbose: Optional[int], log_file: Optional[Path]):
    """The logger, Keras' verbosity and extra callbacks: a progress bar on a terminal, a line per epoch otherwise,
    and with a log file, timestamped epoch lines through the logger instead of Keras' output."""
    if log_file is None:
        return log_line, verbose if verbose is not None else (1 if sys.stdout.isatty() else 2), ()
    from forecast.checkpoint import EpochLogger

    log = file_logger(log_file)
    return log, 0, (EpochLogger(log),) if verbose != 0 else ()


def fail(error: ForecastError, log_file: Optional[Path] = None) -> typer.Exit:
    """One line on standard error (and in the log file), and the error's exit code."""
    typer.echo(f"error: {error}", err=True)
    if log_file is not None:
        append_line(log_file, stamped(f"error: {error}"))
    return typer.Exit(code=getattr(error, "exit_code", 1))


def data_cache(enabled: bool, store: Path, log=log_line):
    """The store's cache of parsed data files (forecast.data_cache), or None with --no-data-cache."""
    from forecast.data_cache import DataCache

    return DataCache(Path(store).resolve() / ".cache", log) if enabled else None


def listed(values: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    """Repeated flags or comma-separated values (`--sim A --sim B` or `--sim A,B`); None when not given."""
    if not values:
        return None
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def series_ids(value: Optional[str], option: str = "--series") -> Optional[tuple[str, ...]]:
    """Series ids given as a comma-separated list, or as a file that lists one id a line; a value naming none (`,`,
    an empty file) is refused."""
    if value is None:
        return None
    path = Path(value)
    try:
        ids = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, ValueError):  # not a file (or a name too long for one): the ids themselves
        if path.is_file():
            raise ForecastError(f"{path}: {option}: cannot read this file of ids as UTF-8 text") from None
        ids = listed([value]) or ()
    if not ids:
        raise ForecastError(f"{option}: {value!r} names no series; give ids separated by commas, or a file of ids, "
                            "one a line")
    return ids


def outside_models(store: Path, **paths: Optional[Path]) -> None:
    """Refuses any of the output `paths` (by option name) that lies inside a model directory of the store."""
    from forecast.store import check_output

    for option, path in paths.items():
        if path is not None:
            check_output(path, store, f"--{option.replace('_', '-')}")


def checked_log(log_file: Optional[Path], store: Path) -> None:
    """A --log file inside a model directory is refused, and the refusal not appended to it."""
    try:
        outside_models(store, log=log_file)
    except ForecastError as error:
        raise fail(error) from None


SeriesOption = Annotated[
    Optional[str], typer.Option("--series", help="Only these series: ids (comma-separated) or a file of ids, one a line.")
]


def levels(value: Optional[str]) -> Optional[tuple[float, ...]]:
    """`--quantiles 0.1,0.9` as numbers; 'none' for no intervals; None when not given."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    try:
        return tuple(float(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise ForecastError(f"--quantiles: {value!r} is not a comma-separated list of numbers such as 0.1,0.9") from None
