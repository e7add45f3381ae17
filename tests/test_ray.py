"""The Ray executor: an ensemble whose networks train as Ray tasks is the ensemble trained in process, settings a user
gets wrong end in one line before any training, and the local executor never imports Ray."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from forecast.config import Config

from conftest import ETTH1, ROOT, closed_port, head_csv, trained

CONFIG = Config(target="OT", lookback=24, horizon=6, units=8, head_units=8, epochs=2, batch_size=16, patience=10,
                members=2, seed=3, verbose=0)


@pytest.fixture
def ray_cpus():
    """Ray on this machine with two CPUs for the test, shut down after it (address "local": never the cluster that
    another test, in another worker, may have running)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return head_csv(ETTH1, 400, tmp_path_factory.mktemp("ray") / "ett.csv")


def cli(*arguments):
    """`forecast train` in process: its exit code and its output, standard error included."""
    from typer.testing import CliRunner

    from forecast.cli import app

    result = CliRunner().invoke(app, ["train", *map(str, arguments)])
    return result.exit_code, result.output


@pytest.mark.slow
def test_an_ensemble_trained_on_ray_is_the_one_trained_in_process(tmp_path, tiny, ray_cpus, monkeypatch):
    local, local_networks, _ = trained(tiny, CONFIG, tmp_path / "local", monkeypatch)
    remote, remote_networks, lines = trained(tiny, CONFIG.replace(executor="ray"), tmp_path / "ray", monkeypatch)
    assert remote.metrics["model_kind"] == local.metrics["model_kind"]
    assert remote.metrics["member_epochs"] == local.metrics["member_epochs"]
    for key in ("model", "repeat"):
        assert remote.metrics["validation"][key]["mse"] == pytest.approx(local.metrics["validation"][key]["mse"],
                                                                        abs=1e-6)
    np.testing.assert_allclose(remote.history["val_mse"], local.history["val_mse"], atol=1e-6)
    for ray_network, local_network in zip(remote_networks, local_networks, strict=True):
        for ray_weight, local_weight in zip(ray_network, local_network, strict=True):
            np.testing.assert_allclose(ray_weight, local_weight, atol=1e-5)
    # The tasks' lines reach the run's log: each network's first and last line, and the ridge fit once.
    for index in (1, 2):
        assert f"network {index} of 2 (seed {2 + index})" in lines
        assert any(line.startswith(f"network {index} of 2 done: 2 epochs") for line in lines)
    assert sum(line.startswith("linear start: ridge") for line in lines) == 1
    assert not (tmp_path / "ray" / ".staging").exists()


@pytest.mark.parametrize("flags, message", [
    (["--executor", "spark"], "executor must be 'local' or 'ray', got 'spark'"),
    (["--executor", "ray", "--cpus-per-task", "0"], "cpus_per_task must be at least 1"),
    (["--executor", "ray", "--gpus-per-task", "-1"], "gpus_per_task must be at least 0"),
    (["--executor", "ray", "--ray-address", f"127.0.0.1:{closed_port()}"], "no Ray cluster answers there"),
    (["--executor", "ray", "--ray-address", "nowhere"], "give HOST:PORT"),
])
def test_a_bad_executor_setting_ends_in_one_line(tmp_path, tiny, flags, message):
    code, output = cli(tiny, "--target", "OT", *flags, "--store", tmp_path)
    assert code == 1 and message in output, output
    assert output.count("\n") == 1 and "Traceback" not in output, output
    assert not (tmp_path / "ett").exists()  # nothing trained, nothing left behind


@pytest.mark.slow
def test_gpus_on_a_machine_without_any_end_in_one_line(tmp_path, tiny):
    pytest.importorskip("ray")
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("this machine has a GPU")
    code, output = cli(tiny, "--target", "OT", "--executor", "ray", "--gpus-per-task", "1", "--store", tmp_path)
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [line for line in output.splitlines() if "error" in line.lower()], output
    assert "gpus_per_task = 1, but the Ray cluster" in errors[0] and "has no GPU" in errors[0], output
    assert "Traceback" not in output and not (tmp_path / "ett").exists()


@pytest.mark.slow
def test_the_local_executor_never_imports_ray(tmp_path, tiny):
    script = (
        "import sys; from forecast.config import Config; from forecast.training import train; "
        f"train({str(tiny)!r}, Config(target='OT', lookback=24, horizon=6, units=4, head_units=4, epochs=1, "
        f"batch_size=16, verbose=0), {str(tmp_path / 'model')!r}); "
        "print('ray' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr


def member_tasks() -> list[int]:
    """The process ids of the Ray workers running a network's task now."""
    found = subprocess.run(["pgrep", "-f", "ray::_member_task"], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


@pytest.mark.slow
def test_a_network_whose_worker_is_killed_is_trained_again_to_the_same_result(tmp_path, tiny, ray_cpus,
                                                                               monkeypatch):
    config = CONFIG.replace(executor="ray", epochs=4)
    whole, whole_networks, _ = trained(tiny, config, tmp_path / "whole", monkeypatch)
    from forecast import executor

    state = tmp_path / "killed" / ".staging" / "checkpoints" / "member_1" / "state.json"
    killed = []
    original = executor._forward

    def forward_and_kill(lines, log):  # the driver polls here while the tasks train: once network 2 has finished
        original(lines, log)          # an epoch, the workers still training are killed (SIGKILL), as a node loss would
        if not killed and state.is_file() and json.loads(state.read_text())["epoch"] >= 1:
            for pid in member_tasks():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    monkeypatch.setattr(executor, "_forward", forward_and_kill)
    monkeypatch.setattr(executor, "POLL_SECONDS", 0.05)
    result, networks, lines = trained(tiny, config, tmp_path / "killed", monkeypatch)
    if not killed:
        pytest.skip("network 2 finished before it could be killed")
    assert any(line.startswith("network 2: resuming") for line in lines), lines
    assert result.metrics["model_kind"] == whole.metrics["model_kind"]
    np.testing.assert_allclose(result.history["val_mse"], whole.history["val_mse"], atol=1e-6)
    for network, whole_network in zip(networks, whole_networks, strict=True):
        for weight, whole_weight in zip(network, whole_network, strict=True):
            np.testing.assert_allclose(weight, whole_weight, atol=1e-5)



@pytest.mark.slow
def test_a_network_whose_worker_dies_every_time_fails_the_run_in_one_line_and_current_keeps_serving(
        tmp_path, tiny, ray_cpus, monkeypatch):
    from forecast import executor, training
    from forecast.errors import ForecastError
    from forecast.store import VERSIONS

    root = tmp_path / "model"
    training.train(tiny, CONFIG.replace(members=1), root, log=lambda message: None)
    serving = (root / "current").resolve()
    original = executor._forward

    def forward_and_kill(lines, log):  # every attempt's worker dies while it trains, as on a node that keeps failing
        original(lines, log)
        for pid in member_tasks():
            os.kill(pid, signal.SIGKILL)

    monkeypatch.setattr(executor, "_forward", forward_and_kill)
    monkeypatch.setattr(executor, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(executor, "MAX_RETRIES", 1)
    with pytest.raises(ForecastError) as failure:
        training.train(tiny, CONFIG.replace(executor="ray", seed=4), root, log=lambda message: None)
    message = str(failure.value)
    assert "\n" not in message and re.match(r"network [12] of 2 \(seed [45]\) failed on Ray after 1 retry \(", message), \
        message
    assert (root / "current").resolve() == serving and len(list((root / VERSIONS).iterdir())) == 1
