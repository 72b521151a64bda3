"""The benchmark corpus: Keras models built in code with random weights.

Imported only inside worker subprocesses (it imports Keras). Every builder is deterministic for a given
seed, and the reference worker also saves the weights so that every other worker loads exactly them.
"""

from __future__ import annotations

import numpy as np

from kerasonnx.testing import randomise_batchnorm

SEED = 0


def small_cnn():
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((64, 64, 3), name="image"),
        layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(10),
    ], name="small_cnn")


def _application(name):
    def build():
        import keras

        # Logits, not softmax: with random weights the softmax output is almost uniform (std ~1e-4),
        # which would make every converter's max abs error look tiny.
        return getattr(keras.applications, name)(weights=None, classifier_activation=None)
    return build


# Name used on the command line -> builder. The order is the order of the report.
BUILDERS = {
    "SmallCNN": small_cnn,
    "MobileNetV2": _application("MobileNetV2"),
    "ResNet50": _application("ResNet50"),
    "EfficientNetB0": _application("EfficientNetB0"),
    "DenseNet121": _application("DenseNet121"),
    "ConvNeXtTiny": _application("ConvNeXtTiny"),
}


def build_model(name, seed=SEED):
    """Build ``name`` with seeded random weights and randomised BatchNormalization statistics."""
    import keras

    keras.utils.set_random_seed(seed)
    model = BUILDERS[name]()
    randomise_batchnorm(model, seed)
    return model


def tiny_functional():
    """A few-layer functional model converted once before measuring, to load lazy imports and caches."""
    import keras
    from keras import layers

    x = keras.Input((16, 16, 3), name="warmup_input")
    y = layers.Conv2D(4, 3)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(2)(y)
    return keras.Model(x, y, name="warmup")


def weights_bytes(model) -> int:
    return int(sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights))
