"""Pooling layers: Max/AveragePooling1D/2D/3D and their global variants.

Converters work channels-first (``Layout.CHANNELS_FIRST``). Window pooling shares its padding
computation with the convolutions (``layers_conv.window_attrs``). Global pooling reduces the stored
spatial axes 2..; with ``keepdims=False`` the (N, C) output is the same in every layout, so the
driver takes it as Keras layout.
"""

from __future__ import annotations

from keras import layers

from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN
from .layers_conv import window_attrs

register = BUILTIN.register

_MAX_POOLING = (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D)
_AVERAGE_POOLING = (layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D)
_GLOBAL_MAX = (layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D)
_GLOBAL_AVERAGE = (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D, layers.GlobalAveragePooling3D)


def _pooling_cases(prefix: str, rank_layers) -> list[Case]:
    """The same geometry matrix for max and average pooling."""
    pool1d, pool2d, pool3d = rank_layers
    return [
        Case(f"{prefix}1d", lambda: pool1d(2), ((9, 3),)),
        Case(f"{prefix}1d_same_stride1", lambda: pool1d(3, strides=1, padding="same"), ((9, 3),)),
        Case(f"{prefix}1d_same_stride2", lambda: pool1d(3, strides=2, padding="same"), ((10, 3),)),
        Case(f"{prefix}1d_channels_first", lambda: pool1d(2, padding="same", data_format="channels_first"),
             ((3, 9),)),
        Case(f"{prefix}2d", lambda: pool2d(2), ((9, 7, 3),)),
        Case(f"{prefix}2d_same_odd", lambda: pool2d(2, padding="same"), ((7, 9, 3),)),
        Case(f"{prefix}2d_pool3_stride2_same", lambda: pool2d(3, strides=2, padding="same"), ((9, 7, 3),)),
        Case(f"{prefix}2d_pool3_stride2_valid", lambda: pool2d(3, strides=2), ((9, 7, 3),)),
        Case(f"{prefix}2d_pool3_stride1_same", lambda: pool2d(3, strides=1, padding="same"), ((9, 7, 3),)),
        Case(f"{prefix}2d_pool23_stride32_same", lambda: pool2d((2, 3), strides=(3, 2), padding="same"),
             ((9, 7, 3),)),
        Case(f"{prefix}2d_channels_first_same",
             lambda: pool2d(3, strides=2, padding="same", data_format="channels_first"), ((3, 7, 9),)),
        Case(f"{prefix}2d_dynamic_same", lambda: pool2d(3, strides=2, padding="same"), ((None, None, 3),)),
        Case(f"{prefix}3d", lambda: pool3d(2), ((5, 6, 4, 2),)),
        Case(f"{prefix}3d_same_stride2", lambda: pool3d(3, strides=2, padding="same"), ((5, 6, 4, 2),)),
        Case(f"{prefix}3d_channels_first", lambda: pool3d((2, 3, 2), data_format="channels_first"),
             ((2, 5, 6, 4),)),
        Case(f"{prefix}2d_float16", lambda: pool2d(3, strides=2, padding="same", dtype="float16"), ((9, 7, 3),),
             dtypes=("float16",), atol=1e-2),
    ]


def _pool_attrs(ctx, op) -> dict:
    return window_attrs(ctx, op, op.pool_size, op.strides)


@register(*_MAX_POOLING, layout=Layout.CHANNELS_FIRST, cases=_pooling_cases("max_pool", _MAX_POOLING))
def max_pooling(ctx, op, x):
    return ctx.op("MaxPool", [x], _pool_attrs(ctx, op))


@register(*_AVERAGE_POOLING, layout=Layout.CHANNELS_FIRST, cases=_pooling_cases("avg_pool", _AVERAGE_POOLING))
def average_pooling(ctx, op, x):
    # Keras/TF 'same' average pooling divides by the number of real (unpadded) inputs.
    return ctx.op("AveragePool", [x], {**_pool_attrs(ctx, op), "count_include_pad": 0})


