"""fp16/bf16 exports and mixed-precision Keras models: they run in onnxruntime and match Keras within
the tolerances of kerasonnx.verification.tolerance (docs/precision.md)."""

import keras
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from keras import layers

import kerasonnx
from kerasonnx.cli import main
from kerasonnx.passes.precision import FLOAT32_OPS, BF16_CPU_OPS, LOW_PRECISION_OPS, convert_precision
from kerasonnx.testing import randomise_batchnorm
from kerasonnx.verification.tolerance import TOLERANCES
from modern_models import EncoderBlock

LOW = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}
FLOAT = onnx.TensorProto.FLOAT


@pytest.fixture(scope="module")
def mobilenet():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    randomise_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def transformer_block():
    x = keras.Input((None, 32), name="tokens")
    h = EncoderBlock(4, 8, name="block")(x)
    return keras.Model(x, layers.Dense(5, name="head")(h), name="transformer_block")


def _value_types(proto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _io_types(proto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}


def _converted_and_verified(model, precision):
    proto = kerasonnx.convert(model, precision=precision)
    onnx.checker.check_model(proto, full_check=True)
    report = kerasonnx.verify(model, proto)  # default tolerance chosen by precision
    assert (report.atol, report.rtol) == TOLERANCES[precision]
    assert report.passed, report.summary()
    return proto, report


def _weights_of(proto, op_types):
    """Element types of the initializers (possibly behind a Cast) read by ``op_types`` nodes."""
    by_name = {t.name: t.data_type for t in proto.graph.initializer}
    cast_sources = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Cast"}
    found = []
    for node in proto.graph.node:
        if node.op_type in op_types:
            for name in node.input[1:2]:
                source = cast_sources.get(name, name)
                if source in by_name:
                    found.append(by_name[source])
    return found


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mobilenetv2_low_precision(mobilenet, precision):
    proto, _ = _converted_and_verified(mobilenet, precision)
    assert _io_types(proto) == {FLOAT}
    weights = _weights_of(proto, {"Conv", "Gemm"})
    assert len(weights) > 50 and set(weights) == {LOW[precision]}
    fp32_size = sum(t.ByteSize() for t in kerasonnx.convert(mobilenet).graph.initializer)
    assert sum(t.ByteSize() for t in proto.graph.initializer) < 0.55 * fp32_size


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_transformer_block_low_precision(transformer_block, precision):
    proto, _ = _converted_and_verified(transformer_block, precision)
    assert _io_types(proto) == {FLOAT}
    assert set(_weights_of(proto, {"MatMul", "Gemm"})) == {LOW[precision]}


def test_fp16_rule_computes_heavy_ops_low_and_sensitive_ops_in_float32(transformer_block):
    proto = kerasonnx.convert(transformer_block, precision="fp16")
    types = _value_types(proto)
    seen = set()
    for node in proto.graph.node:
        if node.op_type in LOW_PRECISION_OPS:
            assert types[node.input[0]] == onnx.TensorProto.FLOAT16, node.name
            seen.add("low")
        if node.op_type in FLOAT32_OPS:
            assert types[node.input[0]] == FLOAT, node.name
            seen.add(node.op_type)
    assert {"low", "Softmax", "LayerNormalization"} <= seen


def test_bf16_computes_in_float32_from_bf16_weights(transformer_block):
    proto = kerasonnx.convert(transformer_block, precision="bf16")
    types = _value_types(proto)
    for node in proto.graph.node:
        if node.op_type != "Cast":
            assert all(types.get(name) != onnx.TensorProto.BFLOAT16 for name in node.input if name), node.name


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_lowering_is_deterministic(transformer_block, precision):
    proto = kerasonnx.convert(transformer_block)
    first, second = (ir.to_proto(convert_precision(ir.from_proto(proto), precision)) for _ in range(2))
    assert first.SerializeToString() == second.SerializeToString()


def _mixed_model(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        x = keras.Input((16, 16, 3), name="image")
        h = layers.Conv2D(8, 3, activation="relu")(x)
        h = layers.BatchNormalization()(h)
        h = layers.Reshape((-1, 8))(h)
        h = EncoderBlock(2, 4, name="block")(h)
        h = layers.GlobalAveragePooling1D()(h)
        y = layers.Dense(4, activation="softmax", dtype="float32", name="probs")(h)
        model = keras.Model(x, y)
    finally:
        keras.config.set_dtype_policy(previous)
    randomise_batchnorm(model)
    return model


@pytest.mark.parametrize("policy, precision", [("mixed_float16", "fp16"), ("mixed_bfloat16", "bf16")])
def test_mixed_precision_model_converts_with_keras_casts(policy, precision):
    model = _mixed_model(policy)
    proto = kerasonnx.convert(model)
    onnx.checker.check_model(proto, full_check=True)
    assert any(n.op_type == "Cast" and n.attribute[0].i == LOW[precision] for n in proto.graph.node)
    assert _io_types(proto) == {FLOAT}
    report = kerasonnx.verify(model, proto)
    assert (report.atol, report.rtol) == TOLERANCES[precision]  # chosen from the Keras dtype policy
    assert report.passed, report.summary()


def test_unknown_precision_is_refused(transformer_block):
    with pytest.raises(kerasonnx.InvalidInputError, match="precision 'int8' is not supported"):
        kerasonnx.convert(transformer_block, precision="int8")


def _builtin_transformer():
    """A transformer block of built-in layers only (loadable without custom objects)."""
    x = keras.Input((None, 32), name="tokens")
    h = layers.LayerNormalization()(x + layers.MultiHeadAttention(4, 8)(x, x))
    h = layers.LayerNormalization()(h + layers.Dense(32)(layers.Dense(64, activation="gelu")(h)))
    return keras.Model(x, layers.Dense(5)(h))


def test_cli_precision_and_tolerance_reported(tmp_path, capsys):
    model = _builtin_transformer()
    model.save(tmp_path / "block.keras")
    out = tmp_path / "block.onnx"
    assert main(["convert", str(tmp_path / "block.keras"), "-o", str(out), "--precision", "fp16", "--verify"]) == 0
    line = capsys.readouterr().out
    assert "verified" in line and "(atol 0.01, rtol 0.01)" in line
    proto = onnx.load(out)
    assert {p.key: p.value for p in proto.metadata_props}["kerasonnx.precision"] == "fp16"
    tokens = np.random.default_rng(0).normal(size=(2, 7, 32)).astype("float32")
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens})[0]
    expected = keras.ops.convert_to_numpy(model(tokens))
    np.testing.assert_allclose(got, expected, atol=TOLERANCES["fp16"].atol, rtol=TOLERANCES["fp16"].rtol)


