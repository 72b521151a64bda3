"""Preprocessing layers: Rescaling, Normalization, Resizing, CenterCrop.

Rescaling and Normalization are elementwise with constants that broadcast against the Keras tensor
(Layout.ANY: the constants are transposed to the stored layout). Resizing and CenterCrop work on
channels-first images and share the resampling helpers of ``layers_reshaping``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..core.dtypes import to_numpy_dtype
from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN
from .layers_reshaping import crop_spatial, keras_spatial_shape, pad_spatial, resize_images

register = BUILTIN.register


def as_dtype(ctx, x, dtype):
    """``x`` cast to ``dtype`` unless the layer's input already has it."""
    return x if keras.backend.standardize_dtype(ctx.in_dtype()) == dtype else ctx.cast(x, dtype)


def to_stored_layout(ctx, arr) -> np.ndarray:
    """An array that broadcasts against the Keras input, rearranged to broadcast against the stored one."""
    arr = np.asarray(arr)
    rank = len(ctx.perm)
    if arr.ndim > rank:  # the output rank grows: the driver then gives the input in Keras layout
        return arr
    return np.transpose(arr.reshape((1,) * (rank - arr.ndim) + arr.shape), ctx.perm)


def broadcast_const(ctx, arr, dtype, name="const"):
    """A constant for ``arr`` (broadcasting like numpy against the Keras input) in the stored layout."""
    arr = np.asarray(arr)
    if arr.size == 1 and arr.ndim <= len(ctx.perm):
        return ctx.scalar(arr.reshape(()), dtype)
    return ctx.const(to_stored_layout(ctx, arr), dtype, name)


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def _random_data(*shape):
    return np.random.default_rng(7).normal(1.5, 2.0, size=shape).astype("float32")


# ---- Rescaling ------------------------------------------------------------------------------------

@register(layers.Rescaling, layout=Layout.ANY, cases=[
    Case("rescaling_scalar", lambda: layers.Rescaling(1 / 255.0), ((4, 4, 3),)),
    Case("rescaling_offset", lambda: layers.Rescaling(2.0, offset=-1.0), ((5,),)),
    Case("rescaling_per_channel", lambda: layers.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.2, 0.3]),
         ((4, 4, 3),)),
    Case("rescaling_array_2d", lambda: layers.Rescaling(np.arange(1.0, 13.0).reshape(4, 3)), ((2, 4, 3),)),
    Case("rescaling_after_padding", lambda: (lambda x: layers.Rescaling([0.5, 2.0, -1.0], offset=[1.0, 0.0, 2.0])(
        layers.ZeroPadding2D(1)(x))), ((3, 4, 3),)),
    Case("rescaling_uint8", lambda: layers.Rescaling(1 / 127.5, offset=-1.0), ((4, 4, 3),), dtypes=("uint8",),
         int_range=(0, 256)),
])
def rescaling(ctx, op, x):
    dtype = ctx.out_dtype()
    scale = _numpy(op.scale).astype(to_numpy_dtype(dtype))
    offset = _numpy(op.offset).astype(to_numpy_dtype(dtype))
    if scale.ndim and keras.config.image_data_format() == "channels_first":
        scale = scale.reshape(scale.shape + (1,) * (3 - scale.ndim))  # as Keras does
    y = as_dtype(ctx, x, dtype)
    if np.any(scale != 1) or scale.ndim:
        y = ctx.op("Mul", [y, broadcast_const(ctx, scale, dtype, "scale")])
    if np.any(offset != 0) or offset.ndim:
        y = ctx.op("Add", [y, broadcast_const(ctx, offset, dtype, "offset")])
    return y


# ---- Normalization --------------------------------------------------------------------------------

def _adapted(axis=-1, shape=(4, 4, 3), **kwargs):
    layer = layers.Normalization(axis=axis, **kwargs)
    layer.adapt(_random_data(20, *shape))
    return layer


def _std(variance):
    return np.maximum(np.sqrt(variance), keras.backend.epsilon()).astype(variance.dtype)


