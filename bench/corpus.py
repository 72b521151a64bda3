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


VOCAB = 1000  # token ids of the text models are drawn from [0, VOCAB)
SEQ_LEN = 32  # length used for dynamic sequence dims when measuring


def lstm_text():
    import keras
    from keras import layers

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = layers.Embedding(VOCAB, 64)(ids)
    return keras.Model(ids, layers.Dense(2)(layers.LSTM(64)(h)), name="lstm_text")


def gru():
    import keras
    from keras import layers

    x = keras.Input((None, 16), name="features")
    h = layers.GRU(64, return_sequences=True)(x)
    return keras.Model(x, layers.Dense(4)(layers.GRU(32)(h)), name="gru")


def bilstm():
    import keras
    from keras import layers

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = layers.Embedding(VOCAB, 64)(ids)
    h = layers.Bidirectional(layers.LSTM(32, return_sequences=True))(h)
    return keras.Model(ids, layers.Dense(2)(layers.GlobalMaxPooling1D()(h)), name="bilstm")


def _transformer_block(x, causal):
    from keras import layers

    attention = layers.MultiHeadAttention(4, 16)(x, x, use_causal_mask=causal)
    x = layers.LayerNormalization()(x + attention)
    ffn = layers.Dense(64)(layers.Dense(256, activation="gelu")(x))
    return layers.LayerNormalization()(x + ffn)


def transformer_encoder():
    import keras

    x = keras.Input((None, 64), name="embeddings")
    return keras.Model(x, _transformer_block(x, causal=False), name="transformer_encoder")


def causal_decoder():
    import keras
    from keras import layers

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = layers.Embedding(VOCAB, 64)(ids)
    h = _transformer_block(_transformer_block(h, causal=True), causal=True)
    return keras.Model(ids, layers.Dense(VOCAB)(h), name="causal_decoder")


# Name used on the command line -> builder. The order is the order of the report.
BUILDERS = {
    "SmallCNN": small_cnn,
    "MobileNetV2": _application("MobileNetV2"),
    "ResNet50": _application("ResNet50"),
    "EfficientNetB0": _application("EfficientNetB0"),
    "DenseNet121": _application("DenseNet121"),
    "ConvNeXtTiny": _application("ConvNeXtTiny"),
    "LSTMText": lstm_text,
    "GRU": gru,
    "BiLSTM": bilstm,
    "TransformerEncoder": transformer_encoder,
    "CausalDecoder": causal_decoder,
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


def make_input(tensor, batch, rng):
    """A random input for Keras input ``tensor``: dynamic dims get SEQ_LEN, int inputs token ids."""
    shape = (batch, *(d if d is not None else SEQ_LEN for d in tensor.shape[1:]))
    if "int" in str(tensor.dtype):
        return rng.integers(0, VOCAB, size=shape).astype(tensor.dtype)
    return rng.standard_normal(shape).astype(tensor.dtype)