def _global_cases(prefix: str, rank_layers) -> list[Case]:
    shapes = ((9, 3), (9, 7, 3), (5, 6, 4, 2))
    cases = []
    for rank, (layer, shape) in enumerate(zip(rank_layers, shapes), start=1):
        channels_first_shape = (shape[-1], *shape[:-1])
        cases += [
            Case(f"{prefix}{rank}d", lambda layer=layer: layer(), (shape,)),
            Case(f"{prefix}{rank}d_keepdims", lambda layer=layer: layer(keepdims=True), (shape,)),
            Case(f"{prefix}{rank}d_channels_first",
                 lambda layer=layer: layer(data_format="channels_first"), (channels_first_shape,)),
            Case(f"{prefix}{rank}d_channels_first_keepdims",
                 lambda layer=layer: layer(data_format="channels_first", keepdims=True), (channels_first_shape,)),
        ]
    return cases


@register(*_GLOBAL_MAX, layout=Layout.CHANNELS_FIRST, cases=[
    *_global_cases("global_max_pool", _GLOBAL_MAX),
    Case("global_max_pool2d_dynamic", lambda: layers.GlobalMaxPooling2D(), ((None, None, 3),)),
])
def global_max_pooling(ctx, op, x):
    return _global_pool(ctx, "GlobalMaxPool", x, op.keepdims)


def _global_pool(ctx, op_type: str, x, keepdims: bool):
    """ONNX GlobalXxxPool on the stored (batch, channels, *spatial) tensor; onnxruntime keeps it in
    its blocked NCHWc layout, which a ReduceMean/ReduceMax would not."""
    pooled = ctx.op(op_type, [x])
    return pooled if keepdims else ctx.op("Flatten", [pooled], {"axis": 1})


def _masked_gap1d(keepdims: bool):
    layer = layers.GlobalAveragePooling1D(keepdims=keepdims)
    return lambda x, mask: layer(x, mask=mask)


@register(*_GLOBAL_AVERAGE, layout=Layout.CHANNELS_FIRST, cases=[
    *_global_cases("global_avg_pool", _GLOBAL_AVERAGE),
    Case("global_avg_pool2d_dynamic", lambda: layers.GlobalAveragePooling2D(), ((None, None, 3),)),
    Case("global_avg_pool1d_masked", lambda: _masked_gap1d(False), ((9, 3), (9,)), dtypes=("float32", "bool")),
    Case("global_avg_pool1d_masked_keepdims", lambda: _masked_gap1d(True), ((9, 3), (9,)),
         dtypes=("float32", "bool")),
    Case("global_avg_pool1d_int_mask", lambda: _masked_gap1d(False), ((9, 3), (9,)),
         dtypes=("float32", "int32"), int_range=(0, 2)),
])
def global_average_pooling(ctx, op, x, *rest):
    mask = ctx.kwargs.get("mask", rest[0] if rest else None)
    if mask is not None:
        return _masked_mean_over_steps(ctx, x, mask, op.keepdims)
    return _global_pool(ctx, "GlobalAveragePool", x, op.keepdims)


def _masked_mean_over_steps(ctx, x, mask, keepdims: bool):
    """GlobalAveragePooling1D with a (batch, steps) mask on a stored (batch, channels, steps) input.

    Like Keras, masked steps are replaced by 0 (not multiplied: a masked inf/nan must not leak).
    """
    keep = ctx.op("Unsqueeze", [mask, ctx.int64s([1])])
    if ctx.in_dtype(1) != "bool":  # the mask is the node's second Keras tensor
        keep = ctx.cast(keep, "bool")
    kept = ctx.op("Where", [keep, x, ctx.scalar(0.0)])
    total = ctx.reduce("ReduceSum", kept, [2], keepdims=keepdims)
    count = ctx.reduce("ReduceSum", ctx.cast(keep, ctx.out_dtype()), [2], keepdims=keepdims)
    return ctx.op("Div", [total, count])
