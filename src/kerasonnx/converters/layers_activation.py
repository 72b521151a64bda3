"""Activation layers: ReLU, LeakyReLU, PReLU, ELU, Softmax (all layout-agnostic)."""

from __future__ import annotations

import keras
import numpy as np
from keras import initializers, layers

from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN
from .layers_normalization import after_conv2d, as_dtype, keras_axes, stored_array, stored_axes

register = BUILTIN.register


# onnxruntime (1.31) has LeakyRelu / Elu / PRelu kernels for float32 and float16 only: other dtypes
# get the equivalent Where form, which every dtype supports.
_FUSED_DTYPES = ("float32", "float16")


def _fused_ok(ctx) -> bool:
    return str(ctx.out_dtype()) in _FUSED_DTYPES


def _where_negative(ctx, x, negative):
    """``negative`` where ``x < 0``, else ``x``."""
    return ctx.op("Where", [ctx.op("Less", [x, ctx.scalar(0.0)]), negative, x])


def leaky_relu_op(ctx, x, slope):
    if _fused_ok(ctx):
        return ctx.op("LeakyRelu", [x], {"alpha": float(slope)})
    return _where_negative(ctx, x, ctx.op("Mul", [x, ctx.scalar(slope)]))


# ---- ReLU ---------------------------------------------------------------------------------------
def _thresholded_relu(ctx, x, threshold, max_value, slope):
    """Keras' general ReLU: ``where(x > t, x, 0)`` clipped to ``max_value``, minus ``slope * relu(t - x)``."""
    t = ctx.scalar(threshold)
    y = ctx.op("Where", [ctx.op("Greater", [x, t]), x, ctx.scalar(0.0)])
    if max_value is not None:
        y = ctx.op("Min", [y, ctx.scalar(max_value)])  # y >= 0 already (threshold > 0)
    if slope:
        below = ctx.op("Relu", [ctx.op("Sub", [t, x])])
        y = ctx.op("Sub", [y, ctx.op("Mul", [below, ctx.scalar(slope)])])
    return y


def relu_like(ctx, x, slope=0.0, max_value=None, threshold=0.0):
    """``keras.activations.relu(x, negative_slope, max_value, threshold)`` with the simplest ONNX ops."""
    if threshold:
        return _thresholded_relu(ctx, x, threshold, max_value, slope)
    if not slope:
        if max_value is None:
            return ctx.op("Relu", [x])
        return ctx.op("Clip", [x, ctx.scalar(0.0), ctx.scalar(max_value)])
    y = leaky_relu_op(ctx, x, slope)
    return y if max_value is None else ctx.op("Min", [y, ctx.scalar(max_value)])


_RELU_SETTINGS = [  # (max_value, negative_slope, threshold): every combination of set / unset
    (None, 0.0, 0.0), (6.0, 0.0, 0.0), (2.5, 0.0, 0.0), (None, 0.1, 0.0), (1.0, 0.1, 0.0),
    (None, 0.0, 0.5), (2.0, 0.0, 0.5), (None, 0.2, 0.5), (1.5, 0.2, 0.5), (0.3, 0.2, 0.5),
]


@register(layers.ReLU, layout=Layout.ANY, cases=[
    Case(f"relu_layer_{i}", (lambda m=m, s=s, t=t: layers.ReLU(max_value=m, negative_slope=s, threshold=t)),
         ((3, 4),))
    for i, (m, s, t) in enumerate(_RELU_SETTINGS)
] + [
    Case("relu_layer_float64", lambda: layers.ReLU(6.0, 0.1, 0.5, dtype="float64"), ((5,),),
         dtypes=("float64",)),
    Case("relu_layer_cf", after_conv2d(lambda: layers.ReLU(1.5, 0.2, 0.1)), ((5, 5, 3),)),
    Case("relu_layer_leaky_float64", lambda: layers.ReLU(None, 0.1, dtype="float64"), ((5,),),
         dtypes=("float64",)),
])
def relu(ctx, op, x):
    return relu_like(ctx, as_dtype(ctx, x), op.negative_slope, op.max_value, op.threshold)


# ---- LeakyReLU / ELU ----------------------------------------------------------------------------
@register(layers.LeakyReLU, layout=Layout.ANY, cases=[
    Case("leaky_relu_layer", lambda: layers.LeakyReLU(), ((3, 4),)),
    Case("leaky_relu_layer_slope", lambda: layers.LeakyReLU(negative_slope=0.05), ((6,),)),
    Case("leaky_relu_layer_cf", after_conv2d(layers.LeakyReLU), ((5, 5, 3),)),
    Case("leaky_relu_layer_float64", lambda: layers.LeakyReLU(dtype="float64"), ((6,),), dtypes=("float64",)),
])
def leaky_relu(ctx, op, x):
    # Keras documents x for x >= 0, slope * x below; the numpy backend's max(x, slope * x) agrees for
    # slope <= 1 (larger slopes are backend-dependent in Keras itself).
    return leaky_relu_op(ctx, as_dtype(ctx, x), op.negative_slope)


@register(layers.ELU, layout=Layout.ANY, cases=[
    Case("elu_layer", lambda: layers.ELU(), ((3, 4),)),
    Case("elu_layer_alpha", lambda: layers.ELU(alpha=0.3), ((6,),)),
    Case("elu_layer_cf", after_conv2d(layers.ELU), ((5, 5, 3),)),
    Case("elu_layer_float64", lambda: layers.ELU(alpha=0.3, dtype="float64"), ((6,),), dtypes=("float64",)),
])
def elu(ctx, op, x):
    x = as_dtype(ctx, x)
    if _fused_ok(ctx):
        return ctx.op("Elu", [x], {"alpha": float(op.alpha)})
    expm1 = ctx.op("Sub", [ctx.op("Exp", [x]), ctx.scalar(1.0)])
    return _where_negative(ctx, x, ctx.op("Mul", [expm1, ctx.scalar(op.alpha)]))


