"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, Cropping, ZeroPadding, UpSampling.

Cropping, ZeroPadding and UpSampling work channels-first (spatial axes are 2..rank-1 of the stored
tensor whatever the layer's ``data_format``), so a CNN needs no Transpose around them. The image
resampling helpers at the end are shared with the preprocessing layers (Resizing, CenterCrop).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..core import layout as L
from ..core.dtypes import to_numpy_dtype
from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN

register = BUILTIN.register

INT64_MAX = np.iinfo(np.int64).max


# ---- Flatten, Reshape, Permute, RepeatVector ------------------------------------------------------

@register(layers.Flatten, cases=[
    Case("flatten", lambda: layers.Flatten(), ((4, 3, 2),)),
    Case("flatten_rank2", lambda: layers.Flatten(), ((5,),)),
    Case("flatten_dynamic", lambda: layers.Flatten(), ((None, 3),)),
    Case("flatten_channels_first", lambda: layers.Flatten(data_format="channels_first"), ((3, 4, 2),)),
    Case("flatten_after_padding", lambda: (lambda x: layers.Flatten()(layers.ZeroPadding2D(1)(x))),
         ((3, 2, 4),)),
])
def flatten(ctx, op, x):
    rank = len(ctx.in_shape())
    if op.data_format == "channels_first" and rank > 2:
        # Keras moves channels last before flattening: fetch the input in that order directly.
        x = ctx.fetch(ctx.in_tensors[0], (0, *range(2, rank), 1))
    return ctx.op("Flatten", [x], {"axis": 1})


@register(layers.Reshape, cases=[
    Case("reshape", lambda: layers.Reshape((6, 4)), ((4, 3, 2),)),
    Case("reshape_infer", lambda: layers.Reshape((-1, 2)), ((4, 3, 2),)),
    Case("reshape_dynamic", lambda: layers.Reshape((-1, 2, 2)), ((None, 4),)),
])
def reshape(ctx, op, x):
    # Leading 0 copies the (dynamic) batch; at most one unknown dim remains and becomes -1.
    target = [0] + [-1 if d is None else d for d in ctx.out_shape()[1:]]
    return ctx.op("Reshape", [x, ctx.int64s(target)])


@register(layers.Permute, layout=Layout.ANY, cases=[
    Case("permute_2d", lambda: layers.Permute((2, 1)), ((3, 4),)),
    Case("permute_3d", lambda: layers.Permute((3, 1, 2)), ((2, 3, 4),)),
    Case("permute_after_padding", lambda: (lambda x: layers.Permute((3, 1, 2))(layers.ZeroPadding2D(1)(x))),
         ((3, 2, 4),)),
])
def permute(ctx, op, x):
    """No node at all: the output is the input value, stored with a different permutation.

    Stored input = transpose(keras_in, p); keras_out = transpose(keras_in, q), so the same value is
    transpose(keras_out, s) with s[k] = q.index(p[k]). Consumers get Transposes only where needed.
    """
    keras_perm = (0, *op.dims)
    ctx.out_perms = [L.compose(keras_perm, ctx.perm)]
    return x


@register(layers.RepeatVector, cases=[
    Case("repeat_vector", lambda: layers.RepeatVector(3), ((4,),)),
])
def repeat_vector(ctx, op, x):
    expanded = ctx.op("Unsqueeze", [x, ctx.int64s([1])])
    return ctx.op("Expand", [expanded, ctx.int64s([1, op.n, 1])])


# ---- Cropping / ZeroPadding (channels-first: spatial axes 2..) ------------------------------------

def _spatial_pairs(value, spatial_rank: int) -> list[tuple[int, int]]:
    """A layer's cropping/padding setting as one (before, after) pair per spatial axis."""
    if spatial_rank == 1:
        return [tuple(int(v) for v in value)]
    return [tuple(int(v) for v in pair) for pair in value]


def crop_spatial(ctx, x, pairs):
    """Slice ``before`` / ``after`` elements off each spatial axis (works with dynamic sizes)."""
    kept = [(axis, b, a) for axis, (b, a) in enumerate(pairs, start=2) if b or a]
    if not kept:
        return x
    starts = [b for _, b, _ in kept]
    ends = [-a if a else INT64_MAX for _, _, a in kept]
    axes = [axis for axis, _, _ in kept]
    return ctx.op("Slice", [x, ctx.int64s(starts), ctx.int64s(ends), ctx.int64s(axes)])


def pad_spatial(ctx, x, pairs, value=None):
    """Pad each spatial axis by (before, after); ``value`` is an optional scalar fill value."""
    if not any(b or a for b, a in pairs):
        return x
    pads = [0, 0, *(b for b, _ in pairs), 0, 0, *(a for _, a in pairs)]
    return ctx.op("Pad", [x, ctx.int64s(pads)] + ([value] if value is not None else []))


_CROPPING = [layers.Cropping1D, layers.Cropping2D, layers.Cropping3D]
_PADDING = [layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D]


@register(*_CROPPING, layout=Layout.CHANNELS_FIRST, cases=[
    Case("cropping1d", lambda: layers.Cropping1D((1, 2)), ((6, 3),)),
    Case("cropping1d_dynamic", lambda: layers.Cropping1D((2, 0)), ((None, 3),)),
    Case("cropping2d", lambda: layers.Cropping2D(((1, 2), (0, 1))), ((6, 5, 3),)),
    Case("cropping2d_channels_first",
         lambda: layers.Cropping2D(((0, 1), (2, 1)), data_format="channels_first"), ((3, 6, 5),)),
    Case("cropping2d_dynamic", lambda: layers.Cropping2D(((1, 2), (3, 0))), ((None, None, 2),)),
    Case("cropping3d", lambda: layers.Cropping3D(((1, 0), (0, 1), (1, 1))), ((4, 4, 4, 2),)),
    Case("cropping3d_channels_first", lambda: layers.Cropping3D(1, data_format="channels_first"),
         ((2, 4, 3, 5),)),
    Case("cropping2d_opset13", lambda: layers.Cropping2D(1), ((None, 5, 2),), min_opset=13),
])
def cropping(ctx, op, x):
    return crop_spatial(ctx, x, _spatial_pairs(op.cropping, len(ctx.in_shape()) - 2))


@register(*_PADDING, layout=Layout.CHANNELS_FIRST, cases=[
    Case("zero_padding1d", lambda: layers.ZeroPadding1D((1, 2)), ((4, 3),)),
    Case("zero_padding1d_channels_first", lambda: layers.ZeroPadding1D(2, data_format="channels_first"),
         ((3, 4),)),
    Case("zero_padding2d", lambda: layers.ZeroPadding2D(((1, 0), (2, 1))), ((3, 4, 2),)),
    Case("zero_padding2d_channels_first", lambda: layers.ZeroPadding2D(1, data_format="channels_first"),
         ((2, 3, 4),)),
    Case("zero_padding2d_dynamic", lambda: layers.ZeroPadding2D((2, 1)), ((None, None, 2),)),
    Case("zero_padding3d", lambda: layers.ZeroPadding3D(((1, 0), (0, 2), (1, 1))), ((2, 3, 2, 2),)),
    Case("zero_padding3d_channels_first", lambda: layers.ZeroPadding3D(1, data_format="channels_first"),
         ((2, 2, 3, 2),)),
    Case("zero_padding2d_opset13", lambda: layers.ZeroPadding2D(1), ((3, 4, 2),), min_opset=13),
    Case("padding_then_cropping", lambda: (lambda x: layers.Cropping2D(((0, 2), (1, 1)))(
        layers.ZeroPadding2D(2)(x))), ((3, 4, 2),)),
])
def zero_padding(ctx, op, x):
    return pad_spatial(ctx, x, _spatial_pairs(op.padding, len(ctx.in_shape()) - 2))


# ---- UpSampling -----------------------------------------------------------------------------------

def _sizes(value, spatial_rank: int) -> tuple[int, ...]:
    return (int(value),) if spatial_rank == 1 else tuple(int(v) for v in value)


def repeat_spatial(ctx, x, factors):
    """Repeat every element ``factors[i]`` times along spatial axis ``2 + i`` (Keras ops.repeat)."""
    if all(f == 1 for f in factors):
        return x
    return ctx.op("Resize", [x, None, _scales(ctx, factors)],
                  {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})


def _scales(ctx, factors):
    # Resize scales are float32 by definition of the ONNX operator, whatever the data type.
    return ctx.const(np.asarray([1.0, 1.0, *factors], dtype=np.float32))


def keras_spatial_shape(ctx, data_format: str = "channels_last") -> tuple:
    """Static spatial sizes (``None`` when dynamic) of the current input, in Keras axis order."""
    shape = ctx.in_shape()
    return tuple(shape[2:]) if data_format == "channels_first" else tuple(shape[1:-1])


@register(layers.UpSampling1D, layers.UpSampling3D, layout=Layout.CHANNELS_FIRST, cases=[
    Case("up_sampling1d", lambda: layers.UpSampling1D(3), ((4, 2),)),
    Case("up_sampling1d_dynamic", lambda: layers.UpSampling1D(2), ((None, 2),)),
    Case("up_sampling3d", lambda: layers.UpSampling3D((2, 1, 3)), ((2, 3, 2, 2),)),
    Case("up_sampling3d_channels_first", lambda: layers.UpSampling3D(2, data_format="channels_first"),
         ((2, 2, 3, 2),)),
])
def up_sampling_repeat(ctx, op, x):
    return repeat_spatial(ctx, x, _sizes(op.size, len(ctx.in_shape()) - 2))


@register(layers.UpSampling2D, layout=Layout.CHANNELS_FIRST, cases=[
    Case("up_sampling2d", lambda: layers.UpSampling2D(), ((3, 4, 2),)),
    Case("up_sampling2d_size23", lambda: layers.UpSampling2D((2, 3)), ((3, 4, 2),)),
    Case("up_sampling2d_channels_first", lambda: layers.UpSampling2D((3, 2), data_format="channels_first"),
         ((2, 3, 4),)),
    Case("up_sampling2d_bilinear", lambda: layers.UpSampling2D(interpolation="bilinear"), ((3, 4, 2),)),
    Case("up_sampling2d_bilinear_size23", lambda: layers.UpSampling2D((2, 3), interpolation="bilinear"),
         ((3, 4, 2),)),
    Case("up_sampling2d_bilinear_channels_first",
         lambda: layers.UpSampling2D((1, 3), data_format="channels_first", interpolation="bilinear"),
         ((2, 3, 4),)),
    Case("up_sampling2d_bilinear_dynamic", lambda: layers.UpSampling2D((3, 2), interpolation="bilinear"),
         ((None, None, 2),)),
    Case("up_sampling2d_bilinear_opset13", lambda: layers.UpSampling2D(interpolation="bilinear"),
         ((3, 4, 2),), min_opset=13),
    Case("up_sampling2d_bicubic", lambda: layers.UpSampling2D((2, 3), interpolation="bicubic"),
         ((4, 3, 2),), backends=("numpy", "jax")),
    Case("up_sampling2d_lanczos3", lambda: layers.UpSampling2D(interpolation="lanczos3"), ((4, 3, 2),),
         backends=("numpy", "jax")),
])
def up_sampling2d(ctx, op, x):
    if op.interpolation == "nearest":
        return repeat_spatial(ctx, x, op.size)
    in_hw = keras_spatial_shape(ctx, op.data_format)
    return resize_images(ctx, x, op.interpolation, False, in_hw, factors=tuple(op.size))


# ---- image resampling shared with Resizing / CenterCrop --------------------------------------------
# Keras' numpy and jax backends resample like jax.image.resize: a separable kernel centred on
# sample = (out + 0.5) / scale - 0.5, weights renormalised to sum 1 over the pixels inside the image
# (antialias widens the kernel by 1/scale when downscaling); nearest takes floor((out + 0.5) / scale).
# ONNX Resize with half_pixel coordinates reproduces nearest (round_prefer_ceil), bilinear, and bicubic
# (Keys a=-0.5 with exclude_outside=1, i.e. the same renormalisation); onnxruntime's antialiased
# cubic matches too (checked), its antialiased linear does not. The remaining kernels (antialiased
# bilinear, lanczos) are applied as two constant resampling matrices when the spatial size is static.

_RESIZE_ATTRS = {
    "nearest": {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                "nearest_mode": "round_prefer_ceil"},
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "bicubic": {"mode": "cubic", "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.5,
                "exclude_outside": 1},
}
# Backends whose resize follows the convention above (every case checked on numpy and jax).
_JAX_LIKE_BACKENDS = ("numpy", "jax")
# nearest and non-antialiased bilinear agree on every backend (half-pixel centres, edge clamping).
_PORTABLE_METHODS = ("nearest", "bilinear")


def _triangle(x):
    return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic(x):
    out = ((1.5 * x - 2.5) * x) * x + 1.0
    out = np.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
    return np.where(x >= 2.0, 0.0, out)


def _lanczos(radius):
    def kernel(x):
        y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius)
        safe = np.where(x != 0, np.pi ** 2 * x ** 2, 1.0)
        return np.where(x > radius, 0.0, np.where(x > 1e-3, y / safe, 1.0))

    return kernel


