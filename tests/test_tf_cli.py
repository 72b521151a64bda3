"""With TensorFlow as Keras' backend, the command line keeps its output contract: TensorFlow's C++
runtime prints INFO lines straight to file descriptor 2 when Keras imports it, and none may reach the
user (one line on success, one error line on failure, everything with --debug)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "small_cnn.keras"


def _cli(*args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "kerasonnx", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_success_prints_nothing_on_stderr(tmp_path):
    result = _cli("convert", EXAMPLE, "-o", tmp_path / "m.onnx", "--verify")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and "verified" in result.stdout


def test_failure_is_one_line_and_debug_shows_everything(tmp_path):
    missing = tmp_path / "missing.keras"
    result = _cli("convert", missing, "-o", tmp_path / "m.onnx")
    assert result.returncode == 3
    assert result.stderr.splitlines() == [f"kerasonnx: error: model file not found: {missing}"]
    debug = _cli("convert", missing, "-o", tmp_path / "m.onnx", "--debug")
    assert debug.returncode == 3 and "Traceback" in debug.stderr
