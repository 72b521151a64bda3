"""TensorFlow SavedModels and tf.functions through the tf2onnx engine (needs TensorFlow and tf2onnx).

SavedModels are built with tf.Module and from the tf_keras zoo (tests/legacy_zoo.py), converted
through the CLI in fresh processes (with TF_USE_LEGACY_KERAS=1 and unset) and compared with
TensorFlow's own outputs in onnxruntime.
"""

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import kerasonnx  # noqa: E402
from kerasonnx.engines import tf2onnx_engine  # noqa: E402

ZOO_MODELS = ["cnn", "lstm", "gru", "mobilenetv2", "tf_ops", "lambda"]  # every model of legacy_zoo.ZOO


class TwoInOut(tf.Module):
    """Two named inputs, two named outputs (the ONNX order is by name: a, x and b, z)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x"),
                                  tf.TensorSpec((None, 3), tf.float32, name="a")])
    def __call__(self, x, a):
        h = tf.matmul(x, self.w)
        return {"z": tf.nn.relu(h) + a, "b": tf.reduce_sum(h * a, axis=1)}


class NoOnnxOps(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.math.erfc(x) + tf.math.lgamma(x + 2.0)}


def _save(module, path):
    tf.saved_model.save(module, str(path), signatures=module.__call__)
    return path


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory):
    directory = tmp_path_factory.mktemp("savedmodels")
    return {"two_io": _save(TwoInOut(), directory / "two_io"), "erfc": _save(NoOnnxOps(), directory / "erfc")}


def cli(*args, **env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([sys.executable, "-m", "kerasonnx", "convert", *map(str, args)], capture_output=True,
                          text=True, env={**clean, "KERAS_BACKEND": "numpy", **env}, timeout=900)


def run_onnx(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def serving_outputs(savedmodel, feeds):
    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    result = signature(**{k: tf.constant(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in result.items()}


def test_cli_converts_a_savedmodel_with_names_and_verification(savedmodels, tmp_path):
    out = tmp_path / "two_io.onnx"
    result = cli(savedmodels["two_io"], "-o", out, "--verify", "--input-names", "bias,feat",
                 "--output-names", "total,scores")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # TensorFlow's native INFO lines are silenced
    assert "engine: tf2onnx 1.17.0" in result.stdout and "verified" in result.stdout
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    assert [i.name for i in model.graph.input] == ["bias", "feat"]  # a SavedModel's inputs: by name (a, x)
    assert [o.name for o in model.graph.output] == ["total", "scores"]
    rng = np.random.default_rng(1)
    feeds = {"a": rng.normal(size=(5, 3)).astype("float32"), "x": rng.normal(size=(5, 4)).astype("float32")}
    expected = serving_outputs(savedmodels["two_io"], feeds)
    total, scores = run_onnx(out, {"bias": feeds["a"], "feat": feeds["x"]})
    np.testing.assert_allclose(total, expected["b"], atol=1e-5)
    np.testing.assert_allclose(scores, expected["z"], atol=1e-5)


def test_ops_tf2onnx_only_logs_are_an_unsupported_error(savedmodels, tmp_path):
    out = tmp_path / "erfc.onnx"
    result = cli(savedmodels["erfc"], "-o", out)
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "(Erfc:" in result.stderr and "(Lgamma:" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--opset", "20"], "supports opsets 13 to 18"),
    (["--static-batch"], "only for Keras models"),
])
def test_keras_only_options_are_refused(savedmodels, tmp_path, args, message):
    result = cli(savedmodels["two_io"], "-o", tmp_path / "x.onnx", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_tf_function_through_the_python_api(tmp_path):
    module = TwoInOut()
    proto = kerasonnx.convert(module.__call__, input_names=["feat", "bias"])
    assert [i.name for i in proto.graph.input] == ["feat", "bias"]
    assert kerasonnx.verify(module.__call__, proto).passed
    path = kerasonnx.save(proto, tmp_path / "fn.onnx")
    x = np.ones((2, 4), np.float32)
    a = np.full((2, 3), 0.5, np.float32)
    expected = module(x, a)
    got = run_onnx(path, {"feat": x, "bias": a})
    np.testing.assert_allclose(got[0], expected["b"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], expected["z"].numpy(), atol=1e-5)


def test_tf_function_without_signature_is_refused():
    function = tf.function(lambda x: x * 2.0)
    with pytest.raises(kerasonnx.InvalidInputError, match="input_signature"):
        kerasonnx.convert(function)


def test_engine_names():
    assert tf2onnx_engine.engine_name() == "tf2onnx 1.17.0"
    assert kerasonnx.engines.engine_name(TwoInOut().__call__) == "tf2onnx 1.17.0"


@pytest.fixture(scope="module")
def zoo_savedmodels(tmp_path_factory):
    pytest.importorskip("tf_keras")
    from legacy_zoo import ZOO, sample_inputs

    directory = tmp_path_factory.mktemp("zoo_savedmodels")
    built = {}
    for name in ZOO_MODELS:
        model = ZOO[name]()
        inputs = sample_inputs(model)
        model.save(str(directory / name))  # tf_keras: a path without extension is a SavedModel
        built[name] = (directory / name, inputs, model.predict(inputs, verbose=0))
    return built


@pytest.mark.parametrize("legacy", ["1", None], ids=["TF_USE_LEGACY_KERAS=1", "unset"])
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_tf_keras_savedmodels_convert_in_fresh_processes(zoo_savedmodels, tmp_path, name, legacy):
    path, inputs, expected = zoo_savedmodels[name]
    out = tmp_path / f"{name}.onnx"
    result = cli(path, "-o", out, **({"TF_USE_LEGACY_KERAS": legacy} if legacy else {}))
    assert result.returncode == 0, result.stderr
    assert "engine: tf2onnx" in result.stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip([i.name for i in session.get_inputs()], inputs)))
    assert np.abs(got[0] - expected).max() <= 1e-4
