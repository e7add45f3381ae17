"""The `forecast` command: parses arguments and calls the library.

Heavy modules (pandas, TensorFlow) are imported inside the commands so that `--help` and argument errors answer at once.
"""

from __future__ import annotations

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


def _log(message: str) -> None:
    typer.echo(f"{datetime.now().isoformat(timespec='seconds')} {message}", err=True)


def _fail(error: ForecastError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=1)


def _listed(values: Optional[list[str]]) -> Optional[tuple[str, ...]]:
    """Repeated flags or comma-separated values (`--sim A --sim B` or `--sim A,B`); None when not given."""
    if not values:
        return None
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


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
    initial_epoch: Annotated[Optional[int], typer.Option(help="Resume at this epoch from the checkpoint or the model.")] = None,
    stateful: Annotated[Optional[bool], typer.Option("--stateful/--stateless", help="Stateful streams or shuffled windows.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without validation gain before stopping.")] = None,
    train_end: Annotated[Optional[str], typer.Option(help="Training rows: a row count or the last date to include.")] = None,
    val_end: Annotated[Optional[str], typer.Option(help="End of validation: a row count or the last date to include.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    verbose: Annotated[Optional[int], typer.Option(help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2).")] = None,
    tensorboard: Annotated[Optional[Path], typer.Option(help="Write a TensorBoard log to this directory.")] = None,
    gaps: Annotated[Optional[str], typer.Option(help="Missing timestamps: refuse, mask (weight 0) or interpolate.")] = None,
    max_gap: Annotated[Optional[int], typer.Option(help="Longest gap (steps) that mask or interpolate accept.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    model_dir: Annotated[Optional[str], typer.Option(help="Model name or directory (default: the data file's name).")] = None,
    store: StoreOption = Path("models"),
) -> None:
    """Train a model on DATA and write it to a model directory."""
    try:
        from forecast.store import CHECKPOINT_STATE, checkpoint_dir, resolve_model_path

        target_dir = resolve_model_path(model_dir or data.stem, store)
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
            initial_epoch=initial_epoch, stateful=stateful, learning_rate=learning_rate, patience=patience,
            train_end=train_end, val_end=val_end, seed=seed, verbose=verbose,
            tensorboard_dir=str(tensorboard) if tensorboard else None, gaps=gaps, max_gap=max_gap,
        )
        from forecast.training import train as run_training

        run_training(
            data,
            config,
            target_dir,
            log=_log,
            verbose=config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2),
            resume=resume,
        )
    except ForecastError as error:
        raise _fail(error) from None


@app.command()
def predict(
    data: DataArg,
    model: Annotated[str, typer.Option(help="Model name or directory written by `forecast train`.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(help="Write the forecast CSV here (default: standard output).")] = None,
    store: StoreOption = Path("models"),
) -> None:
    """Forecast the H steps after the last observed target in DATA."""
    try:
        from forecast.prediction import predict as run_prediction
        from forecast.store import resolve_model_path

        forecast = run_prediction(data, resolve_model_path(model, store))
    except ForecastError as error:
        raise _fail(error) from None
    if output is None:
        typer.echo(forecast.to_csv(index=False), nl=False)
    else:
        forecast.to_csv(output, index=False)
        _log(f"wrote {len(forecast)} forecast rows to {output}")


if __name__ == "__main__":
    app()
