"""The flags `forecast train` and `forecast tune` share (the data, its columns, the model, the training, Ray and the
store), declared once: `with_run_flags` puts them before a command's own parameters and hands them to it as one dict,
and `flag_config` lays them over the configuration they override."""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from forecast.cli_common import DataArg, DataCacheOption, StoreOption, checked_log, fail, levels, listed, series_ids
from forecast.config import Config
from forecast.errors import ForecastError


def run_flags(
    data: DataArg,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="TOML file of settings; flags override it.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Column to forecast.")] = None,
    sim: Annotated[Optional[list[str]], typer.Option(help="Column known over the horizon (repeat or comma-separate).")] = None,
    bg: Annotated[Optional[list[str]], typer.Option(help="Static (background) column, read at the forecast origin.")] = None,
    past: Annotated[Optional[list[str]], typer.Option(help="History covariate (default: every other numeric column).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Column to leave out.")] = None,
    time_column: Annotated[Optional[str], typer.Option(help="Name of the time column (default: found by name or type).")] = None,
    lookback: Annotated[Optional[int], typer.Option(help="History steps T in each chunk.")] = None,
    horizon: Annotated[Optional[int], typer.Option(help="Steps H to forecast.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size B (streams walked in step).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Last epoch to train to.")] = None,
    stateful: Annotated[Optional[bool], typer.Option("--stateful/--stateless", help="Stateful streams or shuffled windows.")] = None,
    stream_chunks: Annotated[Optional[int], typer.Option(help="Chunks of T steps a stateful stream walks before its state is reset.")] = None,
    units: Annotated[Optional[int], typer.Option(help="Width of the LSTMs.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without validation gain before stopping.")] = None,
    lr_patience: Annotated[Optional[int], typer.Option(help="Epochs without validation gain before the learning rate halves (0: never).")] = None,
    min_delta: Annotated[Optional[float], typer.Option(help="Relative gain in the validation score an epoch needs to count as better.")] = None,
    train_end: Annotated[Optional[str], typer.Option(help="Training rows: a row count or the last date to include.")] = None,
    val_end: Annotated[Optional[str], typer.Option(help="End of validation: a row count or the last date to include.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    members: Annotated[Optional[int], typer.Option(help="Networks to train (seeds seed, seed + 1, ...) and average: an ensemble, N times the training time.")] = None,
    gaps: Annotated[Optional[str], typer.Option(help="Missing timestamps: refuse, mask (weight 0) or interpolate.")] = None,
    max_gap: Annotated[Optional[int], typer.Option(help="Longest gap (steps) that mask or interpolate accept.")] = None,
    skip_rows: Annotated[Optional[int], typer.Option(help="Lines before the header to skip (saved with the model).")] = None,
    target_min: Annotated[Optional[float], typer.Option("--min", help="Lowest forecast (default: 0 for a target never negative in training).")] = None,
    target_max: Annotated[Optional[float], typer.Option("--max", help="Highest forecast.")] = None,
    target_units: Annotated[Optional[str], typer.Option(help="The target's units (mm/day, kW), shown in pictures and info.")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Long format: the column naming each row's series.")] = None,
    static: Annotated[Optional[Path], typer.Option(help="CSV of static attributes, one row per series id (feeds bg).")] = None,
    holdout_series: Annotated[Optional[str], typer.Option(help="Series kept out of training: ids (comma-separated) or a file of ids, one a line.")] = None,
    scaling: Annotated[Optional[str], typer.Option(help="series: z-score each series on its own training rows; global: one scaler for all.")] = None,
    series_weight: Annotated[Optional[str], typer.Option(help="naive: weight each series' errors by 1 / its Repeat MSE on its training rows; none: all alike.")] = None,
    attribute_terms: Annotated[Optional[bool], typer.Option("--attribute-terms/--no-attribute-terms", help="Linear terms times each series' attributes, so each series gets its own coefficients (off by default).")] = None,
    decoder: Annotated[Optional[bool], typer.Option("--decoder/--no-decoder", help="The correction from an LSTM that walks the horizon's sim, started from the history LSTM's state (instead of a dense head).")] = None,
    quantiles: Annotated[Optional[str], typer.Option(help="Quantile levels of the forecast intervals, e.g. 0.1,0.5,0.9 (default 0.1,0.9; 'none' for none).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray (--executor ray, and tune): empty starts Ray on this machine; auto or HOST:PORT joins a running cluster.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(help="CPUs each Ray task (a network, or a tune trial) takes: TensorFlow's threads in it.")] = None,
    gpus_per_task: Annotated[Optional[float], typer.Option(help="GPUs each Ray task (a network, or a tune trial) takes (1: one per GPU).")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log", help="Also append timestamped log lines to this file.")] = None,
    model_dir: Annotated[Optional[str], typer.Option(help="Model name or directory (default: the data file's name).")] = None,
    store: StoreOption = Path("models"),
    data_cache: DataCacheOption = True,
) -> None:
    """The shared flags, declared as a command's parameters are (see `with_run_flags`)."""


# The shared flags that are not settings of the configuration.
NOT_SETTINGS = ("data", "config_file", "log_file", "model_dir", "store", "data_cache")
# How a flag's text becomes its setting's value, where it is not the value itself.
CONVERTED = {
    "sim": listed, "bg": listed, "past": listed, "exclude": listed, "quantiles": levels,
    "static": lambda value: str(value) if value else None,
    "holdout_series": lambda value: series_ids(value, "--holdout-series"),
}


def with_run_flags(command):
    """The typer command `command` with the shared flags (`run_flags`) before its own parameters; it is called with
    its own as keywords and the shared ones as one dict, `flags` (its first parameter, which the command line does not
    show)."""
    shared = inspect.signature(run_flags).parameters
    own = list(inspect.signature(command).parameters.values())[1:]
    hints = {**typing.get_type_hints(run_flags, include_extras=True),
             **typing.get_type_hints(command, include_extras=True)}

    def invoked(**values):
        return command({name: values.pop(name) for name in shared}, **values)

    parameters = [parameter.replace(annotation=hints[parameter.name]) for parameter in (*shared.values(), *own)]
    invoked.__signature__ = inspect.Signature(parameters)
    invoked.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    invoked.__name__, invoked.__doc__ = command.__name__, command.__doc__
    return invoked


def flag_config(base: Config, flags: dict, **settings) -> Config:
    """`base` with the shared flags given (`flags`, from `with_run_flags`) and the command's own `settings` laid over
    it; a flag not given (None) keeps the base's value."""
    given = {name: CONVERTED.get(name, lambda value: value)(value) for name, value in flags.items()
             if name not in NOT_SETTINGS}
    return base.replace(**given, **settings)


@contextlib.contextmanager
def model_run(flags: dict) -> Iterator[Path]:
    """The model directory a train or tune run writes (`--model-dir`, or the data file's name), locked where it
    exists already: before TensorFlow loads, so that a second run stops at once; a model not yet in the store gets
    its directory only once the data has passed its checks. A ForecastError in the block ends the command in one
    line, and a refused first run leaves no model directory behind."""
    log_file, store = flags["log_file"], flags["store"]
    checked_log(log_file, store)
    target_dir, new = None, False
    try:
        from forecast.store import discard_unpublished, locked, resolve_model_path

        target_dir = resolve_model_path(flags["model_dir"] or flags["data"].stem, store)
        new = not target_dir.exists()
        with locked(target_dir) if target_dir.is_dir() else contextlib.nullcontext():
            yield target_dir
    except ForecastError as error:
        if target_dir is not None and new:
            discard_unpublished(target_dir)
        raise fail(error, log_file) from None
