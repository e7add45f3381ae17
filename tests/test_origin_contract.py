"""The origin contract: nothing fitted or read for a forecast at an origin may see a row after origin + H.

Every row after origin + H is changed (times five, emptied, shuffled) and each path's output at the origin must stay
bit for bit: predict's (the forecast `plot` draws from any origin, with its interval from the recent errors),
evaluate's (the model, its ablations and the interval offsets) and the recalibration's after a retrain (every
origin after the training rows), for one series under each gap setting, at an origin after a gap and, where gaps are filled, at one
inside it. Many series, trained and held out: tests/test_many.py.
"""

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config

from conftest import ETTH1

ROWS = 1400
GAP = slice(1000, 1010)  # ten hours missing from the file: rows 1000-1009 of the grid
AFTER_GAP = 1200  # an origin with an observed target, after the validation rows
INSIDE_GAP = 1002  # an origin inside the gap, whose history ends in filled rows
# Without a linear start no gate can discard the network, so its state, LSTM and ablations are all on the paths.
CONFIG = Config(target="OT", lookback=24, horizon=6, stream_chunks=3, units=8, head_units=8, batch_size=16, epochs=1,
                train_end="840", val_end="1100", linear_start=False)
CHANGES = ("times five", "missing", "shuffled")


@pytest.fixture(scope="module", params=["refuse", "mask", "interpolate"])
def trained(request, tmp_path_factory):
    """A tiny model trained under one gap setting, on a slice of ETTh1 with ten hours missing (none for "refuse")."""
    from forecast.training import train

    folder = tmp_path_factory.mktemp(request.param)
    frame = pd.read_csv(ETTH1, nrows=ROWS)
    if request.param != "refuse":
        frame = frame.drop(index=range(GAP.start, GAP.stop)).reset_index(drop=True)
    path = folder / "ett.csv"
    frame.to_csv(path, index=False)
    train(path, CONFIG.replace(gaps=request.param), folder / "model")
    return request.param, path, frame, folder / "model"


def changed_file(frame: pd.DataFrame, after: pd.Timestamp, change: str, path) -> str:
    """`frame` with the target and a covariate of every row after `after` changed; written to `path`."""
    rows = pd.to_datetime(frame.date) > after
    changed = frame.copy()
    rng = np.random.default_rng(0)
    for column in ("OT", "HUFL"):
        values = changed.loc[rows, column].to_numpy()
        changed.loc[rows, column] = {"times five": values * 5, "missing": np.nan,
                                     "shuffled": rng.permutation(values)}[change]
    changed.to_csv(path, index=False)
    return path


def grid_time(row: int) -> pd.Timestamp:
    """The time of row `row` of the hourly grid the slice starts on."""
    return pd.Timestamp("2016-07-01 00:00:00") + pd.Timedelta(hours=row)


def at_origin(path, model_dir, origin: pd.Timestamp, after_training: bool = False) -> dict[str, np.ndarray]:
    """Evaluate's outputs at the origin (its only one: the range is its horizon), or with `after_training` those
    `retraining.recalibrate` fits on, whose range runs from the training rows' end to the origin's horizon."""
    from forecast.backtest import range_forecasts

    start = None if after_training else str(origin + pd.Timedelta(hours=1))
    ranged = range_forecasts(path, model_dir, start, str(origin + pd.Timedelta(hours=CONFIG.horizon)),
                             ablation=not after_training, after_training=after_training)
    outputs = {label: forecast[-1] for label, forecast in ranged.models.items()}
    if ranged.offsets is not None:
        outputs["offsets"] = ranged.offsets[-1]
    return outputs


def test_nothing_after_the_origin_changes_a_forecast_on_any_path(trained, tmp_path):
    setting, path, frame, model_dir = trained
    from forecast.prediction import forecast_from

    origin = grid_time(AFTER_GAP)
    after = origin + pd.Timedelta(hours=CONFIG.horizon)
    before = {
        "plot": forecast_from(path, model_dir, str(origin)).frame,
        "evaluate": at_origin(path, model_dir, origin),
        "recalibrate": at_origin(path, model_dir, origin, after_training=True),
    }
    assert {"model", "state_reset", "lstm_zeroed", "linear_only", "offsets"} <= set(before["evaluate"])
    for change in CHANGES:
        changed = changed_file(frame, after, change, tmp_path / f"{change}.csv")
        pd.testing.assert_frame_equal(forecast_from(changed, model_dir, str(origin)).frame, before["plot"],
                                      check_exact=True, obj=f"{setting}, {change}: plot")
        for name, outputs in (("evaluate", at_origin(changed, model_dir, origin)),
                              ("recalibrate", at_origin(changed, model_dir, origin, after_training=True))):
            for label, values in outputs.items():
                assert np.array_equal(values, before[name][label]), (setting, change, name, label)
    # predict, plot and evaluate make the same forecast at the same origin.
    np.testing.assert_allclose(before["plot"]["OT"].to_numpy(), forecast_in_units(path, model_dir, origin), atol=1e-6)


def forecast_in_units(path, model_dir, origin: pd.Timestamp) -> np.ndarray:
    from forecast.backtest import range_forecasts

    ranged = range_forecasts(path, model_dir, str(origin + pd.Timedelta(hours=1)),
                             str(origin + pd.Timedelta(hours=CONFIG.horizon)), ablation=False)
    return ranged.in_units(ranged.models["model"])[-1]


def test_an_origin_inside_a_filled_gap_never_sees_the_row_after_the_gap(trained, tmp_path):
    setting, path, frame, model_dir = trained
    if setting == "refuse":
        pytest.skip("a file with a gap is refused under this setting")
    origin = grid_time(INSIDE_GAP)
    after = origin + pd.Timedelta(hours=CONFIG.horizon)
    assert after < grid_time(GAP.stop)  # the first row after the gap is among the changed ones
    before = at_origin(path, model_dir, origin)
    # Not "missing": with every target after the origin emptied the series' observed rows end before the gap.
    for change in ("times five", "shuffled"):
        outputs = at_origin(changed_file(frame, after, change, tmp_path / f"{change}.csv"), model_dir, origin)
        for label, values in outputs.items():
            assert np.array_equal(values, before[label]), (setting, change, label)