# ---- PReLU --------------------------------------------------------------------------------------
def _prelu(**kwargs):
    return layers.PReLU(alpha_initializer=initializers.RandomUniform(-0.5, 0.5), **kwargs)


@register(layers.PReLU, layout=Layout.ANY, cases=[
    Case("prelu", lambda: _prelu(), ((6,),)),
    Case("prelu_image", lambda: _prelu(), ((3, 4, 2),)),
    Case("prelu_shared", lambda: _prelu(shared_axes=[1, 2]), ((3, 4, 2),)),
    Case("prelu_shared_last", lambda: _prelu(shared_axes=2), ((3, 4),)),
    Case("prelu_cf", after_conv2d(_prelu), ((5, 6, 3),)),
    Case("prelu_cf_shared", after_conv2d(lambda: _prelu(shared_axes=[1, 2])), ((5, 6, 3),)),
    Case("prelu_float64", lambda: _prelu(dtype="float64"), ((3, 4),), dtypes=("float64",)),
])
def prelu(ctx, op, x):
    # alpha has the input's shape without the batch dim (1 along shared axes): add the batch dim and
    # permute it like the input so it broadcasts against the stored tensor.
    x = as_dtype(ctx, x)
    slope = ctx.weight(op.alpha, transform=lambda a: stored_array(ctx, a[np.newaxis]))
    if _fused_ok(ctx):
        return ctx.op("PRelu", [x, slope])
    return _where_negative(ctx, x, ctx.op("Mul", [x, slope]))


# ---- Softmax ------------------------------------------------------------------------------------
def _large_negative(dtype) -> float:
    """The value Keras' Softmax puts at masked positions (float16 cannot hold -1e9)."""
    return -3e4 if str(dtype) == "float16" else -1e9


def _bool_mask(ctx, mask, mask_dtype):
    """Keras keeps positions where the mask is True (a non-bool mask: where it is > 0.5)."""
    if str(mask_dtype) == "bool":
        return mask
    return ctx.op("Greater", [mask, ctx.const(np.asarray(0.5), mask_dtype)])


def softmax_over(ctx, x, axes):
    """Softmax over stored ``axes``: the Softmax op for one axis, ``exp(x - max) / sum`` for several."""
    if len(axes) == 1:
        return ctx.op("Softmax", [x], {"axis": axes[0]})
    shifted = ctx.op("Sub", [x, ctx.reduce("ReduceMax", x, axes, keepdims=True)])
    exp = ctx.op("Exp", [shifted])
    return ctx.op("Div", [exp, ctx.reduce("ReduceSum", exp, axes, keepdims=True)])


@register(layers.Softmax, layout=Layout.ANY, cases=[
    Case("softmax_layer", lambda: layers.Softmax(), ((5,),)),
    Case("softmax_layer_axis1", lambda: layers.Softmax(axis=1), ((3, 4),)),
    Case("softmax_layer_axes", lambda: layers.Softmax(axis=(1, 2)), ((3, 4, 2),)),
    Case("softmax_layer_axes_list1", lambda: layers.Softmax(axis=[-1]), ((3, 4),)),
    Case("softmax_layer_mask_bool", lambda: (lambda x, m: layers.Softmax()(x, mask=m)),
         ((3, 4), (3, 4)), dtypes=("float32", "bool")),
    # a 0/1 float mask (Keras < 3.13 uses a float mask's values as weights, newer Keras thresholds it)
    Case("softmax_layer_mask_float_bcast", lambda: (lambda x, m: layers.Softmax(axis=1)(
        x, mask=keras.ops.cast(keras.ops.greater(m, 0.0), "float32"))),
         ((3, 4), (3, 1)), dtypes=("float32", "float32")),
    Case("softmax_layer_cf", after_conv2d(layers.Softmax), ((5, 6, 3),)),
    Case("softmax_layer_cf_axes", after_conv2d(lambda: layers.Softmax(axis=(1, 2))), ((5, 6, 3),)),
    Case("softmax_layer_cf_mask", lambda: (lambda x, m: layers.Softmax(axis=2)(layers.Conv2D(4, 3)(x), mask=m)),
         ((5, 6, 3), (3, 4, 1)), dtypes=("float32", "bool")),
    Case("softmax_layer_mask_axes", lambda: (lambda x, m: layers.Softmax(axis=(1, 2))(x, mask=m)),
         ((2, 3, 4), (2, 1, 4)), dtypes=("float32", "bool")),
])
def softmax(ctx, op, x, *rest):
    rank = len(ctx.in_shape())
    axes = stored_axes(ctx, keras_axes(op.axis, rank), rank)
    x = as_dtype(ctx, x)
    mask = rest[0] if rest else ctx.kwargs.get("mask")
    if mask is None:
        return softmax_over(ctx, x, axes)
    keep = _bool_mask(ctx, mask, ctx.in_dtype(len(ctx.in_tensors) - 1))  # the mask comes last
    x = ctx.op("Where", [keep, x, ctx.scalar(_large_negative(ctx.out_dtype()))])
    return ctx.op("Where", [keep, softmax_over(ctx, x, axes), ctx.scalar(0.0)])
