"""Nothing wrong accepted on the many-series surface: outputs into the store, tampered per-series store files, a model
file linked out of its version, attribute tables with bad cells or mangled ids, ids named NA, `--series ','`. Each
refusal is one `error:` line naming the file and what to do, a non-zero exit, no traceback, and the store byte for byte
as it was; each failed on the code before it was fixed.

Everything runs in process on the tiny four-basin model of conftest's `basins_store` (TensorFlow loads once).
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.config import Config
from forecast.data import load_collection

from conftest import BASIN_IDS, TINY_BASINS
from test_refusals import tree

IDS = BASIN_IDS


def run(*arguments):
    return CliRunner().invoke(app, [str(argument) for argument in arguments])


def assert_refused(result, *messages: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(message in errors[0] for message in messages), result.stderr


def accepted(result) -> pd.DataFrame:
    """The forecast a command printed, its ids read as text."""
    assert result.exit_code == 0 and result.exception is None, result.output
    return pd.read_csv(pd.io.common.StringIO(result.stdout), dtype={"basin": str}, keep_default_na=False)


@pytest.fixture
def store(basins_store, tmp_path):
    """A private copy of the trained store; (data, attribute table, store, version directory)."""
    data, static, trained = basins_store
    private = tmp_path / "store"
    shutil.copytree(trained, private, symlinks=True)
    return data, static, private, (private / "basins" / "current").resolve()


def model(store_path):
    return ["--model", "basins", "--store", store_path]


# Outputs


def output_cases(data, store_path, version, tmp_path):
    root = store_path / "basins"
    link = tmp_path / "forecast.csv"
    link.symlink_to(version / "scaler.json")  # a path outside the store that leads into a version
    return {
        "predict --output onto scaler.json": ["predict", data, *model(store_path), "--output", version / "scaler.json"],
        "predict --output through a link": ["predict", data, *model(store_path), "--output", link],
        "predict --plot onto training.png": ["predict", data, *model(store_path), "--series", IDS[0], "--plot",
                                             version / "training.png"],
        "evaluate --output-dir a version": ["evaluate", data, *model(store_path), "--output-dir", version],
        "evaluate --output-dir current": ["evaluate", data, *model(store_path), "--output-dir", root / "current"],
        "evaluate --forecasts in the model": ["evaluate", data, *model(store_path), "--output-dir", tmp_path,
                                              "--forecasts", root / "backtest.csv"],
        "evaluate --plot in the model": ["evaluate", data, *model(store_path), "--output-dir", tmp_path, "--plot",
                                         root / "versions" / "steps.png"],
        "plot --output in a version": ["plot", data, *model(store_path), "--series", IDS[0], "--output",
                                       version / "forecast.png"],
        "train --log into a version": ["train", data, *TINY_BASINS, "--model-dir", "basins", "--store", store_path,
                                       "--log", version / "history.csv"],
        "train --tensorboard into the model": ["train", data, *TINY_BASINS, "--model-dir", "basins", "--store",
                                               store_path, "--tensorboard", root / ".staging" / "tb"],
        "retrain --log into a version": ["retrain", data, *model(store_path), "--log", version / "metrics.json"],
    }


OUTPUT_CASES = ["predict --output onto scaler.json", "predict --output through a link", "predict --plot onto training.png",
                "evaluate --output-dir a version", "evaluate --output-dir current", "evaluate --forecasts in the model",
                "evaluate --plot in the model", "plot --output in a version", "train --log into a version",
                "train --tensorboard into the model", "retrain --log into a version"]


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_an_output_inside_a_model_directory_is_refused(store, tmp_path, case):
    data, _, store_path, version = store
    command = output_cases(data, store_path, version, tmp_path)[case]
    before = tree(store_path)
    assert_refused(run(*command), "lies inside the model directory", "only train and retrain may write")
    assert tree(store_path) == before


def test_an_output_beside_the_models_is_written(store):
    data, _, store_path, _ = store
    result = run("predict", data, *model(store_path), "--series", IDS[3], "--output", store_path / "forecast.csv")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(store_path / "forecast.csv", keep_default_na=False, dtype=str).basin.tolist() == [IDS[3]] * 2


# Tampered per-series store files


def moved_mean(data):
    scaler = data["series"][IDS[1]]
    scaler["mean"][scaler["columns"].index("QObs")] += 100.0


TAMPERED = {
    "scaler.json without a trained id": ("scaler.json", lambda data: data["series"].pop(IDS[1]),
                                         f"series '{IDS[1]}' was trained (schema.json) but has no scaler"),
    "a target mean moved by 100": ("scaler.json", moved_mean, "scaler.json: changed after training"),
    "statics.json without a trained id": ("statics.json", lambda data: data["table"].pop(IDS[1]),
                                          "statics.json: changed after training"),
    "a statics.json cell 1e308": ("statics.json", lambda data: data["table"][IDS[1]].__setitem__("area_gages2", 1e308),
                                  f"series '{IDS[1]}': numeric column 'area_gages2' holds 1e+308"),
    "a statics.json text cell": ("statics.json", lambda data: data["table"][IDS[1]].__setitem__("elev_mean", "high"),
                                 "numeric column 'elev_mean' holds 'high', not a number"),
    "schema.json without a trained record": ("schema.json", lambda data: data["series"].pop(1),
                                             f"series '{IDS[1]}' has a scaler (scaler.json) but no training record"),
    "intervals.json offsets of 1e300": ("intervals.json", lambda data: data["offsets"][-1].__setitem__(-1, 1e300),
                                        "offsets holds 1e+300, beyond the float32 range"),
}


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_per_series_store_files_are_refused(store, tmp_path, case):
    data, _, store_path, version = store
    name, change, message = TAMPERED[case]
    edit_json(version / name, change)
    before = tree(store_path)
    for command in (["predict"], ["evaluate", "--output-dir", tmp_path / "scores"], ["retrain"]):
        result = run(command[0], data, *model(store_path), *command[1:])
        assert_refused(result, message, "roll back or retrain")
        assert name in result.stderr
    assert tree(store_path) == before


def test_a_file_saved_before_checksums_is_still_read(store):
    data, _, store_path, version = store
    edit_json(version / "scaler.json", lambda saved: saved.pop("sha256"))
    assert sorted(accepted(run("predict", data, *model(store_path))).basin.unique()) == sorted(IDS)


def test_a_model_file_linked_out_of_its_version_is_refused(store, tmp_path):
    data, _, store_path, version = store
    outside = tmp_path / "elsewhere.keras"
    shutil.copy(version / "model.keras", outside)
    (version / "model.keras").unlink()
    (version / "model.keras").symlink_to(outside)
    before = tree(store_path)
    for command in ("predict", "retrain"):
        assert_refused(run(command, data, *model(store_path)), "model.keras: a link to", "outside the model directory")
    assert tree(store_path) == before


# Attribute tables


def with_cell(static, tmp_path, row: int, column: str, value: str):
    lines = static.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row - 1].split(",")
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    path = tmp_path / "attributes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def without_zeros(path, tmp_path, name: str):
    """`path` with its ids as a spreadsheet saves them: the leading zeros gone."""
    lines = path.read_text().splitlines()
    changed = tmp_path / name
    changed.write_text("\n".join([lines[0], *(line.lstrip("0") for line in lines[1:])]) + "\n")
    return changed


ATTRIBUTES = {
    "a cell 1e308": (lambda static, tmp: with_cell(static, tmp, 3, "area_gages2", "1e308"),
                     "row 3: column 'area_gages2' holds 1e+308, beyond the"),
    "an inf cell": (lambda static, tmp: with_cell(static, tmp, 4, "elev_mean", "inf"),
                    "row 4: column 'elev_mean' is infinite"),
    "a text cell among numbers": (lambda static, tmp: with_cell(static, tmp, 2, "frac_snow", "lots"),
                                  "row 2: column 'frac_snow' holds 'lots', not a number"),
    "ids without their zeros": (lambda static, tmp: without_zeros(static, tmp, "attributes.csv"),
                                f"only 1 of the 4 training series have a row here (the data names a series '{IDS[0]}', "
                                "this file '1022500')"),
    "an empty id": (lambda static, tmp: with_cell(static, tmp, 3, "basin", ""), "row 3: column 'basin' is empty"),
}


@pytest.mark.parametrize("name", ["basins", "fresh"])
@pytest.mark.parametrize("case", list(ATTRIBUTES))
def test_a_bad_attribute_table_is_refused_naming_file_column_and_row(store, tmp_path, case, name):
    """Onto the trained model or as a first training: either way the store is left byte for byte as it was (no
    directory for the new model)."""
    data, static, store_path, _ = store
    make, message = ATTRIBUTES[case]
    attributes = make(static, tmp_path)
    before = tree(store_path)
    result = run("train", data, *TINY_BASINS, "--static", attributes, "--model-dir", name, "--store", store_path)
    assert_refused(result, f"error: {attributes}: ", message)
    assert tree(store_path) == before and not (store_path / "fresh").exists()


def test_a_refused_first_training_leaves_no_model_directory(store, tmp_path):
    """22 series whose text attribute has 22 values: more than a category may have, refused after the lock was taken
    (which creates the model's directory)."""
    _, _, store_path, _ = store
    hours = np.arange(40)
    frame = pd.concat([pd.DataFrame({"site": f"s{index:02d}", "date": pd.date_range("2020-01-01", periods=40, freq="D"),
                                     "y": np.sin(hours / 3 + index) + index}) for index in range(22)])
    frame.to_csv(tmp_path / "sites.csv", index=False)
    pd.DataFrame({"site": [f"s{index:02d}" for index in range(22)], "owner": [f"agency {index}" for index in range(22)]}
                 ).to_csv(tmp_path / "owners.csv", index=False)
    before = tree(store_path)
    result = run("train", tmp_path / "sites.csv", "--target", "y", "--id-column", "site", "--static",
                 tmp_path / "owners.csv", "--lookback", "4", "--horizon", "2", "--model-dir", "sites", "--store",
                 store_path)
    assert_refused(result, "column 'owner' holds text with 22 different values")
    assert tree(store_path) == before and not (store_path / "sites").exists()


def test_predict_and_evaluate_refuse_a_file_whose_ids_lost_their_zeros(store, tmp_path):
    data, _, store_path, _ = store
    mangled = without_zeros(data, tmp_path, "basins.csv")
    before = tree(store_path)
    for command in (["predict"], ["evaluate", "--output-dir", tmp_path / "scores"]):
        assert_refused(run(command[0], mangled, *model(store_path), *command[1:]),
                       f"{mangled}: 3 of its 4 series are unknown to the model, and its id '1022500' is the model's "
                       f"'{IDS[0]}' without the leading zeros")
    assert tree(store_path) == before


def test_a_file_of_new_series_with_ids_of_their_own_is_forecast(store, tmp_path):
    data, _, store_path, _ = store
    frame = pd.read_csv(data, dtype={"basin": str}, keep_default_na=False)
    frame["basin"] = frame.basin.map(dict(zip(IDS, ["new gauge 1", "new gauge 2", "new gauge 3", "new gauge 4"])))
    frame.to_csv(tmp_path / "new.csv", index=False)
    forecast = accepted(run("predict", tmp_path / "new.csv", *model(store_path), "--series", "new gauge 2"))
    assert forecast.basin.tolist() == ["new gauge 2"] * 2 and np.isfinite(forecast.QObs).all()


# Series ids


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("value", [",", " , ,", ""])
def test_series_naming_no_id_is_refused(store, tmp_path, command, value):
    data, _, store_path, _ = store
    assert_refused(run(command, data, *model(store_path), "--series", value, "--output-dir" if command == "evaluate"
                       else "--output", tmp_path / "out"), "--series:", "names no series")
    empty = tmp_path / "ids.txt"
    empty.write_text("\n \n")
    assert_refused(run(command, data, *model(store_path), "--series", empty), "names no series")


def test_holdout_series_naming_no_id_is_refused(store):
    data, _, store_path, _ = store
    before = tree(store_path)
    assert_refused(run("train", data, *TINY_BASINS, "--holdout-series", ",", "--model-dir", "fresh", "--store",
                       store_path), "--holdout-series: ',' names no series")
    assert tree(store_path) == before


def test_series_named_like_missing_values_keep_their_names(basins_store, tmp_path):
    """A station named NA (or None, null, N/A) is a series of its own, in the data and in the attribute table; an
    empty id is still refused."""
    data, _, trained = basins_store
    version = trained / "basins" / "current"
    assert json.loads((version / "schema.json").read_text())["series"][3]["id"] == "NA"
    assert json.loads((version / "statics.json").read_text())["table"]["NA"]["climate"] == "snow"
    frame = pd.read_csv(data, dtype={"basin": str}, keep_default_na=False)
    frame["basin"] = frame.basin.map(dict(zip(IDS, ["None", "null", "N/A", "NA"])))
    frame.to_csv(tmp_path / "names.csv", index=False)
    assert load_collection(tmp_path / "names.csv", Config(target="QObs", id_column="basin")).ids == (
        "None", "null", "N/A", "NA")
    lines = (tmp_path / "names.csv").read_text().splitlines()
    lines[5] = "," + lines[5].split(",", 1)[1]
    (tmp_path / "empty.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match="row 6: column 'basin' is empty"):
        load_collection(tmp_path / "empty.csv", Config(target="QObs", id_column="basin"))
