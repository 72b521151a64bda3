"""``keras.ops.image`` operations used at inference (``keras.src.ops.image``).

Every converter works channels-first (``Layout.CHANNELS_FIRST`` follows the op's ``data_format``) on
batched images: a rank-3 tensor in a functional graph has a batch axis, which Keras would take for an
unbatched image's height, so rank-3 inputs are refused. ``resize`` is the Resizing layer's converter
(``layers_preprocessing``, which maps Keras' jax-style resampling onto ONNX Resize); cropping and
padding reuse the spatial helpers of ``layers_reshaping``; patches and filters are convolutions with
constant kernels (``layers_conv`` helpers).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import keras
import numpy as np

from ..core.dtypes import to_numpy_dtype
from ..core.layout import Layout
from ..core.registry import Case, lazy_op
from .layers_conv import channels_to_front, window_attrs
from .layers_preprocessing import JAX_RESIZE, resizing
from .layers_reshaping import keras_spatial_shape, pad_spatial
from .ops_core import INT64_MAX, channel_dim, per_axis, refuse_ops, register_op, scaled


def _register(name, *, cases):
    return register_op("image", name, layout=Layout.CHANNELS_FIRST, cases=cases)


def _case(name, fn, shape, **kw):
    return Case(f"ops_image_{name}", lambda: fn, (shape,), **kw)


def _require_batch(ctx, rank=4):
    if len(ctx.in_shape()) != rank:
        raise ctx.unsupported(f"expects batched images of rank {rank}, got input shape {ctx.in_shape()}")


def _float_compute(ctx, x):
    """Keras filters non-float images in float32 and casts back: (x, dtype, cast-back function)."""
    dtype = str(ctx.in_dtype())
    if dtype in ("float32", "float64"):
        return x, dtype, (lambda y: y)
    return ctx.cast(x, "float32"), "float32", (lambda y: ctx.cast(y, dtype))


# ---- resize ------------------------------------------------------------------------------------
def _resize_cases():
    resize = lazy_op(keras.ops.image, "resize")
    specs = [  # (name, kwargs, input shape, backends)
        ("bilinear_down", dict(size=(5, 4)), (8, 6, 2), None),
        ("bilinear_up", dict(size=(11, 9)), (4, 3, 2), None),
        ("nearest", dict(size=(5, 9), interpolation="nearest"), (8, 6, 2), None),
        ("bicubic", dict(size=(5, 9), interpolation="bicubic"), (8, 6, 2), JAX_RESIZE),
        ("bilinear_antialias", dict(size=(3, 4), antialias=True), (8, 6, 2), JAX_RESIZE),
        ("lanczos3", dict(size=(5, 9), interpolation="lanczos3"), (8, 6, 2), JAX_RESIZE),
        ("crop_to_aspect", dict(size=(4, 4), crop_to_aspect_ratio=True), (8, 6, 2), None),
        ("pad_to_aspect", dict(size=(4, 6), pad_to_aspect_ratio=True, fill_value=0.5), (8, 6, 2), None),
        ("dynamic", dict(size=(5, 7)), (None, None, 2), None),
        ("crop_dynamic", dict(size=(4, 6), crop_to_aspect_ratio=True), (None, None, 2), None),
        ("channels_first", dict(size=(5, 4), data_format="channels_first"), (2, 8, 6), None),
    ]
    cases = [Case(f"ops_image_resize_{name}", (lambda kw=kw: (lambda x: resize(x, **kw))), (shape,), backends=b)
             for name, kw, shape, b in specs]
    return cases + [
        Case("ops_image_resize_uint8", lambda: (lambda x: resize(x, (5, 4))), ((8, 6, 3),), dtypes=("uint8",),
             int_range=(0, 256), backends=JAX_RESIZE),
        Case("ops_image_resize_uint8_bicubic", lambda: (lambda x: resize(x, (9, 7), "bicubic")), ((8, 6, 3),),
             dtypes=("uint8",), int_range=(0, 256), backends=JAX_RESIZE),
        Case("ops_image_resize_int32_nearest", lambda: (lambda x: resize(x, (5, 9), "nearest")), ((8, 6, 3),),
             dtypes=("int32",), int_range=(-100, 100)),
        Case("ops_image_resize_opset13", lambda: (lambda x: resize(x, (5, 7), crop_to_aspect_ratio=True)),
             ((None, None, 2),), min_opset=13),
    ]


@contextlib.contextmanager
def _output_dtype(ctx, dtype):
    """Let helpers that build constants in the node's output dtype work in ``dtype`` instead."""
    saved = ctx.out_tensors
    ctx.out_tensors = [keras.KerasTensor(t.shape, dtype=dtype) for t in saved]
    try:
        yield
    finally:
        ctx.out_tensors = saved