_KERNELS = {"bilinear": _triangle, "bicubic": _keys_cubic, "lanczos3": _lanczos(3.0), "lanczos5": _lanczos(5.0)}


def resampling_matrix(in_size: int, out_size: int, method: str, antialias: bool) -> np.ndarray:
    """(in_size, out_size) float64 matrix M with out = in @ M, as Keras' jax-style resize computes it."""
    inv_scale = 1.0 / (out_size / in_size)
    kernel_scale = max(inv_scale, 1.0) if antialias else 1.0
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) * inv_scale - 0.5
    weights = _KERNELS[method](np.abs(sample[None, :] - np.arange(in_size, dtype=np.float64)[:, None])
                               / kernel_scale)
    total = weights.sum(axis=0, keepdims=True)
    usable = np.abs(total) > 1000.0 * np.finfo(np.float32).eps
    weights = np.where(usable, weights / np.where(total != 0, total, 1.0), 0.0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    return np.where(inside[None, :], weights, 0.0)


def _check_backend(ctx, method: str, antialias: bool) -> None:
    backend = keras.backend.backend()
    if method not in _KERNELS and method != "nearest":
        raise ctx.unsupported(f"interpolation '{method}' has no exact ONNX mapping")
    if (method not in _PORTABLE_METHODS or antialias) and backend not in _JAX_LIKE_BACKENDS:
        raise ctx.unsupported(f"interpolation '{method}' (antialias={antialias}) on the '{backend}' "
                               f"backend is not verified; convert with KERAS_BACKEND=numpy or jax")


def resize_images(ctx, x, method: str, antialias: bool, in_hw, *, size=None, factors=None):
    """Resample NCHW ``x`` to ``size`` (h, w) or by integer ``factors`` like Keras' image resize.

    ``in_hw``: static input (h, w), entries ``None`` when dynamic.
    """
    _check_backend(ctx, method, antialias)
    out_hw = tuple(s * f if s is not None else None for s, f in zip(in_hw, factors)) if factors else size
    if None not in in_hw and tuple(in_hw) == tuple(out_hw):
        return x  # Keras leaves unchanged sizes alone
    may_shrink = factors is None and any(i is None or o < i for i, o in zip(in_hw, out_hw))
    antialiased = antialias and method != "nearest" and may_shrink
    if _resize_node_matches(ctx, method, antialiased, may_shrink, static=None not in in_hw):
        return _resize_node(ctx, x, method, antialiased, size=size, factors=factors)
    if None in in_hw:
        needs = "static spatial dims" + (" or opset >= 18" if method == "bicubic" else "")
        raise ctx.unsupported(f"'{method}' resizing{' with antialias' if antialias else ''} needs {needs}; "
                               f"got spatial dims {tuple(in_hw)}")
    return _resample_with_matrices(ctx, x, method, antialias, in_hw, out_hw)


def _resize_node_matches(ctx, method, antialiased, may_shrink, static) -> bool:
    """Whether one ONNX Resize computes what Keras does (else: resampling matrices, static dims only)."""
    if method not in _RESIZE_ATTRS:
        return False
    if antialiased:
        return method == "bicubic" and ctx.opset >= 18
    # A non-antialiased cubic Resize that shrinks is right, but onnxruntime's transpose optimizer
    # moves a Resize between Transposes to NHWC, where its cubic kernel rejects scales < 1: use the
    # (exact) matrices when the sizes are known.
    return not (method == "bicubic" and may_shrink and static)


def _resize_node(ctx, x, method, antialias, *, size=None, factors=None):
    attrs = dict(_RESIZE_ATTRS[method], antialias=1 if antialias else None)
    if factors is not None:
        return ctx.op("Resize", [x, None, _scales(ctx, factors)], attrs)
    # Full sizes (N, C from Shape): onnxruntime 1.31's transpose optimizer breaks Resize with `axes`.
    batch_channels = ctx.dims(x, 0, 2)
    sizes = ctx.op("Concat", [batch_channels, ctx.int64s(list(size))], {"axis": 0})
    return ctx.op("Resize", [x, None, None, sizes], attrs)


def _resample_with_matrices(ctx, x, method, antialias, in_hw, out_hw):
    dtype = to_numpy_dtype(ctx.out_dtype())
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    if in_h != out_h:  # (out_h, in_h) @ (N, C, in_h, W)
        rows = resampling_matrix(in_h, out_h, method, antialias).T
        x = ctx.op("MatMul", [ctx.const(rows.astype(dtype), name="resample_rows"), x])
    if in_w != out_w:  # (N, C, H, in_w) @ (in_w, out_w)
        cols = resampling_matrix(in_w, out_w, method, antialias)
        x = ctx.op("MatMul", [x, ctx.const(cols.astype(dtype), name="resample_cols")])
    return x
