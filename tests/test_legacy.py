"""Keras 2 files (tf_keras ``.h5`` / ``.keras``) load and convert without TensorFlow.

The fixtures under tests/data/legacy were written by tf_keras 2.21 (make_fixtures.py there), with the
inputs and tf_keras' own outputs stored beside them. The second half tests each rule of the Keras 2 ->
Keras 3 config translation on its own.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest

import kerasonnx
from kerasonnx.loading import legacy, tfop_lambda

# CI also points this at fixtures it has just written with tf_keras, MobileNetV2 included (see
# data/legacy/make_fixtures.py --all), and runs this file where TensorFlow is not installed.
DATA = Path(os.environ.get("KERASONNX_LEGACY_FIXTURES") or Path(__file__).parent / "data" / "legacy")
FIXTURES = sorted(p.stem for p in DATA.glob("*.npz"))
NEEDS_UNSAFE = {"lambda"}
ROOT = Path(__file__).resolve().parent.parent


def _run_onnx(onnx_model, stored) -> list[np.ndarray]:
    source = onnx_model if isinstance(onnx_model, (str, Path)) else onnx_model.SerializeToString()
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source,
                                   providers=["CPUExecutionProvider"])
    feeds = {i.name: stored[f"input_{k}"] for k, i in enumerate(session.get_inputs())}
    return session.run(None, feeds)


def _assert_matches_tf_keras(outputs, stored):
    expected = [stored[k] for k in sorted(stored.files) if k.startswith("output_")]
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-4


def test_fixtures_present():
    shipped = {"cnn", "lstm", "gru", "tf_ops", "lambda", "sequential_embedding", "nested"}
    assert shipped | ({"mobilenetv2"} if os.environ.get("KERASONNX_LEGACY_FIXTURES") else set()) <= set(FIXTURES)


@pytest.mark.parametrize("suffix", ["h5", "keras"])
@pytest.mark.parametrize("name", FIXTURES)
def test_tf_keras_file_converts_and_matches(name, suffix):
    path = DATA / f"{name}.{suffix}"
    assert legacy.keras2_version(path, "h5" if suffix == "h5" else "keras").startswith("2.")
    model = kerasonnx.load_model(path, safe_mode=name not in NEEDS_UNSAFE)
    stored = np.load(DATA / f"{name}.npz")
    _assert_matches_tf_keras(_run_onnx(kerasonnx.convert(model), stored), stored)


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_lambda_file_refused_in_safe_mode(suffix):
    with pytest.raises(kerasonnx.ModelLoadError, match="safe_mode=False|--unsafe"):
        kerasonnx.load_model(DATA / f"lambda.{suffix}")


def test_tf_ops_become_keras_ops_without_tensorflow():
    model = kerasonnx.load_model(DATA / "tf_ops.h5")
    functions = {layer.function for layer in model.layers if isinstance(layer, tfop_lambda.TFOpLambda)}
    assert {"nn.relu", "reshape", "concat", "compat.v1.transpose", "__operators__.getitem",
            "math.add", "math.multiply", "math.sigmoid", "expand_dims", "compat.v1.squeeze",
            "math.reduce_mean", "math.reduce_sum"} <= functions
    assert "tensorflow" not in sys.modules or os.environ.get("KERAS_BACKEND") == "tensorflow"


def test_keras3_written_h5_loads(tmp_path):
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, name="d")(keras.layers.Dense(5, activation="relu")(x)))
    path = tmp_path / "keras3.h5"
    keras.saving.save_model(model, path)
    assert legacy.keras2_version(path, "h5") is None
    loaded = kerasonnx.load_model(path)
    data = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(data)), np.asarray(model(data)), atol=1e-6)


@pytest.mark.parametrize("fixture", ["cnn.h5", "tf_ops.keras"])
def test_cli_converts_tf_keras_files(tmp_path, fixture):
    out = tmp_path / "model.onnx"
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "numpy")}
    result = subprocess.run([sys.executable, "-m", "kerasonnx", "convert", str(DATA / fixture), "-o", str(out)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    stored = np.load(DATA / f"{Path(fixture).stem}.npz")
    _assert_matches_tf_keras(_run_onnx(out, stored), stored)


# ---------------------------------------------------------------------------------------------------
# One test per translation rule


def _layer(class_name, **config):
    return {"class_name": class_name, "config": {"name": class_name.lower(), **config}}


def _deserializes(obj):
    """The translated layer config builds a Keras 3 layer."""
    return keras.layers.deserialize({"module": "keras.layers", **obj, "registered_name": None})


def _functional(layers, outputs):
    return {"class_name": "Functional",
            "config": {"name": "m", "layers": layers, "input_layers": [["x", 0, 0]], "output_layers": outputs}}


def _input(name="x", shape=(None, 4)):
    return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
            "config": {"batch_input_shape": list(shape), "dtype": "float32", "name": name}}


def test_rule_model_class():
    out = legacy.model_class({"class_name": "Model", "config": {"layers": []}})
    assert out["class_name"] == "Functional"


def test_rule_layer_module_paths():
    obj = {"module": "tf_keras.src.engine.functional", "class_name": "Functional", "registered_name": "Functional",
           "build_config": {"input_shape": None}, "config": {"layers": []}}
    assert legacy.layer_module_paths(obj) == {"class_name": "Functional", "config": {"layers": []}}
    initializer = {"module": "keras.initializers", "class_name": "Zeros", "config": {}}
    assert legacy.layer_module_paths(initializer) == initializer


def test_rule_wrapped_layer_module():
    obj = _layer("Bidirectional", layer=_layer("LSTM", units=3), merge_mode="concat")
    out = legacy.wrapped_layer_module(obj)
    assert out["config"]["layer"]["module"] == "keras.layers"
    assert isinstance(_deserializes(out), keras.layers.Bidirectional)


def test_rule_input_layer_batch_shape():
    out = legacy.input_layer_batch_shape(_layer("InputLayer", batch_input_shape=[None, 7, 3]))
    assert out["config"]["batch_shape"] == [None, 7, 3] and "batch_input_shape" not in out["config"]
    assert _deserializes(out).batch_shape == (None, 7, 3)


def test_rule_sequential_first_layer_shape():
    obj = {"class_name": "Sequential",
           "config": {"name": "s", "layers": [_layer("Dense", units=2, batch_input_shape=[None, 5])]}}
    out = legacy.sequential_first_layer_shape(obj)
    first, dense = out["config"]["layers"]
    assert first["class_name"] == "InputLayer" and first["config"]["batch_shape"] == [None, 5]
    assert "batch_input_shape" not in dense["config"]
    model = keras.saving.deserialize_keras_object(legacy.translate(obj))
    assert model.input_shape == (None, 5) and model.output_shape == (None, 2)


def test_rule_layer_batch_input_shape():
    out = legacy.layer_batch_input_shape(_layer("Dense", units=2, batch_input_shape=[None, 5]))
    assert "batch_input_shape" not in out["config"]
    assert _deserializes(out).units == 2


def test_rule_rnn_time_major():
    for class_name in ("LSTM", "GRU", "SimpleRNN"):
        out = legacy.rnn_time_major(_layer(class_name, units=3, time_major=False))
        assert "time_major" not in out["config"]
        assert type(_deserializes(out)).__name__ == class_name
    with pytest.raises(kerasonnx.ModelLoadError, match="time_major=True"):
        legacy.rnn_time_major(_layer("LSTM", units=3, time_major=True))


def test_rule_depthwise_groups():
    out = legacy.depthwise_groups(_layer("DepthwiseConv2D", kernel_size=[3, 3], groups=1, depth_multiplier=2))
    assert "groups" not in out["config"]
    assert _deserializes(out).depth_multiplier == 2


def test_rule_dtype_policy():
    obj = _layer("Dense", units=2, dtype={"class_name": "Policy", "config": {"name": "mixed_float16"}})
    out = legacy.dtype_policy(obj)
    assert out["config"]["dtype"] == "mixed_float16"
    assert _deserializes(out).dtype_policy.name == "mixed_float16"


def test_rule_batchnorm_axis():
    out = legacy.batchnorm_axis(_layer("BatchNormalization", axis=[3], fused=None))
    assert out["config"]["axis"] == 3 and "fused" not in out["config"]
    assert _deserializes(out).axis == 3
    with pytest.raises(kerasonnx.ModelLoadError, match="several"):
        legacy.batchnorm_axis(_layer("BatchNormalization", axis=[1, 2]))


def test_rule_embedding_input_length():
    out = legacy.embedding_input_length(_layer("Embedding", input_dim=10, output_dim=3, input_length=6))
    assert "input_length" not in out["config"]
    assert _deserializes(out).output_dim == 3


def test_rule_lambda_function():
    obj = _layer("Lambda", function=["code", None, None], function_type="lambda", module="m",
                 output_shape=None, output_shape_type="raw", output_shape_module=None, arguments={})
    out = legacy.lambda_function(obj)
    assert out["config"]["function"] == {"class_name": "__lambda__",
                                         "config": {"code": "code", "defaults": None, "closure": None}}
    assert not {"function_type", "module", "output_shape_type", "output_shape_module"} & set(out["config"])


def test_rule_tf_op_lambda():
    out = legacy.tf_op_lambda(_layer("TFOpLambda", function="nn.relu"))
    layer = keras.saving.get_registered_object(out["class_name"])(**out["config"])
    assert isinstance(layer, tfop_lambda.TFOpLambda)
    data = np.array([[-1.0, 2.0]], "float32")
    np.testing.assert_array_equal(np.asarray(layer(data)), np.maximum(data, 0))
    assert isinstance(tfop_lambda.TFOpLambda(function="__operators__.getitem"), keras.layers.Layer)


def test_unknown_tf_op_is_reported_by_name():
    layers = [_input(), _node_layer("TFOpLambda", "tf.image.resize", [["x", 0, 0, {"size": [2, 2]}]],
                                    function="image.resize")]
    with pytest.raises(kerasonnx.ModelLoadError, match=r"tf\.image\.resize"):
        legacy.translate(_functional(layers, [["tf.image.resize", 0, 0]]))


def _node_layer(class_name, name, nodes, **config):
    return {"class_name": class_name, "name": name, "inbound_nodes": nodes, "config": {"name": name, **config}}


def test_rule_functional_nodes():
    """Keras 2 node lists, TFOpLambda structure, tensor kwargs, constants and slices -> Keras 3 nodes."""
    relu = _node_layer("TFOpLambda", "relu", [["x", 0, 0, {"name": None}]], function="nn.relu")
    concat = _node_layer("TFOpLambda", "concat", [[["x", 0, 0, {"axis": -1}], ["relu", 0, 0, {"axis": -1}]]],
                         function="concat")
    mul = _node_layer("TFOpLambda", "mul", [["concat", 0, 0, {"y": ["concat", 0, 0], "name": None}]],
                      function="math.multiply")
    const = _node_layer("TFOpLambda", "const", [["_CONSTANT_VALUE", -1, 1.5, {"y": ["mul", 0, 0]}]],
                        function="math.add")
    spec = [{"start": None, "stop": None, "step": None}, {"class_name": "__ellipsis__"},
            {"start": 1, "stop": None, "step": 2}, None]
    sliced = _node_layer("SlicingOpLambda", "sliced", [["const", 0, 0, {"slice_spec": spec}]],
                         function="__operators__.getitem")
    dense = _node_layer("Dense", "dense", [[["sliced", 0, 0, {}]]], units=2)
    config = _functional([_input(), relu, concat, mul, const, sliced, dense], [["dense", 0, 0]])
    node = legacy.functional_nodes(config)["config"]["layers"][5]["inbound_nodes"][0]
    assert node["args"] == [{"class_name": "__keras_tensor__",
                             "config": {"shape": [], "dtype": "float32", "keras_history": ["const", 0, 0]}}]
    assert node["kwargs"]["slice_spec"][1] == {"class_name": "__ellipsis__", "config": {}}
    model = keras.saving.deserialize_keras_object(legacy.translate(config),
                                                  custom_objects=tfop_lambda.CUSTOM_OBJECTS)
    data = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    both = np.concatenate([data, np.maximum(data, 0)], axis=-1)
    expected_sliced = (1.5 + both * both)[:, ..., 1::2, None]
    inner = keras.Model(model.inputs, model.get_layer("sliced").output)
    np.testing.assert_allclose(np.asarray(inner(data)), expected_sliced, rtol=1e-6)


def test_rule_functional_nodes_nested_sequential_index():
    block = {"class_name": "Sequential", "name": "block", "inbound_nodes": [[["x", 0, 0, {}]]],
             "config": {"name": "block", "layers": [_input("block_in"), _layer("Dense", units=2)]}}
    out = legacy.translate(_functional([_input(), block], [["block", 1, 0]]))
    assert out["config"]["output_layers"] == [["block", 0, 0]]
    model = keras.saving.deserialize_keras_object(out)
    assert model.output_shape == (None, 2)


def test_every_rule_has_a_test():
    tested = {name[len("test_rule_"):] for name in globals() if name.startswith("test_rule_")}
    assert {rule.__name__ for rule in legacy.RULES + legacy.PARENT_RULES} <= tested


def test_supported_tf_ops_include_the_documented_ones():
    ops = set(tfop_lambda.supported_tf_ops())
    assert {"tf.nn.relu", "tf.reshape", "tf.concat", "tf.math.add", "tf.math.multiply", "tf.nn.sigmoid",
            "tf.transpose", "tf.expand_dims", "tf.squeeze", "tf.math.reduce_mean", "tf.math.reduce_sum",
            "tf.__operators__.getitem"} <= ops
    documented = (ROOT / "docs" / "legacy.md").read_text()
    assert all(f"`{op}`" in documented for op in ops)