@_register("Resize", cases=_resize_cases())
def resize(ctx, op, x):
    """The Resizing layer's converter. Integer images: Keras resamples in float32, rounds and
    saturates back (the layer helpers compute in float32, the final Cast restores the dtype)."""
    if op.fill_mode != "constant":
        raise ctx.unsupported(f"fill_mode '{op.fill_mode}' (Keras backends support 'constant' only)")
    height, width = op.size
    as_layer = SimpleNamespace(
        height=height, width=width, interpolation=op.interpolation, antialias=op.antialias,
        crop_to_aspect_ratio=op.crop_to_aspect_ratio, pad_to_aspect_ratio=op.pad_to_aspect_ratio,
        fill_value=op.fill_value, data_format=op.data_format)
    if keras.backend.is_float_dtype(ctx.out_dtype()):
        return resizing(ctx, as_layer, x)
    with _output_dtype(ctx, "float32"):
        y = resizing(ctx, as_layer, x)
    return ctx.cast(y, ctx.out_dtype())


# ---- crop / pad --------------------------------------------------------------------------------
def _crop_bounds(before, after, target) -> tuple[int, int]:
    """Slice (start, end) along one axis; negative values count from the end (dynamic sizes work)."""
    if before is None:  # Keras: before = size - target - after
        return -(target + after), (-after if after else INT64_MAX)
    if target is None:  # Keras: target = size - after - before
        return before, (-after if after else INT64_MAX)
    return before, before + target


@_register("CropImages", cases=[
    _case("crop_images", lambda x: keras.ops.image.crop_images(x, 1, 2, 0, 1), (7, 6, 2)),
    _case("crop_images_targets", lambda x: keras.ops.image.crop_images(
        x, top_cropping=2, left_cropping=1, target_height=3, target_width=4), (7, 6, 2)),
    _case("crop_images_bottom_right", lambda x: keras.ops.image.crop_images(
        x, bottom_cropping=1, right_cropping=2, target_height=4, target_width=3), (7, 6, 2)),
    _case("crop_images_dynamic", lambda x: keras.ops.image.crop_images(
        x, bottom_cropping=1, right_cropping=0, target_height=4, target_width=3), (None, None, 2)),
    _case("crop_images_channels_first", lambda x: keras.ops.image.crop_images(
        x, 1, 1, 2, 0, data_format="channels_first"), (2, 7, 6)),
])
def crop_images(ctx, op, x):
    _require_batch(ctx)
    top = _crop_bounds(op.top_cropping, op.bottom_cropping, op.target_height)
    left = _crop_bounds(op.left_cropping, op.right_cropping, op.target_width)
    return ctx.op("Slice", [x, ctx.int64s([top[0], left[0]]), ctx.int64s([top[1], left[1]]), ctx.int64s([2, 3])])


def _pad_amounts(ctx, x, axis, before, after, target, size):
    """(before, after) padding along stored ``axis``: ints, or int64[1] values when the size is dynamic."""
    if before is not None and after is not None:
        return before, after
    if size is not None:
        return (target - after - size, after) if before is None else (before, target - before - size)
    runtime = ctx.op("Sub", [ctx.int64s([target - (after if before is None else before)]), ctx.dims(x, axis, axis + 1)])
    return (runtime, after) if before is None else (before, runtime)


def _as_vector(ctx, v):
    return ctx.int64s([v]) if isinstance(v, int) else v


