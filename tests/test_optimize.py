"""The optimisation passes: deterministic output, and each rewrite happens on a model containing its
pattern while onnxruntime still matches Keras (optimised and unoptimised)."""

import collections
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import pytest
from keras import layers

import kerasonnx
from kerasonnx.testing import randomise_batchnorm


def _ops(proto):
    return collections.Counter(n.op_type for n in proto.graph.node)


def _cnn():
    x = keras.Input((24, 24, 3), name="image")
    h = layers.ZeroPadding2D(1)(layers.Rescaling(1 / 127.5, offset=-1)(x))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3)(h)))
    h = layers.Flatten()(layers.MaxPooling2D()(h))
    model = keras.Model(x, layers.Dense(4, name="logits")(h), name="cnn")
    randomise_batchnorm(model, 0)
    return model


def _attention():
    x = keras.Input((None, 32), name="tokens")
    h = layers.LayerNormalization()(x + layers.MultiHeadAttention(4, 8)(x, x, use_causal_mask=True))
    model = keras.Model(x, layers.Dense(32)(layers.Dense(64, activation="gelu")(h)), name="attention")
    return model


def _check_numerics(model, proto, **kwargs):
    report = kerasonnx.verify(model, proto, **kwargs)
    assert report.passed, report.summary()


MODELS = {"cnn": _cnn, "attention": _attention}


@pytest.mark.parametrize("name", MODELS)
def test_same_model_converts_to_identical_bytes(name):
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    first = kerasonnx.convert(model).SerializeToString()
    assert kerasonnx.convert(model).SerializeToString() == first
    assert kerasonnx.convert(model, optimize=False).SerializeToString() != first


def test_traced_layers_convert_to_identical_bytes_whatever_ran_before():
    """Ops recorded while tracing a layer get Keras' process-wide numbered names (split_7); the
    ONNX names must not depend on how many ops were created before."""
    from modern_models import rotary_gqa_decoder

    model = rotary_gqa_decoder()
    first = kerasonnx.convert(model).SerializeToString()
    for _ in range(3):
        keras.ops.split(keras.Input((4,)), 2, axis=-1)
    assert kerasonnx.convert(model).SerializeToString() == first


def _cli_convert(source, out):
    result = subprocess.run([sys.executable, "-m", "kerasonnx", "convert", str(source), "-o", str(out)],
                            capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


@pytest.mark.parametrize("name", MODELS)
def test_two_processes_write_identical_files(name, tmp_path):
    keras.utils.set_random_seed(0)
    MODELS[name]().save(tmp_path / "model.keras")
    assert _cli_convert(tmp_path / "model.keras", tmp_path / "a.onnx") == \
        _cli_convert(tmp_path / "model.keras", tmp_path / "b.onnx")


@pytest.mark.parametrize("name", MODELS)
def test_optimised_and_unoptimised_both_match_keras(name):
    model = MODELS[name]()
    optimised, plain = kerasonnx.convert(model), kerasonnx.convert(model, optimize=False)
    onnx.checker.check_model(optimised, full_check=True)
    assert len(optimised.graph.node) < len(plain.graph.node)
    _check_numerics(model, optimised)
    _check_numerics(model, plain)


def test_cnn_folds_rescaling_batchnorm_padding_and_flatten_transpose():
    model = _cnn()
    ops = _ops(kerasonnx.convert(model))
    # Rescaling stays (it precedes the Conv: folding it would need the padding to be non-zero),
    # BatchNorm is folded, the Pad goes into the Conv, the Flatten's Transpose into the Dense weights.
    assert ops["Pad"] == 0 and ops["Transpose"] == 1 and ops["Conv"] == 1, ops
    assert ops["Mul"] + ops["Add"] == 2, ops


def _transpose_chain(second_perm):
    """X -> Transpose(to NHWC) -> Mul(per-channel) -> Relu -> Add(per-channel) -> Transpose -> Y, written
    directly in ONNX: Keras graphs rarely have it (the layout system avoids it), user converters may."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    scale = numpy_helper.from_array(rng.normal(size=(4,)).astype("float32"), "scale")
    shift = numpy_helper.from_array(rng.normal(size=(1, 1, 4)).astype("float32"), "shift")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Mul", ["t", "scale"], ["m"]),
             helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Add", ["shift", "r"], ["a"]),
             helper.make_node("Transpose", ["a"], ["y"], perm=second_perm)]
    out_shape = [[2, 4, 5, 6][p] for p in [0, 2, 3, 1]]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             [out_shape[p] for p in second_perm])],
                              [scale, shift])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("second_perm, left", [([0, 3, 1, 2], 0), ([0, 3, 2, 1], 1)])
def test_transposes_cancel_or_merge_across_elementwise_ops(second_perm, left):
    import onnx_ir as ir
    import onnxruntime as ort

    from kerasonnx.passes import run_default_passes

    before = _transpose_chain(second_perm)
    after = ir.to_proto(run_default_passes(ir.from_proto(before)))
    onnx.checker.check_model(after, full_check=True)
    assert _ops(after)["Transpose"] == left, _ops(after)
    x = np.random.default_rng(1).normal(size=(2, 4, 5, 6)).astype("float32")
    run = lambda proto: ort.InferenceSession(proto.SerializeToString(),  # noqa: E731
                                             providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(after), run(before), rtol=1e-6, atol=1e-6)


def test_batchnorm_after_dense_on_sequences_folds_into_matmul():
    x = keras.Input((None, 6))
    bn = layers.BatchNormalization()
    model = keras.Model(x, layers.ReLU()(bn(layers.Dense(5)(x))))
    randomise_batchnorm(model, 3)
    proto = kerasonnx.convert(model)
    assert _ops(proto) == {"MatMul": 1, "Add": 1, "Relu": 1}, _ops(proto)
    _check_numerics(model, proto)


def test_common_subexpressions_are_merged():
    x = keras.Input((8,))
    model = keras.Model(x, layers.Add()([layers.Activation("sigmoid")(x), layers.Activation("sigmoid")(x)]))
    proto = kerasonnx.convert(model)
    assert _ops(proto) == {"Sigmoid": 1, "Add": 1}, _ops(proto)
    _check_numerics(model, proto)


def test_flatten_then_reshape_collapses():
    # Squeeze-and-excitation (EfficientNet): pool, reshape back to 1x1, scale.
    x = keras.Input((8, 8, 4))
    s = layers.Reshape((1, 1, 4))(layers.GlobalAveragePooling2D()(x))
    s = layers.Conv2D(4, 1, activation="sigmoid")(s)
    model = keras.Model(x, layers.Multiply()([x, s]))
    optimised, plain = _ops(kerasonnx.convert(model)), _ops(kerasonnx.convert(model, optimize=False))
    assert optimised["Reshape"] + optimised["Flatten"] < plain["Reshape"] + plain["Flatten"], (optimised, plain)
    _check_numerics(model, kerasonnx.convert(model))
