"""Core layers: Dense, EinsumDense, Activation, identity-at-inference layers."""

from __future__ import annotations

import keras
from keras import layers

from ..core.layout import Layout, channels_first, identity
from ..core.registry import Case
from . import BUILTIN
from .activations import ACTIVATIONS, apply_activation

register = BUILTIN.register


def _after_conv(layer_factory):
    return lambda: (lambda x: layer_factory()(layers.Conv2D(4, 3)(x)))


@register(layers.Dense, layout=Layout.ANY, cases=[
    Case("dense", lambda: layers.Dense(5), ((4,),)),
    Case("dense_relu_nobias", lambda: layers.Dense(3, activation="relu", use_bias=False), ((6,),)),
    Case("dense_rank3", lambda: layers.Dense(5, activation="tanh"), ((7, 4),)),
    Case("dense_on_channels_first", _after_conv(lambda: layers.Dense(6, activation="gelu")), ((7, 6, 3),)),
    Case("dense_on_channels_first_softmax", _after_conv(lambda: layers.Dense(5, activation="softmax",
                                                                             use_bias=False)), ((5, 5, 2),)),
])
def dense(ctx, op, x):
    """Gemm/MatMul on Keras' layout; on a channels-first image tensor (ConvNeXt's pointwise Dense
    after a depthwise conv) a 1x1 Conv, so that the whole block stays channels-first."""
    rank = len(ctx.in_shape())
    if ctx.perm != identity(rank):
        if ctx.perm == channels_first(rank):
            return _dense_as_pointwise_conv(ctx, op, x, rank)
        x = ctx.fetch(ctx.in_tensors[0], identity(rank))
        ctx.out_perms = [identity(rank)]
    kernel = ctx.weight(op.kernel)
    if len(ctx.in_shape()) == 2 and op.use_bias:
        y = ctx.op("Gemm", [x, kernel, ctx.weight(op.bias)])
    else:
        y = ctx.op("MatMul", [x, kernel])
        if op.use_bias:
            y = ctx.op("Add", [y, ctx.weight(op.bias)])
    return apply_activation(ctx, y, op.activation)


def _dense_as_pointwise_conv(ctx, op, x, rank):
    kernel = ctx.weight(op.kernel, transform=lambda k: k.T.reshape(k.shape[1], k.shape[0], *[1] * (rank - 2)))
    inputs = [x, kernel] + ([ctx.weight(op.bias)] if op.use_bias else [])
    return apply_activation(ctx, ctx.op("Conv", inputs), op.activation)


@register(layers.EinsumDense, cases=[
    Case("einsum_dense_bias", lambda: layers.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c"), ((4,),)),
    Case("einsum_dense_3d", lambda: layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3),
                                                       bias_axes="de", activation="relu"), ((6, 4),)),
])
def einsum_dense(ctx, op, x):
    y = ctx.op("Einsum", [x, ctx.weight(op.kernel)], {"equation": op.equation})
    if op.bias is not None:
        y = ctx.op("Add", [y, ctx.weight(op.bias)])
    return apply_activation(ctx, y, op.activation)


@register(layers.Activation, layout=Layout.ANY, cases=[
    Case(f"activation_{name}", (lambda n=name: layers.Activation(n)), ((3, 5),))
    for name in ACTIVATIONS
])
def activation(ctx, op, x):
    return apply_activation(ctx, x, op.activation)


_IDENTITY_LAYERS = [layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
                    layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout,
                    layers.ActivityRegularization, layers.Identity]


@register(*_IDENTITY_LAYERS, layout=Layout.ANY, cases=[
    Case("dropout", lambda: layers.Dropout(0.5), ((6,),)),
    Case("spatial_dropout2d", lambda: layers.SpatialDropout2D(0.5), ((4, 4, 3),)),
    Case("gaussian_noise", lambda: layers.GaussianNoise(0.3), ((6,),)),
    Case("gaussian_dropout", lambda: layers.GaussianDropout(0.3), ((6,),)),
    Case("alpha_dropout", lambda: layers.AlphaDropout(0.3), ((6,),)),
    Case("activity_regularization", lambda: layers.ActivityRegularization(0.1), ((6,),)),
])
def identity_at_inference(ctx, op, x, *rest):
    return x


__all__ = ["keras"]