@_register("PadImages", cases=[
    _case("pad_images", lambda x: keras.ops.image.pad_images(x, 1, 2, 0, 1), (4, 3, 2)),
    _case("pad_images_targets", lambda x: keras.ops.image.pad_images(
        x, top_padding=2, left_padding=1, target_height=7, target_width=5), (4, 3, 2)),
    _case("pad_images_bottom_right", lambda x: keras.ops.image.pad_images(
        x, bottom_padding=1, right_padding=2, target_height=6, target_width=6), (4, 3, 2)),
    _case("pad_images_dynamic", lambda x: keras.ops.image.pad_images(
        x, top_padding=1, right_padding=0, target_height=140, target_width=130), (None, None, 2)),
    _case("pad_images_channels_first", lambda x: keras.ops.image.pad_images(
        x, 1, 1, 2, 0, data_format="channels_first"), (2, 4, 3)),
])
def pad_images(ctx, op, x):
    _require_batch(ctx)
    h, w = keras_spatial_shape(ctx, op.data_format)
    rows = _pad_amounts(ctx, x, 2, op.top_padding, op.bottom_padding, op.target_height, h)
    cols = _pad_amounts(ctx, x, 3, op.left_padding, op.right_padding, op.target_width, w)
    if all(isinstance(v, int) for v in rows + cols):
        return pad_spatial(ctx, x, [rows, cols])
    zeros = ctx.int64s([0, 0])
    parts = [zeros, *(_as_vector(ctx, v) for v in (rows[0], cols[0])), zeros,
             *(_as_vector(ctx, v) for v in (rows[1], cols[1]))]
    return ctx.op("Pad", [x, ctx.op("Concat", parts, {"axis": 0})])


# ---- colour conversions ------------------------------------------------------------------------
_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # Keras' (and tf.image's) luma weights


@_register("RGBToGrayscale", cases=[
    _case("rgb_to_grayscale", lazy_op(keras.ops.image, "rgb_to_grayscale"), (4, 5, 3)),
    _case("rgb_to_grayscale_channels_first",
          lambda x: keras.ops.image.rgb_to_grayscale(x, data_format="channels_first"), (3, 4, 5)),
    _case("rgb_to_grayscale_uint8", lazy_op(keras.ops.image, "rgb_to_grayscale"), (4, 5, 3), dtypes=("uint8",),
          int_range=(0, 256)),
    _case("rgb_to_grayscale_single_channel", lazy_op(keras.ops.image, "rgb_to_grayscale"), (4, 5, 1)),
])
def rgb_to_grayscale(ctx, op, x):
    _require_batch(ctx)
    if channel_dim(ctx, op.data_format) == 1:
        return x
    x, dtype, restore = _float_compute(ctx, x)
    weights = ctx.const(np.reshape(_GRAY_WEIGHTS, (1, 3, 1, 1)), dtype, name="luma")
    return restore(ctx.reduce("ReduceSum", ctx.op("Mul", [x, weights]), [1], keepdims=True))


def _planes(ctx, x):
    return ctx.split(x, [1, 1, 1], 1)


def _where(ctx, cond, a, b):
    return ctx.op("Where", [cond, a, b])


def _hue(ctx, r, g, b, value, norm):
    """Keras' hue (before the range test): from the channel holding the maximum."""
    third = ctx.scalar(2.0 / 6.0)
    hue = _where(ctx, ctx.op("Equal", [value, g]),
                 ctx.op("Add", [ctx.op("Mul", [norm, ctx.op("Sub", [b, r])]), third]),
                 ctx.op("Add", [ctx.op("Mul", [norm, ctx.op("Sub", [r, g])]), ctx.scalar(4.0 / 6.0)]))
    return _where(ctx, ctx.op("Equal", [value, r]), ctx.op("Mul", [norm, ctx.op("Sub", [g, b])]), hue)


@_register("RGBToHSV", cases=[
    _case("rgb_to_hsv", lambda x: keras.ops.image.rgb_to_hsv(keras.ops.relu(x)), (4, 5, 3)),
    _case("rgb_to_hsv_signed", lazy_op(keras.ops.image, "rgb_to_hsv"), (4, 5, 3)),
    _case("rgb_to_hsv_channels_first",
          lambda x: keras.ops.image.rgb_to_hsv(keras.ops.sigmoid(x), data_format="channels_first"), (3, 4, 5)),
])
def rgb_to_hsv(ctx, op, x):
    _require_batch(ctx)
    eps = float(np.finfo(to_numpy_dtype(ctx.out_dtype())).eps)
    zero, one = ctx.scalar(0.0), ctx.scalar(1.0)
    x = _where(ctx, ctx.op("Less", [ctx.op("Abs", [x]), ctx.scalar(eps)]), zero, x)
    r, g, b = _planes(ctx, x)
    value = ctx.op("Max", [r, g, b])
    spread = ctx.op("Sub", [value, ctx.op("Min", [r, g, b])])
    positive, varies = ctx.op("Greater", [value, zero]), ctx.op("Greater", [spread, zero])
    saturation = _where(ctx, positive, ctx.op("Div", [spread, _where(ctx, positive, value, one)]), zero)
    norm = ctx.op("Reciprocal", [ctx.op("Mul", [_where(ctx, varies, spread, one), ctx.scalar(6.0)])])
    hue = _hue(ctx, r, g, b, value, norm)
    wrapped = ctx.cast(ctx.op("Less", [hue, zero]), ctx.out_dtype())
    hue = ctx.op("Add", [_where(ctx, varies, hue, zero), wrapped])
    return ctx.op("Concat", [hue, saturation, value], {"axis": 1})