@register(layers.Normalization, layout=Layout.ANY, cases=[
    Case("normalization_scalar", lambda: layers.Normalization(mean=2.0, variance=4.0), ((5,),)),
    Case("normalization_per_channel", lambda: layers.Normalization(mean=[0.5, -1.0, 2.0], variance=[1.0, 4.0, 0.25]),
         ((4, 4, 3),)),
    Case("normalization_axis_none", lambda: layers.Normalization(axis=None, mean=1.0, variance=2.0), ((3, 4),)),
    Case("normalization_zero_variance", lambda: layers.Normalization(mean=[1.0, 0.0], variance=[0.0, 1.0]),
         ((2,),)),
    Case("normalization_invert", lambda: layers.Normalization(mean=[0.5, -1.0, 2.0], variance=[1.0, 4.0, 0.25],
                                                             invert=True), ((3,),)),
    Case("normalization_adapted", lambda: _adapted(), ((4, 4, 3),)),
    Case("normalization_adapted_multi_axis", lambda: _adapted(axis=(1, 3), shape=(3, 4, 2)), ((3, 4, 2),)),
    Case("normalization_adapted_invert", lambda: _adapted(shape=(5,), invert=True), ((5,),)),
    Case("normalization_after_padding", lambda: (lambda x: _adapted(axis=(-2, -1), shape=(5, 6, 2))(
        layers.ZeroPadding2D(1)(x))), ((3, 4, 2),)),
    Case("normalization_uint8", lambda: layers.Normalization(mean=[100.0, 120.0, 90.0], variance=[900.0, 400.0, 100.0]),
         ((4, 3),), dtypes=("uint8",), int_range=(0, 256)),
])
def normalization(ctx, op, x):
    # op.mean / op.variance are what call() uses: the given values or the adapted weights (reshaped by
    # finalize_state), already in Keras' broadcast shape (input rank, 1 on the reduced axes).
    dtype = ctx.out_dtype()
    mean = _numpy(op.mean).astype(to_numpy_dtype(dtype))
    std = _std(_numpy(op.variance).astype(to_numpy_dtype(dtype)))
    x = as_dtype(ctx, x, dtype)
    mean, std = broadcast_const(ctx, mean, dtype, "mean"), broadcast_const(ctx, std, dtype, "std")
    if op.invert:
        return ctx.op("Add", [mean, ctx.op("Mul", [x, std])])
    return ctx.op("Div", [ctx.op("Sub", [x, mean]), std])


# ---- aspect-ratio crop / pad (Keras' image resize options and smart_resize) ------------------------

def _static(hw) -> bool:
    return None not in hw


def _aspect_crop_box(h, w, target):
    """Keras' centred crop to the target aspect ratio: ((start_h, start_w), (size_h, size_w))."""
    th, tw = target
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    return (int(float(h - ch) / 2), int(float(w - cw) / 2)), (ch, cw)


def _runtime_hw(ctx, x):
    """[h, w] of NCHW ``x`` as an int64 vector."""
    return ctx.dims(x, 2, 4)


def _runtime_aspect_size(ctx, hw, target):
    """[w * th // tw, h * tw // th]: the size matching the target aspect ratio (int64 vector)."""
    th, tw = target
    swapped = ctx.op("Gather", [hw, ctx.int64s([1, 0])], {"axis": 0})
    return ctx.op("Div", [ctx.op("Mul", [swapped, ctx.int64s([th, tw])]), ctx.int64s([tw, th])])


def _runtime_aspect_crop_box(ctx, hw, target):
    size = ctx.op("Max", [ctx.op("Min", [hw, _runtime_aspect_size(ctx, hw, target)]), ctx.int64s([1])])
    start = ctx.op("Div", [ctx.op("Sub", [hw, size]), ctx.int64s([2])])
    return start, size


def _slice_box(ctx, x, start, size):
    end = ctx.op("Add", [start, size])
    return ctx.op("Slice", [x, start, end, ctx.int64s([2, 3])])


def _static_crop(ctx, x, hw, start, size):
    pairs = [(s, dim - s - n) for dim, s, n in zip(hw, start, size)]
    return crop_spatial(ctx, x, pairs)


def crop_to_aspect_ratio(ctx, x, hw, target):
    """Centre-crop NCHW ``x`` to the aspect ratio of ``target``; returns (value, new static hw)."""
    if _static(hw):
        start, size = _aspect_crop_box(*hw, target)
        return _static_crop(ctx, x, hw, start, size), size
    start, size = _runtime_aspect_crop_box(ctx, _runtime_hw(ctx, x), target)
    return _slice_box(ctx, x, start, size), (None, None)


def pad_to_aspect_ratio(ctx, x, hw, target, fill_value):
    """Pad NCHW ``x`` symmetrically to the aspect ratio of ``target`` (as Keras: the same amount on both
    sides, so an odd difference loses one row/column); returns (value, new static hw)."""
    if _static(hw):
        (h, w), (th, tw) = hw, target
        pad_h = max(h, int(float(w * th) / tw))
        pad_w = max(w, int(float(h * tw) / th))
        sh, sw = int(float(pad_h - h) / 2), int(float(pad_w - w) / 2)
        padded = pad_spatial(ctx, x, [(sh, sh), (sw, sw)], ctx.scalar(fill_value)) if sh or sw else x
        return padded, (h + 2 * sh, w + 2 * sw)
    runtime = _runtime_hw(ctx, x)
    padded = ctx.op("Max", [runtime, _runtime_aspect_size(ctx, runtime, target)])
    side = ctx.op("Div", [ctx.op("Sub", [padded, runtime]), ctx.int64s([2])])
    zeros = ctx.int64s([0, 0])
    pads = ctx.op("Concat", [zeros, side, zeros, side], {"axis": 0})
    return ctx.op("Pad", [x, pads, ctx.scalar(fill_value)]), (None, None)


