"""Many series, one model: long files, static attributes, per-series scaling, streams that never cross series, series
held out of training, and per-series metrics, on the four-basin CAMELS sample of data/."""

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.data import load_collection
from forecast.errors import ForecastError
from forecast.features import build_features, fit_scaler, stack
from forecast.sampler import PADDING, StreamPlan, origin_ranges, rolling_streams
from forecast.statics import read_statics
from forecast.windowing import WindowBatcher, window_generator

from conftest import DATA

BASINS = DATA / "camels_us_nh.csv"
STATIC = DATA / "camels_us_nh_static.csv"
IDS = ("01022500", "01547700", "02064000", "03015500")
LONG = Config(target="QObs", id_column="basin")


def cli(*arguments, code: int = 0):
    """The `forecast` command in process (a subprocess would import TensorFlow anew each time), its exit code checked;
    returns the output, standard error included."""
    from typer.testing import CliRunner

    from forecast.cli import app

    result = CliRunner().invoke(app, [str(argument) for argument in arguments])
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> tuple:
    """The sample with series of different starts and lengths: the second basin starts a year late, the third ends
    half a year early; one target cell of the first is empty."""
    frame = pd.read_csv(BASINS, dtype={"basin": str})
    late = (frame.basin == IDS[1]) & (frame.date < "2001-01-01")
    early = (frame.basin == IDS[2]) & (frame.date > "2002-06-30")
    frame = frame[~late & ~early].reset_index(drop=True)
    frame.loc[(frame.basin == IDS[0]) & (frame.date == "2001-03-03"), "QObs"] = np.nan
    path = tmp_path_factory.mktemp("many") / "basins.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_a_long_file_is_read_as_series_with_their_own_ranges_and_ids_kept_as_text(uneven):
    path, frame = uneven
    collection = load_collection(path, LONG)
    assert collection.ids == IDS  # leading zeros kept, in the order they appear
    lengths = [len(series.time) for series in collection.series]
    assert lengths == [frame.basin.eq(name).sum() for name in IDS] and len(set(lengths)) == 3
    assert collection.series[1].time[0] == pd.Timestamp("2001-01-01")
    assert "basin" not in collection.first.roles.past  # the id is no covariate
    single = load_collection(DATA / "ETTh1.csv", Config(target="OT"))
    assert single.ids == ("",) and single.id_name is None  # a file without ids is a collection of one


def test_errors_in_a_long_file_name_the_series_and_the_file_line(tmp_path):
    lines = BASINS.read_text().splitlines()
    lines[1500] = lines[1500].replace(lines[1500].split(",")[2], "abc", 1)  # QObs of a row of the second basin
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ForecastError, match=rf"series '{IDS[1]}': row 1501: column 'QObs' holds 'abc'"):
        load_collection(path, LONG)
    with pytest.raises(ForecastError, match="no series 'nope' in column 'basin'"):
        load_collection(BASINS, LONG).select(("nope",))


def test_static_attributes_are_z_scored_on_training_series_one_hot_for_text_and_gaps_reported(tmp_path):
    static = pd.read_csv(STATIC, dtype={"basin": str})
    static["climate"] = ["snow", "rain", "rain", "snow"]
    static = static[static.basin != IDS[3]]
    path = tmp_path / "static.csv"
    static.to_csv(path, index=False)
    messages = []
    encoder = read_statics(path, "basin", IDS, messages.append)
    assert any(IDS[3] in message and "no attributes" in message for message in messages)
    assert encoder.channels[-2:] == ("climate=rain", "climate=snow") and len(encoder.channels) == 27 + 2
    codes = np.stack([encoder.encode(name) for name in IDS[:3]])
    np.testing.assert_allclose(codes[:, :27].mean(axis=0), 0.0, atol=1e-6)  # z-scored across the training series
    np.testing.assert_array_equal(codes[:, 27:], [[0, 1], [1, 0], [1, 0]])
    assert not encoder.encode(IDS[3]).any()  # no row: the training means
    static["climate"] = [f"name {index}" for index in range(len(static))] * 1
    static = pd.concat([static] * 8, ignore_index=True).assign(basin=lambda frame: [f"{i:08d}" for i in frame.index])
    static["climate"] = [f"name {index}" for index in range(len(static))]
    static.to_csv(path, index=False)
    with pytest.raises(ForecastError, match="'climate' holds text with 24 different values"):
        read_statics(path, "basin", tuple(static.basin), messages.append)