def _hsv_weight(ctx, dh, center, flipped):
    """clip(|dh - center| - 1, 0, 1) (red), or clip(2 - |dh - center|, 0, 1) (green, blue)."""
    distance = ctx.op("Abs", [ctx.op("Sub", [dh, ctx.scalar(center)])])
    ramp = ctx.op("Sub", [ctx.scalar(2.0), distance]) if flipped else ctx.op("Sub", [distance, ctx.scalar(1.0)])
    return ctx.op("Clip", [ramp, ctx.scalar(0.0), ctx.scalar(1.0)])


@_register("HSVToRGB", cases=[
    _case("hsv_to_rgb", lambda x: keras.ops.image.hsv_to_rgb(keras.ops.sigmoid(x)), (4, 5, 3)),
    _case("hsv_to_rgb_wrapping", lambda x: keras.ops.image.hsv_to_rgb(scaled(x, 2.0)), (4, 5, 3)),
    _case("hsv_to_rgb_channels_first",
          lambda x: keras.ops.image.hsv_to_rgb(keras.ops.sigmoid(x), data_format="channels_first"), (3, 4, 5)),
])
def hsv_to_rgb(ctx, op, x):
    _require_batch(ctx)
    hue, saturation, value = _planes(ctx, x)
    dh = ctx.op("Mul", [ctx.op("Sub", [hue, ctx.op("Floor", [hue])]), ctx.scalar(6.0)])  # numpy mod(hue, 1)
    unsaturated = ctx.op("Sub", [ctx.scalar(1.0), saturation])
    channels = []
    for center, flipped in ((3.0, False), (2.0, True), (4.0, True)):
        weight = ctx.op("Mul", [saturation, _hsv_weight(ctx, dh, center, flipped)])
        channels.append(ctx.op("Mul", [value, ctx.op("Add", [unsaturated, weight])]))
    return ctx.op("Concat", channels, {"axis": 1})


# ---- filters and patches (depthwise convolutions with constant kernels) ------------------------
def _depthwise(ctx, x, kernel2d, channels, pads, dtype):
    """Conv of every channel with the same 2-D kernel (``pads``: ONNX begins + ends)."""
    kernel = np.tile(np.asarray(kernel2d)[None, None], (channels, 1, 1, 1))
    attrs = {"kernel_shape": list(kernel.shape[2:]), "pads": pads, "group": channels}
    return ctx.op("Conv", [x, ctx.const(kernel, dtype, name="kernel")], attrs)


def _gaussian_1d(size, sigma):
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _static_channels(ctx, op):
    channels = channel_dim(ctx, op.data_format)
    if channels is None:
        raise ctx.unsupported("needs a static channel dim")
    return channels


