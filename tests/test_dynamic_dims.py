"""Layers whose call() uses the value of a dynamic dim (``ops.shape(x)[i]``): converted to run-time
``Shape`` expressions, checked at two batch sizes and two sequence lengths, or refused loudly."""

import keras
import numpy as np
import onnxruntime as ort
import pytest
from keras import layers, ops

import kerasonnx
from kerasonnx.core import dynamic_dims as dyn


class ClassToken(layers.Layer):
    """ViT's class token: a weight broadcast to the batch (Keras computes it eagerly)."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal", name="token")

    def call(self, x):
        batch = ops.shape(x)[0]
        return ops.concatenate([ops.broadcast_to(self.token, (batch, 1, ops.shape(x)[-1])), x], axis=1)


class AddPositions(layers.Layer):
    def call(self, x):
        positions = ops.arange(ops.shape(x)[1], dtype="float32")
        return x + ops.reshape(positions, (1, -1, 1))


class PadChannels(layers.Layer):
    def call(self, x):
        return ops.concatenate([x, ops.ones((ops.shape(x)[0], ops.shape(x)[1], 2))], axis=-1)


class FoldTime(layers.Layer):
    """Merges batch and time (a product of two dynamic dims) and splits them again."""

    def call(self, x):
        batch, steps = ops.shape(x)[0], ops.shape(x)[1]
        folded = ops.reshape(x, (batch * steps, ops.shape(x)[2]))
        return ops.reshape(ops.tanh(folded), (batch, steps, -1))


class ScaleByLength(layers.Layer):
    def call(self, x):
        return x / ops.cast(ops.shape(x)[1], "float32")


class ScaleBySqrtLength(layers.Layer):
    """``sqrt(T)`` computed eagerly in Python: cannot be a run-time expression."""

    def call(self, x):
        return x / ops.sqrt(ops.cast(ops.shape(x)[1], "float32"))


def _model(layer):
    inputs = keras.Input((None, 8))
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("layer_class", [ClassToken, AddPositions, PadChannels, FoldTime, ScaleByLength])
def test_dynamic_dim_becomes_runtime_shape(layer_class):
    model = _model(layer_class())
    onnx_model = kerasonnx.convert(model)
    session = ort.InferenceSession(onnx_model.SerializeToString())
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    for batch, steps in [(1, 4), (3, 7)]:
        x = rng.standard_normal((batch, steps, 8)).astype("float32")
        got = session.run(None, {name: x})[0]
        expected = keras.ops.convert_to_numpy(model(x))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)
    sentinels = set(dyn.SENTINELS[0] + dyn.SENTINELS[1])
    for init in onnx_model.graph.initializer:  # nothing sized or valued by a sentinel is left
        assert not sentinels & set(init.dims)


def test_eager_arithmetic_on_a_dynamic_dim_is_refused():
    with pytest.raises(kerasonnx.UnsupportedError, match="scale_by_sqrt_length.*float is computed from a dynamic"):
        kerasonnx.convert(_model(ScaleBySqrtLength()))


def test_static_shapes_do_not_trace_with_sentinels():
    inputs = keras.Input((5, 8), batch_size=2)
    model = keras.Model(inputs, FoldTime()(inputs))
    onnx_model = kerasonnx.convert(model, dynamic_batch=False)
    x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype("float32")
    session = ort.InferenceSession(onnx_model.SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    assert not any(node.op_type == "Shape" for node in onnx_model.graph.node)


def test_factor_and_explains():
    s1, s2 = dyn.SENTINELS
    assert dyn.factor(s1[0] * s1[1] * 8, s1[:2]) == ((1, 1), 8)
    assert dyn.explains(s1[0] * 4, s2[0] * 4, 1)
    assert not dyn.explains(s1[0] // 2, s2[0] // 2, 1)
    assert not dyn.is_dynamic(2**63 - 1, s1)  # "until the end" in slices, divisible by 127
    assert dyn.runtime_array(np.arange(s1[0]), s1)[0] == "arange"
    assert dyn.runtime_array(np.ones((s1[0], 3)), s1)[0] == "broadcast"
    assert dyn.runtime_array(np.random.default_rng(0).random((s1[0], 3)), s1) is None


def test_static_value_colliding_with_a_sentinel_is_refused():
    same, reason = dyn.compare([[dyn.SENTINELS[0][0] * 2]], [[dyn.SENTINELS[0][0] * 2]], 1)
    assert not same and "multiple of a sentinel" in reason


class TokenClassifier(keras.Model):
    """A subclassed model using dynamic dims in its own call() (not inside a layer)."""

    def __init__(self):
        super().__init__()
        self.token = ClassToken()
        self.dense = layers.Dense(3)

    def call(self, x):
        positions = ops.arange(ops.shape(x)[1], dtype="float32")
        return self.dense(self.token(x + ops.reshape(positions, (1, -1, 1))))


def test_subclassed_model_call_with_dynamic_dims():
    model = TokenClassifier()
    model(np.zeros((2, 5, 8), "float32"))
    onnx_model = kerasonnx.convert(model, input_signature=[(None, None, 8)])
    session = ort.InferenceSession(onnx_model.SerializeToString())
    dims = [d.dim_param or d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[1], str) and dims[2] == 8
    for batch, steps in [(1, 3), (4, 6)]:
        x = np.random.default_rng(batch).standard_normal((batch, steps, 8)).astype("float32")
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


class CausalAverage(layers.Layer):
    """Causal self-attention without weights, its mask built eagerly from the sequence length as
    hand-written decoders do."""

    def call(self, x):
        steps = ops.shape(x)[1]
        causal = ops.cast(ops.tril(ops.ones((steps, steps))), "bool")
        scores = ops.where(causal, ops.matmul(x, ops.swapaxes(x, 1, 2)), -1e9)
        return ops.matmul(ops.softmax(scores, axis=-1), x)


def test_eager_causal_mask_becomes_trilu():
    model = _model(CausalAverage())
    onnx_model = kerasonnx.convert(model)
    assert any(node.op_type == "Trilu" for node in onnx_model.graph.node)
    session = ort.InferenceSession(onnx_model.SerializeToString())
    for batch, steps in [(1, 4), (2, 9)]:
        x = np.random.default_rng(steps).standard_normal((batch, steps, 8)).astype("float32")
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    with pytest.raises(kerasonnx.UnsupportedError, match="causal_average"):
        kerasonnx.convert(model, opset=13)  # no Trilu before opset 14: refused, not baked in