def stacked(path, lookback: int, horizon: int):
    collection = load_collection(path, LONG)
    features = stack([build_features(series, fit_scaler(series, 300), horizon) for series in collection.series])
    return collection, features, features.lengths


def test_streams_never_cross_series_and_each_row_continues_until_the_state_is_reset(uneven):
    """The core contiguity test over several series: within a group of K batches every row stays on one series and
    continues its previous window; a row changes series only where the state is reset."""
    lookback, horizon, chunks, batch_size = 20, 3, 4, 8
    _, features, lengths = stacked(uneven[0], lookback, horizon)
    ranges = origin_ranges(features.starts, lengths, [(0, int(n)) for n in lengths], lookback, horizon)
    assert [span.series for span in ranges] == [0, 1, 2, 3]
    plan = StreamPlan(ranges, lookback, chunks, batch_size, shuffle=True, seed=2)
    origins, scored = plan.batches(0)
    batcher = WindowBatcher(features, lookback, horizon)
    generator = window_generator(batcher, plan)
    batches = [next(generator) for _ in range(plan.n_batches)]
    scored_origins = np.sort(origins[scored])
    np.testing.assert_array_equal(scored_origins, plan.origins())  # every origin of every series exactly once
    series = features.series_of(np.where(origins == PADDING, 0, origins))
    mixed = continued = 0
    for index in range(len(origins) - 1):
        real = origins[index] != PADDING
        mixed += len(set(series[index][real])) > 1
        if (index + 1) % chunks == 0:
            continue  # the state is reset here: the next batch starts new streams
        for row in np.flatnonzero(real & (origins[index + 1] != PADDING)):
            assert series[index, row] == series[index + 1, row]
            if scored[index, row]:  # a warm-up chunk at a series' start repeats its first window
                end = origins[index, row]
                np.testing.assert_array_equal(batches[index + 1][0]["lstm"][row, 0], features.history[end + 1])
                continued += 1
    assert mixed > 10 and continued > 100  # batches mix series, and rows continue across chunks
    for index, span in enumerate(ranges):  # no window reaches into the series before
        start = features.bounds(index)[0]
        assert span.earliest == start + lookback - 1 and span.first >= span.earliest


def test_evaluation_and_prediction_warm_up_the_same_way_at_a_series_start(uneven):
    lookback, horizon, chunks = 20, 3, 4
    _, features, lengths = stacked(uneven[0], lookback, horizon)
    ranges = origin_ranges(features.starts, lengths, [None, (0, 60), None, None], lookback, horizon)
    streams, _ = rolling_streams(ranges, lookback, chunks)
    start = features.bounds(1)[0]
    np.testing.assert_array_equal(streams[0], [start + 19] * 4)  # no history before: the first window, repeated
    np.testing.assert_array_equal(streams[30], [start + 19, start + 19, start + 29, start + 49])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, uneven) -> tuple:
    """A global model trained on three of the four basins (the fourth held out), on the rows up to 2002-09-30."""
    path, frame = uneven
    folder = tmp_path_factory.mktemp("trained")
    older = folder / "basins.csv"
    frame[frame.date <= "2002-09-30"].to_csv(older, index=False)
    store = folder / "store"
    cli("train", older, "--target", "QObs", "--id-column", "basin", "--static", STATIC, "--holdout-series",
                 IDS[3], "--lookback", "20", "--horizon", "3", "--batch-size", "16", "--epochs", "1",
                 "--train-end", "2001-12-31", "--val-end", "2002-06-30", "--model-dir", "basins", "--store", store)
    return older, store


