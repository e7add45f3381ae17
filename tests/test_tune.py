"""`forecast tune`: a search on Ray Tune ends with an ordinary version (predict, evaluate and info read it) and its
tune.csv; on a two-node cluster its trials, and an ensemble's networks, run on both nodes, and the ensemble equals the
one trained in process; bad settings end in one line before any work starts."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from forecast.config import Config
from forecast.errors import ForecastError
from forecast.search_space import SearchSpace

from conftest import ETTH1, closed_port, head_csv, trained

SETTINGS = """target = "OT"
lookback = 12
horizon = 6
units = 4
head_units = 4
batch_size = 16
epochs = 2
stream_chunks = 2
train_end = "200"
val_end = "260"
"""
CONFIG = Config(target="OT", lookback=12, horizon=6, units=4, head_units=4, batch_size=16, epochs=2, stream_chunks=2,
                train_end="200", val_end="260")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return head_csv(ETTH1, 300, tmp_path_factory.mktemp("tune") / "ett.csv")


def toml(folder, search: str):
    path = folder / "search.toml"
    path.write_text(SETTINGS + "\n[tune]\n" + search, encoding="utf-8")
    return path


def cli(*arguments):
    """A `forecast` command in process: its exit code, standard output and standard error."""
    from typer.testing import CliRunner

    from forecast.cli import app

    result = CliRunner().invoke(app, [*map(str, arguments)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def ray_one_cpu():
    """Ray on this machine with one CPU, so the trials run one after the other; shut down after the test (address
    "local": never the two-node cluster another worker may be running, which Ray would otherwise join)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_search_ends_with_a_version_that_predict_evaluate_and_info_read(tmp_path, tiny, ray_one_cpu):
    search = toml(tmp_path, "trials = 2\ndefault_space = false\nlookback = [12, 24]\n"
                            "learning_rate = { min = 1e-3, max = 1e-2, log = true }\n")
    code, out, err = cli("tune", tiny, "--config", search, "--store", tmp_path / "models")
    assert code == 0, err
    progress = [line for line in err.splitlines() if " trial " in line and " of 2" in line]
    assert len(progress) == 2, err  # one line per finished trial
    board = out.strip().splitlines()
    assert board[0].split()[:6] == ["rank", "trial", "status", "score", "epochs", "seconds"] and len(board) == 3, out
    current = tmp_path / "models" / "ett" / "current"
    trials = pd.read_csv(current / "tune.csv")
    assert list(trials["trial"]) == [1, 2] and set(trials["status"]) <= {"finished", "stopped"}
    assert {"score", "epochs", "seconds", "kind", "lookback", "learning_rate"} <= set(trials.columns)
    assert (current / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = trials[trials["status"] == "finished"].sort_values("score").iloc[0]
    saved = Config.from_json(current / "config.json")
    assert saved.lookback == best["lookback"] and saved.learning_rate == pytest.approx(best["learning_rate"])
    assert not (tmp_path / "models" / "ett" / ".tune").exists() and not (tmp_path / "models" / "ett" / ".staging").exists()

    code, out, err = cli("info", "--model", "ett", "--store", tmp_path / "models")
    assert code == 0 and f"chosen by a settings search (forecast tune): trial {best['trial']} of 2" in out, out + err
    code, out, err = cli("predict", tiny, "--model", "ett", "--store", tmp_path / "models")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 6, out + err
    code, out, err = cli("evaluate", tiny, "--model", "ett", "--store", tmp_path / "models",
                         "--output-dir", tmp_path / "evaluation")
    assert code == 0 and "origins" in out, out + err


@pytest.mark.slow
def test_a_search_with_the_data_cache_parses_the_file_into_it_and_trains(tmp_path, tiny, ray_one_cpu):
    from forecast.data_cache import META, DataCache
    from forecast.tuning import tune

    cache = DataCache(tmp_path / ".cache", min_bytes=0)
    space = SearchSpace.read({"trials": 1, "default_space": False, "units": [4, 8]}, CONFIG, "test")
    result = tune(tiny, CONFIG, space, tmp_path / "searched", [].append, cache)
    assert any((entry / META).is_file() for entry in cache.folder.iterdir())
    assert list(result.trials["status"]) == ["finished"], result.trials


@pytest.mark.parametrize("search, flags, message", [
    ("", ["--ray-address", f"127.0.0.1:{closed_port()}"], "no Ray cluster answers there"),
    ("lookback = []\n", [], "[tune] lookback: no choices"),
    ("default_space = false\n", [], "the search space is empty"),
    ("default_space = false\nunits = [8]\n", [], "the search space is empty"),
    ("units = { min = 8, max = 4 }\n", [], "[tune] units: min (8) is above max (4)"),
    ("learning_rate = { min = 0, max = 0.01, log = true }\n", [], "a log range needs min above 0"),
    ("trials = 0\n", [], "[tune] trials must be at least 1, got 0"),
    ("", ["--trials", "0"], "--trials must be at least 1, got 0"),
    ("", ["--time-budget", "0"], "--time-budget must be a number of seconds above 0"),
    ("horizon = [6, 12]\n", [], "[tune] horizon: not a setting a search varies"),
    ("lookbak = [6, 12]\n", [], "[tune]: unknown setting 'lookbak'"),
    ("dropout = [0.1, 1.5]\n", [], "[tune] dropout = 1.5: dropout must be in [0, 1)"),
    ("decoder = { min = 0, max = 1 }\n", [], "a range needs a numeric setting"),
])
def test_a_bad_search_setting_ends_in_one_line(tmp_path, tiny, search, flags, message):
    code, out, err = cli("tune", tiny, "--config", toml(tmp_path, search), *flags, "--store", tmp_path / "models")
    assert code == 1 and message in err, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "models" / "ett").exists()  # nothing trained, nothing left behind


