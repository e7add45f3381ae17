"""TensorFlow's start-up lines ("Could not find cuda drivers", "failed call to cuInit", "absl::InitializeLog", CPU
feature notes) stay off the terminal of `forecast`, and what the tool itself says, or a failed import, still shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ETTH1, head_csv, run_forecast

# A line TensorFlow's C++ code writes: Abseil's prefix (I0000 00:00:... file.cc:31]), its notes, CUDA's complaints.
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|cuda|cpu_feature_guard|rebuild TensorFlow", re.IGNORECASE)


def quiet_environment() -> dict[str, str]:
    """This environment without a TF_CPP_MIN_LOG_LEVEL the developer set, which asks for TensorFlow's lines."""
    return {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.mark.slow
def test_train_prints_no_tensorflow_startup_line(tmp_path):
    data = head_csv(ETTH1, 300, tmp_path / "tiny.csv")
    result = run_forecast("train", data, "--target", "OT", "--epochs", "1", "--lookback", "8", "--horizon", "4",
                          "--batch-size", "8", "--store", tmp_path / "models", env=quiet_environment())
    noise = [line for line in result.stderr.splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise)
    assert "training on CPU" in result.stderr or "training on GPU" in result.stderr  # the tool's own lines still show
    assert "saved" in result.stderr.splitlines()[-1]


def test_the_tools_error_line_still_shows(tmp_path):
    data = head_csv(ETTH1, 300, tmp_path / "tiny.csv")
    result = run_forecast("train", data, "--target", "nothing", "--store", tmp_path / "models", check=False,
                          env=quiet_environment())
    assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr


@pytest.mark.slow
def test_standard_error_works_again_after_the_quiet_import():
    script = "import sys, forecast, tensorflow; print('error: written after the import', file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=quiet_environment())
    assert result.returncode == 0 and result.stderr == "error: written after the import\n", result.stderr


def test_a_failed_tensorflow_import_still_says_why(tmp_path):
    """What TensorFlow writes while its import fails is shown, with the traceback: only a successful start is quiet."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'native loader: libtensorflow_cc.so.2 not found\\n')\nraise ImportError('no tensorflow')\n"
    )
    environment = quiet_environment() | {"PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import forecast, tensorflow"], capture_output=True, text=True,
                            env=environment)
    assert result.returncode == 1
    assert "native loader: libtensorflow_cc.so.2 not found" in result.stderr
    assert "ImportError: no tensorflow" in result.stderr
