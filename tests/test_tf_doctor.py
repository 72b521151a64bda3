"""``kerasonnx doctor`` where TensorFlow is installed (skipped elsewhere): subprocesses, controlled env."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")


def python(code, **env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, "KERAS_BACKEND": "numpy", **env}, timeout=600)


def test_doctor_does_not_import_tensorflow():
    result = python("import sys\nfrom kerasonnx.cli import main\nmain(['doctor'])\n"
                    "print('imported' if 'tensorflow' in sys.modules else 'not imported')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("not imported")
    assert "tf.keras here is Keras 3" in result.stdout


def test_variable_set_after_tensorflow_was_imported():
    result = python("import os\nimport tensorflow\nos.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
                    "from kerasonnx.doctor import report\nprint(report().text())")
    assert result.returncode == 0, result.stderr
    assert "TF_USE_LEGACY_KERAS was set after TensorFlow was imported in this process" in result.stdout
    assert "before the first `import tensorflow`" in result.stdout


def test_variable_set_before_import_is_consistent():
    pytest.importorskip("tf_keras")
    result = python("import tensorflow as tf\ntf.keras.layers\nfrom kerasonnx.doctor import report\n"
                    "print(report().text())", TF_USE_LEGACY_KERAS="1")
    assert result.returncode == 0, result.stderr
    assert "tf.keras here is tf_keras (Keras 2) (TensorFlow already imported)" in result.stdout
    assert "after TensorFlow was imported" not in result.stdout


def test_savedmodel_kinds_and_engine_opsets():
    pytest.importorskip("tf2onnx")
    result = python("from kerasonnx.cli import main\nmain(['doctor'])")
    assert "(tf2onnx engine)" in result.stdout
    line = next(x for x in result.stdout.splitlines() if "TensorFlow SavedModel directories" in x)
    assert line.endswith("yes (tf2onnx engine)")
