"""scripts/prepare_camels.py on the raw CAMELS cut in tests/data/camels_raw (see data/README.md), and the four-basin
sample it made in data/. Runs the script as a command; needs numpy and pandas, not TensorFlow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_camels.py"
RAW = ROOT / "tests" / "data" / "camels_raw"
SAMPLE = ROOT / "data" / "camels_us_nh.csv"
SAMPLE_STATIC = ROOT / "data" / "camels_us_nh_static.csv"
COLUMNS = ["basin", "date", "QObs", "PRCP", "SRAD", "Tmax", "Tmin", "Vp", "Dayl"]
KRATZERT_2019 = [
    "p_mean", "pet_mean", "aridity", "p_seasonality", "frac_snow", "high_prec_freq", "high_prec_dur", "low_prec_freq",
    "low_prec_dur", "elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max", "lai_diff", "gvf_max",
    "gvf_diff", "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity", "soil_conductivity",
    "max_water_content", "sand_frac", "silt_frac", "clay_frac", "carbonate_rocks_frac", "geol_permeability",
]


def prepare(camels: Path, output: Path, *options: str) -> subprocess.CompletedProcess:
    """The script run as a command on `camels`, writing `output` and its _static twin."""
    return subprocess.run([sys.executable, str(SCRIPT), str(camels), "--output", str(output), *options],
                          capture_output=True, text=True, timeout=60)


def read_text_cells(path: Path) -> pd.DataFrame:
    """Every cell as the text in the file (empty cells as ''), so ids and empty values are seen as written."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[subprocess.CompletedProcess, pd.DataFrame, pd.DataFrame]:
    """The raw cut converted once: the finished process, the long CSV and the static CSV as text cells."""
    output = tmp_path_factory.mktemp("camels") / "raw.csv"
    done = prepare(RAW, output)
    assert done.returncode == 0, done.stderr
    return done, read_text_cells(output), read_text_cells(output.with_name("raw_static.csv"))


def test_flow_in_cubic_feet_per_second_becomes_mm_per_day_over_the_basin_area(converted):
    _, rows, _ = converted
    day = rows[(rows["basin"] == "01013500") & (rows["date"] == "2013-09-30")]
    # 730 cfs on 2013-09-30, basin area 2,260,093,113 m² (third header line of the forcing file):
    # 730 × 0.0283168466 m³ × 86,400 s × 1,000 mm/m / 2,260,093,113 m²
    #   = 1,786,000,148.755 / 2,260,093,113 = 0.7902330
    assert float(day["QObs"].iloc[0]) == pytest.approx(0.7902330, rel=1e-6)
    # The forcings are the file's values; SWE is left out.
    assert day[["PRCP", "SRAD", "Tmax", "Tmin", "Vp", "Dayl"]].iloc[0].tolist() == [
        "0", "372.77", "13.69", "13.69", "1215.25", "41126.4"]
    assert list(rows.columns) == COLUMNS


def test_missing_flow_is_empty_and_the_forcing_days_are_kept(converted):
    done, rows, _ = converted
    basin = rows[rows["basin"] == "01022500"]
    # The flow file has -999 from 2014-10-01; the forcing cut runs 2014-09-01 to 2014-10-30.
    assert basin["date"].iloc[0] == "2014-09-01" and basin["date"].iloc[-1] == "2014-10-30" and len(basin) == 60
    assert (basin.loc[basin["date"] >= "2014-10-01", "QObs"] == "").all()
    assert (basin.loc[basin["date"] < "2014-10-01", "QObs"] != "").all()
    # Its flow cut starts three days before the forcing's: those days are dropped and reported.
    assert ("01022500: 60 rows 2014-09-01..2014-10-30, QObs missing on 30 days; dropped 3 flow days outside the "
            "forcing's days (2014-08-29..2014-08-31, 3 with a value)") in done.stdout
    # 01013500's flow file ends on 2013-10-01, two days before its forcing.
    tail = rows[rows["basin"] == "01013500"].tail(3)
    assert tail["date"].tolist() == ["2013-10-01", "2013-10-02", "2013-10-03"]
    assert tail["QObs"].tolist()[1:] == ["", ""] and tail["QObs"].iloc[0] != ""


