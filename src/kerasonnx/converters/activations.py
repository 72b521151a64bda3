"""ONNX for every ``keras.activations`` function; shared by Activation, Dense, Conv, ... layers."""

from __future__ import annotations

import math

import keras
import numpy as np



def activation_name(fn) -> str:
    if fn is None:
        return "linear"
    if isinstance(fn, str):
        return fn
    name = getattr(fn, "__name__", None) or keras.activations.serialize(fn)
    return name if isinstance(name, str) else str(name)


def _unary(op_type):
    return lambda ctx, x: ctx.op(op_type, [x])


def _gelu(ctx, x, approximate=False):
    if ctx.opset >= 20:
        return ctx.op("Gelu", [x], {"approximate": "tanh" if approximate else "none"})
    half = ctx.scalar(0.5)
    one = ctx.scalar(1.0)
    if approximate:
        cube = ctx.op("Mul", [ctx.op("Mul", [x, x]), x])
        inner = ctx.op("Add", [x, ctx.op("Mul", [cube, ctx.scalar(0.044715)])])
        t = ctx.op("Tanh", [ctx.op("Mul", [inner, ctx.scalar(math.sqrt(2 / math.pi))])])
    else:
        t = ctx.op("Erf", [ctx.op("Mul", [x, ctx.scalar(1 / math.sqrt(2))])])
    return ctx.op("Mul", [ctx.op("Mul", [x, half]), ctx.op("Add", [t, one])])


def _swish(ctx, x):
    return ctx.op("Mul", [x, ctx.op("Sigmoid", [x])])


def _hard_sigmoid(ctx, x):
    return ctx.op("HardSigmoid", [x], {"alpha": 1.0 / 6.0, "beta": 0.5})


def _hard_silu(ctx, x):
    if ctx.opset >= 14:
        return ctx.op("HardSwish", [x])
    return ctx.op("Mul", [x, _hard_sigmoid(ctx, x)])


def _relu6(ctx, x):
    return ctx.op("Clip", [x, ctx.scalar(0.0), ctx.scalar(6.0)])


def _log_sigmoid(ctx, x):
    return ctx.op("Neg", [ctx.op("Softplus", [ctx.op("Neg", [x])])])


def _mish(ctx, x):
    if ctx.opset >= 18:
        return ctx.op("Mish", [x])
    return ctx.op("Mul", [x, ctx.op("Tanh", [ctx.op("Softplus", [x])])])


def _exponential(ctx, x):
    return ctx.op("Exp", [x])


def _softmax_last(ctx, x):
    return ctx.op("Softmax", [x], {"axis": ctx.axis(-1, len(ctx.out_shape()))})


def _log_softmax_last(ctx, x):
    return ctx.op("LogSoftmax", [x], {"axis": ctx.axis(-1, len(ctx.out_shape()))})


def _hard_tanh(ctx, x):
    return ctx.op("Clip", [x, ctx.scalar(-1.0), ctx.scalar(1.0)])


def _tanh_shrink(ctx, x):
    return ctx.op("Sub", [x, ctx.op("Tanh", [x])])


def _squareplus(ctx, x, b=4.0):
    root = ctx.op("Sqrt", [ctx.op("Add", [ctx.op("Mul", [x, x]), ctx.scalar(b)])])
    return ctx.op("Mul", [ctx.op("Add", [x, root]), ctx.scalar(0.5)])


def _sparse_plus(ctx, x):
    # 0 for x <= -1, (x+1)^2/4 for -1 < x < 1, x for x >= 1
    clipped = ctx.op("Clip", [x, ctx.scalar(-1.0), ctx.scalar(1.0)])
    quad = ctx.op("Mul", [ctx.op("Mul", [ctx.op("Add", [clipped, ctx.scalar(1.0)]),
                                          ctx.op("Add", [clipped, ctx.scalar(1.0)])]), ctx.scalar(0.25)])
    return ctx.op("Add", [quad, ctx.op("Relu", [ctx.op("Sub", [x, ctx.scalar(1.0)])])])


def _soft_shrink(ctx, x, threshold=0.5):
    t = ctx.scalar(threshold)
    pos = ctx.op("Relu", [ctx.op("Sub", [x, t])])
    neg = ctx.op("Relu", [ctx.op("Sub", [ctx.op("Neg", [x]), t])])
    return ctx.op("Sub", [pos, neg])


def _hard_shrink(ctx, x, threshold=0.5):
    keep = ctx.op("Greater", [ctx.op("Abs", [x]), ctx.scalar(threshold)])
    return ctx.op("Where", [keep, x, ctx.scalar(0.0)])


def _sparse_sigmoid(ctx, x):
    return ctx.op("Clip", [ctx.op("Mul", [ctx.op("Add", [x, ctx.scalar(1.0)]), ctx.scalar(0.5)]),
                           ctx.scalar(0.0), ctx.scalar(1.0)])


ACTIVATIONS = {
    "linear": lambda ctx, x: x,
    "relu": _unary("Relu"),
    "relu6": _relu6,
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "elu": _unary("Elu"),
    "selu": lambda ctx, x: ctx.op("Selu", [x], {"alpha": 1.6732632423543772, "gamma": 1.0507009873554805}),
    "celu": lambda ctx, x: ctx.op("Celu", [x], {"alpha": 1.0}),
    "leaky_relu": lambda ctx, x: ctx.op("LeakyRelu", [x], {"alpha": 0.2}),
    "gelu": _gelu,
    "silu": _swish,
    "swish": _swish,
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
    "exponential": _exponential,
    "log_sigmoid": _log_sigmoid,
    "mish": _mish,
    "softmax": _softmax_last,
    "log_softmax": _log_softmax_last,
    "hard_tanh": _hard_tanh,
    "tanh_shrink": _tanh_shrink,
    "squareplus": _squareplus,
    "sparse_plus": _sparse_plus,
    "soft_shrink": _soft_shrink,
    "hard_shrink": _hard_shrink,
    "sparse_sigmoid": _sparse_sigmoid,
}


def apply_activation(ctx, x, fn):
    """Apply Keras activation ``fn`` (function or name) to ``x``."""
    name = activation_name(fn)
    if name not in ACTIVATIONS:
        raise ctx.unsupported(f"activation '{name}' has no ONNX mapping")
    return ACTIVATIONS[name](ctx, x)


def activation_names() -> list[str]:
    return sorted(ACTIVATIONS)


__all__ = ["apply_activation", "activation_name", "ACTIVATIONS", "np"]