def _require_image_batch(ctx):
    if len(ctx.in_shape()) != 4:
        raise ctx.unsupported(f"expects batched images of rank 4, got input shape {ctx.in_shape()}")


# ---- Resizing -------------------------------------------------------------------------------------

def _is_int(dtype) -> bool:
    return "int" in keras.backend.standardize_dtype(dtype)


_CONVEX_KERNELS = ("nearest", "bilinear")  # results stay within the input's range


def _integer_result(ctx, op, y, x):
    """Keras rounds resampled integer images, then clips them: the numpy backend to the image's own
    range (unless padding made it float), the others saturate to the integer dtype's range."""
    rounded = ctx.op("Round", [y])
    if keras.backend.backend() == "numpy" and op.interpolation not in _CONVEX_KERNELS:
        low = ctx.reduce("ReduceMin", x, None, keepdims=False)
        high = ctx.reduce("ReduceMax", x, None, keepdims=False)
    else:
        info = np.iinfo(to_numpy_dtype(keras.backend.standardize_dtype(ctx.in_dtype())))
        low, high = ctx.scalar(info.min), ctx.scalar(info.max)
    return ctx.op("Clip", [rounded, low, high])


def _check_integer_resizing(ctx, op):
    backend = keras.backend.backend()
    if backend not in ("numpy", "jax"):
        raise ctx.unsupported(f"resizing integer images on the '{backend}' backend is not verified")
    if backend == "numpy" and getattr(op, "pad_to_aspect_ratio", False) and op.interpolation not in _CONVEX_KERNELS:
        raise ctx.unsupported("numpy-backend Keras clips integer images to a range that depends on "
                               "whether padding happened; use bilinear/nearest or a float input")


# Keras' numpy and jax backends resize like jax.image.resize; the converter follows them for these
# options (it refuses them on other backends, whose conventions differ).
JAX_RESIZE = ("numpy", "jax")
_JAX_ONLY = {"bicubic", "bicubic_antialias", "bilinear_antialias", "lanczos5"}


def _resizing_cases():
    specs = [
        ("bilinear_down", dict(height=5, width=4), (8, 6, 2)),
        ("bilinear_up", dict(height=11, width=9), (4, 3, 2)),
        ("nearest", dict(height=5, width=9, interpolation="nearest"), (8, 6, 2)),
        ("bicubic", dict(height=5, width=9, interpolation="bicubic"), (8, 6, 2)),
        ("bicubic_antialias", dict(height=3, width=4, interpolation="bicubic", antialias=True), (8, 6, 2)),
        ("bilinear_antialias", dict(height=3, width=4, antialias=True), (8, 6, 2)),
        ("lanczos5", dict(height=5, width=9, interpolation="lanczos5"), (8, 6, 2)),
        ("same_size", dict(height=8, width=6), (8, 6, 2)),
        ("crop_to_aspect", dict(height=4, width=4, crop_to_aspect_ratio=True), (8, 6, 2)),
        ("pad_to_aspect", dict(height=4, width=6, pad_to_aspect_ratio=True, fill_value=0.5), (8, 6, 2)),
        ("dynamic", dict(height=5, width=7), (None, None, 2)),
        ("nearest_dynamic", dict(height=5, width=7, interpolation="nearest"), (None, None, 2)),
        ("crop_dynamic", dict(height=4, width=6, crop_to_aspect_ratio=True), (None, None, 2)),
        ("pad_dynamic", dict(height=6, width=4, pad_to_aspect_ratio=True, fill_value=-1.0), (None, None, 2)),
        ("channels_first", dict(height=5, width=4, data_format="channels_first"), (2, 8, 6)),
    ]
    cases = [Case(f"resizing_{name}", (lambda kw=kw: layers.Resizing(**kw)), (shape,),
                  backends=JAX_RESIZE if name in _JAX_ONLY else None) for name, kw, shape in specs]
    return cases + [
        Case("resizing_opset13", lambda: layers.Resizing(5, 7, crop_to_aspect_ratio=True), ((None, None, 2),),
             min_opset=13),
        Case("resizing_uint8", lambda: layers.Resizing(5, 4), ((8, 6, 3),), dtypes=("uint8",), int_range=(0, 256), backends=JAX_RESIZE),
        Case("resizing_uint8_bicubic", lambda: layers.Resizing(9, 7, interpolation="bicubic"), ((8, 6, 3),),
             dtypes=("uint8",), int_range=(0, 256), backends=JAX_RESIZE),
        Case("resizing_uint8_pad", lambda: layers.Resizing(4, 6, pad_to_aspect_ratio=True, fill_value=7.0),
             ((8, 6, 3),), dtypes=("uint8",), int_range=(0, 256), backends=JAX_RESIZE),
        Case("resizing_uint8_nearest", lambda: layers.Resizing(5, 4, interpolation="nearest"), ((8, 6, 3),),
             dtypes=("uint8",), int_range=(0, 256)),
    ]


