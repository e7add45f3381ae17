"""The `forecast` command: parses arguments and calls the library.

Heavy modules (pandas, TensorFlow) are imported inside the commands so that `--help` and argument errors answer at once.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from forecast.config import Config
from forecast.errors import ForecastError

app = typer.Typer(
    help="Forecast time series in CSV files with a multi-input, stateful LSTM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataArg = Annotated[Path, typer.Argument(help="The series as CSV: a time column and value columns.", show_default=False)]
StoreOption = Annotated[
    Path, typer.Option(envvar="FORECAST_STORE", help="The model store; model names and paths must lie inside it.")
]
DataCacheOption = Annotated[bool, typer.Option(
    "--data-cache/--no-data-cache", envvar="FORECAST_DATA_CACHE",
    help="Keep a large data file parsed in the store's .cache folder, so the next run maps it instead of reading it.")]


def _stamped(message: str) -> str:
    return f"{datetime.now().isoformat(timespec='seconds')} {message}"


def _log(message: str) -> None:
    typer.echo(_stamped(message), err=True)


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as writer:
        writer.write(line + "\n")


def _file_logger(path: Path):
    """Logs to standard error and appends the same timestamped line to `path` (for cron, which keeps no terminal)."""

    def log(message: str) -> None:
        line = _stamped(message)
        typer.echo(line, err=True)
        _append(path, line)

    return log


def _progress(verbose: Optional[int], log_file: Optional[Path]):
    """The logger, Keras' verbosity and extra callbacks: a progress bar on a terminal, a line per epoch otherwise,
    and with a log file, timestamped epoch lines through the logger instead of Keras' output."""
    if log_file is None:
        return _log, verbose if verbose is not None else (1 if sys.stdout.isatty() else 2), ()
    from forecast.checkpoint import EpochLogger

    log = _file_logger(log_file)
    return log, 0, (EpochLogger(log),) if verbose != 0 else ()


def _fail(error: ForecastError, log_file: Optional[Path] = None) -> typer.Exit:
    """One line on standard error (and in the log file), and the error's exit code."""
    typer.echo(f"error: {error}", err=True)
    if log_file is not None:
        _append(log_file, _stamped(f"error: {error}"))
    return typer.Exit(code=getattr(error, "exit_code", 1))


def _cache(enabled: bool, store: Path, log=_log):
    """The store's cache of parsed data files (forecast.data_cache), or None with --no-data-cache."""
    from forecast.data_cache import DataCache

    return DataCache(Path(store).resolve() / ".cache", log) if enabled else None


