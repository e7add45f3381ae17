"""The `forecast` command: parses arguments and calls the library.

Heavy modules (pandas, TensorFlow) are imported inside the commands so that `--help` and argument errors answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from forecast.cli_common import (DataArg, DataCacheOption, SeriesOption, StoreOption, checked_log, data_cache, fail,
                                 log_line, outside_models, progress, series_ids)
from forecast.cli_flags import flag_config, model_run, with_run_flags
from forecast.config import Config
from forecast.errors import ForecastError

app = typer.Typer(
    help="Forecast time series in CSV files with a multi-input, stateful LSTM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@with_run_flags
def train(
    flags: dict,
    initial_epoch: Annotated[Optional[int], typer.Option(help="Continue from the current version's weights, counting epochs from N.")] = None,
    verbose: Annotated[Optional[int], typer.Option(help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2).")] = None,
    tensorboard: Annotated[Optional[Path], typer.Option(help="Write a TensorBoard log to this directory.")] = None,
    executor: Annotated[Optional[str], typer.Option(help="Where the networks train: local (this process, one after the other) or ray (one Ray task each).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
) -> None:
    """Train a model on DATA and write it to a model directory."""
    with model_run(flags) as target_dir:
        from forecast.store import CHECKPOINT_STATE, checkpoint_dir

        outside_models(flags["store"], tensorboard=tensorboard)
        if resume:
            state = checkpoint_dir(target_dir) / CHECKPOINT_STATE
            if not state.is_file():
                raise ForecastError(f"{target_dir}: no interrupted training to resume; train without --resume")
            base = Config.from_json(state, key="config")
        else:
            base = Config.from_toml(flags["config_file"]) if flags["config_file"] else Config()
        config = flag_config(base, flags, initial_epoch=initial_epoch, verbose=verbose, executor=executor,
                             tensorboard_dir=str(tensorboard) if tensorboard else None)
        from forecast.training import train as run_training

        log, keras_verbose, callbacks = progress(config.verbose, flags["log_file"])
        run_training(flags["data"], config, target_dir, log, keras_verbose, callbacks, resume=resume,
                     cache=data_cache(flags["data_cache"], flags["store"], log))


@app.command()
@with_run_flags
def tune(
    flags: dict,
    trials: Annotated[Optional[int], typer.Option(help="Trials to run (default: trials in the tune table of --config, else 8).")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Seconds the search may take; the trials still running then are stopped.")] = None,
) -> None:
    """Search the settings on DATA's validation rows with Ray Tune, one trial per Ray task, and save the best trial as
    the model's next version (with tune.csv and tune.png in it)."""
    with model_run(flags) as target_dir:
        from forecast.config import read_toml
        from forecast.search_space import SearchSpace

        config_file = flags["config_file"]
        config = flag_config(Config.from_toml(config_file) if config_file else Config(), flags)
        table = read_toml(config_file).get("tune") if config_file else None
        space = SearchSpace.read(table, config, str(config_file or "forecast tune"), trials, time_budget)
        from forecast.tuning import tune as run_tune

        log = progress(0, flags["log_file"])[0]
        result = run_tune(flags["data"], config, space, target_dir, log, data_cache(flags["data_cache"], flags["store"], log))
    typer.echo(result.table())


@app.command()
def predict(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory written by `forecast train`.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(help="Write the forecast here, CSV or .parquet (default: CSV on standard output).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the forecast with its intervals into this PNG file (one series).")] = None,
    series: SeriesOption = None,
    store: StoreOption = Path("models"),
    use_cache: DataCacheOption = True,
) -> None:
    """Forecast the H steps after the last observed target in DATA (of each series, for a long file), with one column
    per quantile."""
    try:
        from forecast.prediction import forecast_from, predict as run_prediction
        from forecast.store import resolve_model_path

        model_dir = resolve_model_path(model, store)
        outside_models(store, output=output, plot=plot)
        ids = series_ids(series)
        cache = data_cache(use_cache, store)
        forecast = run_prediction(data, model_dir, log_line, ids, cache)
        if plot is not None:
            from forecast.plots import plot_forecast

            result = forecast_from(data, model_dir, None, log_line, ids[0] if ids else None, cache)
            log_line(f"drew the forecast in {plot_forecast(result, plot)}")
    except ForecastError as error:
        raise fail(error) from None
    if output is None:
        typer.echo(forecast.to_csv(index=False), nl=False)
    else:
        from forecast.tables import write_table

        try:
            write_table(forecast, output)  # a reader of `output` never sees half a file
        except ForecastError as error:
            raise fail(error) from None
        log_line(f"wrote {len(forecast)} forecast rows to {output}")


