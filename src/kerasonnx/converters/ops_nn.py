"""``keras.ops.nn`` operations (``keras.src.ops.nn``): activations, softmax, one-hot, convolutions,
pooling and normalization.

Activations reuse ``activations.py``; convolutions and pooling reuse the window/kernel helpers of
``layers_conv.py`` and work channels-first like the layers (``Layout.CHANNELS_FIRST`` follows each
op's ``data_format``); normalizations reuse ``layers_normalization.py``. Kernels, statistics and
scales are call arguments here: constants (Keras variables, arrays) are rearranged at conversion
time, tensors with ONNX Transpose/Reshape nodes.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import numpy as np

from ..core.dtypes import to_numpy_dtype
from ..core.layout import Layout
from ..core.registry import Case, lazy_op
from . import activations as act
from .layers_activation import elu as elu_layer
from .layers_activation import leaky_relu as leaky_relu_layer
from .layers_activation import softmax_over
from .layers_conv import channels_to_front, depthwise_to_onnx, transpose_attrs, window_attrs
from .layers_normalization import (broadcast_shape, divide_by_std, keras_axes, l2_normalize, mean_and_variance,
                                   scale_and_shift, stored_array, stored_axes)
from .ops_core import (INT64_MAX, arg_shape, as_value, channel_dim, constant_array, first_row, in_layer,
                       keras_tensor_of, per_axis, refuse_ops, register_op, scaled, tensor_attr)


def _register(name, *, layout=Layout.ANY, cases=(), min_opset=13):
    return register_op("nn", name, layout=layout, cases=cases, min_opset=min_opset)


def _unary_case(name, fn, shape=(3, 4), **kw):
    return Case(f"ops_nn_{name}", lambda: fn, (shape,), **kw)


def _after_conv(fn, channels=4):
    """A case build applying ``fn`` to a Conv2D output (stored channels-first by the converter)."""
    return lambda: (lambda x: fn(keras.layers.Conv2D(channels, 3)(x)))


_IMAGE = ((6, 5, 3),)


# ---- activations without settings --------------------------------------------------------------
_ACTIVATION_OPS = {  # keras.src.ops.nn class -> activations.ACTIVATIONS name (= keras.ops function)
    "Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "SparseSigmoid": "sparse_sigmoid",
    "Softplus": "softplus", "Softsign": "softsign", "SparsePlus": "sparse_plus", "Silu": "silu",
    "LogSigmoid": "log_sigmoid", "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu", "Selu": "selu",
    "TanhShrink": "tanh_shrink", "HardTanh": "hard_tanh",
}


def _activation_converter(name):
    return lambda ctx, op, x: act.ACTIVATIONS[name](ctx, x)


def _activation_cases(name):
    fn = lazy_op(keras.ops, name)
    return [_unary_case(name, lambda x: fn(scaled(x, 3.0))),
            Case(f"ops_nn_{name}_cf", _after_conv(fn), _IMAGE)]


for _cls, _name in _ACTIVATION_OPS.items():
    _register(_cls, cases=_activation_cases(_name))(_activation_converter(_name))


# ---- activations with settings -----------------------------------------------------------------
_register("LeakyRelu", cases=[
    _unary_case("leaky_relu", lambda x: keras.ops.leaky_relu(x, negative_slope=0.1)),
    _unary_case("leaky_relu_float64", lambda x: keras.ops.leaky_relu(x), dtypes=("float64",)),
])(leaky_relu_layer)  # reads op.negative_slope like the layer

_register("Elu", cases=[
    _unary_case("elu", lambda x: keras.ops.elu(x, alpha=0.5)),
    _unary_case("elu_float64", lambda x: keras.ops.elu(x), dtypes=("float64",)),
])(elu_layer)  # reads op.alpha like the layer


@_register("Gelu", cases=[
    _unary_case("gelu", lambda x: keras.ops.gelu(scaled(x, 2.0))),
    _unary_case("gelu_exact", lambda x: keras.ops.gelu(scaled(x, 2.0), approximate=False)),
    _unary_case("gelu_opset13", lambda x: keras.ops.gelu(scaled(x, 2.0)), min_opset=13),
    _unary_case("gelu_exact_opset13", lambda x: keras.ops.gelu(scaled(x, 2.0), approximate=False), min_opset=13),
])
def gelu(ctx, op, x):
    return act._gelu(ctx, x, op.approximate)


@_register("Celu", cases=[
    _unary_case("celu", lambda x: keras.ops.celu(scaled(x, 2.0), alpha=0.7)),
    _unary_case("celu_float64", lambda x: keras.ops.celu(scaled(x, 2.0)), dtypes=("float64",)),
])
def celu(ctx, op, x):
    if str(ctx.out_dtype()) == "float32":  # onnxruntime's Celu kernel is float32 only
        return ctx.op("Celu", [x], {"alpha": float(op.alpha)})
    alpha = ctx.scalar(op.alpha)
    expm1 = ctx.op("Sub", [ctx.op("Exp", [ctx.op("Div", [ctx.op("Min", [x, ctx.scalar(0.0)]), alpha])]),
                           ctx.scalar(1.0)])
    return ctx.op("Add", [ctx.op("Relu", [x]), ctx.op("Mul", [alpha, expm1])])


@_register("SoftShrink", cases=[_unary_case("soft_shrink", lambda x: keras.ops.soft_shrink(x, 0.7))])
def soft_shrink(ctx, op, x):
    return act._soft_shrink(ctx, x, op.threshold)


@_register("HardShrink", cases=[_unary_case("hard_shrink", lambda x: keras.ops.hard_shrink(x, 0.7))])
def hard_shrink(ctx, op, x):
    return act._hard_shrink(ctx, x, op.threshold)


@_register("Squareplus", cases=[_unary_case("squareplus", lambda x: keras.ops.squareplus(scaled(x, 2.0), b=2))])
def squareplus(ctx, op, x):
    return act._squareplus(ctx, x, op.b)


@_register("Threshold", cases=[
    _unary_case("threshold", lambda x: keras.ops.threshold(x, 0.3, -2.0)),
    Case("ops_nn_threshold_cf", _after_conv(lambda y: keras.ops.threshold(y, 0.0, 5.0)), _IMAGE),
])
def threshold(ctx, op, x):
    keep = ctx.op("Greater", [x, ctx.scalar(op.threshold)])
    return ctx.op("Where", [keep, x, ctx.scalar(op.default_value)])


@_register("Glu", cases=[
    _unary_case("glu", lambda x: keras.ops.glu(x), shape=(3, 6)),
    _unary_case("glu_axis1", lambda x: keras.ops.glu(x, axis=1), shape=(4, 3)),
    _unary_case("glu_dynamic", lambda x: keras.ops.glu(x, axis=1), shape=(None, 3)),
    Case("ops_nn_glu_cf", _after_conv(lazy_op(keras.ops, "glu")), _IMAGE),
])
def glu(ctx, op, x):
    axis = ctx.axis(op.axis)
    size = ctx.in_shape()[op.axis]
    if size is not None:
        first, second = ctx.split(x, [size // 2] * 2, axis)
    else:
        half = ctx.op("Div", [ctx.dims(x, axis, axis + 1), ctx.int64s([2])])
        first = ctx.op("Slice", [x, ctx.int64s([0]), half, ctx.int64s([axis])])
        second = ctx.op("Slice", [x, half, ctx.int64s([INT64_MAX]), ctx.int64s([axis])])
    return ctx.op("Mul", [first, ctx.op("Sigmoid", [second])])


# ---- softmax family ----------------------------------------------------------------------------
def _softmax_axes(ctx, axis) -> list[int]:
    rank = len(ctx.in_shape())
    axes = range(rank) if axis is None else keras_axes(axis, rank)
    return stored_axes(ctx, axes, rank)


_SOFTMAX_CASES = [
    ("", {}, (3, 5)), ("_axis1", {"axis": 1}, (3, 5)), ("_axes", {"axis": (1, 2)}, (3, 4, 2)),
    ("_all_axes", {"axis": None}, (3, 4)),
]


def _softmax_cases(name):
    fn = lazy_op(keras.ops, name)
    cases = [Case(f"ops_nn_{name}{suffix}", (lambda kw=kw: (lambda x: fn(x, **kw))), (shape,))
             for suffix, kw, shape in _SOFTMAX_CASES]
    return cases + [Case(f"ops_nn_{name}_cf", _after_conv(lambda y: fn(y, axis=1)), _IMAGE),
                    Case(f"ops_nn_{name}_opset13", lambda: (lambda x: fn(x, axis=1)), ((3, 5),), min_opset=13)]


@_register("Softmax", cases=_softmax_cases("softmax"))
def softmax(ctx, op, x):
    return softmax_over(ctx, x, _softmax_axes(ctx, op.axis))


@_register("LogSoftmax", cases=_softmax_cases("log_softmax"))
def log_softmax(ctx, op, x):
    axes = _softmax_axes(ctx, op.axis)
    if len(axes) == 1:
        return ctx.op("LogSoftmax", [x], {"axis": axes[0]})
    shifted = ctx.op("Sub", [x, ctx.reduce("ReduceMax", x, axes, keepdims=True)])
    log_sum = ctx.op("Log", [ctx.reduce("ReduceSum", ctx.op("Exp", [shifted]), axes, keepdims=True)])
    return ctx.op("Sub", [shifted, log_sum])


@_register("Sparsemax", cases=[
    _unary_case("sparsemax", lambda x: keras.ops.sparsemax(scaled(x, 2.0)), shape=(6,)),
    _unary_case("sparsemax_axis1", lambda x: keras.ops.sparsemax(scaled(x, 2.0), axis=1), shape=(5, 3)),
    _unary_case("sparsemax_dynamic", lambda x: keras.ops.sparsemax(scaled(x, 2.0)), shape=(None,)),
    Case("ops_nn_sparsemax_cf", _after_conv(lambda y: keras.ops.sparsemax(y, axis=-1)), _IMAGE),
])
def sparsemax(ctx, op, x):
    """``max(x - tau, 0)``, tau from the sorted values (as Keras: sort, cumsum, support size)."""
    axis = ctx.axis(op.axis)
    size = ctx.in_shape()[op.axis]
    shape = ctx.op("Shape", [x])
    count = ctx.int64s([size]) if size is not None else ctx.op(
        "Slice", [shape, ctx.int64s([axis]), ctx.int64s([axis + 1])])
    ordered = ctx.op("TopK", [x, count], {"axis": axis}, outputs=2)[0]
    cumsum = ctx.op("CumSum", [ordered, ctx.int64s(axis)])
    ones = ctx.op("ConstantOfShape", [shape], {"value": tensor_attr(np.ones(1, to_numpy_dtype(ctx.out_dtype())))})
    rank = ctx.op("CumSum", [ones, ctx.int64s(axis)])  # 1, 2, ... along the axis
    threshold = ctx.op("Div", [ctx.op("Sub", [cumsum, ctx.scalar(1.0)]), rank])
    support = ctx.op("Greater", [ctx.op("Sub", [ordered, threshold]), ctx.scalar(0.0)])
    k = ctx.reduce("ReduceSum", ctx.cast(support, ctx.out_dtype()), [axis], keepdims=True)
    total = ctx.reduce("ReduceSum", ctx.op("Where", [support, cumsum, ctx.scalar(0.0)]), [axis], keepdims=True)
    tau = ctx.op("Div", [ctx.op("Sub", [total, ctx.scalar(1.0)]), k])
    return ctx.op("Relu", [ctx.op("Sub", [x, tau])])


# ---- one-hot -----------------------------------------------------------------------------------
def _one_hot_mask(ctx, x, num_classes, axis, rank=None):
    """Boolean ``x == class`` (``x`` of ``rank``, default the first input's) with the class axis
    inserted at Keras output ``axis`` (-1: last).

    Out-of-range and negative indices give all-False rows, like Keras (ONNX OneHot would wrap
    negative indices around)."""
    out_rank = (len(ctx.in_shape()) if rank is None else rank) + 1
    position = out_rank - 1 if axis == -1 else axis
    classes = np.arange(num_classes, dtype=np.int64).reshape([num_classes] + [1] * (out_rank - 1 - position))
    expanded = ctx.op("Unsqueeze", [ctx.cast(x, "int64"), ctx.int64s([position])])
    return ctx.op("Equal", [expanded, ctx.const(classes)])


@_register("OneHot", layout=Layout.KERAS, cases=[
    Case("ops_nn_one_hot", lambda: (lambda x: keras.ops.one_hot(x, 5)), ((3,),), dtypes=("int32",),
         int_range=(-1, 5)),
    Case("ops_nn_one_hot_axis1", lambda: (lambda x: keras.ops.one_hot(x, 4, axis=1, dtype="int32")), ((3, 2),),
         dtypes=("int64",), int_range=(0, 4)),
    Case("ops_nn_one_hot_dynamic", lambda: (lambda x: keras.ops.one_hot(x, 3)), ((None,),), dtypes=("int32",),
         int_range=(0, 3)),
])
def one_hot(ctx, op, x):
    return ctx.cast(_one_hot_mask(ctx, x, op.num_classes, op.axis), ctx.out_dtype())


@_register("MultiHot", layout=Layout.KERAS, cases=[
    Case("ops_nn_multi_hot", lambda: (lambda x: keras.ops.multi_hot(x, 6)), ((4,),), dtypes=("int32",),
         int_range=(0, 6)),
    Case("ops_nn_multi_hot_float", lambda: (lambda x: keras.ops.multi_hot(scaled(keras.ops.sigmoid(x), 3.99), 4)),
         ((3,),)),
    Case("ops_nn_multi_hot_rank3", lambda: (lambda x: keras.ops.multi_hot(x, 5)), ((2, 3),), dtypes=("int64",),
         int_range=(0, 5)),
])
def multi_hot(ctx, op, x):
    # Keras' symbolic output has the input's dtype (the eager result has op.dtype): follow the graph.
    mask = ctx.cast(_one_hot_mask(ctx, x, op.num_classes, op.axis), ctx.out_dtype())
    return ctx.reduce("ReduceMax", mask, [1 if len(ctx.in_shape()) > 1 else 0], keepdims=False)


# ---- losses and metrics -----------------------------------------------------------------------
def _clipped_log(ctx, p):
    eps = keras.config.epsilon()
    return ctx.op("Log", [ctx.op("Clip", [p, ctx.scalar(eps), ctx.scalar(1.0 - eps)])])


def _log_probabilities(ctx, output, axis, from_logits):
    """Keras' crossentropy log-probabilities: log_softmax of logits, else log of the clipped
    probabilities renormalized along ``axis``."""
    if from_logits:
        return ctx.op("LogSoftmax", [output], {"axis": axis})
    return _clipped_log(ctx, ctx.op("Div", [output, ctx.reduce("ReduceSum", output, [axis], keepdims=True)]))


def _loss_case(name, fn, shapes, **kw):
    return Case(f"ops_nn_{name}", lambda: fn, shapes, **kw)


@_register("BinaryCrossentropy", cases=[
    _loss_case("binary_crossentropy", lambda t, o: keras.ops.binary_crossentropy(
        keras.ops.sigmoid(t), keras.ops.sigmoid(o)), ((3, 4), (3, 4))),
    _loss_case("binary_crossentropy_logits", lambda t, o: keras.ops.binary_crossentropy(
        keras.ops.sigmoid(t), scaled(o, 4.0), from_logits=True), ((5,), (5,))),
])
def binary_crossentropy(ctx, op, target, output):
    if op.from_logits:
        output = ctx.op("Sigmoid", [output])
    one = ctx.scalar(1.0)
    positive = ctx.op("Mul", [target, _clipped_log(ctx, output)])
    negative = ctx.op("Mul", [ctx.op("Sub", [one, target]), _clipped_log(ctx, ctx.op("Sub", [one, output]))])
    return ctx.op("Neg", [ctx.op("Add", [positive, negative])])


@_register("CategoricalCrossentropy", layout=Layout.KERAS, cases=[
    _loss_case("categorical_crossentropy", lambda t, o: keras.ops.categorical_crossentropy(
        keras.ops.softmax(t), keras.ops.sigmoid(o)), ((3, 4), (3, 4))),
    # axis=-1 only: Keras 3.15 declares output.shape[:-1] whatever the axis.
    _loss_case("categorical_crossentropy_logits", lambda t, o: keras.ops.categorical_crossentropy(
        keras.ops.softmax(t), scaled(o, 3.0), from_logits=True), ((2, 4), (2, 4))),
])
def categorical_crossentropy(ctx, op, target, output):
    axis = op.axis % len(ctx.in_shape(1))
    log_prob = _log_probabilities(ctx, output, axis, op.from_logits)
    return ctx.op("Neg", [ctx.reduce("ReduceSum", ctx.op("Mul", [target, log_prob]), [axis], keepdims=False)])


@_register("SparseCategoricalCrossentropy", layout=Layout.KERAS, cases=[
    _loss_case("sparse_categorical_crossentropy", lambda t, o: keras.ops.sparse_categorical_crossentropy(
        t, keras.ops.softmax(o)), ((), (5,)), dtypes=("int32", "float32"), int_range=(0, 5)),
    _loss_case("sparse_categorical_crossentropy_logits", lambda t, o: keras.ops.sparse_categorical_crossentropy(
        t, o, from_logits=True), ((3, 1), (3, 4)), dtypes=("int64", "float32"), int_range=(0, 4)),
])
def sparse_categorical_crossentropy(ctx, op, target, output):
    rank = len(ctx.in_shape(1))
    axis = op.axis % rank
    if len(ctx.in_shape(0)) == rank:  # Keras drops a trailing size-1 class axis of the target
        target = ctx.op("Squeeze", [target, ctx.int64s([-1])])
    log_prob = _log_probabilities(ctx, output, axis, op.from_logits)
    picked = ctx.op("Where", [_one_hot_mask(ctx, target, ctx.in_shape(1)[axis], axis, rank - 1),
                              log_prob, ctx.scalar(0.0)])
    return ctx.op("Neg", [ctx.reduce("ReduceSum", picked, [axis], keepdims=False)])


@_register("PSNR", layout=Layout.KERAS, cases=[
    Case("ops_nn_psnr", lambda: (lambda a, b: keras.ops.psnr(keras.ops.sigmoid(a), keras.ops.sigmoid(b), 1.0)),
         ((4, 3), (4, 3))),
])
def psnr(ctx, op, x1, x2):
    """``20 log10(max_val) - 10 log10(mse)``, the mean over every element (batch included)."""
    difference = ctx.op("Sub", [x1, x2])
    mse = ctx.reduce("ReduceMean", ctx.op("Mul", [difference, difference]), None, keepdims=False)
    log_mse = ctx.op("Div", [ctx.op("Log", [mse]), ctx.scalar(math.log(10.0))])
    return ctx.op("Sub", [ctx.scalar(20.0 * math.log10(op.max_val)), ctx.op("Mul", [log_mse, ctx.scalar(10.0)])])


# ---- convolutions ------------------------------------------------------------------------------
def _kernel(ctx, kernel, depthwise=False):
    """A Keras conv kernel argument in ONNX layout: ``(out, in/groups, *k)`` (depthwise: grouped)."""
    arr = constant_array(kernel)
    if arr is not None:
        return ctx.const((depthwise_to_onnx if depthwise else channels_to_front)(arr), ctx.out_dtype(), name="kernel")
    kt = keras_tensor_of(ctx, kernel)
    rank = len(kt.shape) - 2
    if not depthwise:  # (*k, a, b) -> (b, a, *k)
        return ctx.fetch(kt, (rank + 1, rank, *range(rank)))
    # (*k, channels, multiplier) -> (channels, multiplier, *k) -> (channels * multiplier, 1, *k)
    grouped = ctx.fetch(kt, (rank, rank + 1, *range(rank)))
    return ctx.op("Reshape", [grouped, ctx.int64s([-1, 1] + [0] * rank)])


def _conv_attrs(ctx, op, kernel_shape) -> dict:
    rank = len(kernel_shape) - 2
    return window_attrs(ctx, op, kernel_shape[:rank], per_axis(op.strides, rank), per_axis(op.dilation_rate, rank))


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


_CONV_CASES = [
    Case("ops_nn_conv2d", lambda: (lambda x: keras.ops.conv(x, _rand(3, 3, 3, 4))), ((7, 6, 3),)),
    Case("ops_nn_conv2d_same_stride2", lambda: (lambda x: keras.ops.conv(x, _rand(3, 2, 3, 4), 2, "same")),
         ((7, 6, 3),)),
    Case("ops_nn_conv2d_dilated",
         lambda: (lambda x: keras.ops.conv(x, _rand(3, 3, 4, 2), padding="same", dilation_rate=2)), ((7, 6, 4),)),
    Case("ops_nn_conv2d_channels_first",
         lambda: (lambda x: keras.ops.conv(x, _rand(3, 3, 3, 4), (1, 2), "same", "channels_first")), ((3, 7, 6),)),
    Case("ops_nn_conv2d_dynamic", lambda: (lambda x: keras.ops.conv(x, _rand(3, 3, 3, 2), 2, "same")),
         ((None, None, 3),)),
    Case("ops_nn_conv1d", lambda: (lambda x: keras.ops.conv(x, _rand(3, 2, 4), padding="same")), ((9, 2),)),
    Case("ops_nn_conv3d", lambda: (lambda x: keras.ops.conv(x, _rand(2, 2, 2, 2, 3), 2)), ((5, 4, 4, 2),)),
    Case("ops_nn_conv2d_tensor_kernel", lambda: (lambda x, k: keras.ops.conv(x, first_row(k), padding="same")),
         ((7, 6, 3), (3, 3, 3, 4))),
    Case("ops_nn_conv2d_variable_kernel",
         lambda: (lambda x: keras.ops.conv(x, keras.Variable(_rand(3, 3, 3, 4), name="k"))), ((7, 6, 3),)),
]


@_register("Conv", layout=Layout.CHANNELS_FIRST, cases=_CONV_CASES)
def conv(ctx, op, x, kernel):
    shape = arg_shape(ctx, kernel)
    attrs = {**_conv_attrs(ctx, op, shape), "group": channel_dim(ctx, op.data_format) // shape[-2]}
    return ctx.op("Conv", [x, _kernel(ctx, kernel)], attrs)


_DEPTHWISE_CASES = [
    Case("ops_nn_depthwise_conv2d", lambda: (lambda x: keras.ops.depthwise_conv(x, _rand(3, 3, 3, 2))), ((7, 6, 3),)),
    Case("ops_nn_depthwise_conv2d_same_stride2",
         lambda: (lambda x: keras.ops.depthwise_conv(x, _rand(3, 3, 3, 1), 2, "same")), ((7, 6, 3),)),
    Case("ops_nn_depthwise_conv1d_channels_first",
         lambda: (lambda x: keras.ops.depthwise_conv(x, _rand(3, 2, 2), 1, "same", "channels_first")), ((2, 9),)),
    Case("ops_nn_depthwise_conv2d_tensor_kernel",
         lambda: (lambda x, k: keras.ops.depthwise_conv(x, first_row(k), dilation_rate=2)), ((7, 6, 3), (2, 2, 3, 2))),
]


@_register("DepthwiseConv", layout=Layout.CHANNELS_FIRST, cases=_DEPTHWISE_CASES)
def depthwise_conv(ctx, op, x, kernel):
    attrs = {**_conv_attrs(ctx, op, arg_shape(ctx, kernel)), "group": channel_dim(ctx, op.data_format)}
    return ctx.op("Conv", [x, _kernel(ctx, kernel, depthwise=True)], attrs)


@_register("SeparableConv", layout=Layout.CHANNELS_FIRST, cases=[
    Case("ops_nn_separable_conv2d",
         lambda: (lambda x: keras.ops.separable_conv(x, _rand(3, 3, 3, 2), _rand(1, 1, 6, 4), padding="same")),
         ((7, 6, 3),)),
    Case("ops_nn_separable_conv1d_stride2",
         lambda: (lambda x: keras.ops.separable_conv(x, _rand(3, 2, 1), _rand(1, 2, 3), strides=2)), ((9, 2),)),
    Case("ops_nn_separable_conv2d_tensor_kernels", lambda: (lambda x, d, p: keras.ops.separable_conv(
        x, first_row(d), first_row(p), dilation_rate=2)), ((7, 6, 3), (2, 2, 3, 1), (1, 1, 3, 5))),
])
def separable_conv(ctx, op, x, depthwise_kernel, pointwise_kernel):
    y = depthwise_conv(ctx, op, x, depthwise_kernel)
    pointwise = _kernel(ctx, pointwise_kernel)
    return ctx.op("Conv", [y, pointwise], {"kernel_shape": [1] * (len(ctx.in_shape()) - 2)})


@_register("ConvTranspose", layout=Layout.CHANNELS_FIRST, cases=[
    # Keras 3.15's ConvTranspose.call swaps padding and output_padding: the cases run it in a layer.
    Case("ops_nn_conv_transpose2d", in_layer(lambda x: keras.ops.conv_transpose(x, _rand(3, 3, 4, 3))), ((5, 4, 3),)),
    Case("ops_nn_conv_transpose2d_same_stride2",
         in_layer(lambda x: keras.ops.conv_transpose(x, _rand(3, 3, 4, 3), 2, "same")), ((5, 4, 3),)),
    Case("ops_nn_conv_transpose2d_output_padding",
         in_layer(lambda x: keras.ops.conv_transpose(x, _rand(3, 3, 2, 3), 2, output_padding=1)), ((5, 4, 3),)),
    Case("ops_nn_conv_transpose1d_channels_first", in_layer(lambda x: keras.ops.conv_transpose(
        x, _rand(3, 2, 3), 2, "same", data_format="channels_first")), ((3, 7),)),
    Case("ops_nn_conv_transpose2d_tensor_kernel", in_layer(lambda x, k: keras.ops.conv_transpose(
        x, first_row(k), (2, 1), dilation_rate=(1, 2))), ((5, 4, 3), (2, 3, 2, 3))),
])
def conv_transpose(ctx, op, x, kernel):
    shape = arg_shape(ctx, kernel)
    rank = len(shape) - 2
    output_padding = None if op.output_padding is None else per_axis(op.output_padding, rank)
    geometry = SimpleNamespace(kernel_size=shape[:rank], strides=per_axis(op.strides, rank), padding=op.padding,
                               dilation_rate=per_axis(op.dilation_rate, rank), output_padding=output_padding)
    return ctx.op("ConvTranspose", [x, _kernel(ctx, kernel)], transpose_attrs(geometry))


# ---- pooling -----------------------------------------------------------------------------------
def _pool_attrs(ctx, op) -> dict:
    rank = len(ctx.in_shape()) - 2
    pool = per_axis(op.pool_size, rank)
    return window_attrs(ctx, op, pool, pool if op.strides is None else per_axis(op.strides, rank))


def _pool_cases(name):
    fn = lazy_op(keras.ops, name)
    return [
        Case(f"ops_nn_{name}2d", lambda: (lambda x: fn(x, 2, 2)), ((7, 6, 3),)),
        Case(f"ops_nn_{name}2d_same_stride1", lambda: (lambda x: fn(x, 3, 1, "same")), ((7, 6, 3),)),
        Case(f"ops_nn_{name}2d_same_stride2", lambda: (lambda x: fn(x, (3, 2), 2, "same")), ((7, 6, 3),)),
        Case(f"ops_nn_{name}1d_channels_first", lambda: (lambda x: fn(x, 3, 2, "same", "channels_first")),
             ((3, 8),)),
        Case(f"ops_nn_{name}3d", lambda: (lambda x: fn(x, 2, (2, 1, 2))), ((4, 4, 5, 2),)),
        Case(f"ops_nn_{name}2d_dynamic", lambda: (lambda x: fn(x, 3, 2, "same")), ((None, None, 3),)),
    ]


@_register("MaxPool", layout=Layout.CHANNELS_FIRST, cases=_pool_cases("max_pool"))
def max_pool(ctx, op, x):
    return ctx.op("MaxPool", [x], _pool_attrs(ctx, op))


@_register("AveragePool", layout=Layout.CHANNELS_FIRST, cases=_pool_cases("average_pool"))
def average_pool(ctx, op, x):
    # Keras' 'same' average pooling divides by the number of real (unpadded) inputs.
    return ctx.op("AveragePool", [x], {**_pool_attrs(ctx, op), "count_include_pad": 0})


def _adaptive_axis(ctx, op_type, x, axis, in_size, out_size, rank):
    """Keras' adaptive pooling along stored ``axis``: pool with the small and the big window at
    stride 1, concatenate, gather each output window."""
    small = math.ceil(in_size / out_size)
    starts = [math.floor(i * in_size / out_size) for i in range(out_size)]
    sizes = [math.ceil((i + 1) * in_size / out_size) - s for i, s in enumerate(starts)]
    small_count = in_size - small + 1
    indices = [s + small_count if n == small + 1 else s for s, n in zip(starts, sizes)]
    pools = []
    for window in (small, small + 1) if small < in_size else (small,):
        kernel = [1] * rank
        kernel[axis - 2] = window
        pools.append(ctx.op(op_type, [x], {"kernel_shape": kernel}))
    combined = pools[0] if len(pools) == 1 else ctx.op("Concat", pools, {"axis": axis})
    return ctx.op("Gather", [combined, ctx.int64s(indices)], {"axis": axis})


def _adaptive_pool(ctx, op, op_type, x):
    rank = len(ctx.in_shape()) - 2
    in_dims = ctx.in_shape()[2:] if op.data_format == "channels_first" else ctx.in_shape()[1:-1]
    if None in in_dims:
        raise ctx.unsupported(f"adaptive pooling needs static spatial dims, got {tuple(in_dims)}")
    for i, (size, out) in enumerate(zip(in_dims, per_axis(op.output_size, rank))):
        x = _adaptive_axis(ctx, op_type, x, 2 + i, size, out, rank)
    return x


def _adaptive_cases(name):
    fn = lazy_op(keras.ops, name)
    return [
        # channels_first only: Keras 3.15 infers a wrong output shape for channels_last inputs.
        Case(f"ops_nn_{name}2d", lambda: (lambda x: fn(x, (3, 4), "channels_first")), ((2, 7, 9),)),
        Case(f"ops_nn_{name}2d_up", lambda: (lambda x: fn(x, (5, 6), "channels_first")), ((2, 3, 4),)),
        Case(f"ops_nn_{name}1d", lambda: (lambda x: fn(x, (4,), "channels_first")), ((2, 10),)),
        Case(f"ops_nn_{name}3d", lambda: (lambda x: fn(x, (2, 3, 1), "channels_first")), ((2, 5, 6, 4),)),
    ]


@_register("AdaptiveMaxPool", layout=Layout.CHANNELS_FIRST, cases=_adaptive_cases("adaptive_max_pool"))
def adaptive_max_pool(ctx, op, x):
    return _adaptive_pool(ctx, op, "MaxPool", x)


@_register("AdaptiveAveragePool", layout=Layout.CHANNELS_FIRST, cases=_adaptive_cases("adaptive_average_pool"))
def adaptive_average_pool(ctx, op, x):
    return _adaptive_pool(ctx, op, "AveragePool", x)


# ---- normalization -----------------------------------------------------------------------------
def _compute_dtype(ctx, x):
    """Keras normalizes half-precision inputs in float32: (x, its compute dtype, cast-back function)."""
    if str(ctx.in_dtype()) not in ("float16", "bfloat16"):
        return x, ctx.out_dtype(), (lambda y: y)
    return ctx.cast(x, "float32"), "float32", (lambda y: ctx.cast(y, ctx.out_dtype()))


def _dims(shape) -> list[int]:
    return [-1 if d is None else int(d) for d in shape]


def _param(ctx, p, keras_shape, dtype):
    """A parameter argument broadcastable against the stored input: a constant reshaped to the
    full-rank ``keras_shape`` and permuted like the input; a tensor (the driver then gives the input in
    Keras layout unless the tensor has full rank) reshaped to ``keras_shape``."""
    if p is None:
        return None
    arr = constant_array(p)
    if arr is not None:
        return ctx.const(stored_array(ctx, np.reshape(arr, _dims(keras_shape))), dtype)
    if len(arg_shape(ctx, p)) != len(keras_shape):
        p = ctx.op("Reshape", [p, ctx.int64s(_dims(keras_shape))])
    return as_value(ctx, p, dtype)


def _right_aligned(ctx, p, rank):
    shape = arg_shape(ctx, p)
    return None if shape is None else (1,) * (rank - len(shape)) + tuple(shape)


def _fusable(ctx, stored, rank, min_opset) -> bool:
    return ctx.opset >= min_opset and stored == list(range(rank - len(stored), rank))


def _fused_param(ctx, p, keras_shape, n_axes, dtype):
    """A parameter of a fused normalization over the trailing ``n_axes`` stored axes: a constant's
    trailing dims (its leading ones are 1), ones for None, a tensor already shaped like the trailing
    dims of ``keras_shape`` (it then broadcasts the same way); None for other tensors."""
    if p is None:
        return ctx.const(np.ones(()), dtype)
    arr = constant_array(p)
    if arr is not None:
        full = stored_array(ctx, np.reshape(arr, _dims(keras_shape)))
        return ctx.const(full.reshape(full.shape[full.ndim - n_axes:]), dtype)
    shape = tuple(arg_shape(ctx, p))
    fits = len(shape) <= n_axes and tuple(keras_shape[len(keras_shape) - len(shape):]) == shape
    return as_value(ctx, p, dtype) if fits else None


def _fused_norm(ctx, op_type, x, params, stored, epsilon):
    return ctx.op(op_type, [x, *params], {"axis": stored[0], "epsilon": float(epsilon)})


def _epsilon(op) -> float:
    return keras.config.epsilon() if op.epsilon is None else op.epsilon


def _bn_constants(axis=-1, channels=4, offset=True, scale=True):
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)
    beta = rng.normal(size=channels) if offset else None
    gamma = rng.uniform(0.5, 1.5, channels) if scale else None
    return lambda x: keras.ops.batch_normalization(x, mean, var, axis, beta, gamma, epsilon=1e-2)


def _bn_case(name, shapes, build, **kw):
    return Case(f"ops_nn_batch_normalization{name}", build, shapes, **kw)


@_register("BatchNorm", cases=[
    _bn_case("", ((3, 4),), lambda: _bn_constants()),
    _bn_case("_axis1_no_offset", ((4, 3),), lambda: _bn_constants(axis=1, offset=False)),
    _bn_case("_plain", ((5, 4),), lambda: _bn_constants(offset=False, scale=False)),  # offset alone fails in Keras
    _bn_case("_cf", _IMAGE, _after_conv(_bn_constants())),
    _bn_case("_tensors", ((5, 4), (4,), (4,)), lambda: (lambda x, m, v: keras.ops.batch_normalization(
        x, first_row(m), keras.ops.softplus(first_row(v)), axis=-1, scale=first_row(m)))),
])
def batch_normalization(ctx, op, x, mean, variance, offset=None, scale=None):
    """``x * inv + (offset - mean * inv)`` with ``inv = scale / sqrt(variance + epsilon)``; folded to two
    constants when the statistics are constants."""
    rank = len(ctx.in_shape())
    shape = [1] * rank
    shape[op.axis % rank] = ctx.in_shape()[op.axis]
    params = (mean, variance, offset, scale)
    if all(p is None or constant_array(p) is not None for p in params):
        m, v, o, s = (None if p is None else constant_array(p).astype(np.float64) for p in params)
        inv = (1.0 if s is None else s) / np.sqrt(v + op.epsilon)
        shift = (0.0 if o is None else o) - m * inv
        return scale_and_shift(ctx, x, _param(ctx, inv, shape, ctx.out_dtype()),
                               _param(ctx, shift, shape, ctx.out_dtype()))
    mean, variance, offset, scale = (_param(ctx, p, shape, ctx.out_dtype()) for p in params)
    inv = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(op.epsilon)])])])
    if scale is not None:
        inv = ctx.op("Mul", [inv, scale])
    shift = ctx.op("Neg", [ctx.op("Mul", [mean, inv])])
    return scale_and_shift(ctx, x, inv, shift if offset is None else ctx.op("Add", [shift, offset]))


@_register("Moments", cases=[
    Case("ops_nn_moments", lambda: (lambda x: keras.ops.moments(x, axes=[1])), ((5, 3),)),
    Case("ops_nn_moments_keepdims", lambda: (lambda x: keras.ops.moments(x, axes=[1, 2], keepdims=True)),
         ((4, 3, 2),)),
    Case("ops_nn_moments_batch", lambda: (lambda x: keras.ops.moments(x, axes=[0, 2])), ((3, 4),)),
    Case("ops_nn_moments_cf", _after_conv(lambda y: keras.ops.moments(y, axes=(1, 2), keepdims=True)), _IMAGE),
    Case("ops_nn_moments_float16", lambda: (lambda x: keras.ops.moments(x, axes=[-1])), ((6,),),
         dtypes=("float16",), atol=1e-2),
])
def moments(ctx, op, x):
    rank = len(ctx.in_shape())
    axes = stored_axes(ctx, keras_axes(op.axes, rank), rank)
    x, _, restore = _compute_dtype(ctx, x)
    mean = ctx.reduce("ReduceMean", x, axes, keepdims=True)
    centered = ctx.op("Sub", [x, mean])
    variance = ctx.reduce("ReduceMean", ctx.op("Mul", [centered, centered]), axes, keepdims=True)
    if not op.keepdims:  # the driver gave the input in Keras layout (the rank changes)
        mean, variance = (ctx.op("Squeeze", [v, ctx.int64s(axes)]) for v in (mean, variance))
    return restore(mean), restore(variance)


@_register("Normalize", cases=[
    _unary_case("normalize", lambda x: keras.ops.normalize(x)),
    _unary_case("normalize_axes", lambda x: keras.ops.normalize(x, axis=(1, 2)), shape=(3, 4, 2)),
    _unary_case("normalize_all", lambda x: keras.ops.normalize(x, axis=None)),
    _unary_case("normalize_order1", lambda x: keras.ops.normalize(x, axis=1, order=1, epsilon=1e-3)),
    _unary_case("normalize_order3", lambda x: keras.ops.normalize(x, order=3)),
    Case("ops_nn_normalize_cf", _after_conv(lambda y: keras.ops.normalize(y, axis=-1)), _IMAGE),
])
def normalize(ctx, op, x):
    rank = len(ctx.in_shape())
    axes = None if op.axis is None else stored_axes(ctx, keras_axes(op.axis, rank), rank)
    if op.order == 2:
        return l2_normalize(ctx, x, axes, _epsilon(op))
    if axes is None or len(axes) != 1:  # numpy computes matrix norms there
        raise ctx.unsupported(f"normalize(order={op.order}) is only converted along one axis")
    if op.order == 1:
        norm = ctx.reduce("ReduceL1", x, axes, keepdims=True)
    else:
        powered = ctx.op("Pow", [ctx.op("Abs", [x]), ctx.scalar(float(op.order))])
        norm = ctx.op("Pow", [ctx.reduce("ReduceSum", powered, axes, keepdims=True), ctx.scalar(1.0 / op.order)])
    return ctx.op("Div", [x, ctx.op("Max", [norm, ctx.scalar(_epsilon(op))])])


def _rms_cases():
    scale = lambda: np.random.default_rng(2).uniform(0.5, 1.5, 6).astype("float32")  # noqa: E731
    rms = lazy_op(keras.ops, "rms_normalization")
    return [
        _unary_case("rms_normalization", lambda x: rms(x, scale()), shape=(3, 6)),
        _unary_case("rms_normalization_opset13", lambda x: rms(x, scale()), shape=(3, 6), min_opset=13),
        _unary_case("rms_normalization_no_scale", lambda x: rms(x, axis=(1, 2)), shape=(3, 6)),
        _unary_case("rms_normalization_axis1", lambda x: rms(x, scale()[:3].reshape(3, 1), axis=1, epsilon=1e-3),
                    shape=(3, 6)),
        Case("ops_nn_rms_normalization_tensor_scale", lambda: (lambda x, s: rms(x, first_row(s))), ((3, 6), (6,))),
        Case("ops_nn_rms_normalization_cf", _after_conv(lambda y: rms(y, scale()[:4])), _IMAGE),
        _unary_case("rms_normalization_float16", lambda x: rms(x), shape=(6,), dtypes=("float16",), atol=1e-2),
    ]


@_register("RMSNorm", cases=_rms_cases())
def rms_normalization(ctx, op, x, scale=None):
    scale = ctx.kwargs.get("scale", scale)
    rank = len(ctx.in_shape())
    stored = stored_axes(ctx, keras_axes(op.axis, rank), rank)
    x, dtype, restore = _compute_dtype(ctx, x)
    shape = _right_aligned(ctx, scale, rank)
    fused = _fused_param(ctx, scale, shape, len(stored), dtype) if _fusable(ctx, stored, rank, 23) else None
    if fused is not None:
        return restore(_fused_norm(ctx, "RMSNormalization", x, [fused], stored, _epsilon(op)))
    mean_square = ctx.reduce("ReduceMean", ctx.op("Mul", [x, x]), stored, keepdims=True)
    y = divide_by_std(ctx, x, mean_square, _epsilon(op))
    return restore(scale_and_shift(ctx, y, _param(ctx, scale, shape, dtype), None))


def _ln_param_shape(ctx, p, axes, rank):
    """Keras reshapes a parameter to the broadcast shape unless it has full rank or the only axis is
    the last one (then it broadcasts right-aligned)."""
    shape = arg_shape(ctx, p)
    if shape is None:
        return None
    if len(shape) != rank and axes != [rank - 1]:
        return tuple(broadcast_shape(ctx.in_shape(), axes))
    return _right_aligned(ctx, p, rank)


def _ln_cases():
    rng = np.random.default_rng(3)
    gamma, beta = rng.uniform(0.5, 1.5, 12).astype("float32"), rng.normal(size=12).astype("float32")
    ln = lazy_op(keras.ops, "layer_normalization")
    return [
        _unary_case("layer_normalization", lambda x: ln(x, gamma[:6], beta[:6]), shape=(3, 6)),
        _unary_case("layer_normalization_opset13", lambda x: ln(x, gamma[:6], beta[:6]), shape=(3, 6), min_opset=13),
        _unary_case("layer_normalization_plain", lambda x: ln(x, epsilon=1e-3), shape=(3, 6)),
        _unary_case("layer_normalization_beta_only", lambda x: ln(x, beta=beta[:6]), shape=(3, 6)),
        _unary_case("layer_normalization_axes", lambda x: ln(x, gamma, beta, axis=(1, 2)), shape=(3, 4)),
        _unary_case("layer_normalization_axis1", lambda x: ln(x, gamma[:3], axis=1), shape=(3, 4)),
        _unary_case("layer_normalization_rms_scaling", lambda x: ln(x, gamma[:4], beta[:4], rms_scaling=True),
                    shape=(3, 4)),
        Case("ops_nn_layer_normalization_tensors", lambda: (lambda x, g, b: ln(x, first_row(g), first_row(b))),
             ((3, 5), (5,), (5,))),
        Case("ops_nn_layer_normalization_tensors_axes", lambda: (lambda x, g: ln(x, first_row(g), axis=(1, 2))),
             ((3, 5), (15,))),
        Case("ops_nn_layer_normalization_cf", _after_conv(lambda y: ln(y, gamma[:4], beta[:4])), _IMAGE),
        Case("ops_nn_layer_normalization_cf_all", _after_conv(lambda y: ln(y, axis=(1, 2, 3))), _IMAGE),
    ]


def _fused_layer_norm(ctx, x, gamma, beta, shapes, stored, dtype, epsilon):
    """ONNX LayerNormalization, or None when a tensor parameter does not broadcast into it."""
    scale = _fused_param(ctx, gamma, shapes[0], len(stored), dtype)
    bias = None if beta is None else _fused_param(ctx, beta, shapes[1], len(stored), dtype)
    if scale is None or (beta is not None and bias is None):
        return None
    return _fused_norm(ctx, "LayerNormalization", x, [scale] + ([bias] if bias is not None else []), stored, epsilon)


@_register("LayerNorm", cases=_ln_cases())
def layer_normalization(ctx, op, x, gamma=None, beta=None):
    rank = len(ctx.in_shape())
    axes = keras_axes(op.axis, rank)
    stored = stored_axes(ctx, axes, rank)
    x, dtype, restore = _compute_dtype(ctx, x)
    shapes = _ln_param_shape(ctx, gamma, axes, rank), _ln_param_shape(ctx, beta, axes, rank)
    if not op.rms_scaling and _fusable(ctx, stored, rank, 17):
        fused = _fused_layer_norm(ctx, x, gamma, beta, shapes, stored, dtype, _epsilon(op))
        if fused is not None:
            return restore(fused)
    # rms_scaling (deprecated in Keras) divides x itself by the standard deviation and drops beta.
    centered, variance = mean_and_variance(ctx, x, stored)
    y = divide_by_std(ctx, x if op.rms_scaling else centered, variance, _epsilon(op))
    beta = None if op.rms_scaling else _param(ctx, beta, shapes[1], dtype)
    return restore(scale_and_shift(ctx, y, _param(ctx, gamma, shapes[0], dtype), beta))


# ---- depth/space rearrangement -----------------------------------------------------------------
@_register("DepthToSpace", layout=Layout.CHANNELS_FIRST, cases=[
    Case("ops_nn_depth_to_space", lambda: (lambda x: keras.ops.depth_to_space(x, 2)), ((3, 4, 8),)),
    Case("ops_nn_depth_to_space_channels_first",
         lambda: (lambda x: keras.ops.depth_to_space(x, 2, data_format="channels_first")), ((8, 3, 4),)),
    Case("ops_nn_depth_to_space_dynamic", lambda: (lambda x: keras.ops.depth_to_space(x, 3)), ((None, None, 9),)),
])
def depth_to_space(ctx, op, x):
    # Keras' channels_last order is ONNX DCR; its channels_first order is CRD.
    mode = "CRD" if op.data_format == "channels_first" else "DCR"
    return ctx.op("DepthToSpace", [x], {"blocksize": op.block_size, "mode": mode})


@_register("SpaceToDepth", layout=Layout.CHANNELS_FIRST, cases=[
    Case("ops_nn_space_to_depth", lambda: (lambda x: keras.ops.space_to_depth(x, 2)), ((4, 6, 3),)),
    Case("ops_nn_space_to_depth_channels_first",
         lambda: (lambda x: keras.ops.space_to_depth(x, 2, data_format="channels_first")), ((3, 4, 6),)),
    Case("ops_nn_space_to_depth_dynamic", lambda: (lambda x: keras.ops.space_to_depth(x, 2)), ((None, None, 2),)),
])
def space_to_depth(ctx, op, x):
    y = ctx.op("SpaceToDepth", [x], {"blocksize": op.block_size})  # channels (block_h, block_w, c)
    if op.data_format != "channels_first":
        return y
    # Keras' channels_first order is (c, block_h, block_w).
    channels = ctx.in_shape()[1]
    if channels is None:
        raise ctx.unsupported("channels_first space_to_depth needs a static channel dim")
    split = ctx.op("Reshape", [y, ctx.int64s([0, op.block_size ** 2, channels, -1])])
    swapped = ctx.op("Transpose", [split], {"perm": [0, 2, 1, 3]})
    return ctx.op("Reshape", [swapped, ctx.op("Shape", [y])])


# ---- unfold / fold (torch-style im2col on NCHW tensors) ----------------------------------------
def _identity_patch_kernel(channels: int, kernel) -> np.ndarray:
    """(channels * kh * kw, 1, kh, kw) one-hot kernel: output channel c*kh*kw + i*kw + j picks (i, j)."""
    size = int(np.prod(kernel))
    eye = np.eye(size).reshape(size, 1, *kernel)
    return np.tile(eye, (channels, 1, 1, 1))


def _patch_attrs(op, channels) -> dict:
    pads = per_axis(op.padding, 2)
    return {"kernel_shape": list(per_axis(op.kernel_size, 2)), "strides": list(per_axis(op.stride, 2)),
            "dilations": list(per_axis(op.dilation, 2)), "pads": [*pads, *pads], "group": channels}


@_register("Unfold", layout=Layout.KERAS, cases=[
    Case("ops_nn_unfold", lambda: (lambda x: keras.ops.unfold(x, 2)), ((3, 6, 5),)),
    Case("ops_nn_unfold_padded", lambda: (lambda x: keras.ops.unfold(x, (3, 2), dilation=(1, 2), padding=1,
                                                                      stride=2)), ((2, 7, 6),)),
])
def unfold(ctx, op, x):
    channels = ctx.in_shape()[1]
    kernel = ctx.const(_identity_patch_kernel(channels, per_axis(op.kernel_size, 2)), ctx.out_dtype(), name="patches")
    patches = ctx.op("Conv", [x, kernel], _patch_attrs(op, channels))
    return ctx.op("Reshape", [patches, ctx.int64s([0, 0, -1])])


@_register("Fold", layout=Layout.KERAS, cases=[
    Case("ops_nn_fold", lambda: (lambda x: keras.ops.fold(x, (6, 4), 2, stride=2)), ((12, 6),)),
    Case("ops_nn_fold_overlapping", lambda: (lambda x: keras.ops.fold(x, (5, 6), (2, 3), padding=1, stride=2)),
         ((12, 9),)),
])
def fold(ctx, op, x):
    kernel_size, stride = per_axis(op.kernel_size, 2), per_axis(op.stride, 2)
    dilation, padding = per_axis(op.dilation, 2), per_axis(op.padding, 2)
    channels = ctx.in_shape()[1] // int(np.prod(kernel_size))
    out_size = per_axis(op.output_size, 2)
    blocks = [(o + 2 * p - d * (k - 1) - 1) // s + 1
              for o, p, d, k, s in zip(out_size, padding, dilation, kernel_size, stride)]
    grid = ctx.op("Reshape", [x, ctx.int64s([0, 0, *blocks])])
    covered = [(n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(blocks, stride, dilation, kernel_size)]
    attrs = {**_patch_attrs(op, channels),
             "output_padding": [o + 2 * p - c for o, p, c in zip(out_size, padding, covered)]}
    kernel = ctx.const(_identity_patch_kernel(channels, kernel_size), ctx.out_dtype(), name="patches")
    return ctx.op("ConvTranspose", [grid, kernel], attrs)



refuse_ops("nn", "CTCLoss", reason="a training loss, not an inference op")
refuse_ops("nn", "CTCDecode", reason="CTC decoding has no ONNX operator: decode the model's output outside the model")
refuse_ops("nn", "Polar", reason="its output is a complex tensor, which onnxruntime cannot compute with")