@register(layers.Resizing, layout=Layout.CHANNELS_FIRST, cases=_resizing_cases())
def resizing(ctx, op, x):
    _require_image_batch(ctx)
    rounds = _is_int(ctx.in_dtype()) and op.interpolation != "nearest"
    if rounds:
        _check_integer_resizing(ctx, op)
    x = as_dtype(ctx, x, ctx.out_dtype())
    hw = keras_spatial_shape(ctx, op.data_format)
    target = (int(op.height), int(op.width))
    if op.crop_to_aspect_ratio:
        x, hw = crop_to_aspect_ratio(ctx, x, hw, target)
    elif getattr(op, "pad_to_aspect_ratio", False):  # newer Keras options: read with defaults
        x, hw = pad_to_aspect_ratio(ctx, x, hw, target, getattr(op, "fill_value", 0.0))
    y = resize_images(ctx, x, op.interpolation, getattr(op, "antialias", False), hw, size=target)
    return _integer_result(ctx, op, y, x) if rounds and y is not x else y


# ---- CenterCrop -----------------------------------------------------------------------------------

def _runtime_center_crop_box(ctx, x, target):
    """Start/size of CenterCrop's box at run time: the centred target box when the image is large
    enough in both dims, otherwise smart_resize's aspect-ratio box."""
    hw = _runtime_hw(ctx, x)
    wanted = ctx.int64s(list(target))
    diff = ctx.op("Sub", [hw, wanted])
    fits = ctx.op("GreaterOrEqual", [ctx.reduce("ReduceMin", diff, [0], keepdims=True), ctx.int64s([0])])
    aspect_start, aspect_size = _runtime_aspect_crop_box(ctx, hw, target)
    start = ctx.op("Where", [fits, ctx.op("Div", [diff, ctx.int64s([2])]), aspect_start])
    size = ctx.op("Where", [fits, wanted, aspect_size])
    return start, size


@register(layers.CenterCrop, layout=Layout.CHANNELS_FIRST, cases=[
    Case("center_crop", lambda: layers.CenterCrop(4, 3), ((8, 6, 2),)),
    Case("center_crop_odd", lambda: layers.CenterCrop(5, 4), ((8, 7, 2),)),
    Case("center_crop_same", lambda: layers.CenterCrop(8, 6), ((8, 6, 2),)),
    Case("center_crop_smaller", lambda: layers.CenterCrop(10, 4), ((8, 6, 2),)),
    Case("center_crop_smaller_both", lambda: layers.CenterCrop(11, 9), ((8, 6, 2),)),
    Case("center_crop_channels_first", lambda: layers.CenterCrop(4, 3, data_format="channels_first"), ((2, 8, 6),)),
    Case("center_crop_dynamic", lambda: layers.CenterCrop(7, 10), ((None, None, 2),)),
    Case("center_crop_dynamic_smaller", lambda: layers.CenterCrop(20, 10), ((None, None, 2),)),
    Case("center_crop_dynamic_opset13", lambda: layers.CenterCrop(20, 10), ((None, None, 2),), min_opset=13),
    Case("center_crop_uint8", lambda: layers.CenterCrop(4, 3), ((8, 6, 2),), dtypes=("uint8",), int_range=(0, 256)),
])
def center_crop(ctx, op, x):
    _require_image_batch(ctx)
    x = as_dtype(ctx, x, ctx.out_dtype())
    hw = keras_spatial_shape(ctx, op.data_format)
    target = (int(op.height), int(op.width))
    if not _static(hw):
        start, size = _runtime_center_crop_box(ctx, x, target)
        cropped = _slice_box(ctx, x, start, size)
        return resize_images(ctx, cropped, "bilinear", False, (None, None), size=target)
    if all(dim >= t for dim, t in zip(hw, target)):
        start = tuple((dim - t) // 2 for dim, t in zip(hw, target))
        return _static_crop(ctx, x, hw, start, target)
    # Keras falls back to smart_resize: crop to the target aspect ratio, then bilinear resize.
    cropped, hw = crop_to_aspect_ratio(ctx, x, hw, target)
    return resize_images(ctx, cropped, "bilinear", False, hw, size=target)