_INT_INPUTS = {"Reshape": [[1, 1]], "Squeeze": [[0]], "Unsqueeze": [[0]], "Gather": [[0]], "Slice": [[0], [1]]}
_SECOND_X = {"CastLike", "Concat", "MatMul", "Add"}
_OUTPUT_TYPES = {"Cast": onnx.TensorProto.FLOAT, "Shape": onnx.TensorProto.INT64, "Size": onnx.TensorProto.INT64}


def _has_bf16_cpu_kernel(op_type: str) -> bool:
    """Whether onnxruntime's CPU provider loads ``op_type`` on a bfloat16 [1, 1] tensor."""
    h = onnx.helper
    ints = [onnx.numpy_helper.from_array(np.array(v, np.int64), f"i{k}") for k, v in enumerate(_INT_INPUTS.get(op_type, []))]
    inputs = ["x", "x"] if op_type in _SECOND_X else ["x"] + [t.name for t in ints]
    attrs = {"to": onnx.TensorProto.FLOAT} if op_type == "Cast" else {"axis": 0} if op_type == "Concat" else {}
    graph = h.make_graph([h.make_node(op_type, inputs, ["y"], **attrs)], "probe",
                         [h.make_tensor_value_info("x", onnx.TensorProto.BFLOAT16, [1, 1])],
                         [h.make_tensor_value_info("y", _OUTPUT_TYPES.get(op_type, onnx.TensorProto.BFLOAT16), None)],
                         initializer=ints)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        assert "NOT_IMPLEMENTED" in str(exc), str(exc)
        return False
    return True


def test_bf16_cpu_op_list_matches_onnxruntime():
    """The ops left in bfloat16 really have onnxruntime CPU kernels; MatMul/Add (computed in float32
    for mixed_bfloat16 models, and the reason bf16 exports compute in float32) really have none."""
    assert [op for op in sorted(BF16_CPU_OPS) if not _has_bf16_cpu_kernel(op)] == []
    assert not _has_bf16_cpu_kernel("MatMul") and not _has_bf16_cpu_kernel("Add")
