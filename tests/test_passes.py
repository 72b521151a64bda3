"""Graph passes on real converted models: the folds happen, and the numbers still match Keras."""

import collections

import keras
import numpy as np
import pytest
from keras import layers

import kerasonnx


def _ops(proto):
    return collections.Counter(n.op_type for n in proto.graph.node)


def _randomise_bn(bn, seed):
    rng = np.random.default_rng(seed)
    for var, values in ((bn.gamma, rng.uniform(0.5, 1.5, bn.gamma.shape)),
                        (bn.beta, rng.normal(0, 0.3, bn.beta.shape)),
                        (bn.moving_mean, rng.normal(0, 0.3, bn.moving_mean.shape)),
                        (bn.moving_variance, rng.uniform(0.5, 1.5, bn.moving_variance.shape))):
        var.assign(values.astype("float32"))


def _conv_bn_model(use_bias):
    x = keras.Input((None, None, 3), name="img")
    h = layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    h = layers.Conv2D(8, 3, strides=2, use_bias=use_bias)(h)
    bn = layers.BatchNormalization()
    h = layers.ReLU()(bn(h))
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    bn2 = layers.BatchNormalization()
    y = bn2(h)
    model = keras.Model(x, y)
    _randomise_bn(bn, 1)
    _randomise_bn(bn2, 2)
    return model


@pytest.mark.parametrize("use_bias", [True, False])
def test_batchnorm_and_zero_padding_fold_into_conv(use_bias):
    model = _conv_bn_model(use_bias)
    proto = kerasonnx.convert(model)
    ops = _ops(proto)
    assert ops["Conv"] == 2 and ops["Pad"] == 0 and ops["Mul"] == 0 and ops["Add"] == 0, ops
    assert ops["Transpose"] == 2  # in and out of the channels-first region
    report = kerasonnx.verify(model, proto, inputs=[np.random.default_rng(0).normal(size=(2, 11, 9, 3))
                                                    .astype("float32")])
    assert report.passed, report.summary()


def test_unoptimized_keeps_the_batchnorm_arithmetic():
    model = _conv_bn_model(True)
    ops = _ops(kerasonnx.convert(model, optimize=False))
    assert ops["Pad"] == 1 and ops["Mul"] == 2 and ops["Add"] == 2


def test_batchnorm_after_dense_folds_into_gemm():
    x = keras.Input((6,))
    bn = layers.BatchNormalization()
    model = keras.Model(x, bn(layers.Dense(4)(x)))
    _randomise_bn(bn, 3)
    proto = kerasonnx.convert(model)
    assert _ops(proto) == {"Gemm": 1}
    assert kerasonnx.verify(model, proto).passed


def test_batchnorm_with_two_consumers_is_not_folded():
    x = keras.Input((8, 8, 3))
    c = layers.Conv2D(4, 3)(x)
    bn = layers.BatchNormalization()
    model = keras.Model(x, [bn(c), layers.ReLU()(c)])
    _randomise_bn(bn, 4)
    proto = kerasonnx.convert(model)
    assert _ops(proto)["Mul"] == 1
    assert kerasonnx.verify(model, proto).passed


def test_fold_into_a_graph_output_keeps_its_type():
    x = keras.Input((6,))
    bn = layers.BatchNormalization(name="bn_out")
    model = keras.Model(x, bn(layers.Dense(4)(x)))
    _randomise_bn(bn, 5)
    proto = kerasonnx.convert(model)
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == ["bn_out"]
