"""Loading real CSVs: time axis, frequency, column roles, and the clear errors for user mistakes."""

import json

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.data import load_series
from forecast.errors import ForecastError

from conftest import BEIJING, CAMELS, ETTH1, head_csv


def test_etth1_time_column_frequency_and_default_roles():
    series = load_series(ETTH1, Config(target="OT"))
    assert series.time_name == "date" and series.freq == pd.Timedelta(hours=1)
    assert series.roles.past == ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL")
    assert series.roles.history[0] == "OT"
    assert series.n_observed == 17420


def test_camels_sim_and_bg_roles():
    series = load_series(CAMELS, Config(target="OBS_RUN", sim=("MOD_RUN",), bg=("SWE",)))
    assert series.freq == pd.Timedelta(days=1)
    assert series.roles.sim == ("MOD_RUN",) and series.roles.bg == ("SWE",)
    assert "SWE" not in series.roles.past and "MOD_RUN" in series.roles.history


def test_beijing_time_split_over_columns_and_text_column_left_out():
    config = Config(target="pm2.5", time_columns=("year", "month", "day", "hour"), exclude=("No",))
    series = load_series(BEIJING, config)
    assert series.time[0] == pd.Timestamp("2010-01-01 00:00") and series.freq == pd.Timedelta(hours=1)
    assert "cbwd" not in series.roles.numeric and "No" not in series.roles.numeric
    assert series.values["pm2.5"].isna().sum() == 2067


def test_trailing_rows_without_target_are_the_future(tmp_path):
    path = head_csv(CAMELS, 40, tmp_path / "camels.csv")
    frame = pd.read_csv(path)
    frame.loc[frame.index[-7:], "OBS_RUN"] = None
    frame.to_csv(path, index=False)
    series = load_series(path, Config(target="OBS_RUN", sim=("MOD_RUN",)))
    assert series.n_observed == 33


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (Config(), "no target column given; pass --target"),
        (Config(target="TEMP"), "column 'TEMP' not found; the file has: date, HUFL, HULL"),
        (Config(target="OT", sim=("OT",)), "the target 'OT' cannot also be a sim or bg column"),
    ],
)
def test_role_errors_name_the_file_and_column(tmp_path, config, message):
    path = head_csv(ETTH1, 30, tmp_path / "ett.csv")
    with pytest.raises(ForecastError, match="ett.csv") as error:
        load_series(path, config)
    assert message in str(error.value)


def test_gap_and_duplicate_name_the_row(tmp_path):
    path = head_csv(ETTH1, 30, tmp_path / "ett.csv")
    lines = path.read_text().splitlines(keepends=True)
    (tmp_path / "gap.csv").write_text("".join(lines[:10] + lines[11:]))
    with pytest.raises(ForecastError, match=r"gap.csv: row 11: 1 missing step\(s\) between 2016-07-01 08:00:00 and 2016-07-01 10:00:00"):
        load_series(tmp_path / "gap.csv", Config(target="OT"))
    (tmp_path / "dup.csv").write_text("".join(lines[:10] + lines[9:]))
    with pytest.raises(ForecastError, match=r"dup.csv: row 11: timestamp .* repeats the row before"):
        load_series(tmp_path / "dup.csv", Config(target="OT"))


def test_text_in_a_numeric_role_names_row_and_column(tmp_path):
    with pytest.raises(ForecastError, match=r"row 2: column 'cbwd' holds 'NW', not a number"):
        load_series(BEIJING, Config(target="pm2.5", time_columns=("year", "month", "day", "hour"), bg=("cbwd",)))


def test_split_bounds_as_rows_or_dates():
    from forecast.split import resolve_split, row_bound

    series = load_series(CAMELS, Config(target="OBS_RUN"))
    assert row_bound(series, "1995-09-30", "train_end") == 5478  # rows 1980-10-01 .. 1995-09-30, both included
    assert row_bound(series, "1995-10-01", "start", first=True) == 5478
    assert row_bound(series, "120", "train_end") == 120
    split = resolve_split(series, Config(target="OBS_RUN", lookback=365, train_end="1995-09-30", val_end="2000-09-30"))
    assert (split.train_end, split.val_end) == (5478, 7305)
    with pytest.raises(ForecastError, match="train_end = 'soon' is neither a row number nor a date"):
        row_bound(series, "soon", "train_end")