def test_a_global_model_on_three_basins_forecasts_all_four_and_writes_per_series_metrics(tmp_path, trained):
    path, store = trained
    version = store / "basins" / "current"
    scalers = json.loads((version / "scaler.json").read_text())["series"]
    assert sorted(scalers) == sorted(IDS[:3])  # each trained series z-scored on its own training rows
    assert json.loads((version / "schema.json").read_text())["holdout"] == [IDS[3]]
    assert (version / "statics.json").is_file()
    forecast = tmp_path / "forecast.csv"
    cli("predict", path, "--model", "basins", "--store", store, "--output", forecast)
    table = pd.read_csv(forecast, dtype={"basin": str})
    assert list(table.columns) == ["basin", "date", "step", "QObs", "QObs_q0.1", "QObs_q0.9"]
    assert tuple(table.basin.unique()) == IDS
    assert table.groupby("basin").date.first()[IDS[2]] == "2002-07-01"  # each series after its own last row
    assert table.groupby("basin").date.first()[IDS[0]] == "2002-10-01"
    assert (table.QObs >= 0).all() and (table["QObs_q0.1"] <= table.QObs).all()
    output = tmp_path / "scores"
    shown = cli("evaluate", path, "--model", "basins", "--store", store, "--output-dir", output)
    assert "over series (median / mean NSE)" in shown and "model (held out)" in shown
    assert f"left out: {path}: series '{IDS[2]}': no rows after the model's validation rows" in shown
    per_series = pd.read_csv(output / "basins_series.csv", dtype={"series": str})
    model = per_series[per_series.forecaster == "model"].set_index("series")
    assert list(model.index) == [IDS[0], IDS[1], IDS[3]]  # the third ends with validation: nothing after it to score
    assert model.held_out.tolist() == [False, False, True]
    assert np.isfinite(model[["nse", "nse_first_step", "nse_last_step"]].to_numpy()).all()
    saved = json.loads((output / "basins.json").read_text())
    assert {row["series"] for row in saved["per_series"]} == {IDS[0], IDS[1], IDS[3]}


def test_retrain_takes_a_grown_long_file_and_refuses_a_rewritten_series(tmp_path, trained, uneven):
    import shutil

    path, store = trained
    copy = tmp_path / "store"
    shutil.copytree(store, copy, symlinks=True)
    grown = tmp_path / "grown.csv"
    uneven[1].to_csv(grown, index=False)  # three more months of each series
    done = cli("retrain", grown, "--model", "basins", "--store", copy, "--epochs", "1", "--holdout", "30")
    record = json.loads((copy / "basins" / "retrain.jsonl").read_text().splitlines()[-1])
    assert record["new_rows"] == 2 * 92 and record["holdout_rows"] == 30  # the held-out series is no new data
    assert ("promoted to version" in done) == record["promoted"]
    rewritten = uneven[1].copy()
    rewritten.loc[(rewritten.basin == IDS[1]) & (rewritten.date == "2001-05-05"), "QObs"] += 1.0
    rewritten.to_csv(grown, index=False)
    refused = cli("retrain", grown, "--model", "basins", "--store", copy, code=1)
    assert "Traceback" not in refused
    assert f"series '{IDS[1]}': (2001-01-01 00:00:00 to" in refused and "history was rewritten" in refused


