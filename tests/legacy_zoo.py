"""Keras 2 (tf_keras) models with random weights, shared by the legacy-file and SavedModel tests.

``ZOO`` maps a stable name to a function building a fresh ``tf_keras.Model``. tf_keras and
TensorFlow are imported lazily, so this module imports anywhere; the builders need both.
``EXTRA`` holds more Keras 2 structures for the legacy-file tests. ``sample_inputs(model)`` gives
deterministic inputs matching the model's inputs (integers in [0, 10) for integer inputs).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _tf_keras():
    import tf_keras

    return tf_keras


def _randomize_batchnorm(model, seed: int = 0):
    """Give every BatchNormalization non-trivial statistics so that folding is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])
    return model


def cnn():
    k = _tf_keras()
    layers = k.layers
    x = k.Input((16, 16, 3), name="image")
    h = layers.Conv2D(6, 3, padding="same", name="conv")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU(6.0, name="relu6")(h)
    h = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(h)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    y = layers.Dense(5, activation="softmax", name="probs")(h)
    return _randomize_batchnorm(k.Model(x, y, name="cnn"))


def lstm():
    k = _tf_keras()
    x = k.Input((7, 4), name="sequence")
    h = k.layers.LSTM(8, return_sequences=True, name="lstm_1")(x)
    h = k.layers.LSTM(6, name="lstm_2")(h)
    y = k.layers.Dense(3, name="logits")(h)
    return k.Model(x, y, name="lstm")


def gru():
    k = _tf_keras()
    x = k.Input((7, 4), name="sequence")
    h = k.layers.GRU(8, return_sequences=True, name="gru_after")(x)
    h = k.layers.GRU(6, reset_after=False, name="gru_before")(h)
    y = k.layers.Dense(3, name="logits")(h)
    return k.Model(x, y, name="gru")


def mobilenetv2():
    k = _tf_keras()
    model = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    return _randomize_batchnorm(model)


def tf_ops():
    """A functional model calling TensorFlow functions on KerasTensors (TFOpLambda / SlicingOpLambda).

    No ``...`` in the slices: tf_keras cannot save an Ellipsis in a ``.keras`` file.
    """
    import tensorflow as tf

    k = _tf_keras()
    x = k.Input((6, 4), name="x")
    h = k.layers.Dense(4, name="dense_in")(x)
    h = tf.nn.relu(h)
    flat = tf.reshape(h, (-1, 24))
    back = tf.reshape(flat, (-1, 4, 6))
    joined = tf.concat([h, tf.transpose(back, perm=[0, 2, 1])], axis=-1)        # (b, 6, 8)
    sliced = joined[:, 1:5, ::2]                                                # (b, 4, 4)
    gate = tf.nn.sigmoid(sliced)
    mixed = tf.math.add(tf.math.multiply(sliced, gate), 0.5)
    expanded = tf.expand_dims(mixed, axis=1)                                    # (b, 1, 4, 4)
    squeezed = tf.squeeze(expanded, axis=1)
    mean = tf.math.reduce_mean(squeezed, axis=1)                                # (b, 4)
    total = tf.math.reduce_sum(squeezed[:, :, :, None], axis=[1, 3])                # (b, 4)
    last = h[:, -1]                                                             # (b, 4)
    y = k.layers.Dense(3, name="dense_out")(tf.concat([mean, total, last], axis=1))
    return k.Model(x, y, name="tf_ops")


def with_lambda():
    k = _tf_keras()
    x = k.Input((5,), name="x")
    h = k.layers.Dense(4, name="dense")(x)
    h = k.layers.Lambda(lambda t: t * 2.0 + 1.0, name="scale_shift")(h)
    y = k.layers.Dense(2, name="out")(h)
    return k.Model(x, y, name="with_lambda")


ZOO: dict[str, Callable[[], object]] = {
    "cnn": cnn,
    "lstm": lstm,
    "gru": gru,
    "mobilenetv2": mobilenetv2,
    "tf_ops": tf_ops,
    "lambda": with_lambda,
}


def sequential_embedding():
    """A Sequential without Input (``input_length`` on Embedding), Bidirectional LSTM: int inputs."""
    k = _tf_keras()
    return k.Sequential([k.layers.Embedding(20, 4, input_length=6, name="embed"),
                         k.layers.Bidirectional(k.layers.LSTM(3), name="bilstm"),
                         k.layers.Dense(2, name="out")], name="sequential_embedding")


def nested():
    """A functional model calling a Sequential sub-model (with BatchNormalization) twice."""
    k = _tf_keras()
    block = k.Sequential([k.layers.Dense(5, input_shape=(4,), name="inner_dense"),
                          k.layers.BatchNormalization(name="inner_bn")], name="block")
    _randomize_batchnorm(block)
    a = k.Input((4,), name="a")
    b = k.Input((4,), name="b")
    y = k.layers.Concatenate(name="join")([block(a), block(b)])
    return k.Model([a, b], k.layers.Dense(3, name="out")(y), name="nested")


# more Keras 2 structures, used by the legacy-file tests only (ZOO is shared with the SavedModel tests)
EXTRA: dict[str, Callable[[], object]] = {
    "sequential_embedding": sequential_embedding,
    "nested": nested,
}

# models whose loading runs code stored in the file: need safe_mode=False / --unsafe
NEEDS_UNSAFE = {"lambda"}


def sample_inputs(model, batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Deterministic float32 inputs for every input of ``model`` (a tf_keras or Keras 3 model)."""
    rng = np.random.default_rng(seed)
    return [_sample(rng, (batch, *tuple(t.shape)[1:]), str(getattr(t.dtype, "name", t.dtype)))
            for t in model.inputs]


def _sample(rng, shape, dtype: str) -> np.ndarray:
    if "int" in dtype:
        return rng.integers(0, 10, shape).astype(dtype)
    return rng.uniform(-1, 1, shape).astype(dtype)
