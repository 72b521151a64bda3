"""Rebuild examples/small_cnn.keras, the example model the README converts (random weights)."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
from keras import layers  # noqa: E402


def small_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((32, 32, 3), name="image")
    h = layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(x)
    h = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(h)
    h = layers.BatchNormalization(name="stem_bn")(h)
    h = layers.ReLU(6.0, name="stem_relu")(h)
    h = layers.DepthwiseConv2D(3, padding="same", name="dw_conv")(h)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Conv2D(32, 1, activation="swish", name="pw_conv")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dropout(0.2, name="dropout")(h)
    y = layers.Dense(10, activation="softmax", name="probs")(h)
    return keras.Model(x, y, name="small_cnn")


if __name__ == "__main__":
    small_cnn().save(Path(__file__).with_name("small_cnn.keras"))