def test_naive_weights_count_each_series_against_its_own_repeat_error(uneven):
    from forecast.split import Split
    from forecast.training_data import TrainingData, naive_weights

    lookback, horizon = 20, 3
    collection, features, _ = stacked(uneven[0], lookback, horizon)
    splits = tuple(Split(300, 400) for _ in collection.series)
    data = TrainingData(collection, splits, None, None, None, features)
    weights = naive_weights(data, horizon)
    repeat_mse = []
    for index in range(len(collection.series)):
        start, _ = features.bounds(index)
        target = features.target[start : start + 300].astype("float64")
        repeat_mse.append(np.mean([np.nanmean((target[h:] - target[:-h]) ** 2) for h in (1, 2, 3)]))
    np.testing.assert_allclose(weights * np.array(repeat_mse), (weights * np.array(repeat_mse))[0])  # 1 / Repeat MSE
    assert np.average(weights, weights=[300] * 4) == pytest.approx(1.0)
    one = TrainingData(collection.select((IDS[0],)), splits[:1], None, None, None, stacked_one(uneven[0]))
    assert naive_weights(one, horizon) == pytest.approx([1.0])  # one series: its loss unchanged
    batcher = WindowBatcher(features, lookback, horizon, weights)
    _, weight = batcher.targets(np.array([features.bounds(2)[0] + 50]), np.array([True]))
    assert weight.max() == pytest.approx(weights[2])
    sparse = features.target.copy()  # series 1 observed every 5th training row: no two within the horizon
    start = features.bounds(1)[0]
    sparse[start : start + 300][np.arange(300) % 5 != 0] = np.nan
    thinned = TrainingData(collection, splits, None, None, None, dataclasses.replace(features, target=sparse))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights = naive_weights(thinned, horizon)
    assert np.isfinite(weights).all() and np.average(weights, weights=[300] * 4) == pytest.approx(1.0)
    assert weights[1] == pytest.approx(np.median(weights[[0, 2, 3]]))  # neutral, not NaN for every series


