"""A transformer encoder block converts to the fused ONNX Attention/LayerNormalization ops at opset 23
and to MatMul/Softmax at opset 17, and matches Keras at several (dynamic) sequence lengths."""

import keras
import numpy as np
import onnx
import pytest
from keras import layers

import kerasonnx
from kerasonnx.core.opsets import max_supported_opset

FEATURES = 16


def encoder_block(heads: int = 4, ffn: int = 32, causal: bool = False):
    x = keras.Input((None, FEATURES), name="tokens")
    attended = layers.MultiHeadAttention(heads, FEATURES // heads, bias_initializer="random_normal",
                                         name="self_attention")(x, x, use_causal_mask=causal)
    h = layers.LayerNormalization(epsilon=1e-6, name="norm_1")(layers.Add()([x, attended]))
    f = layers.Dense(ffn, activation="gelu", name="ffn_in")(h)
    f = layers.Dense(FEATURES, name="ffn_out")(f)
    y = layers.LayerNormalization(epsilon=1e-6, name="norm_2")(layers.Add()([h, f]))
    return keras.Model(x, y, name="encoder_block")


def op_types(proto) -> set[str]:
    return {node.op_type for node in proto.graph.node}


def assert_matches_at_lengths(model, proto, lengths=(7, 19), batch=2):
    rng = np.random.default_rng(0)
    for length in lengths:
        tokens = rng.standard_normal((batch, length, FEATURES)).astype(np.float32)
        report = kerasonnx.verify(model, proto, inputs=[tokens])
        assert report.passed, f"length {length}: {report.summary()}"


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_block_fused_at_opset_23(causal):
    if max_supported_opset() < 23:
        pytest.skip("onnxruntime without opset 23")
    model = encoder_block(causal=causal)
    proto = kerasonnx.convert(model, opset=23)
    onnx.checker.check_model(proto, full_check=True)
    assert {"Attention", "LayerNormalization"} <= op_types(proto)
    assert "Einsum" not in op_types(proto)
    assert_matches_at_lengths(model, proto)


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_block_decomposed_at_opset_17(causal):
    model = encoder_block(causal=causal)
    proto = kerasonnx.convert(model, opset=17)
    onnx.checker.check_model(proto, full_check=True)
    types = op_types(proto)
    assert "Attention" not in types and "Einsum" not in types
    assert {"MatMul", "Softmax", "LayerNormalization"} <= types
    assert_matches_at_lengths(model, proto)


def test_sequence_length_is_not_baked_in():
    """Every head split/merge Reshape copies the batch and sequence dims (0) instead of fixing them."""
    proto = kerasonnx.convert(encoder_block(), opset=17)
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    reshapes = [node for node in proto.graph.node if node.op_type == "Reshape"]
    assert reshapes
    for node in reshapes:
        target = constants[node.input[1]].tolist()
        assert target[:2] == [0, 0], (node.name, target)


def test_implicit_mask_from_embedding_is_applied():
    """Embedding(mask_zero=True) attaches a mask that Keras applies inside MultiHeadAttention at run
    time but records nowhere in the graph: the driver converts it and hands it to the converter."""
    tokens = keras.Input((None,), dtype="int32")
    embedded = layers.Embedding(10, FEATURES, mask_zero=True)(tokens)
    model = keras.Model(tokens, layers.MultiHeadAttention(2, 8)(embedded, embedded))
    proto = kerasonnx.convert(model)
    ids = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]], dtype="int32")
    report = kerasonnx.verify(model, proto, inputs=[ids])
    assert report.passed, report.summary()
    unmasked = keras.Model(tokens, layers.MultiHeadAttention(2, 8)(layers.Embedding(10, FEATURES)(tokens),
                                                                   layers.Embedding(10, FEATURES)(tokens)))
    assert sum(n.op_type == "Equal" or n.op_type == "Not" for n in proto.graph.node) > \
        sum(n.op_type == "Equal" or n.op_type == "Not" for n in kerasonnx.convert(unmasked).graph.node)
