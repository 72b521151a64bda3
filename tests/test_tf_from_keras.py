"""kerasonnx.from_keras with TensorFlow installed: tf.TensorSpec signatures and the tutorial sample
that uses them (run with only its import changed)."""

import numpy as np
import onnxruntime as ort
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import kerasonnx  # noqa: E402
from test_from_keras import run_sample  # noqa: E402


def test_input_signature_sample(tmp_path):
    result = run_sample("input_signature.py", tmp_path, env={"KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "output names: ['predictions']" in result.stdout


def test_tensorspec_names_shapes_and_dtypes():
    ids = keras.Input((None,), dtype="int32", name="ids")
    scale = keras.Input((1,), name="scale")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4)(ids))
    model = keras.Model([ids, scale], keras.layers.Multiply()([pooled, scale]))
    spec = [tf.TensorSpec((None, 6), tf.int32, name="token_ids"), tf.TensorSpec((None, 1), tf.float32)]
    proto, storage = kerasonnx.from_keras(model, input_signature=spec)
    assert storage is None
    assert [i.name for i in proto.graph.input] == ["token_ids", "scale"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    token_ids = np.random.default_rng(0).integers(0, 50, (2, 6)).astype(np.int32)
    factor = np.full((2, 1), 2.0, np.float32)
    got = session.run(None, {"token_ids": token_ids, "scale": factor})[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model([token_ids, factor])), atol=1e-5)


def test_subclassed_model_from_tensorspec():
    class TwoLayer(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.hidden(x))

    model = TwoLayer()
    x = np.ones((3, 5), np.float32)
    expected = keras.ops.convert_to_numpy(model(x))
    proto, _ = kerasonnx.from_keras(model, input_signature=[tf.TensorSpec((None, 5), tf.float32, name="x")])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, atol=1e-5)