def stacked_one(path):
    series = load_collection(path, LONG).first
    return stack([build_features(series, fit_scaler(series, 300), 3)])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_evaluate_exports_every_forecast_it_scored_and_its_nse_is_the_table_s(tmp_path, trained, suffix):
    path, store = trained
    exported = tmp_path / f"backtest{suffix}"
    shown = cli("evaluate", path, "--model", "basins", "--store", store, "--start", "2002-01-01", "--output-dir",
                tmp_path, "--forecasts", exported)
    table = pd.read_parquet(exported) if suffix == ".parquet" else pd.read_csv(exported, dtype={"series": str})
    assert list(table.columns[:6]) == ["series", "origin", "step", "target_time", "truth", "forecast"]
    assert {"QObs_q0.1", "QObs_q0.9", "repeat"} <= set(table.columns)
    assert not table.duplicated(["series", "origin", "step"]).any() and set(table.step) == {1, 2, 3}
    per_series = pd.read_csv(tmp_path / "basins_series.csv", dtype={"series": str})
    model = per_series[per_series.forecaster == "model"].set_index("series")
    assert sorted(table.series.unique()) == sorted(model.index)
    for series, rows in table.groupby("series"):
        for step, column in ((1, "nse_first_step"), (3, "nse_last_step")):
            scored = rows[(rows.step == step) & rows.truth.notna()]
            truth, forecast = scored.truth.to_numpy(), scored.forecast.to_numpy()
            nse = 1 - ((forecast - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
            assert nse == pytest.approx(model.loc[series, column], abs=1e-9)
        # Each series' interval coverage, from the exported bounds.
        observed = rows[rows.truth.notna()]
        inside = (observed.truth >= observed["QObs_q0.1"]) & (observed.truth <= observed["QObs_q0.9"])
        assert inside.mean() == pytest.approx(model.loc[series, "coverage_80%"], abs=1e-9)
    coverage = model["coverage_80%"]
    assert f"model 80% per series: coverage median {coverage.median():.3f}" in shown


def test_info_repeats_the_gate_and_the_series_that_argued_for_each_side(trained):
    _, store = trained
    metrics = json.loads((store / "basins" / "current" / "metrics.json").read_text())
    gate = metrics["gate"]
    assert {"t", "blocks", "start_score", "trained_score", "favoured_start", "favoured_network"} <= set(gate)
    named = gate["favoured_start"] + gate["favoured_network"]
    assert named and {item["series"] for item in named} <= set(IDS[:3])  # only trained series argue
    shown = cli("info", "--model", "basins", "--store", store)
    assert "gate: kept the " in shown and f"{named[0]['series']} (NSE " in shown
    assert "validation NSE over 3 series, median / mean: " in shown and "(Repeat " in shown


@pytest.mark.parametrize("change", ["times five", "missing", "shuffled"])
def test_nothing_after_the_origin_changes_the_forecast_of_a_trained_or_an_unseen_series(tmp_path, trained, change):
    """The origin contract for predict's path (plot, from any origin) and evaluate's: every row after origin + H of
    the series changed, the forecast and its interval at the origin stay bit for bit; and both paths agree."""
    from forecast.backtest import range_forecasts
    from forecast.prediction import forecast_from

    path, store = trained
    model_dir = store / "basins"
    frame = pd.read_csv(path, dtype={"basin": str})
    origin, horizon = pd.Timestamp("2002-08-01"), 3
    later = frame.date > str((origin + pd.Timedelta(days=horizon)).date())
    rng = np.random.default_rng(0)
    for series in (IDS[0], IDS[3]):  # trained, and held out of training
        rows = later & (frame.basin == series)
        changed = frame.copy()
        for column in ("QObs", "PRCP"):
            values = changed.loc[rows, column].to_numpy()
            changed.loc[rows, column] = {"times five": values * 5, "missing": np.nan,
                                         "shuffled": rng.permutation(values)}[change]
        changed_path = tmp_path / f"changed_{series}.csv"
        changed.to_csv(changed_path, index=False)
        before = forecast_from(path, model_dir, str(origin.date()), series_id=series).frame
        after = forecast_from(changed_path, model_dir, str(origin.date()), series_id=series).frame
        pd.testing.assert_frame_equal(before, after, check_exact=True)
        ranged = range_forecasts(path, model_dir, str((origin + pd.Timedelta(days=1)).date()),
                                 str((origin + pd.Timedelta(days=horizon)).date()), ablation=False, series_ids=(series,))
        np.testing.assert_allclose(ranged.in_units(ranged.models["model"])[0], before["QObs"].to_numpy(), atol=1e-6)


def test_a_parquet_file_trains_the_model_its_csv_trains_and_a_damaged_one_is_refused_in_one_line(tmp_path, uneven):
    _, frame = uneven
    early = frame[frame.date <= "2002-09-30"]
    early.to_csv(tmp_path / "basins.csv", index=False)
    early.to_parquet(tmp_path / "basins.parquet", index=False)
    settings = ("--target", "QObs", "--id-column", "basin", "--sim", "PRCP", "--lookback", "10", "--horizon", "3",
                "--epochs", "1", "--train-end", "2001-12-31", "--val-end", "2002-06-30", "--store", tmp_path / "store")
    scores = []
    for name in ("basins.csv", "basins.parquet"):
        cli("train", tmp_path / name, *settings, "--model-dir", name.replace(".", "_"))
        metrics = json.loads((tmp_path / "store" / name.replace(".", "_") / "current" / "metrics.json").read_text())
        scores.append(metrics["validation"]["model"]["mse"])
    assert scores[0] == scores[1]
    (tmp_path / "damaged.parquet").write_bytes((tmp_path / "basins.parquet").read_bytes()[:3000])
    shown = cli("predict", tmp_path / "damaged.parquet", "--model", "basins_csv", "--store", tmp_path / "store", code=1)
    assert shown.strip().splitlines() == [f"error: {tmp_path / 'damaged.parquet'}: not a readable Parquet file "
                                          "(ArrowInvalid); re-export it, or give a CSV"]


def test_a_held_out_series_with_no_rows_after_validation_is_told_to_pass_start(tmp_path, trained):
    from forecast.evaluation import evaluate

    path, store = trained
    frame = pd.read_csv(path, dtype={"basin": str})
    cut = tmp_path / "cut.csv"
    frame[frame.date <= "2002-06-30"].to_csv(cut, index=False)
    with pytest.raises(ForecastError, match="no rows after the trained series' validation rows .* pass --start"):
        evaluate(cut, store / "basins", series_ids=(IDS[3],), ablation=False)
