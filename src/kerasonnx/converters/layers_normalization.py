"""Normalization layers: BatchNormalization, LayerNormalization, RMSNormalization, GroupNormalization,
UnitNormalization.

All are layout-agnostic: Keras axes are mapped to the stored tensor with ``ctx.axis`` and constants
are built in Keras' layout then permuted like the input (``stored_array``). The small helpers here
(``as_dtype``, ``stored_axes``, ``l2_normalize``...) are shared with the activation/merging modules.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import layers

from ..core import layout as L
from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN

register = BUILTIN.register


# ---- shared helpers ---------------------------------------------------------------------------
def as_dtype(ctx, x, i: int = 0):
    """Input ``i`` (value ``x``) cast to the output dtype, as ``Layer.__call__`` autocasts it.

    Uses the Keras dtypes: values made by ONNX nodes carry no dtype during conversion.
    """
    if str(ctx.in_dtype(i)) == str(ctx.out_dtype()):
        return x
    return ctx.cast(x, ctx.out_dtype())


def keras_axes(axis, rank: int) -> list[int]:
    """Keras ``axis`` (int or list, negatives allowed) as sorted non-negative axes."""
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return sorted({int(a) % rank for a in axes})


def stored_axes(ctx, axes, rank: int) -> list[int]:
    """Keras ``axes`` of the current input mapped to the stored tensor, sorted."""
    return sorted(ctx.axis(a, rank) for a in axes)


def current_perm(ctx, rank: int) -> L.Perm:
    return tuple(ctx.perm) if len(ctx.perm or ()) == rank else L.identity(rank)


def stored_array(ctx, array: np.ndarray) -> np.ndarray:
    """A full-rank array in Keras' layout, transposed the way the current input is stored."""
    return np.transpose(array, current_perm(ctx, array.ndim))


def broadcast_shape(in_shape, axes) -> list[int]:
    """Keras' broadcast shape for a parameter spanning ``axes``: sizes there, 1 elsewhere."""
    return [in_shape[i] if i in axes else 1 for i in range(len(in_shape))]


def to_numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def mean_and_variance(ctx, x, axes):
    """``(x - mean, variance)`` over stored ``axes`` (kept as size-1 dims)."""
    mean = ctx.reduce("ReduceMean", x, axes, keepdims=True)
    centered = ctx.op("Sub", [x, mean])
    variance = ctx.reduce("ReduceMean", ctx.op("Mul", [centered, centered]), axes, keepdims=True)
    return centered, variance


def divide_by_std(ctx, numerator, variance, epsilon: float):
    """``numerator / sqrt(variance + epsilon)``."""
    std = ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(epsilon)])])
    return ctx.op("Div", [numerator, std])


def l2_normalize(ctx, x, axes, epsilon: float):
    """Keras ``ops.normalize(order=2)``: ``x * min(rsqrt(sum(x**2)), 1 / epsilon)`` over ``axes``."""
    square_sum = ctx.reduce("ReduceSumSquare", x, axes, keepdims=True)
    inv_norm = ctx.op("Reciprocal", [ctx.op("Sqrt", [square_sum])])
    inv_norm = ctx.op("Min", [inv_norm, ctx.scalar(1.0 / epsilon)])
    return ctx.op("Mul", [x, inv_norm])


def scale_and_shift(ctx, y, scale, shift):
    """``y * scale + shift`` (either may be None): a Mul then an Add, tensor first."""
    if scale is not None:
        y = ctx.op("Mul", [y, scale])
    if shift is not None:
        y = ctx.op("Add", [y, shift])
    return y


_INITIALIZERS = {
    "beta": "random_normal", "gamma": keras.initializers.RandomUniform(0.5, 1.5),
    "moving_mean": "random_normal", "moving_variance": keras.initializers.RandomUniform(0.5, 2.0),
}


def _random_init(params, **kwargs) -> dict:
    """Layer kwargs with non-trivial initial ``params`` so that test cases exercise every weight."""
    return {**{f"{p}_initializer": _INITIALIZERS[p] for p in params}, **kwargs}


def _bn(**kw):
    return layers.BatchNormalization(**_random_init(_INITIALIZERS, **kw))


def after_conv2d(layer_fn, filters: int = 4, conv_activation=None):
    """A case build: ``layer_fn()`` applied after a Conv2D, whose output is stored channels-first."""
    return lambda: (lambda x: layer_fn()(layers.Conv2D(filters, 3, activation=conv_activation)(x)))


