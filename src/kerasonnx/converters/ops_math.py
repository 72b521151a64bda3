"""``keras.ops`` math operations (``keras.src.ops.math``): rsqrt, erf/erfc, logsumexp, top_k.
Not converted (reported as unsupported): FFT/STFT (complex numbers), segment reductions
(data-dependent output size), in_top_k, cdist, extract_sequences, erfinv, logdet."""

from __future__ import annotations

import keras

from ..core.layout import Layout
from ..core.registry import Case
from ..core.walker import ops_classes
from . import BUILTIN
from .ops_numpy import operand

register = BUILTIN.register


def _float(ctx, x):
    return operand(ctx, x, ctx.out_dtype())


@register(*ops_classes("math", "Rsqrt"), layout=Layout.ANY, cases=[
    Case("ops_math_rsqrt", lambda: (lambda x: keras.ops.rsqrt(keras.ops.abs(x) + 0.1)), ((3, 4),)),
])
def rsqrt(ctx, op, x):
    return ctx.op("Reciprocal", [ctx.op("Sqrt", [_float(ctx, x)])])


@register(*ops_classes("math", "Erf"), layout=Layout.ANY, cases=[
    Case("ops_math_erf", lambda: (lambda x: keras.ops.erf(x)), ((3, 4),)),
])
def erf(ctx, op, x):
    return ctx.op("Erf", [_float(ctx, x)])


@register(*ops_classes("math", "Erfc"), layout=Layout.ANY, cases=[
    Case("ops_math_erfc", lambda: (lambda x: keras.ops.erfc(x)), ((3, 4),)),
])
def erfc(ctx, op, x):
    return ctx.op("Sub", [ctx.scalar(1.0), ctx.op("Erf", [_float(ctx, x)])])


@register(*ops_classes("math", "Logsumexp"), cases=[
    Case("ops_math_logsumexp", lambda: (lambda x: keras.ops.logsumexp(x * 30.0, axis=-1)), ((3, 4),)),
    Case("ops_math_logsumexp_keepdims", lambda: (lambda x: keras.ops.logsumexp(x, axis=1, keepdims=True)),
         ((3, 4),)),
    Case("ops_math_logsumexp_all", lambda: (lambda x: keras.ops.logsumexp(x)), ((3, 4),)),
])
def logsumexp(ctx, op, x):
    """max + log(sum(exp(x - max))): stable for large inputs, like Keras."""
    rank = len(ctx.in_shape())
    axes = op.axis if op.axis is not None else list(range(rank))
    axes = [a % rank for a in ([axes] if isinstance(axes, int) else axes)]
    x = _float(ctx, x)
    peak = ctx.reduce("ReduceMax", x, axes, keepdims=True)
    summed = ctx.reduce("ReduceSum", ctx.op("Exp", [ctx.op("Sub", [x, peak])]), axes, keepdims=op.keepdims)
    if not op.keepdims:
        peak = ctx.op("Squeeze", [peak, ctx.int64s(axes)])
    return ctx.op("Add", [ctx.op("Log", [summed]), peak])


@register(*ops_classes("math", "TopK"), cases=[
    Case("ops_math_top_k", lambda: (lambda x: keras.ops.top_k(x, 3)), ((7,),)),
    Case("ops_math_top_k_rank3", lambda: (lambda x: keras.ops.top_k(x, 2)[0]), ((2, 5),)),
])
def top_k(ctx, op, x):
    values, indices = ctx.op("TopK", [x, ctx.int64s([op.k])], {"axis": -1, "largest": 1, "sorted": 1},
                             outputs=2)
    return values, ctx.cast(indices, ctx.out_dtype(1))