def test_columns_left_out_are_named_with_the_reason(tmp_path):
    from forecast.data import describe_left_out

    path = head_csv(BEIJING, 200, tmp_path / "beijing.csv")
    config = Config(target="pm2.5", time_columns=("year", "month", "day", "hour"), exclude=("No",))
    series = load_series(path, config)
    assert series.left_out == (("No", "excluded"), ("cbwd", "text; give it a role to use it"))
    assert describe_left_out(series).endswith("columns left out: No (excluded), cbwd (text; give it a role to use it)")
    chosen = load_series(path, config.replace(past=("DEWP",)))
    assert ("TEMP", "not among the past columns given") in chosen.left_out
    assert describe_left_out(load_series(head_csv(ETTH1, 200, tmp_path / "ett.csv"), Config(target="OT"))) is None


def _with_metadata(tmp_path, rows: int = 300):
    """ETTh1's first rows behind three lines of station metadata, as weather services export them."""
    lines = ETTH1.read_text(encoding="utf-8").splitlines(keepends=True)[: rows + 1]
    path = tmp_path / "station.csv"
    path.write_text("station: transformer 1\nlatitude: 31.2\nexported: 2018-07-01\n" + "".join(lines), encoding="utf-8")
    return path


def test_skip_rows_reads_past_lines_before_the_header_and_names_file_lines(tmp_path):
    path = _with_metadata(tmp_path)
    with pytest.raises(ForecastError, match="station.csv: .*line 4 looks like the header, .*pass --skip-rows 3"):
        load_series(path, Config(target="OT"))
    series = load_series(path, Config(target="OT", skip_rows=3))
    assert len(series.time) == 300 and series.time[0] == pd.Timestamp("2016-07-01")
    text = path.read_text(encoding="utf-8").splitlines()
    text[9] = text[9].replace(text[9].split(",")[3], "abc")  # file line 10
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(ForecastError, match="row 10: column 'MUFL' holds 'abc'"):
        load_series(path, Config(target="OT", skip_rows=3))
    with pytest.raises(ForecastError, match="skip_rows must be at least 0"):
        Config(skip_rows=-1)


