"""kerasonnx.from_keras: tf2onnx.convert.from_keras' signature and results, and the tf2onnx
tutorial samples in examples/tf2onnx_tutorial/ running with only their import changed."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from keras import layers

import kerasonnx
from kerasonnx import tf2onnx_compat
from models import Doubler, with_custom_layers

TUTORIAL = Path(__file__).resolve().parent.parent / "examples" / "tf2onnx_tutorial"
SHIM_IMPORT = "from kerasonnx import tf2onnx_compat as tf2onnx"


def run_sample(name: str, cwd: Path, python: str = sys.executable, env: dict | None = None):
    """Run a tutorial sample with ``import tf2onnx`` (its only tf2onnx import) swapped for the shim."""
    source = (TUTORIAL / name).read_text()
    assert source.count("\nimport tf2onnx\n") == 1
    script = cwd / name
    script.write_text(source.replace("\nimport tf2onnx\n", f"\n{SHIM_IMPORT}\n"))
    return subprocess.run([python, str(script)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def run(proto, *arrays):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays)))


def test_signature_matches_tf2onnx():
    import inspect

    params = list(inspect.signature(kerasonnx.from_keras).parameters)
    assert params == ["model", "input_signature", "opset", "custom_ops", "custom_op_handlers", "custom_rewriter",
                      "inputs_as_nchw", "outputs_as_nchw", "extra_opset", "shape_override", "target",
                      "large_model", "output_path", "optimizers"]
    assert tf2onnx_compat.convert.from_keras is kerasonnx.from_keras


def test_basic_sample(tmp_path):
    result = run_sample("basic_from_keras.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "predictions match" in result.stdout
    onnx.checker.check_model(onnx.load(tmp_path / "mnist.onnx"), full_check=True)


def test_custom_ops_sample(tmp_path):
    result = run_sample("custom_ops.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "('FastGelu', 'com.example')" in result.stdout


def test_returns_proto_and_saves(tmp_path):
    model = with_custom_layers()
    out = tmp_path / "m.onnx"
    proto, storage = kerasonnx.from_keras(model, output_path=str(out))
    assert storage is None and out.exists()
    assert onnx.load(out).graph.output[0].name == proto.graph.output[0].name
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_allclose(run(proto, x)[0], keras.ops.convert_to_numpy(model(x)), atol=1e-5)


class NamedSpec:
    """Duck-typed like tf.TensorSpec: .shape, .dtype, .name."""

    def __init__(self, shape, dtype, name=None):
        self.shape, self.dtype, self.name = shape, np.dtype(dtype), name


def test_signature_names_inputs_and_shape_override():
    x = keras.Input((None, 4), name="tokens")
    model = keras.Model(x, layers.Dense(3)(x))
    proto, _ = kerasonnx.from_keras(model, input_signature=[NamedSpec((None, 7, 4), "float32", "seq:0")])
    assert [i.name for i in proto.graph.input] == ["seq"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:] == [7, 4]
    proto, _ = kerasonnx.from_keras(model, shape_override={"tokens:0": [2, 5, 4]})
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 5, 4]
    arrays = np.zeros((1, 9, 4), np.float32)  # an example array as the signature (tf2onnx accepts those)
    proto, _ = kerasonnx.from_keras(model, input_signature=[arrays])
    assert run(proto, np.ones((1, 9, 4), np.float32))[0].shape == (1, 9, 3)


def test_custom_op_handlers_dict():
    model = with_custom_layers()

    def triple(ctx, op, x):  # a user converter replacing the traced Doubler
        return ctx.op("Mul", [x, ctx.scalar(3.0)])

    proto, _ = kerasonnx.from_keras(model, custom_op_handlers={Doubler: triple})
    x = np.ones((1, 6), np.float32)
    dense = model.get_layer("dense")
    expected = keras.ops.convert_to_numpy(model.get_layer("halver")(dense(x * 3.0)))
    np.testing.assert_allclose(run(proto, x)[0], expected, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"custom_rewriter": [object()]}, "custom_rewriter"),
    ({"target": ["rs6"]}, "target"),
    ({"optimizers": {"fold": object()}}, "optimizers"),
    ({"large_model": True}, "needs output_path"),
    ({"custom_ops": {"NoSuchLayerClass": "x"}}, "NoSuchLayerClass"),
    ({"custom_op_handlers": {"Relu": print}}, "Keras layer/op classes"),
    ({"shape_override": {"nope:0": [1, 6]}, "input_signature": [NamedSpec((None, 6), "float32", "x")]}, "nope"),
])
def test_unsupported_options_fail_clearly(kwargs, message):
    with pytest.raises(kerasonnx.InvalidInputError, match=message):
        kerasonnx.from_keras(with_custom_layers(), **kwargs)


def test_empty_optimizers_skip_passes():
    x = keras.Input((4,))
    model = keras.Model(x, layers.BatchNormalization()(layers.Dense(4)(x)))
    optimized, _ = kerasonnx.from_keras(model)
    plain, _ = kerasonnx.from_keras(model, optimizers={})
    assert len(plain.graph.node) > len(optimized.graph.node)


def test_nchw_options_pass_through_or_fail_clearly():
    import inspect

    x = keras.Input((8, 8, 3), name="image")
    model = keras.Model(x, layers.Conv2D(2, 3)(x))
    if "inputs_as_nchw" in inspect.signature(kerasonnx.convert).parameters:
        proto, _ = kerasonnx.from_keras(model, inputs_as_nchw=["image"])
        dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [3, 8, 8]
    else:
        with pytest.raises(kerasonnx.InvalidInputError, match="not supported yet"):
            kerasonnx.from_keras(model, inputs_as_nchw=["image"])
