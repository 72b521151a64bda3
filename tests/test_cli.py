"""The command line, run as a user would: in a subprocess."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from models import mlp, with_custom_layers, with_untraceable_layers

MODELS_PY = Path(__file__).with_name("models.py")


def cli(*args, env=None, cwd=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kerasonnx", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mlp.keras"
    mlp().save(path)
    return path


def test_convert_and_verify(mlp_file, tmp_path):
    out = tmp_path / "mlp.onnx"
    result = cli("convert", mlp_file, "-o", out, "--verify")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert len(line.splitlines()) == 1
    assert "opset" in line and "nodes" in line and "MB" in line and "max abs err" in line
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)


def test_options(mlp_file, tmp_path):
    out = tmp_path / "named.onnx"
    result = cli("convert", mlp_file, "-o", out, "--opset", "13", "--input-names", "x",
                 "--output-names", "y", "--input-shape", "x=?,8", "--static-batch")
    assert result.returncode == 0, result.stderr
    model = onnx.load(out)
    assert model.opset_import[0].version == 13
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["y"]


def test_default_output_path(mlp_file, tmp_path):
    copy = tmp_path / "copy.keras"
    copy.write_bytes(mlp_file.read_bytes())
    assert cli("convert", copy).returncode == 0
    assert (tmp_path / "copy.onnx").exists()


@pytest.mark.parametrize("args, code, message", [
    (["convert", "/no/such/model.keras"], 3, "not found"),
    (["convert", "{text}"], 3, "not a Keras model"),
    (["convert", "{mlp}", "-o", "/no/such/dir/out.onnx"], 7, "does not exist"),
    (["convert", "{mlp}", "--opset", "7"], 2, "opset 7 is not supported"),
    (["convert", "{mlp}", "--input-shape", "features=1,a b"], 2, "bad shape"),
    (["convert", "{mlp}", "--input-shape", "features=?,9"], 2, "does not fit"),
])
def test_errors_are_one_line(args, code, message, mlp_file, tmp_path):
    text = tmp_path / "text.keras"
    text.write_text("not a model")
    args = [a.format(text=text, mlp=mlp_file) for a in args]
    result = cli(*args, "-o", tmp_path / "out.onnx") if "-o" not in args else cli(*args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_unsupported_layers_fail_with_every_name_and_no_output(tmp_path):
    model_file = tmp_path / "custom.keras"
    with_untraceable_layers().save(model_file)
    out = tmp_path / "custom.onnx"
    layers_only = tmp_path / "layers_only.py"  # the classes, without models.py's converter registry
    layers_only.write_text(f"import sys\nsys.path.insert(0, {str(MODELS_PY.parent)!r})\n"
                           "from models import NumpyInside, PythonBranch\n")
    result = cli("convert", model_file, "-o", out, "--custom-objects", layers_only, cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert "'branchy' (PythonBranch" in result.stderr and "'numpy_inside' (NumpyInside" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and sorted(tmp_path.iterdir()) == sorted([model_file, layers_only])


def test_custom_layers_convert_with_custom_objects(tmp_path):
    model_file = tmp_path / "custom.keras"
    with_custom_layers().save(model_file)
    result = cli("convert", model_file, "-o", tmp_path / "c.onnx", "--custom-objects", MODELS_PY, "--verify")
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


def test_unknown_custom_class_without_custom_objects(tmp_path):
    model_file = tmp_path / "custom.keras"
    with_custom_layers().save(model_file)
    result = cli("convert", model_file, "-o", tmp_path / "x.onnx")
    assert result.returncode == 3 and "--custom-objects" in result.stderr


def test_debug_shows_traceback():
    result = cli("convert", "/no/such/model.keras", "--debug")
    assert result.returncode == 3 and "Traceback" in result.stderr


def test_picks_a_backend_when_tensorflow_is_missing(mlp_file, tmp_path):
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed: Keras' default backend works")
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(keras_home)
    result = subprocess.run([sys.executable, "-m", "kerasonnx", "convert", str(mlp_file), "-o",
                             str(tmp_path / "m.onnx"), "--verify"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr


def test_custom_objects_as_module_name(tmp_path):
    model_file = tmp_path / "custom.keras"
    with_custom_layers().save(model_file)
    env = {"PYTHONPATH": str(MODELS_PY.parent)}
    result = cli("convert", model_file, "-o", tmp_path / "c.onnx", "--custom-objects", "models", env=env)
    assert result.returncode == 0, result.stderr
    bad = cli("convert", model_file, "-o", tmp_path / "d.onnx", "--custom-objects", "no_such_module_xyz")
    assert bad.returncode == 2 and "failed to import" in bad.stderr


def test_custom_objects_module_registers_converters(tmp_path):
    from models import with_python_branch

    model_file = tmp_path / "branchy.keras"
    with_python_branch().save(model_file)
    result = cli("convert", model_file, "-o", tmp_path / "b.onnx", "--custom-objects", MODELS_PY, "--verify")
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