_IMAGE = ((5, 5, 3),)  # Conv2D(.., 3) gives (3, 3, filters)


# ---- BatchNormalization -----------------------------------------------------------------------
def _bn_scale_shift(op) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNormalization as ``x * scale + shift`` (float64 per-channel vectors)."""
    scale = 1.0 / np.sqrt(to_numpy(op.moving_variance) + op.epsilon)
    if op.scale:
        scale = scale * to_numpy(op.gamma)
    shift = -to_numpy(op.moving_mean) * scale
    if op.center:
        shift = shift + to_numpy(op.beta)
    return scale, shift


@register(layers.BatchNormalization, layout=Layout.ANY, cases=[
    Case("batchnorm", lambda: _bn(), ((5,),)),
    Case("batchnorm_image", lambda: _bn(), ((4, 4, 3),)),
    Case("batchnorm_axis1", lambda: _bn(axis=1), ((3, 4, 2),)),
    Case("batchnorm_no_center_scale", lambda: _bn(center=False, scale=False, epsilon=0.1), ((3, 4),)),
    Case("batchnorm_no_scale", lambda: _bn(scale=False), ((3, 4),)),
    Case("batchnorm_float64", lambda: _bn(dtype="float64"), ((2, 3),), dtypes=("float64",)),
    # Dense -> Mul -> Add folds into the Gemm (passes/fold_affine.py). The tanh keeps the folded value
    # off the graph outputs: fold_affine does not yet give a graph output it rewires its type.
    Case("batchnorm_after_dense", lambda: (lambda x: layers.Activation("tanh")(_bn()(layers.Dense(3)(x)))),
         ((4,),)),
    Case("batchnorm_cf_folded", after_conv2d(_bn), _IMAGE),
    Case("batchnorm_cf", after_conv2d(_bn, conv_activation="relu"), _IMAGE),
    Case("batchnorm_cf_axis2", after_conv2d(lambda: _bn(axis=2, center=False)), _IMAGE),
])
def batch_normalization(ctx, op, x):
    scale, shift = _bn_scale_shift(op)
    x = as_dtype(ctx, x)
    return scale_and_shift(ctx, x, ctx.channel_const(scale, op.axis, name="scale"),
                           ctx.channel_const(shift, op.axis, name="shift"))


# ---- LayerNormalization / RMSNormalization ----------------------------------------------------
def _norm_param(ctx, variable, keras_shape, fused_axes: int = 0):
    """A weight reshaped to the full-rank ``keras_shape`` and permuted like the input; for a fused op
    (normalizing the trailing ``fused_axes`` stored axes) only those trailing dims are kept."""
    def transform(a):
        arr = stored_array(ctx, np.reshape(a, keras_shape))
        return np.reshape(arr, arr.shape[arr.ndim - fused_axes:]) if fused_axes else arr

    return None if variable is None else ctx.weight(variable, transform=transform)


def _fusable(ctx, stored, rank: int, min_opset: int) -> bool:
    """The fused op applies when the normalized axes are the trailing axes of the stored tensor."""
    return ctx.opset >= min_opset and stored == list(range(rank - len(stored), rank))


def _ones_param(ctx, in_shape, axes):
    """Unit scale for a fused op whose scale input is required."""
    shape = stored_array(ctx, np.ones(broadcast_shape(in_shape, axes))).shape
    return ctx.const(np.ones(shape[len(shape) - len(axes):]), ctx.out_dtype(), name="ones")


def _fused_layer_norm(ctx, op, x, axes, stored, in_shape):
    keras_shape = broadcast_shape(in_shape, axes)
    scale = (_norm_param(ctx, op.gamma, keras_shape, len(axes)) if op.scale
             else _ones_param(ctx, in_shape, axes))
    inputs = [x, scale] + ([_norm_param(ctx, op.beta, keras_shape, len(axes))] if op.center else [])
    return ctx.op("LayerNormalization", inputs, {"axis": stored[0], "epsilon": float(op.epsilon)})


def _decomposed_layer_norm(ctx, op, x, axes, stored, in_shape, rms_scaling):
    # rms_scaling (deprecated in Keras) divides x itself, not x - mean, by the standard deviation.
    centered, variance = mean_and_variance(ctx, x, stored)
    y = divide_by_std(ctx, x if rms_scaling else centered, variance, op.epsilon)
    keras_shape = broadcast_shape(in_shape, axes)
    gamma = _norm_param(ctx, op.gamma, keras_shape)
    beta = None if rms_scaling else _norm_param(ctx, op.beta, keras_shape)
    return scale_and_shift(ctx, y, gamma, beta)


def _ln(**kw):
    return layers.LayerNormalization(**_random_init(("beta", "gamma"), **kw))


def _rms(**kw):
    """RMSNormalization with a random scale (its initializer is fixed to ones)."""
    layer = _RMS_NORMALIZATION(**kw)

    def apply(x):
        y = layer(x)
        layer.scale.assign(np.random.default_rng(0).uniform(0.5, 1.5, layer.scale.shape))
        return y

    return apply


def _rms_scaled_ln():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _ln(rms_scaling=True)


@register(layers.LayerNormalization, layout=Layout.ANY, cases=[
    Case("layernorm", lambda: _ln(), ((6,),)),
    Case("layernorm_seq", lambda: _ln(epsilon=1e-5), ((3, 6),)),
    Case("layernorm_opset13", lambda: _ln(), ((3, 6),), min_opset=13),
    Case("layernorm_multi_axes", lambda: _ln(axis=[-2, -1]), ((2, 3, 4),)),
    Case("layernorm_multi_axes_opset13", lambda: _ln(axis=[2, 3]), ((2, 3, 4),), min_opset=13),
    Case("layernorm_middle_axis", lambda: _ln(axis=1), ((3, 4),)),
    Case("layernorm_split_axes", lambda: _ln(axis=[1, 3]), ((2, 3, 4),)),
    Case("layernorm_no_center", lambda: _ln(center=False), ((3, 5),)),
    Case("layernorm_no_scale", lambda: _ln(scale=False), ((3, 5),)),
    Case("layernorm_plain", lambda: _ln(center=False, scale=False), ((3, 5),)),
    Case("layernorm_plain_opset13", lambda: _ln(center=False, scale=False), ((3, 5),), min_opset=13),
    Case("layernorm_rms_scaling", _rms_scaled_ln, ((3, 5),)),
    Case("layernorm_float64", lambda: _ln(dtype="float64"), ((3, 5),), dtypes=("float64",)),
    Case("layernorm_cf", after_conv2d(_ln), _IMAGE),
    Case("layernorm_cf_all_axes", after_conv2d(lambda: _ln(axis=[1, 2, 3])), _IMAGE),
    Case("layernorm_cf_all_axes_opset13", after_conv2d(lambda: _ln(axis=[1, 2, 3])), _IMAGE, min_opset=13),
    Case("layernorm_cf_spatial", after_conv2d(lambda: _ln(axis=[1, 2], center=False)), _IMAGE),
])
def layer_normalization(ctx, op, x):
    in_shape = ctx.in_shape()
    rank = len(in_shape)
    axes = keras_axes(op.axis, rank)
    stored = stored_axes(ctx, axes, rank)
    rms_scaling = bool(getattr(op, "rms_scaling", False))
    x = as_dtype(ctx, x)
    if not rms_scaling and _fusable(ctx, stored, rank, 17):
        return _fused_layer_norm(ctx, op, x, axes, stored, in_shape)
    return _decomposed_layer_norm(ctx, op, x, axes, stored, in_shape, rms_scaling)


def rms_normalization(ctx, op, x):
    in_shape = ctx.in_shape()
    rank = len(in_shape)
    axes = keras_axes(op.axis, rank)
    stored = stored_axes(ctx, axes, rank)
    x = as_dtype(ctx, x)
    epsilon = keras.config.epsilon() if op.epsilon is None else op.epsilon
    # ops.rms_normalization multiplies by the scale with right-aligned broadcasting.
    scale_shape = (1,) * (rank - len(op.scale.shape)) + tuple(op.scale.shape)
    if _fusable(ctx, stored, rank, 23):
        scale = _norm_param(ctx, op.scale, scale_shape, len(axes))
        return ctx.op("RMSNormalization", [x, scale], {"axis": stored[0], "epsilon": float(epsilon)})
    mean_square = ctx.reduce("ReduceMean", ctx.op("Mul", [x, x]), stored, keepdims=True)
    y = divide_by_std(ctx, x, mean_square, epsilon)
    return ctx.op("Mul", [y, _norm_param(ctx, op.scale, scale_shape)])


_RMS_NORMALIZATION = getattr(layers, "RMSNormalization", None)  # added in Keras 3.9
if _RMS_NORMALIZATION is not None:
    register(_RMS_NORMALIZATION, layout=Layout.ANY, cases=[
        Case("rmsnorm", lambda: _rms(), ((6,),)),
        Case("rmsnorm_opset13", lambda: _rms(), ((3, 6),), min_opset=13),
        Case("rmsnorm_opset22", lambda: _rms(epsilon=1e-3), ((3, 6),), min_opset=22),
        Case("rmsnorm_multi_axes", lambda: _rms(axis=[2, 3]), ((2, 3, 4),)),
        Case("rmsnorm_cf", after_conv2d(lambda: _rms(axis=[1, 2, 3])), _IMAGE),
        Case("rmsnorm_cf_last", after_conv2d(_rms), _IMAGE),
    ])(rms_normalization)


# ---- GroupNormalization -----------------------------------------------------------------------
def _gn(**kw):
    return layers.GroupNormalization(**_random_init(("beta", "gamma"), **kw))


@register(layers.GroupNormalization, layout=Layout.ANY, cases=[
    Case("groupnorm", lambda: _gn(groups=2), ((3, 4),)),
    Case("groupnorm_image", lambda: _gn(groups=3, epsilon=1e-5), ((3, 4, 6),)),
    Case("groupnorm_dense", lambda: _gn(groups=2), ((6,),)),
    Case("groupnorm_instance", lambda: _gn(groups=-1), ((5, 3),)),
    Case("groupnorm_layer", lambda: _gn(groups=1, center=False), ((5, 4),)),
    Case("groupnorm_axis1", lambda: _gn(groups=2, axis=1, scale=False), ((4, 3, 2),)),
    Case("groupnorm_dynamic", lambda: _gn(groups=2, center=False), ((None, None, 4),)),
    Case("groupnorm_opset13", lambda: _gn(groups=2), ((3, 4),), min_opset=13),
    Case("groupnorm_cf", after_conv2d(lambda: _gn(groups=2)), _IMAGE),
    Case("groupnorm_cf_axis1", after_conv2d(lambda: _gn(groups=3, axis=1)), _IMAGE),
])
def group_normalization(ctx, op, x):
    x = as_dtype(ctx, x)
    channel = ctx.axis(op.axis)
    # [d0 .. d(c-1), groups, everything else]: every group's statistics are over axes 1..c-1 and c+1.
    grouped = ctx.op("Reshape", [x, ctx.int64s([0] * channel + [op.groups, -1])])
    centered, variance = mean_and_variance(ctx, grouped, [*range(1, channel), channel + 1])
    y = divide_by_std(ctx, centered, variance, op.epsilon)
    y = ctx.op("Reshape", [y, ctx.op("Shape", [x])])
    gamma = ctx.channel_const(to_numpy(op.gamma), op.axis, name="gamma") if op.scale else None
    beta = ctx.channel_const(to_numpy(op.beta), op.axis, name="beta") if op.center else None
    return scale_and_shift(ctx, y, gamma, beta)


# ---- UnitNormalization ------------------------------------------------------------------------
_UNIT_EPSILON = 1e-12  # UnitNormalization.call: ops.normalize(inputs, axis, order=2, epsilon=1e-12)


@register(layers.UnitNormalization, layout=Layout.ANY, cases=[
    Case("unitnorm", lambda: layers.UnitNormalization(), ((5,),)),
    Case("unitnorm_axis1", lambda: layers.UnitNormalization(axis=1), ((3, 4),)),
    Case("unitnorm_multi_axes", lambda: layers.UnitNormalization(axis=[1, 2]), ((3, 4, 2),)),
    Case("unitnorm_dynamic", lambda: layers.UnitNormalization(axis=[1, 2]), ((None, 3),)),
    Case("unitnorm_opset13", lambda: layers.UnitNormalization(axis=-1), ((3, 4),), min_opset=13),
    Case("unitnorm_cf", after_conv2d(layers.UnitNormalization), _IMAGE),
    Case("unitnorm_cf_axes", after_conv2d(lambda: layers.UnitNormalization(axis=[2, 3])), _IMAGE),
])
def unit_normalization(ctx, op, x):
    rank = len(ctx.in_shape())
    x = as_dtype(ctx, x)
    return l2_normalize(ctx, x, stored_axes(ctx, keras_axes(op.axis, rank), rank), _UNIT_EPSILON)