@_register("GaussianBlur", cases=[
    _case("gaussian_blur", lazy_op(keras.ops.image, "gaussian_blur"), (7, 6, 3)),
    _case("gaussian_blur_uneven", lambda x: keras.ops.image.gaussian_blur(x, (5, 2), (1.5, 0.7)), (7, 6, 2)),
    _case("gaussian_blur_channels_first",
          lambda x: keras.ops.image.gaussian_blur(x, (3, 5), data_format="channels_first"), (2, 7, 6)),
    _case("gaussian_blur_dynamic", lambda x: keras.ops.image.gaussian_blur(x, (4, 4), (2.0, 2.0)), (None, None, 2)),
])
def gaussian_blur(ctx, op, x):
    _require_batch(ctx)
    size, sigma = _pair(op.kernel_size), _pair(op.sigma)
    # Keras builds outer(kernel(size[1], sigma[1]), kernel(size[0], sigma[0])): rows follow size[1].
    kernel = np.outer(_gaussian_1d(size[1], sigma[1]), _gaussian_1d(size[0], sigma[0]))
    begins = [(k - 1) // 2 for k in kernel.shape]
    ends = [k - 1 - b for k, b in zip(kernel.shape, begins)]
    x, dtype, restore = _float_compute(ctx, x)
    return restore(_depthwise(ctx, x, kernel, _static_channels(ctx, op), begins + ends, dtype))


def _pair(value) -> tuple:
    values = np.reshape(keras.ops.convert_to_numpy(value), -1).tolist()
    return tuple(values * 2 if len(values) == 1 else values)


# How each backend pads the image before its 3x3 Sobel filters.
_SOBEL_PAD_MODES = {"numpy": "edge", "tensorflow": "reflect", "jax": "constant", "torch": "constant"}
_SOBEL_Y = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])


@_register("SobelEdges", cases=[
    _case("sobel_edges", lambda x: keras.ops.image.sobel_edges(x), (6, 5, 2), backends=("numpy",)),
    _case("sobel_edges_channels_first", lambda x: keras.ops.image.sobel_edges(x, data_format="channels_first"),
          (2, 6, 5), backends=("numpy",)),
])
def sobel_edges(ctx, op, x):
    """(..., 2) = [d/dy, d/dx]; the output has rank 5, which the driver takes as Keras layout."""
    _require_batch(ctx)
    backend = keras.backend.backend()
    if backend not in _SOBEL_PAD_MODES:
        raise ctx.unsupported(f"sobel_edges on the '{backend}' backend")
    padded = ctx.op("Pad", [x, ctx.int64s([0, 0, 1, 1, 0, 0, 1, 1])], {"mode": _SOBEL_PAD_MODES[backend]})
    channels = _static_channels(ctx, op)
    edges = [ctx.op("Unsqueeze", [_depthwise(ctx, padded, k, channels, [0] * 4, ctx.out_dtype()), ctx.int64s([4])])
             for k in (_SOBEL_Y, _SOBEL_Y.T)]
    stacked = ctx.op("Concat", edges, {"axis": 4})  # (N, C, H, W, 2)
    if op.data_format == "channels_first":
        return stacked
    return ctx.op("Transpose", [stacked], {"perm": [0, 2, 3, 1, 4]})


@_register("ExtractPatches", cases=[
    _case("extract_patches", lambda x: keras.ops.image.extract_patches(x, 2), (6, 4, 3)),
    _case("extract_patches_strided_same", lambda x: keras.ops.image.extract_patches(
        x, (3, 2), strides=(2, 1), padding="same"), (7, 5, 2)),
    _case("extract_patches_dilated", lambda x: keras.ops.image.extract_patches(
        x, 2, strides=1, dilation_rate=2), (6, 5, 2)),
    _case("extract_patches_channels_first", lambda x: keras.ops.image.extract_patches(
        x, 2, data_format="channels_first"), (3, 6, 4)),
    _case("extract_patches_3d", lambda x: keras.ops.image.extract_patches(x, (2, 2, 2)), (4, 4, 6, 2)),
])
def extract_patches(ctx, op, x):
    """Keras convolves with an identity kernel: output channel (patch position, input channel)."""
    rank = len(op.size)
    _require_batch(ctx, rank + 2)
    channels = _static_channels(ctx, op)
    out = int(np.prod(op.size)) * channels
    kernel = channels_to_front(np.eye(out).reshape(*op.size, channels, out))
    strides = op.size if op.strides is None else per_axis(op.strides, rank)
    attrs = window_attrs(ctx, op, tuple(op.size), strides, per_axis(op.dilation_rate, rank))
    return ctx.op("Conv", [x, ctx.const(kernel, ctx.out_dtype(), name="patches")], attrs)


refuse_ops("image", "AffineTransform", "ElasticTransform", "MapCoordinates", "PerspectiveTransform",
           "ScaleAndTranslate", reason="an image warp (mostly data augmentation) with no built-in converter; "
                                       "register one (ONNX GridSample can express some)")
refuse_ops("image", "SSIM", reason="an image-quality metric, not an inference op")