def _listed(values: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    """Repeated flags or comma-separated values (`--sim A --sim B` or `--sim A,B`); None when not given."""
    if not values:
        return None
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def _series_ids(value: Optional[str], option: str = "--series") -> Optional[tuple[str, ...]]:
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
        ids = _listed([value]) or ()
    if not ids:
        raise ForecastError(f"{option}: {value!r} names no series; give ids separated by commas, or a file of ids, "
                            "one a line")
    return ids


def _outside_models(store: Path, **paths: Optional[Path]) -> None:
    """Refuses any of the output `paths` (by option name) that lies inside a model directory of the store."""
    from forecast.store import check_output

    for option, path in paths.items():
        if path is not None:
            check_output(path, store, f"--{option.replace('_', '-')}")


def _checked_log(log_file: Optional[Path], store: Path) -> None:
    """A --log file inside a model directory is refused, and the refusal not appended to it."""
    try:
        _outside_models(store, log=log_file)
    except ForecastError as error:
        raise _fail(error) from None


SeriesOption = Annotated[
    Optional[str], typer.Option("--series", help="Only these series: ids (comma-separated) or a file of ids, one a line.")
]
def _levels(value: Optional[str]) -> Optional[tuple[float, ...]]:
    """`--quantiles 0.1,0.9` as numbers; 'none' for no intervals; None when not given."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    try:
        return tuple(float(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise ForecastError(f"--quantiles: {value!r} is not a comma-separated list of numbers such as 0.1,0.9") from None


@app.command()
def train(
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
    initial_epoch: Annotated[Optional[int], typer.Option(help="Continue from the current version's weights, counting epochs from N.")] = None,
    stateful: Annotated[Optional[bool], typer.Option("--stateful/--stateless", help="Stateful streams or shuffled windows.")] = None,
    stream_chunks: Annotated[Optional[int], typer.Option(help="Chunks of T steps a stateful stream walks before its state is reset.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without validation gain before stopping.")] = None,
    lr_patience: Annotated[Optional[int], typer.Option(help="Epochs without validation gain before the learning rate halves (0: never).")] = None,
    min_delta: Annotated[Optional[float], typer.Option(help="Relative gain in the validation score an epoch needs to count as better.")] = None,
    train_end: Annotated[Optional[str], typer.Option(help="Training rows: a row count or the last date to include.")] = None,
    val_end: Annotated[Optional[str], typer.Option(help="End of validation: a row count or the last date to include.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    members: Annotated[Optional[int], typer.Option(help="Networks to train (seeds seed, seed + 1, ...) and average: an ensemble, N times the training time.")] = None,
    verbose: Annotated[Optional[int], typer.Option(help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2).")] = None,
    tensorboard: Annotated[Optional[Path], typer.Option(help="Write a TensorBoard log to this directory.")] = None,
    gaps: Annotated[Optional[str], typer.Option(help="Missing timestamps: refuse, mask (weight 0) or interpolate.")] = None,
    max_gap: Annotated[Optional[int], typer.Option(help="Longest gap (steps) that mask or interpolate accept.")] = None,
    skip_rows: Annotated[Optional[int], typer.Option(help="Lines before the header to skip (saved with the model).")] = None,
    target_min: Annotated[Optional[float], typer.Option("--min", help="Lowest forecast (default: 0 for a target never negative in training).")] = None,
    target_max: Annotated[Optional[float], typer.Option("--max", help="Highest forecast.")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Long format: the column naming each row's series.")] = None,
    static: Annotated[Optional[Path], typer.Option(help="CSV of static attributes, one row per series id (feeds bg).")] = None,
    holdout_series: Annotated[Optional[str], typer.Option(help="Series kept out of training: ids (comma-separated) or a file of ids, one a line.")] = None,
    scaling: Annotated[Optional[str], typer.Option(help="series: z-score each series on its own training rows; global: one scaler for all.")] = None,
    series_weight: Annotated[Optional[str], typer.Option(help="naive: weight each series' errors by 1 / its Repeat MSE on its training rows; none: all alike.")] = None,
    attribute_terms: Annotated[Optional[bool], typer.Option("--attribute-terms/--no-attribute-terms", help="Linear terms times each series' attributes, so each series gets its own coefficients (off by default).")] = None,
    decoder: Annotated[Optional[bool], typer.Option("--decoder/--no-decoder", help="The correction from an LSTM that walks the horizon's sim, started from the history LSTM's state (instead of a dense head).")] = None,
    quantiles: Annotated[Optional[str], typer.Option(help="Quantile levels of the forecast intervals, e.g. 0.1,0.5,0.9 (default 0.1,0.9; 'none' for none).")] = None,
    executor: Annotated[Optional[str], typer.Option(help="Where the networks train: local (this process, one after the other) or ray (one Ray task each).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="With --executor ray: empty starts Ray on this machine; auto or HOST:PORT joins a running cluster.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(help="CPUs each network's Ray task takes (TensorFlow's threads in it).")] = None,
    gpus_per_task: Annotated[Optional[float], typer.Option(help="GPUs each network's Ray task takes (1: one network per GPU).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    log_file: Annotated[Optional[Path], typer.Option("--log", help="Also append timestamped log lines to this file.")] = None,
    model_dir: Annotated[Optional[str], typer.Option(help="Model name or directory (default: the data file's name).")] = None,
    store: StoreOption = Path("models"),
    data_cache: DataCacheOption = True,
) -> None:
    """Train a model on DATA and write it to a model directory."""
    _checked_log(log_file, store)
    target_dir, new = None, False
    try:
        from forecast.store import CHECKPOINT_STATE, checkpoint_dir, locked, resolve_model_path

        _outside_models(store, tensorboard=tensorboard)
        target_dir = resolve_model_path(model_dir or data.stem, store)
        new = not target_dir.exists()
        if resume:
            state = checkpoint_dir(target_dir) / CHECKPOINT_STATE
            if not state.is_file():
                raise ForecastError(f"{target_dir}: no interrupted training to resume; train without --resume")
            base = Config.from_json(state, key="config")
        else:
            base = Config.from_toml(config_file) if config_file else Config()
        config = base.replace(
            target=target, sim=_listed(sim), bg=_listed(bg), past=_listed(past), exclude=_listed(exclude),
            time_column=time_column, lookback=lookback, horizon=horizon, batch_size=batch_size, epochs=epochs,
            initial_epoch=initial_epoch, stateful=stateful, stream_chunks=stream_chunks, learning_rate=learning_rate, patience=patience, lr_patience=lr_patience, min_delta=min_delta,
            train_end=train_end, val_end=val_end, seed=seed, members=members, verbose=verbose,
            tensorboard_dir=str(tensorboard) if tensorboard else None, gaps=gaps, max_gap=max_gap,
            skip_rows=skip_rows, target_min=target_min, target_max=target_max, id_column=id_column,
            static=str(static) if static else None, holdout_series=_series_ids(holdout_series, "--holdout-series"),
            scaling=scaling,
            series_weight=series_weight, attribute_terms=attribute_terms, decoder=decoder,
            quantiles=_levels(quantiles), executor=executor, ray_address=ray_address, cpus_per_task=cpus_per_task,
            gpus_per_task=gpus_per_task,
        )
        # The lock is taken before TensorFlow loads, so that a second run stops at once; a model not yet in the
        # store gets its directory only once the data has passed its checks.
        with locked(target_dir) if target_dir.is_dir() else contextlib.nullcontext():
            from forecast.training import train as run_training

            log, keras_verbose, callbacks = _progress(config.verbose, log_file)
            run_training(data, config, target_dir, log, keras_verbose, callbacks, resume=resume,
                         cache=_cache(data_cache, store, log))
    except ForecastError as error:
        if target_dir is not None and new:
            from forecast.store import discard_unpublished

            discard_unpublished(target_dir)  # a refused first training leaves no model directory behind
        raise _fail(error, log_file) from None


@app.command()
def predict(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory written by `forecast train`.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(help="Write the forecast here, CSV or .parquet (default: CSV on standard output).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the forecast with its intervals into this PNG file (one series).")] = None,
    series: SeriesOption = None,
    store: StoreOption = Path("models"),
    data_cache: DataCacheOption = True,
) -> None:
    """Forecast the H steps after the last observed target in DATA (of each series, for a long file), with one column
    per quantile."""
    try:
        from forecast.prediction import forecast_from, predict as run_prediction
        from forecast.store import resolve_model_path

        model_dir = resolve_model_path(model, store)
        _outside_models(store, output=output, plot=plot)
        ids = _series_ids(series)
        forecast = run_prediction(data, model_dir, _log, ids, _cache(data_cache, store))
        if plot is not None:
            from forecast.plots import plot_forecast

            result = forecast_from(data, model_dir, None, _log, ids[0] if ids else None, _cache(data_cache, store))
            _log(f"drew the forecast in {plot_forecast(result, plot)}")
    except ForecastError as error:
        raise _fail(error) from None
    if output is None:
        typer.echo(forecast.to_csv(index=False), nl=False)
    else:
        from forecast.tables import write_table

        try:
            write_table(forecast, output)  # a reader of `output` never sees half a file
        except ForecastError as error:
            raise _fail(error) from None
        _log(f"wrote {len(forecast)} forecast rows to {output}")


@app.command()
def plot(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory written by `forecast train`.", show_default=False)],
    origin: Annotated[Optional[str], typer.Option(help="The forecast's last observed row: a row count or date (default: the last observation, or the last row whose horizon the sim covers); inside the data, the truth is drawn too.")] = None,
    output: Annotated[Path, typer.Option(help="The PNG file to write.")] = Path("forecast.png"),
    series: Annotated[Optional[str], typer.Option("--series", help="The series to draw (for a file of many).")] = None,
    store: StoreOption = Path("models"),
    data_cache: DataCacheOption = True,
) -> None:
    """Draw a forecast: the last stretch of history, the forecast with its interval bands, the sim input over the
    horizon, and the truth where DATA holds it."""
    try:
        from forecast.plots import plot_forecast
        from forecast.prediction import forecast_from
        from forecast.store import resolve_model_path

        model_dir = resolve_model_path(model, store)
        _outside_models(store, output=output)
        result = forecast_from(data, model_dir, origin, _log, series, _cache(data_cache, store))
        chosen = "" if origin is not None else f" ({result.origin_note})"
        _log(f"drew the forecast from {result.series.time[result.origin]} in {plot_forecast(result, output)}{chosen}")
    except ForecastError as error:
        raise _fail(error) from None


@app.command()
def evaluate(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory written by `forecast train`.", show_default=False)],
    start: Annotated[Optional[str], typer.Option(help="First target row (0-based) or date (default: after validation).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Row count or last date of the range (default: the last row).")] = None,
    validation_rows: Annotated[bool, typer.Option("--validation-rows", help="Score the validation rows (flattering: they chose the model).")] = False,
    output_dir: Annotated[Path, typer.Option(help="Where to write <model>.json, <model>_steps.csv, <model>_series.csv, <model>_steps.png and, for many series, <model>_series.png.")] = Path("evaluation"),
    plot: Annotated[Optional[Path], typer.Option(help="Draw the error per step here instead of <model>_steps.png.")] = None,
    forecasts: Annotated[Optional[Path], typer.Option(help="Write every forecast scored here, one row per series, origin and step (.csv or .parquet).")] = None,
    series: SeriesOption = None,
    store: StoreOption = Path("models"),
    data_cache: DataCacheOption = True,
) -> None:
    """Score a model on every forecast origin of a range, next to the Repeat and seasonal-naive baselines."""
    try:
        from forecast.evaluation import evaluate as run_evaluation
        from forecast.store import resolve_model_path, write_json

        model_dir = resolve_model_path(model, store)
        _outside_models(store, output_dir=output_dir, plot=plot, forecasts=forecasts)
        result = run_evaluation(data, model_dir, start, end, validation_rows, warn=_log, series_ids=_series_ids(series),
                                keep_forecasts=forecasts is not None, cache=_cache(data_cache, store))
    except ForecastError as error:
        raise _fail(error) from None
    if result.warning:
        typer.echo(result.warning)
    typer.echo(
        f"{result.origins} origins, targets {result.first_time} to {result.last_time}, {result.seconds:.1f} s\n"
        "mse and mae on z-scored values; the others in the target's units\n" + result.table()
        + "".join(f"\n{note}" for note in result.notes)
    )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / f"{model_dir.name}.json", result.to_json())
        result.per_step.to_csv(output_dir / f"{model_dir.name}_steps.csv", index=False)
        result.per_series.to_csv(output_dir / f"{model_dir.name}_series.csv", index=False)
    except OSError as exc:
        raise _fail(ForecastError(f"{output_dir}: cannot write the reports here ({exc.strerror or exc}); choose "
                                  "another --output-dir")) from None
    try:
        from forecast.plots import plot_steps

        scored = f"{model_dir.name}: {result.origins} origins, targets {result.first_time} to {result.last_time}"
        pictures = [plot_steps(result.per_step, scored, plot or output_dir / f"{model_dir.name}_steps.png")]
        if result.per_series["series"].nunique() > 1:  # a distribution over series needs more than one
            from forecast.plots import plot_series_nse

            pictures.append(plot_series_nse(result.per_series, scored, output_dir / f"{model_dir.name}_series.png"))
    except ForecastError as error:
        raise _fail(error) from None
    _log(f"wrote {output_dir / model_dir.name}.json, {model_dir.name}_steps.csv, {model_dir.name}_series.csv, "
         f"{' and '.join(map(str, pictures))}")
    if forecasts is not None:
        from forecast.tables import write_table

        try:
            write_table(result.forecasts, forecasts)
        except ForecastError as error:
            raise _fail(error) from None
        _log(f"wrote {len(result.forecasts)} backtest forecasts to {forecasts}")


@app.command()
def retrain(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory to retrain.", show_default=False)],
    epochs: Annotated[int, typer.Option(help="Epochs to continue from the current weights.")] = 3,
    full: Annotated[bool, typer.Option("--full", help="Train a fresh model for the configured epochs instead.")] = False,
    holdout: Annotated[Optional[int], typer.Option(help="Newest rows to score both models on (default: 4 horizons).")] = None,
    tolerance: Annotated[float, typer.Option(help="Promote when the candidate's MSE is at most current x (1 + this).")] = 0.02,
    verbose: Annotated[Optional[int], typer.Option(help="0 silent, 1 progress bar, 2 one line per epoch.")] = None,
    log_file: Annotated[Optional[Path], typer.Option("--log", help="Also append timestamped log lines to this file.")] = None,
    store: StoreOption = Path("models"),
    data_cache: DataCacheOption = True,
) -> None:
    """Retrain on the grown DATA and promote the candidate only if it scores as well as the current model.

    Exit codes: 0 promoted or deliberately kept the old model; 1 a problem with the data or the model; 75 another run
    holds the lock.
    """
    _checked_log(log_file, store)
    try:
        from forecast.store import locked, resolve_model_path

        root = resolve_model_path(model, store)
        with locked(root):  # before TensorFlow loads, so that a second run stops at once
            from forecast.retraining import RetrainOptions
            from forecast.retraining import retrain as run_retrain

            log, keras_verbose, callbacks = _progress(verbose, log_file)
            options = RetrainOptions(epochs=epochs, full=full, holdout=holdout, tolerance=tolerance)
            run_retrain(data, root, options, log, keras_verbose, callbacks, _cache(data_cache, store, log))
    except ForecastError as error:
        raise _fail(error, log_file) from None


@app.command()
def info(
    model: Annotated[str, typer.Option(help="Model name or directory.", show_default=False)],
    store: StoreOption = Path("models"),
) -> None:
    """Show what a saved model is: the kind kept, columns, data, validation scores, settings and versions."""
    try:
        from forecast.info import model_info
        from forecast.store import resolve_model_path

        typer.echo(model_info(resolve_model_path(model, store)))
    except ForecastError as error:
        raise _fail(error) from None


models_app = typer.Typer(help="List and restore the versions of a model.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    model: Annotated[str, typer.Option(help="Model name or directory.", show_default=False)],
    store: StoreOption = Path("models"),
) -> None:
    """Show the kept versions of a model, newest last; * marks the current one."""
    try:
        from forecast.store import describe_versions, resolve_model_path

        rows = describe_versions(resolve_model_path(model, store))
    except ForecastError as error:
        raise _fail(error) from None
    typer.echo(f"{'':2}{'version':<9}{'created':<27}{'epochs':>7}{'val_mse':>10}{'holdout_mse':>13}  model")
    for row in rows:
        typer.echo(
            f"{'*' if row['current'] else ' ':2}{row['version']:<9}{row['created']:<27}{row['epochs']:>7}"
            f"{row['val_mse']:>10.4f}{row['holdout_mse']:>13}  {row['kind']}"
        )


@models_app.command("rollback")
def models_rollback(
    model: Annotated[str, typer.Option(help="Model name or directory.", show_default=False)],
    to: Annotated[Optional[str], typer.Option(help="Version to make current (default: the one before it).")] = None,
    store: StoreOption = Path("models"),
) -> None:
    """Make an earlier version current again."""
    try:
        from forecast.store import locked, resolve_model_path, rollback

        root = resolve_model_path(model, store)
        with locked(root):
            version = rollback(root, to)
    except ForecastError as error:
        raise _fail(error) from None
    _log(f"{root}: version {version} is current")


if __name__ == "__main__":
    app()