def test_the_search_space_defaults_around_the_configured_settings():
    space = SearchSpace.read({"units": [16, 32], "trials": 3}, Config(lookback=30, stream_chunks=13), "run.toml")
    assert space.trials == 3 and space.time_budget is None
    assert space.describe() == ("lookback {15, 30, 60}, stream_chunks {6, 13, 26}, units {16, 32}, decoder {true, false}, "
                                "dropout {0, 0.1, 0.25}, learning_rate 0.000333 to 0.003 (log)")
    stateless = SearchSpace.read(None, Config(stateful=False), "forecast tune", trials=2, time_budget=60)
    assert "stream_chunks" not in stateless.settings and stateless.trials == 2 and stateless.time_budget == 60.0


def test_a_config_file_for_tune_trains_too(tmp_path):  # train leaves the [tune] table to tune
    path = toml(tmp_path, "units = [4, 8]\n")
    assert Config.from_toml(path) == CONFIG


def test_trials_are_ranked_finished_first_and_a_search_without_one_fails_in_one_line():
    from forecast.tuning import _best, describe, leaderboard, trial_row

    rows = [
        trial_row(1, {"units": 4}, {"score": 0.5, "kind": "linear", "epochs": 2, "seconds": 3.0, "node": "a"}, {},
                  math.nan, None),
        trial_row(2, {"units": 8}, None, {"epoch": 1, "time_total_s": 2.0, "node": "b"}, 0.4, None),
        trial_row(3, {"units": 16}, {"error": "too short", "seconds": 1.0, "node": "a"}, {}, math.nan, None),
        trial_row(4, {"units": 2}, {"score": 0.3, "kind": "linear + LSTM", "epochs": 2, "seconds": 4.0}, {}, math.nan,
                  None),
        trial_row(5, {"units": 32}, None, {}, math.nan, None),  # the time budget ended it before its first epoch
    ]
    trials = pd.DataFrame(rows)
    assert list(trials["status"]) == ["finished", "stopped", "failed", "finished", "timed out"]
    assert _best(trials, "data.csv")["trial"] == 4
    board = leaderboard(trials).splitlines()
    assert [line.split()[:3] for line in board[1:]] == [["1", "4", "finished"], ["2", "1", "finished"],
                                                        ["-", "2", "stopped"], ["-", "5", "timed"],
                                                        ["-", "3", "failed"]]
    assert board[-1].endswith("too short")
    assert describe(rows[4], SearchSpace.read({"units": [4, 32], "default_space": False}, CONFIG, "test")).startswith(
        "trial 5 of 8 timed out: the time budget ended the search before its first epoch")
    with pytest.raises(ForecastError, match=r"no trial of the search finished \(1 stopped, 1 failed\); trial 3: too "):
        _best(trials[trials["status"].isin(["stopped", "failed"])], "data.csv")


@pytest.fixture
def two_nodes():
    """A Ray cluster of two nodes on this machine (loopback), one CPU each, with this process as its driver."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_trials_and_networks_run_on_both_nodes_of_a_cluster(tmp_path, tiny, two_nodes, monkeypatch):
    from forecast.tuning import tune

    nodes = {node["NodeID"] for node in two_nodes.nodes() if node["Alive"]}
    assert len(nodes) == 2
    space = SearchSpace.read({"trials": 4, "default_space": False, "units": [4, 8], "dropout": [0.0, 0.1]}, CONFIG,
                             "test")
    result = tune(tiny, CONFIG, space, tmp_path / "searched", [].append)
    assert list(result.trials["status"]) == ["finished"] * 4, result.trials
    assert set(result.trials["node"]) == nodes, result.trials  # trials ran on both nodes
    assert (result.model_dir / "tune.csv").is_file()
    # The best trial, trained on the cluster, is the model the same settings train in process.
    best = result.trials[result.trials["trial"] == result.best].iloc[0]
    settings = CONFIG.replace(units=int(best["units"]), dropout=float(best["dropout"]))
    alone, _, _ = trained(tiny, settings, tmp_path / "alone", monkeypatch)
    assert alone.metrics["model_kind"] == best["kind"]
    assert alone.metrics["validation"]["model"]["score"] == pytest.approx(best["score"], abs=1e-6)

    # An ensemble whose networks train as Ray tasks, one on each node, is the one trained in process.
    config = CONFIG.replace(members=2, seed=3)
    local, local_networks, _ = trained(tiny, config, tmp_path / "local", monkeypatch)
    remote, remote_networks, lines = trained(tiny, config.replace(executor="ray"), tmp_path / "ray", monkeypatch)
    ran = {line.rsplit(" ", 1)[1] for line in lines if " trained on Ray node " in line}
    assert ran == nodes, lines
    assert remote.metrics["model_kind"] == local.metrics["model_kind"]
    assert remote.metrics["validation"]["model"]["score"] == pytest.approx(
        local.metrics["validation"]["model"]["score"], abs=1e-6)
    for ray_network, local_network in zip(remote_networks, local_networks, strict=True):
        for ray_weight, local_weight in zip(ray_network, local_network, strict=True):
            np.testing.assert_allclose(ray_weight, local_weight, atol=1e-5)

    if not os.path.exists("/dev/nvidia0"):  # a GPU asked of a cluster without: one line, before any trial
        code, _, err = cli("tune", tiny, "--config", toml(tmp_path, "units = [4, 8]\n"), "--gpus-per-task", "1",
                           "--store", tmp_path / "models")
        assert code == 1 and err.count("\n") == 1 and "gpus_per_task = 1, but the Ray cluster" in err, err
        assert not (tmp_path / "models" / "ett").exists()
