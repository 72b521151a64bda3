"""``keras.ops`` numpy-style operations that appear as nodes in functional graphs (``x + 3.0``)."""

from __future__ import annotations

import re

import keras
import onnx_ir as ir

from ..core.layout import Layout
from ..core.registry import Case
from ..core.walker import ops_class
from . import BUILTIN

_BINARY = {
    "Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Divide": "Div", "TrueDivide": "Div",
    "Power": "Pow", "Maximum": "Max", "Minimum": "Min",
}
_COMPARE = {
    "Equal": "Equal", "Greater": "Greater", "GreaterEqual": "GreaterOrEqual", "Less": "Less",
    "LessEqual": "LessOrEqual",
}
_UNARY = {
    "Negative": "Neg", "Absolute": "Abs", "Abs": "Abs", "Exp": "Exp", "Log": "Log", "Sqrt": "Sqrt",
    "Tanh": "Tanh", "Sin": "Sin", "Cos": "Cos", "Floor": "Floor", "Ceil": "Ceil", "Sign": "Sign",
    "Reciprocal": "Reciprocal", "Erf": "Erf",
}


def operand(ctx, x, dtype):
    """An ONNX value for a tensor or Python scalar operand, in ``dtype``."""
    if isinstance(x, ir.Value):
        return x if x.dtype is None or x.dtype == _onnx(dtype) else ctx.cast(x, dtype)
    return ctx.const(x, dtype)


def _onnx(dtype):
    from ..core.dtypes import to_onnx_dtype

    return to_onnx_dtype(dtype)


def _binary(onnx_op):
    def convert(ctx, op, a, b):
        dtype = ctx.out_dtype()
        return ctx.op(onnx_op, [operand(ctx, a, dtype), operand(ctx, b, dtype)])

    return convert


def _compare(onnx_op):
    def convert(ctx, op, a, b):
        dtype = keras.backend.result_type(*[t.dtype for t in ctx.in_tensors] or ["float32"])
        value = ctx.op(onnx_op, [operand(ctx, a, dtype), operand(ctx, b, dtype)])
        return value

    return convert


def _unary(onnx_op):
    def convert(ctx, op, x):
        return ctx.op(onnx_op, [operand(ctx, x, ctx.out_dtype())])

    return convert


def _register_table(table, make, cases_for):
    for keras_name, onnx_op in table.items():
        cls = ops_class("numpy", keras_name)
        if cls is not None:
            BUILTIN.register(cls, layout=Layout.ANY, cases=cases_for(keras_name))(make(onnx_op))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _binary_cases(name):
    fn = getattr(keras.ops, _snake(name))
    return [
        Case(f"ops_{_snake(name)}_tensors", lambda: (lambda a, b: fn(a, b)), ((3, 4), (3, 4))),
        Case(f"ops_{_snake(name)}_scalar", lambda: (lambda a: fn(a, 1.5)), ((3, 4),)),
    ]


def _unary_cases(name):
    fn = getattr(keras.ops, _snake(name))
    wrap = (lambda x: fn(keras.ops.abs(x) + 0.5)) if name in ("Log", "Sqrt", "Reciprocal") else fn
    return [Case(f"ops_{_snake(name)}", lambda: wrap, ((3, 4),))]


_register_table(_BINARY, _binary, _binary_cases)
_register_table(_COMPARE, _compare, _binary_cases)
_register_table(_UNARY, _unary, _unary_cases)
