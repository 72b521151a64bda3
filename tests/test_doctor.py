"""``kerasonnx doctor``: run as a user would, in subprocesses with a controlled environment.

This file runs anywhere; the advice that needs TensorFlow installed is in test_tf_doctor.py.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from models import mlp

LEGACY_H5 = Path(__file__).with_name("data") / "legacy" / "cnn.h5"
NO_TF = importlib.util.find_spec("tensorflow") is None


def doctor(*args, **env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([sys.executable, "-m", "kerasonnx", "doctor", *map(str, args)], capture_output=True,
                          text=True, env={**clean, "KERAS_BACKEND": "numpy", **env}, timeout=600)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("doctor")
    model = mlp()
    model.save(directory / "mlp.keras")
    model.save(directory / "mlp.h5")
    model.save_weights(directory / "mlp.weights.h5")
    (directory / "notes.keras").write_text("not a model")
    savedmodel = directory / "exported"
    (savedmodel / "variables").mkdir(parents=True)
    (savedmodel / "saved_model.pb").write_bytes(b"\x08\x01")
    return directory


def _line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(start))


def test_versions_opsets_and_kinds_are_listed():
    result = doctor()
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = result.stdout
    assert f"{keras.__version__} (backend: numpy)" in _line(out, "keras")
    for package in ("onnx", "onnxruntime", "tensorflow", "tf_keras", "tf2onnx", "Python"):
        assert _line(out, package)
    assert "ONNX opsets   13-" in out
    assert _line(out, "Keras 3 .keras / .h5 files").endswith("yes")
    assert "TF_USE_LEGACY_KERAS not set" in out


@pytest.mark.skipif(not NO_TF, reason="needs an environment without TensorFlow")
def test_advice_when_tensorflow_is_absent():
    out = doctor().stdout
    assert _line(out, "tensorflow").endswith("not installed")
    assert "tf.keras here is unavailable (TensorFlow not installed)" in out
    assert 'no: needs tensorflow and tf2onnx (pip install "kerasonnx[tf]")' in _line(out, "TensorFlow SavedModel")
    assert 'TensorFlow is not installed: .keras and .h5 files convert without it' in out


@pytest.mark.skipif(importlib.util.find_spec("tf_keras") is not None, reason="tf_keras is installed here")
def test_advice_when_legacy_variable_is_set_without_tf_keras():
    out = doctor(TF_USE_LEGACY_KERAS="1").stdout
    assert "TF_USE_LEGACY_KERAS set to '1'" in out
    advice = _line(out, "- TF_USE_LEGACY_KERAS=1 is set but tf_keras is not installed")
    assert "pip install" in advice and "unset TF_USE_LEGACY_KERAS" in advice


def test_ignored_variable_value_is_flagged():
    assert "TF_USE_LEGACY_KERAS='yes' is ignored by TensorFlow" in doctor(TF_USE_LEGACY_KERAS="yes").stdout


@pytest.mark.parametrize("name, kind, writer, engine, code", [
    ("mlp.keras", "Keras 3 .keras", f"Keras {keras.__version__}", "kerasonnx", 0),
    ("mlp.h5", "Keras 3 .h5", f"Keras {keras.__version__}", "kerasonnx", 0),
    ("mlp.weights.h5", "HDF5 without a model (weights only)", "Keras", "nothing in this environment", 3),
    ("notes.keras", "not a model", "-", "nothing in this environment", 3),
    ("missing.keras", "not found", "-", "nothing in this environment", 3),
])
def test_describes_model_files(files, name, kind, writer, engine, code):
    result = doctor(files / name)
    assert result.returncode == code, result.stdout + result.stderr
    assert _line(result.stdout, "is ").endswith(kind)
    assert writer in _line(result.stdout, "written by")
    assert _line(result.stdout, "converted by").endswith(engine)


@pytest.mark.skipif(not LEGACY_H5.exists(), reason="no committed Keras 2 .h5 file")
def test_describes_a_keras2_h5_file():
    import h5py

    with h5py.File(LEGACY_H5) as f:
        version = f.attrs["keras_version"]
    version = version.decode() if isinstance(version, bytes) else version
    out = doctor(LEGACY_H5).stdout
    assert _line(out, "is ").endswith("Keras 2 .h5")
    assert version in _line(out, "written by")
    assert "kerasonnx" in _line(out, "converted by")


@pytest.mark.skipif(not NO_TF, reason="needs an environment without TensorFlow")
def test_savedmodel_without_tensorflow(files):
    result = doctor(files / "exported")
    assert result.returncode == 3
    assert _line(result.stdout, "is ").endswith("TensorFlow SavedModel")
    assert 'pip install "kerasonnx[tf]"' in _line(result.stdout, "problem")


def test_python_api_report_matches_cli(files):
    from kerasonnx.doctor import report

    result = report(files / "mlp.keras")
    assert result.model.kind == "Keras 3 .keras" and result.model.engine == "kerasonnx"
    assert result.versions["keras"] == keras.__version__
    assert "Model " in result.text() and "Advice:" in result.text()
