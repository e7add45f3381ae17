"""What the pictures show: the forecast's sim columns each on its own scale and its default origin, the per-series NSE
distribution `evaluate` draws for many series, and a run whose gate kept the linear start saying so in `evaluate` and
in `training.png`."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.config import Config

from conftest import CAMELS, assert_png, randomised
from saved_models import untrained_model

SIMS = ("MOD_RUN", "PRCP", "TAIR")
CAMELS_SMALL = Config(target="OBS_RUN", sim=SIMS, lookback=30, horizon=7, batch_size=8, units=4, head_units=4)


def run(*arguments):
    return CliRunner().invoke(app, [str(argument) for argument in arguments])


def camels_file(path, unobserved: int):
    """The last 400 days of the sample basin, the flow of the last `unobserved` days left empty: the forcings run
    that far past the last flow."""
    frame = pd.read_csv(CAMELS).iloc[-400:]
    frame.loc[frame.index[len(frame) - unobserved :], "OBS_RUN"] = np.nan
    frame.to_csv(path, index=False)
    return path


def random_model(csv, config, root):
    """An untrained model directory whose network has random weights, so every input (the sim too) moves it."""
    from forecast.runner import load_model_file

    untrained_model(csv, config, root, train_rows=200, val_end=350)
    randomised(load_model_file(root / "model.keras")).save(root / "model.keras")
    return root


def test_the_default_origin_is_the_latest_whose_horizon_the_sim_covers(tmp_path):
    from forecast.plots import forecast_figure
    from forecast.prediction import forecast_from

    short = camels_file(tmp_path / "short.csv", unobserved=2)  # the sim ends 2 steps after the last flow, H = 7
    model = random_model(short, CAMELS_SMALL, tmp_path / "m")
    drawn = forecast_from(short, model)
    assert drawn.origin == 397 - 5 and drawn.origin_note == "origin: 2010-12-24, the last whose horizon the sim covers"
    assert drawn.series.time[drawn.origin] == pd.Timestamp("2010-12-24")
    # The same forecast as from a file that ends at that origin's horizon, its flow known up to the origin.
    known = pd.read_csv(short)
    known.loc[known.index[drawn.origin + 1 :], "OBS_RUN"] = np.nan
    known.to_csv(tmp_path / "known.csv", index=False)
    cut = forecast_from(tmp_path / "known.csv", model)
    assert cut.origin == drawn.origin and cut.origin_note == "origin: last observed target"
    np.testing.assert_allclose(drawn.frame["OBS_RUN"], cut.frame["OBS_RUN"], rtol=1e-6)
    figure = forecast_figure(drawn)
    assert len(figure.axes) == 1 + len(SIMS)  # the forecast, then one small panel per sim column
    assert figure.get_suptitle() == "short: OBS_RUN, forecast of 7 steps from 2010-12-24"
    assert figure.axes[0].get_title() == drawn.origin_note
    assert [axis.texts[0].get_text() for axis in figure.axes[1:]] == [f"{name} (sim)" for name in SIMS]
    units = forecast_figure(forecast_from(short, random_model(short, CAMELS_SMALL.replace(target_units="mm/day"),
                                                              tmp_path / "units")))
    assert units.get_suptitle() == "short: OBS_RUN (mm/day), forecast of 7 steps from 2010-12-24"
    assert units.axes[0].get_ylabel() == "OBS_RUN (mm/day)"
    from forecast.plots import plot_forecast

    dollars = random_model(short, CAMELS_SMALL.replace(target_units="$_$ US"), tmp_path / "dollars")
    assert_png(plot_forecast(forecast_from(short, dollars), tmp_path / "dollars.png"), (1000, 800))  # text, not math
    covered = forecast_from(camels_file(tmp_path / "covered.csv", unobserved=7), model)
    assert covered.origin == 392 and covered.origin_note == "origin: last observed target"


def test_plot_without_origin_draws_the_latest_and_says_which(tmp_path):
    short = camels_file(tmp_path / "short.csv", unobserved=2)
    random_model(short, CAMELS_SMALL, tmp_path / "store" / "camels")
    drawn = run("plot", short, "--model", "camels", "--store", tmp_path / "store", "--output", tmp_path / "f.png")
    assert drawn.exit_code == 0, drawn.output
    assert "(origin: 2010-12-24, the last whose horizon the sim covers)" in drawn.output
    assert_png(tmp_path / "f.png", (1000, 800))  # 500 pixels of forecast, three sim panels of 100


def test_more_sim_columns_than_panels_share_the_last_panel_scaled():
    from forecast.plots import MAX_SIM_PANELS, sim_panels

    assert sim_panels(("a", "b")) == [("a",), ("b",)]
    many = tuple("abcdefgh")
    panels = sim_panels(many)
    assert len(panels) == MAX_SIM_PANELS and panels[-1] == ("f", "g", "h")
    assert [name for panel in panels for name in panel] == list(many)


def per_series_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"series": f"s{index}", "forecaster": forecaster, "nse_first_step": rng.uniform(-3, 1),
             "nse_last_step": rng.uniform(-3, 1)}
            for forecaster in ("model", "lstm_zeroed", "repeat", "seasonal_naive") for index in range(12)]
    return pd.DataFrame(rows)


def test_the_per_series_nse_distribution_has_a_line_per_forecaster_not_per_ablation(tmp_path):
    from forecast.plots import plot_series_nse, series_nse_figure

    figure = series_nse_figure(per_series_table(), "title")
    assert len(figure.axes) == 2  # step 1 and the last step
    for axis in figure.axes:
        labels = axis.get_legend_handles_labels()[1]
        assert [label.split(" (")[0] for label in labels] == ["model", "Repeat", "seasonal naive"]
        for line in axis.get_lines():
            x, y = line.get_data()
            assert -1 <= x.min() and x.max() <= 1 and y[0] == 0 and y[-1] == 1  # clipped; from 0 to every series
    assert_png(plot_series_nse(per_series_table(), "title", tmp_path / "series.png"), (1000, 500))


@pytest.fixture
def basins(basins_store, tmp_path):
    data, _, trained = basins_store
    shutil.copytree(trained, tmp_path / "store", symlinks=True)
    return data, tmp_path / "store"


def test_evaluate_draws_the_per_series_nse_for_many_series_only(basins, tmp_path):
    data, store = basins
    many = run("evaluate", data, "--model", "basins", "--store", store, "--validation-rows", "--output-dir",
               tmp_path / "many")
    assert many.exit_code == 0, many.output
    assert_png(tmp_path / "many" / "basins_series.png", (1000, 500))
    one = run("evaluate", data, "--model", "basins", "--store", store, "--validation-rows", "--series", "01022500",
              "--output-dir", tmp_path / "one")
    assert one.exit_code == 0, one.output
    assert (tmp_path / "one" / "basins_series.csv").is_file() and not (tmp_path / "one" / "basins_series.png").exists()


LINEAR_START = {"kept_linear_start": True, "kept_start_weights": True, "model_kind": "linear (ridge on lags)",
                "epochs": 0, "validation": {"repeat": {"mse": 0.6}}, "linear_start": {"val_mse": 0.38}}


def test_a_kept_linear_start_is_said_once_and_has_no_ablations(tmp_path):
    from forecast.evaluation import LINEAR_START_NOTE

    data = camels_file(tmp_path / "camels.csv", unobserved=0)
    model = random_model(data, CAMELS_SMALL, tmp_path / "store" / "m")
    arguments = ("evaluate", data, "--model", "m", "--store", tmp_path / "store", "--output-dir", tmp_path / "out")
    ablated = run(*arguments)
    assert ablated.exit_code == 0 and "lstm_zeroed" in ablated.stdout and "model beats" in ablated.stdout
    (model / "metrics.json").write_text(json.dumps(LINEAR_START))
    linear = run(*arguments)
    assert linear.exit_code == 0, linear.output
    assert linear.stdout.count(LINEAR_START_NOTE) == 1
    for ablation in ("lstm_zeroed", "linear_only", "state_reset", "model beats"):
        assert ablation not in linear.stdout
    assert json.loads((tmp_path / "out" / "m.json").read_text())["ablation"] == {}


def test_training_png_says_the_network_was_discarded_where_the_start_was_kept(tmp_path):
    from forecast.plots import plot_training, training_figure

    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.5, 0.3, 0.25], "val_mse": [0.3, 0.28, 0.29]})
    kept = training_figure(history, LINEAR_START)
    assert "the network was discarded" in kept.get_suptitle() and "linear start" in kept.get_suptitle()
    assert "network discarded\nlinear start kept" in [text.get_text() for text in kept.axes[0].texts]
    network = training_figure(history, {**LINEAR_START, "kept_linear_start": False, "kept_start_weights": False})
    assert network.get_suptitle() == "" and not network.axes[0].texts
    assert_png(plot_training(history, LINEAR_START, tmp_path / "training.png"), (1000, 500))