def test_a_warning_while_reading_is_a_one_line_error(tmp_path, monkeypatch):
    """Older pandas warn (DtypeWarning) on a file whose metadata lines mix text into numeric columns."""
    import warnings

    original = pd.read_csv

    def warning_read_csv(*args, **kwargs):
        warnings.warn("Columns (1,2) have mixed types. Specify dtype option on import", pd.errors.DtypeWarning)
        return original(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", warning_read_csv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape as a warning
        with pytest.raises(ForecastError, match=r"cannot read it cleanly \(Columns \(1,2\) have mixed types\); .*skip-rows"):
            load_series(head_csv(ETTH1, 100, tmp_path / "ett.csv"), Config(target="OT"))


def test_predict_reads_with_the_skip_rows_saved_with_the_model(tmp_path):
    from forecast.prediction import predict
    from saved_models import untrained_model

    path = _with_metadata(tmp_path)
    config = Config(target="OT", skip_rows=3, lookback=24, horizon=6, batch_size=4, units=4, head_units=4)
    model = untrained_model(path, config, tmp_path / "model", train_rows=200, val_end=300)
    assert json.loads((model / "config.json").read_text())["skip_rows"] == 3
    forecast = predict(path, model)
    assert len(forecast) == 6 and forecast["date"].iloc[0] == pd.Timestamp("2016-07-13 12:00")


def _business_days(tmp_path, rows: int = 400, holidays: tuple[str, ...] = ()):
    """CAMELS runoff on business days from Monday 1986-03-03 (ending on a Friday for 400 rows), without `holidays`."""
    values = pd.read_csv(CAMELS)["OBS_RUN"].to_numpy()[:rows]
    frame = pd.DataFrame({"date": pd.bdate_range("1986-03-03", periods=rows), "flow": values})
    frame = frame[~frame["date"].isin(pd.to_datetime(list(holidays)))]
    path = tmp_path / "business.csv"
    frame.to_csv(path, index=False, date_format="%Y-%m-%d")
    return path


def test_a_business_day_series_is_read_on_business_days_and_holidays_are_gaps(tmp_path):
    series = load_series(_business_days(tmp_path), Config(target="flow"))
    assert series.business_days and series.freq == pd.Timedelta(days=1) and len(series.time) == 400
    path = _business_days(tmp_path, holidays=("1986-05-26",))  # Memorial Day, a Monday
    with pytest.raises(ForecastError, match="1 missing business day\\(s\\) \\(a holiday\\?\\) between 1986-05-23"):
        load_series(path, Config(target="flow"))
    masked = load_series(path, Config(target="flow", gaps="mask"))
    assert masked.business_days and len(masked.time) == 400 and masked.values["flow"].isna().sum() == 1
    daily = pd.DataFrame({"date": pd.date_range("1986-03-03", periods=30), "flow": np.arange(30.0)})
    daily.to_csv(tmp_path / "daily.csv", index=False)
    assert not load_series(tmp_path / "daily.csv", Config(target="flow")).business_days


def test_a_business_day_model_forecasts_the_next_business_days(tmp_path):
    from forecast.calendar import future_times
    from forecast.errors import ForecastError
    from forecast.prediction import predict
    from saved_models import untrained_model

    path = _business_days(tmp_path)  # the last row is Friday 1987-09-11
    config = Config(target="flow", lookback=20, horizon=3, batch_size=4, units=4, head_units=4)
    model = untrained_model(path, config, tmp_path / "model", train_rows=300, val_end=400)
    assert json.loads((model / "schema.json").read_text())["business_days"] is True
    forecast = predict(path, model)
    assert list(forecast["date"]) == list(pd.to_datetime(["1987-09-14", "1987-09-15", "1987-09-16"]))
    stamp = pd.Timestamp("2020-01-03 16:00")  # a Friday close
    assert list(future_times(stamp, pd.Timedelta(days=1), 2, business_days=True)) == [
        pd.Timestamp("2020-01-06 16:00"), pd.Timestamp("2020-01-07 16:00")]
    daily = pd.DataFrame({"date": pd.date_range("1986-03-03", periods=400), "flow": np.arange(400.0)})
    daily.to_csv(tmp_path / "daily.csv", index=False)
    with pytest.raises(ForecastError, match="row 7: 1986-03-08 00:00:00 is a Saturday, but the model was trained on busi"):
        predict(tmp_path / "daily.csv", model)


def test_a_model_reads_the_file_on_the_grid_it_was_trained_on(tmp_path):
    """A model saved before business days were detected (trained with gaps = "mask" on calendar days) keeps them."""
    from forecast.prediction import predict
    from saved_models import untrained_model

    path = _business_days(tmp_path)  # Monday 1986-03-03 to Friday 1987-09-11
    config = Config(target="flow", gaps="mask", max_gap=3, lookback=20, horizon=3, batch_size=4, units=4, head_units=4)
    model = untrained_model(path, config, tmp_path / "model", 300, 400, business_days=False)
    assert json.loads((model / "schema.json").read_text())["business_days"] is False
    forecast = predict(path, model)  # calendar days, weekend included, as that model was trained
    assert list(forecast["date"]) == list(pd.to_datetime(["1987-09-12", "1987-09-13", "1987-09-14"]))
    frame = pd.read_csv(path)
    frame.loc[len(frame)] = ["1987-09-12", 1.0]  # a Saturday row
    frame.to_csv(path, index=False)
    (tmp_path / "clean").mkdir()
    business = untrained_model(_business_days(tmp_path / "clean"), config, tmp_path / "business", 300, 400)
    with pytest.raises(ForecastError, match="1987-09-12 00:00:00 is a Saturday, but the model was trained on business"):
        predict(path, business)


def test_metadata_lines_padded_to_the_columns_point_at_the_header(tmp_path):
    lines = ETTH1.read_text(encoding="utf-8").splitlines(keepends=True)[:201]
    path = tmp_path / "padded.csv"
    path.write_text("station,transformer 1,,,,,,\nlatitude,31.2,,,,,,\n" + "".join(lines), encoding="utf-8")
    with pytest.raises(ForecastError, match="line 3 looks like the header, .*pass --skip-rows 2 \\(skip_rows = 2\\)"):
        load_series(path, Config(target="OT"))
    assert len(load_series(path, Config(target="OT", skip_rows=2)).time) == 200