def test_basin_ids_keep_their_leading_zeros_and_rows_are_sorted_by_basin_then_date(converted):
    _, rows, static = converted
    assert rows["basin"].unique().tolist() == ["01013500", "01022500"]
    assert list(zip(rows["basin"], rows["date"])) == sorted(zip(rows["basin"], rows["date"]))
    assert static["basin"].tolist() == ["01013500"]


def test_static_csv_has_the_27_attributes_in_order_and_only_basins_with_forcing(converted):
    done, _, static = converted
    assert list(static.columns) == ["basin", *KRATZERT_2019]
    # 01333000 has attributes but no forcing: ignored. 01022500 has forcing but no attribute row: reported by id.
    assert "01333000" not in static["basin"].tolist()
    assert "no attribute row, left out of raw_static.csv: 01022500" in done.stdout
    attributes = pd.read_csv(RAW / "camels_attributes_v2.0" / "camels_clim.txt", sep=";", dtype={"gauge_id": str})
    assert float(static["aridity"].iloc[0]) == attributes.set_index("gauge_id").loc["01013500", "aridity"]


def test_files_directly_in_the_forcing_and_flow_folders_give_the_same_csv(converted, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(RAW / "camels_attributes_v2.0", flat / "camels_attributes_v2.0")
    for folder in ("basin_mean_forcing/nldas", "usgs_streamflow"):
        (flat / folder).mkdir(parents=True)
        for path in (RAW / folder).rglob("*.txt"):
            shutil.copy(path, flat / folder / path.name)
    assert prepare(flat, tmp_path / "flat.csv").returncode == 0
    _, rows, static = converted
    pd.testing.assert_frame_equal(read_text_cells(tmp_path / "flat.csv"), rows)
    pd.testing.assert_frame_equal(read_text_cells(tmp_path / "flat_static.csv"), static)


def test_a_basin_list_restricts_the_output(tmp_path):
    basins = tmp_path / "basins.txt"
    basins.write_text("01022500\n02046000\n", encoding="utf-8")
    done = prepare(RAW, tmp_path / "one.csv", "--basins", str(basins))
    assert done.returncode == 0, done.stderr
    assert read_text_cells(tmp_path / "one.csv")["basin"].unique().tolist() == ["01022500"]
    assert "no forcing file, skipped: 02046000" in done.stdout


@pytest.mark.parametrize("problem, expected", [
    ("lost zero", "line 1: '1013500' is not an 8-digit basin id"),
    ("no folder", "is not a folder"),
])
def test_input_mistakes_end_in_one_line(tmp_path, problem, expected):
    basins = tmp_path / "basins.txt"
    basins.write_text("1013500\n", encoding="utf-8")
    if problem == "lost zero":
        done = prepare(RAW, tmp_path / "out.csv", "--basins", str(basins))
    else:
        done = prepare(tmp_path / "nowhere", tmp_path / "out.csv")
    assert done.returncode == 2
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_committed_four_basin_sample_has_the_expected_basins_columns_and_days():
    rows = pd.read_csv(SAMPLE, dtype={"basin": str}, parse_dates=["date"])
    assert list(rows.columns) == COLUMNS
    assert rows["basin"].unique().tolist() == ["01022500", "01547700", "02064000", "03015500"]
    for _, days in rows.groupby("basin"):
        assert days["date"].tolist() == list(pd.date_range("2000-01-01", "2002-12-31", freq="D"))
    assert rows[COLUMNS[2:]].notna().all().all() and (rows["QObs"] >= 0).all()
    static = pd.read_csv(SAMPLE_STATIC, dtype={"basin": str})
    assert list(static.columns) == ["basin", *KRATZERT_2019]
    assert static["basin"].tolist() == ["01022500", "01547700", "02064000", "03015500"]
    assert static[KRATZERT_2019].notna().all().all()