@app.command()
def plot(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory written by `forecast train`.", show_default=False)],
    origin: Annotated[Optional[str], typer.Option(help="The forecast's last observed row: a row count or date (default: the last observation, or the last row whose horizon the sim covers); inside the data, the truth is drawn too.")] = None,
    output: Annotated[Path, typer.Option(help="The PNG file to write.")] = Path("forecast.png"),
    series: Annotated[Optional[str], typer.Option("--series", help="The series to draw (for a file of many).")] = None,
    store: StoreOption = Path("models"),
    use_cache: DataCacheOption = True,
) -> None:
    """Draw a forecast: the last stretch of history, the forecast with its interval bands, the sim input over the
    horizon, and the truth where DATA holds it."""
    try:
        from forecast.plots import plot_forecast
        from forecast.prediction import forecast_from
        from forecast.store import resolve_model_path

        model_dir = resolve_model_path(model, store)
        outside_models(store, output=output)
        result = forecast_from(data, model_dir, origin, log_line, series, data_cache(use_cache, store))
        chosen = "" if origin is not None else f" ({result.origin_note})"
        log_line(f"drew the forecast from {result.series.time[result.origin]} in {plot_forecast(result, output)}{chosen}")
    except ForecastError as error:
        raise fail(error) from None


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
    use_cache: DataCacheOption = True,
) -> None:
    """Score a model on every forecast origin of a range, next to the Repeat and seasonal-naive baselines."""
    try:
        from forecast.evaluation import evaluate as run_evaluation
        from forecast.store import resolve_model_path, write_json

        model_dir = resolve_model_path(model, store)
        outside_models(store, output_dir=output_dir, plot=plot, forecasts=forecasts)
        result = run_evaluation(data, model_dir, start, end, validation_rows, warn=log_line, series_ids=series_ids(series),
                                keep_forecasts=forecasts is not None, cache=data_cache(use_cache, store))
    except ForecastError as error:
        raise fail(error) from None
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
        raise fail(ForecastError(f"{output_dir}: cannot write the reports here ({exc.strerror or exc}); choose "
                                  "another --output-dir")) from None
    try:
        from forecast.plots import plot_steps

        scored = f"{model_dir.name}: {result.origins} origins, targets {result.first_time} to {result.last_time}"
        pictures = [plot_steps(result.per_step, scored, plot or output_dir / f"{model_dir.name}_steps.png")]
        if result.per_series["series"].nunique() > 1:  # a distribution over series needs more than one
            from forecast.plots import plot_series_nse

            pictures.append(plot_series_nse(result.per_series, scored, output_dir / f"{model_dir.name}_series.png"))
    except ForecastError as error:
        raise fail(error) from None
    log_line(f"wrote {output_dir / model_dir.name}.json, {model_dir.name}_steps.csv, {model_dir.name}_series.csv, "
         f"{' and '.join(map(str, pictures))}")
    if forecasts is not None:
        from forecast.tables import write_table

        try:
            write_table(result.forecasts, forecasts)
        except ForecastError as error:
            raise fail(error) from None
        log_line(f"wrote {len(result.forecasts)} backtest forecasts to {forecasts}")


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
    use_cache: DataCacheOption = True,
) -> None:
    """Retrain on the grown DATA and promote the candidate only if it scores as well as the current model.

    Exit codes: 0 promoted or deliberately kept the old model; 1 a problem with the data or the model; 75 another run
    holds the lock.
    """
    checked_log(log_file, store)
    try:
        from forecast.store import locked, resolve_model_path

        root = resolve_model_path(model, store)
        with locked(root):  # before TensorFlow loads, so that a second run stops at once
            from forecast.retraining import RetrainOptions
            from forecast.retraining import retrain as run_retrain

            log, keras_verbose, callbacks = progress(verbose, log_file)
            options = RetrainOptions(epochs=epochs, full=full, holdout=holdout, tolerance=tolerance)
            run_retrain(data, root, options, log, keras_verbose, callbacks, data_cache(use_cache, store, log))
    except ForecastError as error:
        raise fail(error, log_file) from None


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
        raise fail(error) from None


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
        raise fail(error) from None
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
        raise fail(error) from None
    log_line(f"{root}: version {version} is current")


if __name__ == "__main__":
    app()
