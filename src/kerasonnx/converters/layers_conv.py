"""Convolution layers: Conv1D/2D/3D, their transposes, depthwise and separable convolutions.

All converters work channels-first (``Layout.CHANNELS_FIRST``): ONNX ``Conv``/``ConvTranspose`` take
NCW/NCHW/NCDHW tensors, and Keras kernels are transposed once, at conversion time, into ONNX layout.
The window helpers (``spatial_dims``, ``window_attrs``) are shared with the pooling converters.
"""

from __future__ import annotations

import keras
import numpy as np
import onnx_ir as ir
from keras import layers

from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN
from .activations import apply_activation

register = BUILTIN.register


# ---- geometry shared by convolutions and pooling ------------------------------------------------

def spatial_dims(ctx, op) -> tuple:
    """Keras spatial input dims of the current node (``None`` where dynamic)."""
    shape = ctx.in_shape()
    return tuple(shape[2:]) if op.data_format == "channels_first" else tuple(shape[1:-1])


def effective_size(kernel: int, dilation: int) -> int:
    return (kernel - 1) * dilation + 1


def same_pads(in_dims, kernel_size, strides, dilations) -> list[int] | None:
    """TF/Keras 'same' pads ``[begins..., ends...]`` (odd extra padding at the end).

    None when a dim with stride > 1 is dynamic: its padding depends on the run-time size.
    """
    begins, ends = [], []
    for size, k, s, d in zip(in_dims, kernel_size, strides, dilations):
        window = effective_size(k, d)
        if s == 1:
            total = window - 1
        elif size is None:
            return None
        else:
            total = max((-(-size // s) - 1) * s + window - size, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def padding_attrs(padding: str, in_dims, kernel_size, strides, dilations) -> dict:
    """ONNX ``pads``/``auto_pad`` for a Keras 'valid', 'same' or 'causal' window."""
    if padding == "valid":
        return {}
    if padding == "causal":
        return {"pads": [effective_size(k, d) - 1 for k, d in zip(kernel_size, dilations)]
                + [0] * len(kernel_size)}
    pads = same_pads(in_dims, kernel_size, strides, dilations)
    return {"auto_pad": "SAME_UPPER"} if pads is None else {"pads": pads}


def window_attrs(ctx, op, kernel_size, strides, dilations=None) -> dict:
    """``kernel_shape``, ``strides``, (``dilations``) and padding attributes of a Keras window op."""
    rank = len(kernel_size)
    dilations = tuple(dilations or (1,) * rank)
    attrs = {"kernel_shape": list(kernel_size), "strides": list(strides)}
    if any(d != 1 for d in dilations):
        attrs["dilations"] = list(dilations)
    padding = op.padding.lower()
    return {**attrs, **padding_attrs(padding, spatial_dims(ctx, op), kernel_size, strides, dilations)}


def conv_window_attrs(ctx, op) -> dict:
    return window_attrs(ctx, op, op.kernel_size, op.strides, op.dilation_rate)


# ---- kernels ------------------------------------------------------------------------------------

def channels_to_front(kernel: np.ndarray) -> np.ndarray:
    """Keras ``(*k, a, b)`` -> ONNX ``(b, a, *k)``.

    Conv ``(*k, in/groups, out)`` -> ``(out, in/groups, *k)``; ConvTranspose ``(*k, out, in)`` ->
    ``(in, out, *k)``.
    """
    rank = kernel.ndim - 2
    return np.transpose(kernel, (rank + 1, rank, *range(rank)))


def depthwise_to_onnx(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise ``(*k, in, multiplier)`` -> grouped-Conv ``(in * multiplier, 1, *k)``."""
    *window, channels, multiplier = kernel.shape
    return channels_to_front(kernel.reshape(*window, 1, channels * multiplier))


def conv_kernel(ctx, op, transform) -> ir.Value:
    """``op.kernel`` in ONNX layout; a LoRA-enabled kernel is merged into a constant."""
    if getattr(op, "lora_enabled", False):
        merged = keras.ops.convert_to_numpy(op.kernel)
        return ctx.const(transform(merged), ctx.out_dtype(), name="kernel")
    return ctx.weight(op.kernel, transform=transform)


def optional_bias(ctx, op) -> list:
    return [ctx.weight(op.bias)] if op.use_bias and op.bias is not None else []


# ---- transposed-convolution geometry -------------------------------------------------------------

def keras_transpose_padding(window: int, stride: int, padding: str, output_padding) -> tuple[int, int]:
    """(left, right) padding of the stride-dilated input that Keras' conv_transpose convolves.

    Keras output sizes: 'valid' -> ``(n-1)*s + max(window, s)``, or ``(n-1)*s + window + output_padding``
    when output_padding is given; 'same' -> ``n*s``, or ``(n-1)*s + window % 2 + output_padding``.
    """
    if padding == "valid":
        extra = max(window, stride) - window if output_padding is None else output_padding
        return window - 1, window - 1 + extra
    if output_padding is None:
        total = stride + window - 2
    else:
        total = window + window % 2 - 2 + output_padding
    left = min(total // 2 + total % 2, window - 1)
    return left, total - left


def transpose_attrs(op) -> dict:
    """ONNX ConvTranspose attributes (pads, output_padding) reproducing Keras' output geometry.

    ONNX pads shrink the full transposed output: ``begin = window-1-left``; on the end side a
    negative value means the output grows, which ONNX expresses with ``output_padding``.
    """
    begins, ends, extra = [], [], []
    for i, (k, s, d) in enumerate(zip(op.kernel_size, op.strides, op.dilation_rate)):
        window = effective_size(k, d)
        out_pad = None if op.output_padding is None else op.output_padding[i]
        left, right = keras_transpose_padding(window, s, op.padding.lower(), out_pad)
        begins.append(window - 1 - left)
        tail = window - 1 - right
        ends.append(max(tail, 0))
        extra.append(max(-tail, 0))
    attrs = {"kernel_shape": list(op.kernel_size), "strides": list(op.strides), "pads": begins + ends}
    if any(d != 1 for d in op.dilation_rate):
        attrs["dilations"] = list(op.dilation_rate)
    if any(extra):
        attrs["output_padding"] = extra
    return attrs


# ---- converters ---------------------------------------------------------------------------------

def _c(name, build, shape, **kw):
    return Case(name, build, (shape,), **kw)


CONV_CASES = [
    _c("conv1d_valid", lambda: layers.Conv1D(4, 3), (10, 3)),
    _c("conv1d_same_stride2", lambda: layers.Conv1D(4, 3, strides=2, padding="same", activation="relu"), (9, 3)),
    _c("conv1d_causal_dilated", lambda: layers.Conv1D(4, 3, padding="causal", dilation_rate=2), (10, 3)),
    _c("conv1d_causal_stride2", lambda: layers.Conv1D(4, 4, strides=2, padding="causal"), (9, 3)),
    _c("conv1d_causal_channels_first",
       lambda: layers.Conv1D(4, 3, padding="causal", data_format="channels_first"), (3, 10)),
    _c("conv1d_same_channels_first",
       lambda: layers.Conv1D(4, 3, strides=2, padding="same", data_format="channels_first"), (3, 9)),
    _c("conv1d_groups_nobias", lambda: layers.Conv1D(4, 3, groups=2, use_bias=False), (8, 4)),
    _c("conv1d_dynamic_same_stride2", lambda: layers.Conv1D(4, 4, strides=2, padding="same"), (None, 3)),
    _c("conv1d_dynamic_causal", lambda: layers.Conv1D(2, 3, padding="causal", dilation_rate=3), (None, 3)),
    _c("conv2d_valid", lambda: layers.Conv2D(4, 3), (9, 7, 3)),
    _c("conv2d_valid_stride2", lambda: layers.Conv2D(4, (3, 2), strides=2), (9, 7, 3)),
    _c("conv2d_same_stride2_odd", lambda: layers.Conv2D(5, 3, strides=2, padding="same"), (7, 9, 3)),
    _c("conv2d_same_k4_stride23", lambda: layers.Conv2D(4, (4, 2), strides=(2, 3), padding="same"), (9, 7, 3)),
    _c("conv2d_same_stride1_even_kernel", lambda: layers.Conv2D(4, (2, 4), padding="same"), (9, 7, 3)),
    _c("conv2d_dilated_same", lambda: layers.Conv2D(4, 3, dilation_rate=2, padding="same"), (9, 7, 3)),
    _c("conv2d_dilated_valid", lambda: layers.Conv2D(4, 3, dilation_rate=(2, 1)), (9, 7, 3)),
    _c("conv2d_groups_relu", lambda: layers.Conv2D(6, 3, groups=3, padding="same", activation="relu"), (9, 7, 6)),
    _c("conv2d_channels_first",
       lambda: layers.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first"), (3, 9, 7)),
    _c("conv2d_channels_first_groups",
       lambda: layers.Conv2D(4, 2, groups=2, data_format="channels_first"), (4, 9, 7)),
    _c("conv2d_dynamic_same_stride2", lambda: layers.Conv2D(4, 3, strides=2, padding="same"), (None, None, 3)),
    _c("conv2d_dynamic_same_stride1", lambda: layers.Conv2D(4, 3, padding="same"), (None, None, 3)),
    _c("conv2d_softmax_nobias", lambda: layers.Conv2D(4, 1, activation="softmax", use_bias=False), (5, 4, 3)),
    _c("conv2d_lora", lambda: _lora_conv2d((None, 9, 7, 3)), (9, 7, 3)),
    _c("conv2d_float16", lambda: layers.Conv2D(4, 3, strides=2, padding="same", dtype="float16"), (9, 7, 3),
       dtypes=("float16",), atol=1e-2),
    _c("conv3d_valid", lambda: layers.Conv3D(3, 2), (5, 6, 4, 2)),
    _c("conv3d_same_stride2", lambda: layers.Conv3D(3, 3, strides=2, padding="same"), (5, 6, 4, 2)),
    _c("conv3d_channels_first",
       lambda: layers.Conv3D(3, (2, 3, 2), padding="same", data_format="channels_first"), (2, 5, 6, 4)),
    _c("conv3d_groups_dilated", lambda: layers.Conv3D(4, 2, groups=2, dilation_rate=2), (5, 6, 5, 4)),
]


def _lora_conv2d(input_shape):
    layer = layers.Conv2D(4, 3, padding="same")
    layer.build(input_shape)
    layer.enable_lora(2, b_initializer="random_normal")
    return layer


@register(layers.Conv1D, layers.Conv2D, layers.Conv3D, layout=Layout.CHANNELS_FIRST, cases=CONV_CASES)
def conv(ctx, op, x):
    kernel = conv_kernel(ctx, op, channels_to_front)
    attrs = {**conv_window_attrs(ctx, op), "group": op.groups}
    y = ctx.op("Conv", [x, kernel, *optional_bias(ctx, op)], attrs)
    return apply_activation(ctx, y, op.activation)


CONV_TRANSPOSE_CASES = [
    _c("conv1d_transpose_valid", lambda: layers.Conv1DTranspose(4, 3), (7, 3)),
    _c("conv1d_transpose_same_stride2", lambda: layers.Conv1DTranspose(4, 3, strides=2, padding="same"), (7, 3)),
    _c("conv1d_transpose_valid_k2_stride3", lambda: layers.Conv1DTranspose(4, 2, strides=3), (7, 3)),
    _c("conv1d_transpose_same_output_padding",
       lambda: layers.Conv1DTranspose(4, 3, strides=3, padding="same", output_padding=2), (7, 3)),
    _c("conv1d_transpose_dilated_same", lambda: layers.Conv1DTranspose(4, 3, dilation_rate=2, padding="same"), (7, 3)),
    _c("conv1d_transpose_channels_first",
       lambda: layers.Conv1DTranspose(4, 3, strides=2, data_format="channels_first"), (3, 7)),
    _c("conv2d_transpose_valid", lambda: layers.Conv2DTranspose(4, 3), (5, 4, 3)),
    _c("conv2d_transpose_same_stride2_odd",
       lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu"), (7, 9, 3)),
    _c("conv2d_transpose_valid_output_padding",
       lambda: layers.Conv2DTranspose(4, 3, strides=2, output_padding=1), (5, 4, 3)),
    _c("conv2d_transpose_same_output_padding",
       lambda: layers.Conv2DTranspose(4, (4, 3), strides=(2, 3), padding="same", output_padding=(1, 0)), (5, 4, 3)),
    _c("conv2d_transpose_same_even_kernel", lambda: layers.Conv2DTranspose(4, (2, 4), strides=2, padding="same"),
       (5, 4, 3)),
    _c("conv2d_transpose_dilated", lambda: layers.Conv2DTranspose(4, 3, dilation_rate=2), (5, 4, 3)),
    _c("conv2d_transpose_k1_stride2_nobias", lambda: layers.Conv2DTranspose(4, 1, strides=2, use_bias=False),
       (5, 4, 3)),
    _c("conv2d_transpose_channels_first",
       lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same", data_format="channels_first"), (3, 5, 4)),
    _c("conv2d_transpose_dynamic", lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
       (None, None, 3)),
    _c("conv2d_transpose_float16", lambda: layers.Conv2DTranspose(4, 3, strides=2, dtype="float16"), (5, 4, 3),
       dtypes=("float16",), atol=1e-2),
    _c("conv3d_transpose_valid_stride2", lambda: layers.Conv3DTranspose(3, 2, strides=2), (4, 5, 3, 2)),
    _c("conv3d_transpose_same", lambda: layers.Conv3DTranspose(3, 3, strides=(1, 2, 2), padding="same"),
       (4, 5, 3, 2)),
    _c("conv3d_transpose_output_padding",
       lambda: layers.Conv3DTranspose(3, 3, strides=2, output_padding=(1, 0, 1)), (3, 4, 3, 2)),
]


@register(layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose,
          layout=Layout.CHANNELS_FIRST, cases=CONV_TRANSPOSE_CASES)
def conv_transpose(ctx, op, x):
    kernel = conv_kernel(ctx, op, channels_to_front)
    y = ctx.op("ConvTranspose", [x, kernel, *optional_bias(ctx, op)], transpose_attrs(op))
    return apply_activation(ctx, y, op.activation)


def depthwise(ctx, op, x, kernel_variable, bias: list):
    """Grouped Conv (one group per input channel) for a Keras depthwise kernel."""
    channels = kernel_variable.shape[-2]
    kernel = ctx.weight(kernel_variable, transform=depthwise_to_onnx)
    attrs = {**conv_window_attrs(ctx, op), "group": channels}
    return ctx.op("Conv", [x, kernel, *bias], attrs)


DEPTHWISE_CASES = [
    _c("depthwise_conv1d", lambda: layers.DepthwiseConv1D(3), (10, 3)),
    _c("depthwise_conv1d_mult2_same_stride2",
       lambda: layers.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2), (9, 3)),
    _c("depthwise_conv1d_dilated", lambda: layers.DepthwiseConv1D(3, dilation_rate=2, padding="same"), (10, 3)),
    _c("depthwise_conv1d_channels_first",
       lambda: layers.DepthwiseConv1D(3, depth_multiplier=2, data_format="channels_first"), (3, 10)),
    _c("depthwise_conv2d", lambda: layers.DepthwiseConv2D(3), (9, 7, 3)),
    _c("depthwise_conv2d_mult3_same_stride2_odd",
       lambda: layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=3, activation="relu6"),
       (7, 9, 2)),
    _c("depthwise_conv2d_dilated_same", lambda: layers.DepthwiseConv2D((3, 2), dilation_rate=2, padding="same"),
       (9, 7, 3)),
    _c("depthwise_conv2d_channels_first",
       lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", data_format="channels_first"),
       (3, 9, 7)),
    _c("depthwise_conv2d_nobias", lambda: layers.DepthwiseConv2D(2, strides=(1, 2), use_bias=False), (9, 7, 3)),
    _c("depthwise_conv2d_dynamic_same_stride2", lambda: layers.DepthwiseConv2D(3, strides=2, padding="same"),
       (None, None, 3)),
]


@register(layers.DepthwiseConv1D, layers.DepthwiseConv2D, layout=Layout.CHANNELS_FIRST, cases=DEPTHWISE_CASES)
def depthwise_conv(ctx, op, x):
    y = depthwise(ctx, op, x, op.kernel, optional_bias(ctx, op))
    return apply_activation(ctx, y, op.activation)


SEPARABLE_CASES = [
    _c("separable_conv1d", lambda: layers.SeparableConv1D(5, 3), (10, 3)),
    _c("separable_conv1d_mult2_same_stride2",
       lambda: layers.SeparableConv1D(4, 3, strides=2, padding="same", depth_multiplier=2), (9, 3)),
    _c("separable_conv1d_channels_first",
       lambda: layers.SeparableConv1D(4, 3, padding="same", data_format="channels_first"), (3, 10)),
    _c("separable_conv2d", lambda: layers.SeparableConv2D(4, 3), (9, 7, 3)),
    _c("separable_conv2d_mult2_same_stride2_odd",
       lambda: layers.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
       (7, 9, 3)),
    _c("separable_conv2d_dilated_nobias",
       lambda: layers.SeparableConv2D(4, 3, dilation_rate=2, padding="same", use_bias=False), (9, 7, 3)),
    _c("separable_conv2d_channels_first",
       lambda: layers.SeparableConv2D(4, 2, strides=2, data_format="channels_first"), (3, 9, 7)),
]


@register(layers.SeparableConv1D, layers.SeparableConv2D, layout=Layout.CHANNELS_FIRST, cases=SEPARABLE_CASES)
def separable_conv(ctx, op, x):
    y = depthwise(ctx, op, x, op.depthwise_kernel, [])
    pointwise = ctx.weight(op.pointwise_kernel, transform=channels_to_front)
    y = ctx.op("Conv", [y, pointwise, *optional_bias(ctx, op)], {"kernel_shape": [1] * op.rank})
    return apply_activation(ctx, y, op.activation)
