"""``keras.ops`` numpy-style operations (the classes of ``keras.src.ops.numpy``) that appear as nodes in
functional graphs: ``x + 3.0``, ``keras.ops.mean(x, axis=1)``, ``x[:, 1:3]``, ``keras.ops.einsum(...)``.

The module is organised by family (elementwise, reductions, scans, shapes, indexing, linear algebra,
sorting, constructors); most families are tables mapping Keras class names to small builders, and
every converter declares its test cases beside it. Elementwise ops and ops whose axes are mapped
with ``ctx.axis`` follow their input's layout (``Layout.ANY``); the others see Keras' layout.

Operand conventions: converters receive Keras tensors as ``ir.Value`` and Python scalars / lists as
they are (lists arrive flattened); ``operand`` turns either into a value of a given dtype. Output
dtypes follow Keras (``ctx.out_dtype()``), computed in that dtype unless noted.
"""

from __future__ import annotations

import functools
import inspect
import math
import string

import keras
import numpy as np
import onnx_ir as ir

from ..core import layout as L
from ..core.dtypes import to_numpy_dtype, to_onnx_dtype
from ..core.layout import Layout
from ..core.registry import Case, lazy_op
from ..core.walker import ops_class, ops_classes
from . import BUILTIN

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
ANY = Layout.ANY
ops = keras.ops


class Traced(keras.layers.Layer):
    """A layer running ``fn`` in ``call()``: without a converter kerasonnx traces it, and then
    ``ops.shape(x)`` gives None for dynamic dims (test cases for shapes known only at run time)."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def register(*names, layout=Layout.KERAS, min_opset=13, cases=()):
    """Register a converter for the ``keras.src.ops.numpy`` classes called ``names`` (those that exist)."""
    classes = [c for c in (ops_class("numpy", n) for n in names) if c is not None]

    def decorator(fn):
        if classes:
            BUILTIN.register(*classes, layout=layout, min_opset=min_opset, cases=cases)(fn)
        return fn

    return decorator


def case(name, fn, shapes=((None, 4),), **kwargs) -> Case:
    """A test case ``ops_<name>`` applying ``fn`` to Keras inputs of ``shapes`` (batch excluded)."""
    return Case(f"ops_{name}", lambda: fn, shapes, **kwargs)


def cf_case(name, fn, **kwargs) -> Case:
    """A case applying ``fn`` to a Conv2D output, which reaches ``Layout.ANY`` converters channels-first."""
    return case(f"{name}_channels_first", lambda x: fn(keras.layers.Conv2D(3, 1)(x)), ((4, 5, 2),), **kwargs)


def traced_case(name, fn, shapes=((None, 4),), **kwargs) -> Case:
    """A case running ``fn`` inside a traced layer's ``call()`` (see ``Traced``)."""
    return Case(f"ops_{name}", lambda: Traced(fn), shapes, **kwargs)


def setting(op, *names, default=None):
    """An operation setting, read from its attributes or ``get_config()`` under any of ``names``."""
    for name in names:
        if name in vars(op):
            return vars(op)[name]
    try:
        config = op.get_config()
    except Exception:  # ops whose constructor arguments are not serialisable
        config = {}
    return next((config[n] for n in names if n in config), default)


# ---- operands and dtypes ---------------------------------------------------------------------------

def keras_dtype(x) -> str:
    """Keras dtype name of a converted operand (Python scalars give their weak Python type)."""
    if isinstance(x, ir.Value):
        if x.dtype is None:
            raise ValueError(f"internal: value '{x.name}' has no dtype")
        return keras.backend.standardize_dtype(to_numpy_dtype(x.dtype).name)
    if isinstance(x, (bool, int, float)):
        return type(x)
    return keras.backend.standardize_dtype(np.asarray(x).dtype.name)


def common_dtype(*xs) -> str:
    return keras.backend.result_type(*[keras_dtype(x) for x in xs if x is not None])


def is_float(dtype) -> bool:
    return np.issubdtype(to_numpy_dtype(dtype), np.floating) or str(dtype) == "bfloat16"


def operand(ctx, x, dtype):
    """An ONNX value for a tensor, Python scalar or array operand, in ``dtype``."""
    if isinstance(x, ir.Value):
        if x.dtype is None or x.dtype == to_onnx_dtype(dtype):
            return x
        if x.const_value is not None:  # a constant argument: convert it now, not at run time
            return ctx.const(x.const_value.numpy(), dtype)
        return cast(ctx, x, dtype)
    return ctx.const(np.asarray(x), dtype)


def cast(ctx, x, dtype):
    """``Cast`` whose output carries its dtype (so that later helpers can read it)."""
    return cast_free(ctx.cast(x, dtype), dtype)


def cast_free(y, dtype):
    """Record that the new value ``y`` has ``dtype``."""
    y.dtype = to_onnx_dtype(dtype)
    return y


def c(ctx, value, dtype):
    """A constant in ``dtype`` (scalar or array)."""
    return ctx.const(np.asarray(value), dtype)


def to_bool(ctx, x):
    if not isinstance(x, ir.Value):
        return ctx.const(np.asarray(x, dtype=bool))
    if keras_dtype(x) == "bool":
        return x
    return cast_free(ctx.op("Not", [ctx.op("Equal", [x, c(ctx, 0, keras_dtype(x))])]), "bool")


def where(ctx, cond, a, b, dtype):
    """``Where`` that also handles bool values (onnxruntime has no bool Where kernel)."""
    if dtype == "bool":
        return ctx.op("Or", [ctx.op("And", [cond, a]), ctx.op("And", [ctx.op("Not", [cond]), b])])
    return ctx.op("Where", [cond, a, b])


def in_shapes(ctx, args) -> list[tuple]:
    """Keras shapes of a converter's flat positional arguments: Keras tensors (in call order),
    constants (concrete arrays the driver turned into initializers), Python scalars and lists."""
    tensors = iter(ctx.in_tensors)

    def shape(a):
        if not isinstance(a, ir.Value):
            return np.shape(a)
        if a.const_value is not None:
            return tuple(a.shape)
        return tuple(next(tensors).shape)
    return [shape(a) for a in args]


def keras_order(ctx, i: int = 0):
    """Input ``i`` in Keras' own layout (for ``Layout.ANY`` converters that flatten)."""
    return ctx.fetch(ctx.in_tensors[i], L.identity(len(ctx.in_shape(i))))


def stored_shape(ctx, i: int = 0) -> tuple:
    """Keras static shape of input ``i`` in the order its value is stored (``ctx.perm``)."""
    shape = ctx.in_shape(i)
    return L.permute_shape(shape, ctx.perm) if len(ctx.perm) == len(shape) else shape


# ---- small graph helpers ---------------------------------------------------------------------------

def shape_of(ctx, x):
    return ctx.op("Shape", [x])


def dim(ctx, x, axis: int, static=None):
    """The size of ``axis`` of ``x`` as a 1-D int64 value (a constant when ``static`` is known)."""
    if static is not None:
        return ctx.int64s([static])
    return ctx.op("Gather", [shape_of(ctx, x), ctx.int64s([axis])])


def scalar_of(ctx, v):
    """A 0-d value from a 1-element 1-D value."""
    return ctx.op("Squeeze", [v, ctx.int64s([0])])


def arange(ctx, n, static=None):
    """``[0, 1, ..., n-1]`` (int64) for a 1-D int64 size value ``n`` or a static int."""
    if static is not None:
        return ctx.int64s(np.arange(static))
    return ctx.op("Range", [ctx.const(np.asarray(0, np.int64)), scalar_of(ctx, n),
                            ctx.const(np.asarray(1, np.int64))])


def full(ctx, shaped, value, dtype):
    """A tensor shaped like ``shaped`` filled with ``value`` (a number or a scalar value)."""
    fill = operand(ctx, value, dtype)
    return cast_free(ctx.op("Expand", [fill, shape_of(ctx, shaped)]), dtype)


def like(y, x):
    """``y`` (a new value) typed like ``x``: data-movement helpers keep their input's dtype."""
    if isinstance(x, ir.Value) and y is not x and x.dtype is not None:
        y.dtype = x.dtype
    return y


def transpose(ctx, x, perm):
    perm = list(perm)
    return x if perm == sorted(perm) else like(ctx.op("Transpose", [x], {"perm": perm}), x)


def unsqueeze(ctx, x, axes):
    return like(ctx.op("Unsqueeze", [x, ctx.int64s(list(axes))]), x) if len(axes) else x


def squeeze(ctx, x, axes):
    return like(ctx.op("Squeeze", [x, ctx.int64s(list(axes))]), x) if len(axes) else x


def reshape(ctx, x, target):
    return like(ctx.op("Reshape", [x, target if isinstance(target, ir.Value) else ctx.int64s(list(target))]), x)


def flat(ctx, x):
    return reshape(ctx, x, [-1])


def slice_(ctx, x, starts, ends, axes, steps=None):
    """Slice; ``starts``/``ends`` are int lists or 1-D int64 values."""
    def v(s):
        return s if isinstance(s, ir.Value) else ctx.int64s(list(s))
    inputs = [x, v(starts), v(ends), ctx.int64s(list(axes))]
    return like(ctx.op("Slice", inputs + ([ctx.int64s(list(steps))] if steps is not None else [])), x)


def norm_axes(axis, rank: int) -> list[int]:
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return [int(a) % rank for a in axes]


def stored_axes(ctx, axis, rank: int):
    """Keras ``axis`` (None, int or tuple) as sorted stored axes, or None for all axes."""
    if axis is None:
        return None
    return sorted(ctx.axis(a, rank) for a in norm_axes(axis, rank))


def reduce(ctx, op_type, x, axes, keepdims):
    """A reduction over stored ``axes`` (None: all; []: none, ``x`` is returned)."""
    if axes is not None and not axes:
        return x
    return like(ctx.reduce(op_type, x, axes, keepdims), x)


def isnan(ctx, x):
    return cast_free(ctx.op("IsNaN", [x]), "bool")


def nan_fill(ctx, x, value):
    """``x`` with NaNs replaced by ``value`` (integer tensors have none)."""
    if not is_float(keras_dtype(x)):
        return x
    return like(ctx.op("Where", [isnan(ctx, x), c(ctx, value, keras_dtype(x)), x]), x)


# ---- elementwise: unary -----------------------------------------------------------------------------
# Builders get the operand already cast to the output dtype (the compute dtype).

def _float_only(build):
    """Integer inputs pass through unchanged (Floor, Ceil, Trunc, Round of an int tensor)."""
    return lambda ctx, op, x: build(ctx, op, x) if is_float(ctx.out_dtype()) else x


def _chain(*steps):
    """Unary ONNX ops applied in sequence, each step an op name or ``(op, constant)``."""
    def build(ctx, op, x):
        for step in steps:
            if isinstance(step, str):
                x = ctx.op(step, [x])
            else:
                name, k = step
                x = ctx.op(name, [x, c(ctx, k, ctx.out_dtype())])
        return x
    return build


def _round(ctx, op, x):
    decimals = int(setting(op, "decimals", default=0) or 0)
    dtype = ctx.out_dtype()
    if not is_float(dtype):
        if decimals >= 0:
            return x
        x = ctx.cast(x, "float32")
    scale = c(ctx, 10.0 ** decimals, dtype if is_float(dtype) else "float32")
    y = ctx.op("Round", [ctx.op("Mul", [x, scale])]) if decimals else ctx.op("Round", [x])
    y = ctx.op("Div", [y, scale]) if decimals else y
    return y if is_float(dtype) else ctx.cast(ctx.op("Round", [y]), dtype)


def _trunc(ctx, op, x):
    negative = ctx.op("Less", [x, c(ctx, 0, ctx.out_dtype())])
    return ctx.op("Where", [negative, ctx.op("Ceil", [x]), ctx.op("Floor", [x])])


def _cbrt(ctx, op, x):
    root = ctx.op("Pow", [ctx.op("Abs", [x]), c(ctx, 1 / 3, ctx.out_dtype())])
    return ctx.op("Mul", [ctx.op("Sign", [x]), root])


def _sinc(ctx, op, x):
    dtype = ctx.out_dtype()
    px = ctx.op("Mul", [x, c(ctx, math.pi, dtype)])
    zero = ctx.op("Equal", [x, c(ctx, 0, dtype)])
    safe = ctx.op("Where", [zero, c(ctx, 1, dtype), px])
    return ctx.op("Where", [zero, c(ctx, 1, dtype), ctx.op("Div", [ctx.op("Sin", [safe]), safe])])


def _angle(ctx, op, x):
    dtype = ctx.out_dtype()
    return ctx.op("Where", [ctx.op("Less", [x, c(ctx, 0, dtype)]), c(ctx, math.pi, dtype), c(ctx, 0, dtype)])


# Abramowitz & Stegun 9.8.1 / 9.8.2 (relative error < 2e-7).
_I0_SMALL = [1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.0360768, 0.0045813]
_I0_LARGE = [0.39894228, 0.01328592, 0.00225319, -0.00157565, 0.00916281, -0.02057706, 0.02635537,
             -0.01647633, 0.00392377]


def polynomial(ctx, t, coefficients, dtype):
    y = c(ctx, coefficients[-1], dtype)
    for k in reversed(coefficients[:-1]):
        y = ctx.op("Add", [ctx.op("Mul", [y, t]), c(ctx, k, dtype)])
    return y


def _i0(ctx, op, x):
    dtype = ctx.out_dtype()
    ax = ctx.op("Abs", [x])
    small_t = ctx.op("Mul", [ctx.op("Mul", [x, x]), c(ctx, 1 / 3.75 ** 2, dtype)])
    small = polynomial(ctx, small_t, _I0_SMALL, dtype)
    safe = ctx.op("Max", [ax, c(ctx, 3.75, dtype)])
    large = polynomial(ctx, ctx.op("Div", [c(ctx, 3.75, dtype), safe]), _I0_LARGE, dtype)
    large = ctx.op("Mul", [large, ctx.op("Div", [ctx.op("Exp", [safe]), ctx.op("Sqrt", [safe])])])
    return ctx.op("Where", [ctx.op("LessOrEqual", [ax, c(ctx, 3.75, dtype)]), small, large])


def _zeros(ctx, op, x):
    return full(ctx, x, 0, ctx.out_dtype())


def _identity(ctx, op, x):
    return x


_UNARY = {  # Keras class: (ONNX op or builder, input domain of the test case)
    "Negative": ("Neg", None), "Absolute": ("Abs", None), "Abs": ("Abs", None), "Fabs": ("Abs", None),
    "Exp": ("Exp", None), "Log": ("Log", "pos"), "Sqrt": ("Sqrt", "pos"), "Reciprocal": ("Reciprocal", "pos"),
    "Sign": ("Sign", None), "Tanh": ("Tanh", None), "Sin": ("Sin", None), "Cos": ("Cos", None),
    "Tan": ("Tan", "unit"), "Sinh": ("Sinh", None), "Cosh": ("Cosh", None), "Arcsin": ("Asin", "unit"),
    "Arccos": ("Acos", "unit"), "Arctan": ("Atan", None), "Arcsinh": ("Asinh", None),
    "Arccosh": ("Acosh", "ge1"), "Arctanh": ("Atanh", "unit"),
    "Floor": (_float_only(_chain("Floor")), None), "Ceil": (_float_only(_chain("Ceil")), None),
    "Trunc": (_float_only(_trunc), None), "Round": (_round, None),
    "Square": (lambda ctx, op, x: ctx.op("Mul", [x, x]), None),
    "Exp2": (lambda ctx, op, x: ctx.op("Pow", [c(ctx, 2, ctx.out_dtype()), x]), None),
    "Expm1": (_chain("Exp", ("Sub", 1)), None),
    "Log1p": (_chain(("Add", 1), "Log"), "pos"),
    "Log2": (_chain("Log", ("Mul", 1 / math.log(2))), "pos"),
    "Log10": (_chain("Log", ("Mul", 1 / math.log(10))), "pos"),
    "Cbrt": (_cbrt, None), "Sinc": (_sinc, None), "Angle": (_angle, None), "I0": (_i0, None),
    "Deg2rad": (_chain(("Mul", math.pi / 180)), None), "Rad2deg": (_chain(("Mul", 180 / math.pi)), None),
    "Imag": (_zeros, None), "Real": (_identity, None), "Conjugate": (_identity, None),
    "Conj": (_identity, None), "Copy": (_identity, None), "Array": (_identity, None),
}
_DOMAINS = {
    None: lambda x: x,
    "pos": lambda x: ops.abs(x) + 0.5,
    "unit": lambda x: ops.tanh(x) * 0.9,
    "ge1": lambda x: ops.abs(x) + 1.0,
}
_UNARY_CASES = {  # cases beyond the generated float one
    "Absolute": [case("absolute_int", lambda x: ops.abs(x - 5), ((4,),), dtypes=("int32",))],
    "Negative": [case("negative_int", lambda x: -x, ((4,),), dtypes=("int32",))],
    "Square": [case("square_int", lambda x: ops.square(x - 5), ((4,),), dtypes=("int32",))],
    "Sign": [case("sign_int", lambda x: ops.sign(x - 5), ((4,),), dtypes=("int32",))],
    "Floor": [case("floor_int", lambda x: ops.floor(x), ((4,),), dtypes=("int32",))],
    "Sqrt": [case("sqrt_int", lambda x: ops.sqrt(x), ((4,),), dtypes=("int32",))],
    "Trunc": [case("trunc_ints_stay", lambda x: ops.trunc(x - 5), ((4,),), dtypes=("int32",))],
    "Round": [
        case("round_half_even", lambda x: ops.round(ops.floor(x * 4.0) * 0.5), ((3, 4),)),
        case("round_decimals", lambda x: ops.round(x * 10.0, 1), ((3, 4),)),
        case("round_int_negative_decimals", lambda x: ops.round(x * 7, -1), ((4,),), dtypes=("int32",)),
    ],
    "Array": [case("array_to_int", lambda x: ops.array(x * 3.0, dtype="int32"), ((3, 4),))],
    "Imag": [case("imag_is_zero", lambda x: ops.imag(x) + x, ((3, 4),))],
    "Sinc": [case("sinc_at_zero", lambda x: ops.sinc(ops.round(x)), ((3, 4),))],
    "I0": [case("i0_large", lambda x: ops.i0(x * 5.0), ((3, 4),))],
    "Abs": [case("abs_class", lambda x: ops_class("numpy", "Abs")()(x), ((3, 4),))],
}
_NO_GENERATED_CASE = {"Abs", "Array"}  # keras.ops.abs builds Absolute; Array needs a dtype


def _unary_converter(build):
    def convert(ctx, op, x):
        x = operand(ctx, x, ctx.out_dtype())
        return ctx.op(build, [x]) if isinstance(build, str) else build(ctx, op, x)
    return convert


def _unary_cases(name, domain):
    cases = list(_UNARY_CASES.get(name, []))
    if name not in _NO_GENERATED_CASE:
        fn, prep = lazy_op(ops, _snake(name)), _DOMAINS[domain]
        cases.insert(0, case(_snake(name), lambda x: fn(prep(x)), ((3, 4),)))
    return cases


def _snake(name: str) -> str:
    return "".join(("_" + ch.lower()) if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))


for _name, (_build, _domain) in _UNARY.items():
    register(_name, layout=ANY, cases=_unary_cases(_name, _domain))(_unary_converter(_build))


# ---- elementwise: predicates (bool output, input dtype kept) ------------------------------------

def _float_predicate(build, default: bool):
    """Predicates that are constant for integer/bool inputs (``isnan`` of an int tensor is False)."""
    def convert(ctx, op, x):
        if not is_float(keras_dtype(x)):
            return full(ctx, x, default, "bool")
        return build(ctx, x)
    return convert


def _isinf(positive=1, negative=1):
    return lambda ctx, x: ctx.op("IsInf", [x], {"detect_positive": positive, "detect_negative": negative})


def _isfinite(ctx, x):
    return ctx.op("Not", [ctx.op("Or", [isnan(ctx, x), _isinf()(ctx, x)])])


def signbit(ctx, x, dtype=None):
    dtype = dtype or keras_dtype(x)
    zero = c(ctx, 0, dtype)
    negative = ctx.op("Less", [x, zero])
    if not is_float(dtype):
        return negative
    # -0.0 has 1/x = -inf.
    inverse = ctx.op("Div", [c(ctx, 1, dtype), x])
    return ctx.op("Or", [negative, ctx.op("Less", [inverse, zero])])


def _specials(x):
    """``x`` with +inf, -inf and NaN at some positions."""
    x = ops.where(x > 1.2, float("inf"), x)
    x = ops.where(x < -1.2, float("-inf"), x)
    return ops.where(ops.abs(x) < 0.15, float("nan"), x)


_PREDICATES = {
    "Isnan": _float_predicate(lambda ctx, x: isnan(ctx, x), False),
    "Isinf": _float_predicate(_isinf(), False),
    "Isposinf": _float_predicate(_isinf(negative=0), False),
    "Isneginf": _float_predicate(_isinf(positive=0), False),
    "Isfinite": _float_predicate(_isfinite, True),
    "Isreal": lambda ctx, op, x: full(ctx, x, True, "bool"),
    "Signbit": lambda ctx, op, x: signbit(ctx, x),
    "LogicalNot": lambda ctx, op, x: ctx.op("Not", [to_bool(ctx, x)]),
}
for _name, _convert in _PREDICATES.items():
    _fn = lazy_op(ops, _snake(_name))
    register(_name, layout=ANY, cases=[
        case(_snake(_name), (lambda f: lambda x: f(_specials(x)))(_fn), ((4, 5),)),
        case(f"{_snake(_name)}_int", (lambda f: lambda x: f(x - 3))(_fn), ((4,),), dtypes=("int32",)),
    ])(_convert)


# ---- elementwise: binary arithmetic (operands cast to the output dtype) ---------------------------

_BOOL_ARITH = {"Add": "Or", "Mul": "And", "Max": "Or", "Min": "And"}  # numpy's bool + bool is `or`


def _nan_aware(onnx_op):
    """``fmax``/``fmin``: a NaN operand yields the other one."""
    def build(ctx, a, b):
        y = ctx.op(onnx_op, [a, b])
        if not is_float(ctx.out_dtype()):
            return y
        y = ctx.op("Where", [isnan(ctx, a), b, y])
        return ctx.op("Where", [isnan(ctx, b), a, y])
    return build


def _differs_in_sign(ctx, r, b, dtype):
    """``r != 0 and sign(r) != sign(b)``: where a truncated remainder/quotient needs a floor fix."""
    zero = c(ctx, 0, dtype)
    nonzero = ctx.op("Not", [ctx.op("Equal", [r, zero])])
    signs = ctx.op("Xor", [ctx.op("Less", [r, zero]), ctx.op("Less", [b, zero])])
    return ctx.op("And", [nonzero, signs])


def _mod(ctx, a, b):
    """numpy ``mod``: the result has the divisor's sign."""
    dtype = ctx.out_dtype()
    if not is_float(dtype):
        return ctx.op("Mod", [a, b], {"fmod": 0})
    r = ctx.op("Mod", [a, b], {"fmod": 1})
    return ctx.op("Where", [_differs_in_sign(ctx, r, b, dtype), ctx.op("Add", [r, b]), r])


def _floor_divide(ctx, a, b):
    dtype = ctx.out_dtype()
    if is_float(dtype):
        return ctx.op("Floor", [ctx.op("Div", [a, b])])
    q = ctx.op("Div", [a, b])  # integer Div truncates toward zero
    r = ctx.op("Mod", [a, b], {"fmod": 1})
    fix = ctx.cast(_differs_in_sign(ctx, r, b, dtype), dtype)
    return ctx.op("Sub", [q, fix])


def _arctan2(ctx, y, x):
    """Quadrant-corrected ``atan(y / x)``, with numpy's signed-zero results."""
    dtype = ctx.out_dtype()
    pi = c(ctx, math.pi, dtype)
    x_negative = signbit(ctx, x, dtype)
    shift = ctx.op("Where", [signbit(ctx, y, dtype), ctx.op("Neg", [pi]), pi])
    r = ctx.op("Atan", [ctx.op("Div", [y, x])])
    r = ctx.op("Where", [x_negative, ctx.op("Add", [r, shift]), r])
    on_x_axis = ctx.op("Where", [x_negative, shift, y])
    return ctx.op("Where", [ctx.op("Equal", [y, c(ctx, 0, dtype)]), on_x_axis, r])


def _hypot(ctx, a, b):
    return ctx.op("Sqrt", [ctx.op("Add", [ctx.op("Mul", [a, a]), ctx.op("Mul", [b, b])])])


def _logaddexp(scale):
    """``log_s(s**a + s**b) = max + softplus(-|a-b| ln s) / ln s``."""
    def build(ctx, a, b):
        dtype = ctx.out_dtype()
        gap = ctx.op("Neg", [ctx.op("Abs", [ctx.op("Sub", [a, b])])])
        if scale != 1:
            gap = ctx.op("Mul", [gap, c(ctx, math.log(scale), dtype)])
        tail = ctx.op("Softplus", [gap])
        if scale != 1:
            tail = ctx.op("Div", [tail, c(ctx, math.log(scale), dtype)])
        return ctx.op("Add", [ctx.op("Max", [a, b]), tail])
    return build


def _heaviside(ctx, x, at_zero):
    dtype = ctx.out_dtype()
    zero, one = c(ctx, 0, dtype), c(ctx, 1, dtype)
    y = ctx.op("Where", [ctx.op("Greater", [x, zero]), one, at_zero])
    return ctx.op("Where", [ctx.op("Less", [x, zero]), zero, y])


def _ldexp(ctx, x, e):
    return ctx.op("Mul", [x, ctx.op("Pow", [c(ctx, 2, ctx.out_dtype()), e])])


def _divide_no_nan(ctx, a, b):
    dtype = ctx.out_dtype()
    zero = c(ctx, 0, dtype)
    return ctx.op("Where", [ctx.op("Equal", [b, zero]), zero, ctx.op("Div", [a, b])])


def _shift(left: bool):
    """Shifts of signed integers as multiplications / floor divisions by powers of two."""
    def build(ctx, x, s):
        power = ctx.op("Pow", [c(ctx, 2, ctx.out_dtype()), s])
        return ctx.op("Mul", [x, power]) if left else _floor_divide(ctx, x, power)
    return build


_ARITH = {  # Keras class: ONNX op or builder(ctx, a, b)
    "Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Divide": "Div", "TrueDivide": "Div",
    "Power": "Pow", "Maximum": "Max", "Minimum": "Min", "Fmax": _nan_aware("Max"),
    "Fmin": _nan_aware("Min"), "Mod": _mod, "Fmod": lambda ctx, a, b: ctx.op("Mod", [a, b], {"fmod": 1}),
    "FloorDivide": _floor_divide, "Arctan2": _arctan2, "Hypot": _hypot, "Logaddexp": _logaddexp(1),
    "Logaddexp2": _logaddexp(2), "Heaviside": _heaviside, "Ldexp": _ldexp, "DivideNoNan": _divide_no_nan,
    "BitwiseLeftShift": _shift(True), "LeftShift": _shift(True),
    "BitwiseRightShift": _shift(False), "RightShift": _shift(False),
}


def _arith_converter(build):
    def convert(ctx, op, a, b):
        dtype = ctx.out_dtype()
        a, b = operand(ctx, a, dtype), operand(ctx, b, dtype)
        if isinstance(build, str):
            return ctx.op(_BOOL_ARITH.get(build, build) if dtype == "bool" else build, [a, b])
        return build(ctx, a, b)
    return convert


def _pair_cases(name, fn, int_fn=None):
    """A tensor-tensor and a tensor-scalar float case (plus an int case when ``int_fn`` is given)."""
    cases = [case(f"{name}_tensors", lambda a, b: fn(a, b), ((3, 4), (3, 4))),
             case(f"{name}_scalar", lambda a: fn(a, 1.5), ((3, 4),))]
    if int_fn is not None:
        cases.append(case(f"{name}_int", int_fn, ((6,), (6,)), dtypes=("int32", "int32")))
    return cases


_ARITH_CASES = {
    "Add": _pair_cases("add", lazy_op(ops, "add"), lambda a, b: a + b),
    "Subtract": _pair_cases("subtract", lazy_op(ops, "subtract"), lambda a, b: a - b),
    "Multiply": _pair_cases("multiply", lazy_op(ops, "multiply"), lambda a, b: a * b) + [
        case("multiply_bool", lambda a, b: ops.multiply(a > 0, b > 0), ((3, 4), (3, 4))),
        case("add_bool", lambda a, b: ops.add(a > 0, b > 0), ((3, 4), (3, 4)))],
    "Divide": _pair_cases("divide", lazy_op(ops, "divide"), lambda a, b: a / (b + 1)),
    "TrueDivide": _pair_cases("true_divide", lazy_op(ops, "true_divide")),
    "Power": [case("power_tensors", lambda a, b: ops.power(ops.abs(a) + 0.1, b), ((3, 4), (3, 4))),
              case("power_scalar", lambda a: a ** 2.0, ((3, 4),)),
              case("power_int", lambda a, b: a ** (b % 4), ((6,), (6,)), dtypes=("int32", "int32"))],
    "Maximum": _pair_cases("maximum", lazy_op(ops, "maximum"), lazy_op(ops, "maximum")) + [
        case("maximum_broadcast", lambda a, b: ops.maximum(a, b), ((3, 4), (4,)))],
    "Minimum": _pair_cases("minimum", lazy_op(ops, "minimum"), lazy_op(ops, "minimum")),
    "Fmax": [case("fmax_nan", lambda a, b: ops.fmax(_specials(a), _specials(b)), ((3, 4), (3, 4)))],
    "Fmin": [case("fmin_nan", lambda a, b: ops.fmin(_specials(a), b), ((3, 4), (3, 4)))],
    "Mod": [*_pair_cases("mod", lambda a, b: ops.mod(a * 3.0, b)),
            case("mod_negative_divisor", lambda a: ops.mod(a * 3.0, -1.5), ((3, 4),)),
            case("mod_int_signs", lambda a, b: ops.concatenate([(a - 5) % (b + 1), (a - 5) % -(b + 1)], axis=1),
                 ((6,), (6,)), dtypes=("int32", "int32"))],
    "Fmod": [case("fmod", lambda a: ops.fmod(a * 3.0, -1.5), ((3, 4),)),
             case("fmod_int", lambda a, b: ops.fmod(a - 5, b + 1), ((6,), (6,)), dtypes=("int32", "int32"))],
    "FloorDivide": [case("floor_divide", lambda a, b: (a * 3.0) // b, ((3, 4), (3, 4))),
                    case("floor_divide_int_signs",
                         lambda a, b: ops.concatenate([(a - 5) // (b + 1), (a - 5) // -(b + 1)], axis=1),
                         ((6,), (6,)), dtypes=("int32", "int32"))],
    "Arctan2": [case("arctan2", lambda a, b: ops.arctan2(a, b), ((3, 4), (3, 4))),
                case("arctan2_axes", lambda a: ops.arctan2(ops.round(a), ops.round(a * 0.7)), ((4, 5),))],
    "Hypot": [case("hypot", lazy_op(ops, "hypot"), ((3, 4), (3, 4)))],
    "Logaddexp": [case("logaddexp", lambda a, b: ops.logaddexp(a * 10.0, b), ((3, 4), (3, 4)))],
    "Logaddexp2": [case("logaddexp2", lambda a, b: ops.logaddexp2(a * 10.0, b), ((3, 4), (3, 4)))],
    "Heaviside": [case("heaviside", lambda a, b: ops.heaviside(ops.round(a), b), ((3, 4), (3, 4)))],
    "Ldexp": [case("ldexp", lambda a, e: ops.ldexp(a, e - 5), ((3, 4), (3, 4)), dtypes=("float32", "int32"))],
    "DivideNoNan": [case("divide_no_nan", lambda a, b: ops.divide_no_nan(a, ops.round(b)), ((3, 4), (3, 4)))],
    "LeftShift": [case("left_shift", lambda a, s: ops.left_shift(a - 5, s % 4), ((6,), (6,)),
                       dtypes=("int32", "int32"))],
    "BitwiseLeftShift": [case("bitwise_left_shift", lambda a: ops.bitwise_left_shift(a, 3), ((6,),),
                              dtypes=("int32",))],
    "RightShift": [case("right_shift", lambda a, s: ops.right_shift(a * 7 - 30, s % 4), ((6,), (6,)),
                        dtypes=("int32", "int32"))],
    "BitwiseRightShift": [case("bitwise_right_shift", lambda a: ops.bitwise_right_shift(a - 5, 1), ((6,),),
                               dtypes=("int32",))],
}

for _name, _build in _ARITH.items():
    register(_name, layout=ANY, cases=_ARITH_CASES.get(_name, ()))(_arith_converter(_build))


# ---- elementwise: comparisons and logic (bool output) ---------------------------------------------

_COMPARE = {"Equal": "Equal", "Greater": "Greater", "GreaterEqual": "GreaterOrEqual", "Less": "Less",
            "LessEqual": "LessOrEqual", "NotEqual": "NotEqual"}


def _compare_converter(onnx_op):
    def convert(ctx, op, a, b):
        dtype = common_dtype(a, b)
        if dtype == "bool" and onnx_op not in ("Equal", "NotEqual"):
            dtype = "int32"  # onnxruntime orders no bools
        a, b = operand(ctx, a, dtype), operand(ctx, b, dtype)
        if onnx_op == "NotEqual":
            return ctx.op("Not", [ctx.op("Equal", [a, b])])
        return ctx.op(onnx_op, [a, b])
    return convert


for _name, _onnx in _COMPARE.items():
    _fn = lazy_op(ops, _snake(_name))
    register(_name, layout=ANY, cases=[
        *_pair_cases(_snake(_name), (lambda f: lambda a, b: f(ops.round(a), ops.round(b)))(_fn)),
        case(f"{_snake(_name)}_int_float", (lambda f: lambda a: f(a, 4.5))(_fn), ((6,),), dtypes=("int32",)),
    ])(_compare_converter(_onnx))


def _logic_converter(onnx_op):
    def convert(ctx, op, a, b):
        return ctx.op(onnx_op, [to_bool(ctx, a), to_bool(ctx, b)])
    return convert


for _name, _onnx in {"LogicalAnd": "And", "LogicalOr": "Or", "LogicalXor": "Xor"}.items():
    _fn = lazy_op(ops, _snake(_name))
    register(_name, layout=ANY, cases=[
        case(_snake(_name), (lambda f: lambda a, b: f(a > 0, b))(_fn), ((3, 4), (3, 4))),
        case(f"{_snake(_name)}_int", (lambda f: lambda a, b: f(a % 2, b))(_fn), ((6,), (6,)),
             dtypes=("int32", "int32")),
    ])(_logic_converter(_onnx))


def _bitwise_converter(onnx_op, logical_op):
    """Bitwise ops on integers (opset 18); bool inputs use the logical op."""
    def convert(ctx, op, *xs):
        dtype = ctx.out_dtype()
        xs = [operand(ctx, x, dtype) for x in xs]
        return ctx.op(logical_op if dtype == "bool" else onnx_op, xs)
    return convert


def _bitwise_cases(name, unary):
    fn = lazy_op(ops, _snake(name))
    if unary:
        return [case(_snake(name), lambda a: fn(a - 5), ((6,),), dtypes=("int32",)),
                case(f"{_snake(name)}_bool", lambda a: fn(a > 0), ((6,),))]
    return [case(_snake(name), lambda a, b: fn(a - 5, b), ((6,), (6,)), dtypes=("int32", "int32")),
            case(f"{_snake(name)}_bool", lambda a, b: fn(a > 0, b > 0), ((6,), (6,)))]


for _name, (_onnx, _logical) in {"BitwiseAnd": ("BitwiseAnd", "And"), "BitwiseOr": ("BitwiseOr", "Or"),
                                 "BitwiseXor": ("BitwiseXor", "Xor"), "BitwiseNot": ("BitwiseNot", "Not"),
                                 "BitwiseInvert": ("BitwiseNot", "Not")}.items():
    register(_name, layout=ANY, min_opset=18, cases=_bitwise_cases(_name, _logical == "Not"))(
        _bitwise_converter(_onnx, _logical))


_SAME_WIDTH_INT = {2: "int16", 4: "int32", 8: "int64"}


@register("Nextafter", layout=ANY, min_opset=26, cases=[
    case("nextafter", lambda a, b: ops.nextafter(a, b), ((3, 4), (3, 4)), min_opset=26, atol=0.0),
    case("nextafter_zero_equal", lambda a: ops.nextafter(ops.round(a), ops.round(a * 2.0)), ((3, 4),),
         min_opset=26, atol=0.0),
])
def nextafter(ctx, op, a, b):
    """One ulp from ``a`` toward ``b``: step the float's bits as an integer (BitCast, opset 26)."""
    dtype = ctx.out_dtype()
    a, b = operand(ctx, a, dtype), operand(ctx, b, dtype)
    bits_type = _SAME_WIDTH_INT[to_numpy_dtype(dtype).itemsize]
    zero = c(ctx, 0, dtype)
    up = ctx.op("Greater", [b, a])
    step = ctx.op("Where", [ctx.op("Equal", [up, ctx.op("Greater", [a, zero])]), c(ctx, 1, bits_type),
                            c(ctx, -1, bits_type)])
    bits = ctx.op("BitCast", [a], {"to": to_onnx_dtype(bits_type)})
    y = ctx.op("BitCast", [ctx.op("Add", [bits, step])], {"to": to_onnx_dtype(dtype)})
    tiny = c(ctx, np.nextafter(np.zeros((), to_numpy_dtype(dtype)), 1), dtype)  # from zero: +-smallest subnormal
    y = ctx.op("Where", [ctx.op("Equal", [a, zero]), ctx.op("Where", [up, tiny, ctx.op("Neg", [tiny])]), y])
    y = ctx.op("Where", [ctx.op("Equal", [a, b]), b, y])
    unordered = ctx.op("Or", [isnan(ctx, a), isnan(ctx, b)])
    return ctx.op("Where", [unordered, ctx.op("Add", [a, b]), y])


# Euclid's algorithm runs at most this many steps on |values| below 2**63 (consecutive Fibonacci
# numbers are its worst case): a bounded Loop that stops once every remainder is zero.
_EUCLID_STEPS = 93


def _euclid_step(ctx, values):
    a, b = values
    done = ctx.op("Equal", [b, c(ctx, 0, "int64")])
    remainder = ctx.op("Mod", [a, ctx.op("Where", [done, c(ctx, 1, "int64"), b])])
    new_b = ctx.op("Where", [done, b, remainder])
    pending = ctx.op("Cast", [ctx.op("Not", [ctx.op("Equal", [new_b, c(ctx, 0, "int64")])])],
                     {"to": to_onnx_dtype("int64")})
    keep_going = ctx.cast(ctx.reduce("ReduceMax", pending, None, keepdims=False), "bool")
    return keep_going, [ctx.op("Where", [done, a, b]), new_b]


def gcd_of(ctx, a, b):
    """Element-wise greatest common divisor of int64 values (broadcast), as numpy computes it."""
    from .ops_control import onnx_loop

    a, b = ctx.op("Abs", [a]), ctx.op("Abs", [b])
    zero = c(ctx, 0, "int64")
    a, b = ctx.op("Add", [a, ctx.op("Mul", [b, zero])]), ctx.op("Add", [b, ctx.op("Mul", [a, zero])])
    for v in (a, b):
        cast_free(v, "int64")
    return cast_free(onnx_loop(ctx, _EUCLID_STEPS, [a, b], lambda vs: _euclid_step(ctx, vs), "euclid")[0], "int64")


def _gcd_cases(name, fn):
    return [case(name, fn, ((3, 4), (3, 4)), dtypes=("int32", "int32"), int_range=(-30, 60)),
            case(f"{name}_broadcast_int64", lambda a, b: fn(a, b[:, :1]), ((4,), (3,)), dtypes=("int64", "int64"),
                 int_range=(0, 1000))]


@register("Gcd", cases=_gcd_cases("gcd", lambda a, b: ops.gcd(a, b)))
def gcd(ctx, op, a, b):
    dtype = ctx.out_dtype()
    return operand(ctx, gcd_of(ctx, operand(ctx, a, "int64"), operand(ctx, b, "int64")), dtype)


@register("Lcm", cases=_gcd_cases("lcm", lambda a, b: ops.lcm(a, b)))
def lcm(ctx, op, a, b):
    """``|a / gcd(a, b) * b|`` (0 when either is 0), like numpy."""
    a, b = operand(ctx, a, "int64"), operand(ctx, b, "int64")
    divisor = gcd_of(ctx, a, b)
    zero = ctx.op("Equal", [divisor, c(ctx, 0, "int64")])
    quotient = ctx.op("Div", [a, ctx.op("Where", [zero, c(ctx, 1, "int64"), divisor])])
    y = cast_free(ctx.op("Abs", [ctx.op("Mul", [quotient, b])]), "int64")
    return operand(ctx, y, ctx.out_dtype())


@register("Isclose", layout=ANY, cases=[
    case("isclose", lambda a, b: ops.isclose(a, a + b * 1e-3, rtol=1e-3, atol=1e-4), ((3, 4), (3, 4))),
    case("isclose_equal_nan", lambda a: ops.isclose(_specials(a), _specials(a), equal_nan=True), ((3, 4),)),
])
def isclose(ctx, op, a, b, rtol=1e-5, atol=1e-8):
    return _isclose(ctx, a, b, rtol, atol, bool(setting(op, "equal_nan", default=False)))


def _isclose(ctx, a, b, rtol, atol, equal_nan):
    dtype = common_dtype(a, b)
    if not is_float(dtype):
        dtype = "float32"
    a, b = operand(ctx, a, dtype), operand(ctx, b, dtype)
    tolerance = ctx.op("Add", [operand(ctx, atol, dtype), ctx.op("Mul", [operand(ctx, rtol, dtype),
                                                                         ctx.op("Abs", [b])])])
    close = ctx.op("LessOrEqual", [ctx.op("Abs", [ctx.op("Sub", [a, b])]), tolerance])
    close = ctx.op("Or", [close, ctx.op("Equal", [a, b])])  # equal infinities
    if equal_nan:
        close = ctx.op("Or", [close, ctx.op("And", [isnan(ctx, a), isnan(ctx, b)])])
    return close


@register("AllClose", cases=[
    case("allclose", lambda a: ops.allclose(a, a + 1e-6), ((3, 4),)),
    case("allclose_false", lambda a, b: ops.allclose(a, b), ((3, 4), (3, 4))),
])
def allclose(ctx, op, a, b):
    close = _isclose(ctx, a, b, setting(op, "rtol", default=1e-5), setting(op, "atol", default=1e-8),
                     bool(setting(op, "equal_nan", default=False)))
    return ctx.cast(reduce(ctx, "ReduceMin", ctx.cast(close, "int32"), None, False), "bool")


@register("Where", layout=ANY, cases=[
    case("where", lambda x, y: ops.where(x > 0, x, y), ((3, 4), (3, 4))),
    case("where_scalars", lambda x: ops.where(x > 0, 1.0, -2.0), ((3, 4),)),
    case("where_broadcast_int", lambda x, y: ops.where(x > 4, x, y), ((6,), (1,)), dtypes=("int32", "int32")),
    case("where_bool_values", lambda x: ops.where(x > 0, x > 1, x < -1), ((3, 4),)),
    case("where_int_cond", lambda x, y: ops.where(x, y, 0.0), ((6,), (6,)), dtypes=("int32", "float32")),
    cf_case("where", lambda x: ops.where(x > 0, x, ops.zeros_like(x))),
])
def where_(ctx, op, cond, x1=None, x2=None):
    if x1 is None or x2 is None:
        raise ctx.unsupported("where(condition) with one argument (nonzero) has no fixed output count")
    dtype = ctx.out_dtype()
    return where(ctx, to_bool(ctx, cond), operand(ctx, x1, dtype), operand(ctx, x2, dtype), dtype)


@register("Clip", layout=ANY, cases=[
    case("clip", lambda x: ops.clip(x, -0.5, 0.7), ((3, 4),)),
    case("clip_int", lambda x: ops.clip(x, 2, 6), ((6,),), dtypes=("int32",)),
    case("clip_bool", lambda x: ops.clip(x > 4, 0, 1), ((6,),), dtypes=("int32",)),
    cf_case("clip", lambda x: ops.clip(x, -0.1, 0.1)),
])
def clip(ctx, op, x):
    dtype = ctx.out_dtype()
    lo, hi = setting(op, "x_min"), setting(op, "x_max")
    bounds = [None if v is None else operand(ctx, v, dtype) for v in (lo, hi)]
    return ctx.op("Clip", [operand(ctx, x, dtype), *bounds])


@register("NanToNum", layout=ANY, cases=[
    case("nan_to_num", lambda x: ops.nan_to_num(_specials(x)), ((3, 4),)),
    case("nan_to_num_values", lambda x: ops.nan_to_num(_specials(x), nan=1.0, posinf=9.0, neginf=-9.0), ((3, 4),)),
])
def nan_to_num(ctx, op, x):
    dtype = ctx.out_dtype()
    x = operand(ctx, x, dtype)
    if not is_float(dtype):
        return x
    info = np.finfo(to_numpy_dtype(dtype))
    posinf, neginf = setting(op, "posinf"), setting(op, "neginf")
    y = ctx.op("Where", [isnan(ctx, x), c(ctx, setting(op, "nan", default=0.0), dtype), x])
    y = ctx.op("Where", [_isinf(1, 0)(ctx, x), c(ctx, info.max if posinf is None else posinf, dtype), y])
    return ctx.op("Where", [_isinf(0, 1)(ctx, x), c(ctx, info.min if neginf is None else neginf, dtype), y])


@register("Select", layout=ANY, cases=[
    case("select", lambda x: ops.select([x > 0.5, x < -0.5], [x, x * 2.0], 7.0), ((3, 4),)),
    case("select_tensor_default", lambda x, d: ops.select([x > 0], [x], d), ((3, 4), (3, 4))),
])
def select(ctx, op, *args):
    n = (len(args) - 1) // 2
    conds, choices, default = args[:n], args[n:2 * n], args[-1]
    dtype = ctx.out_dtype()
    y = operand(ctx, default, dtype)
    for cond, choice in reversed(list(zip(conds, choices))):
        y = where(ctx, to_bool(ctx, cond), operand(ctx, choice, dtype), y, dtype)
    return y


# ---- reductions ------------------------------------------------------------------------------------
# Builders: (ctx, op, x, axes, keepdims) -> value in Keras' output dtype, ``axes`` already mapped to
# the stored layout (None for all axes).

def _plain(onnx_op):
    """Sum / Prod / Mean computed in the output dtype (ints to float for mean, bools to int32)."""
    def build(ctx, op, x, axes, keepdims):
        return reduce(ctx, onnx_op, operand(ctx, x, ctx.out_dtype()), axes, keepdims)
    return build


def _extreme(onnx_op, combine):
    """Max / Min (bools via int32), with numpy's optional ``initial`` value."""
    def build(ctx, op, x, axes, keepdims):
        dtype = "int32" if ctx.out_dtype() == "bool" else ctx.out_dtype()
        y = reduce(ctx, onnx_op, operand(ctx, x, dtype), axes, keepdims)
        initial = setting(op, "initial")
        if initial is not None:
            y = like(ctx.op(combine, [y, c(ctx, initial, dtype)]), y)
        return operand(ctx, y, ctx.out_dtype())
    return build


def truth_reduce(ctx, onnx_op, b, axes, keepdims):
    """any (ReduceMax) / all (ReduceMin) of a bool value, computed as int32."""
    return cast(ctx, reduce(ctx, onnx_op, cast(ctx, b, "int32"), axes, keepdims), "bool")


def _logical(onnx_op):
    return lambda ctx, op, x, axes, keepdims: truth_reduce(ctx, onnx_op, to_bool(ctx, x), axes, keepdims)


def _moments(ctx, x, axes, keepdims, valid=None):
    """Mean and (population) variance; ``valid`` masks NaNs out (nanvar)."""
    dtype = ctx.out_dtype()
    x = operand(ctx, x, dtype)
    if valid is None:
        mean = reduce(ctx, "ReduceMean", x, axes, True)
        d = ctx.op("Sub", [x, mean])
        return reduce(ctx, "ReduceMean", ctx.op("Mul", [d, d]), axes, keepdims)
    count = reduce(ctx, "ReduceSum", cast(ctx, valid, dtype), axes, True)
    mean = ctx.op("Div", [reduce(ctx, "ReduceSum", nan_fill(ctx, x, 0), axes, True), count])
    d = ctx.op("Where", [valid, ctx.op("Sub", [x, mean]), c(ctx, 0, dtype)])
    total = reduce(ctx, "ReduceSum", ctx.op("Mul", [d, d]), axes, keepdims)
    if not keepdims:
        count = reduce(ctx, "ReduceSum", cast(ctx, valid, dtype), axes, False)
    return ctx.op("Div", [total, count])


def _var(std: bool, nan: bool = False):
    def build(ctx, op, x, axes, keepdims):
        valid = ctx.op("Not", [isnan(ctx, x)]) if nan and is_float(keras_dtype(x)) else None
        v = _moments(ctx, x, axes, keepdims, valid)
        return ctx.op("Sqrt", [v]) if std else v
    return build


def _ptp(ctx, op, x, axes, keepdims):
    high, low = (reduce(ctx, r, x, axes, keepdims) for r in ("ReduceMax", "ReduceMin"))
    return ctx.op("Sub", [high, low])


def _count_nonzero(ctx, op, x, axes, keepdims):
    count = reduce(ctx, "ReduceSum", cast(ctx, to_bool(ctx, x), "int64"), axes, keepdims)
    return operand(ctx, count, ctx.out_dtype())


def _nan_reduce(base, fill):
    """nansum / nanprod: the plain reduction with NaNs replaced by its neutral value."""
    return lambda ctx, op, x, axes, keepdims: base(ctx, op, nan_fill(ctx, x, fill), axes, keepdims)


def _nan_extreme(onnx_op, fill):
    """nanmax / nanmin: NaNs ignored, all-NaN slices give NaN."""
    def build(ctx, op, x, axes, keepdims):
        y = reduce(ctx, onnx_op, nan_fill(ctx, x, fill), axes, keepdims)
        if not is_float(keras_dtype(x)):
            return y
        all_nan = truth_reduce(ctx, "ReduceMin", isnan(ctx, x), axes, keepdims)
        return ctx.op("Where", [all_nan, c(ctx, np.nan, keras_dtype(x)), y])
    return build


def _nanmean(ctx, op, x, axes, keepdims):
    dtype = ctx.out_dtype()
    x = operand(ctx, x, dtype)
    if not is_float(keras_dtype(x)):
        return reduce(ctx, "ReduceMean", x, axes, keepdims)
    valid = cast(ctx, ctx.op("Not", [isnan(ctx, x)]), dtype)
    total = reduce(ctx, "ReduceSum", nan_fill(ctx, x, 0), axes, keepdims)
    return ctx.op("Div", [total, reduce(ctx, "ReduceSum", valid, axes, keepdims)])


_REDUCTIONS = {
    "Sum": _plain("ReduceSum"), "Prod": _plain("ReduceProd"), "Mean": _plain("ReduceMean"),
    "Max": _extreme("ReduceMax", "Max"), "Amax": _extreme("ReduceMax", "Max"),
    "Min": _extreme("ReduceMin", "Min"), "Amin": _extreme("ReduceMin", "Min"),
    "Any": _logical("ReduceMax"), "All": _logical("ReduceMin"),
    "Var": _var(False), "Std": _var(True), "Ptp": _ptp, "CountNonzero": _count_nonzero,
    "Nansum": _nan_reduce(_plain("ReduceSum"), 0), "Nanprod": _nan_reduce(_plain("ReduceProd"), 1),
    "Nanmax": _nan_extreme("ReduceMax", -np.inf), "Nanmin": _nan_extreme("ReduceMin", np.inf),
    "Nanmean": _nanmean, "Nanvar": _var(False, nan=True), "Nanstd": _var(True, nan=True),
}


def _reduction_converter(build):
    def convert(ctx, op, x):
        rank = len(ctx.in_shape())
        axes = stored_axes(ctx, setting(op, "axis"), rank)
        return build(ctx, op, x, axes, bool(setting(op, "keepdims", default=False)))
    return convert


def _reduction_cases(name):
    fn = lazy_op(ops, _snake(name))
    prep = _specials if name.startswith("Nan") else (lambda x: x)
    keepdims = name != "CountNonzero"
    cases = [
        case(f"{_snake(name)}_all", lambda x: fn(prep(x)), ((3, 4),)),
        case(f"{_snake(name)}_axis1", lambda x: fn(prep(x), axis=1), ((None, 4),)),
        case(f"{_snake(name)}_axes", lambda x: fn(prep(x), axis=(1, -1)), ((2, None, 3),)),
    ]
    if keepdims:
        cases.append(case(f"{_snake(name)}_keepdims", lambda x: fn(prep(x), axis=-1, keepdims=True), ((None, 4),)))
        cases.append(case(f"{_snake(name)}_all_keepdims", lambda x: fn(prep(x), keepdims=True), ((3, 4),)))
    if name in ("Sum", "Prod", "Mean", "Max", "Min", "Any", "All", "Var", "CountNonzero", "Ptp"):
        cases.append(case(f"{_snake(name)}_int", lambda x: fn(x - 3, axis=1), ((4, 3),), dtypes=("int32",)))
    if name in ("Sum", "Max", "Any", "Mean"):
        cases.append(case(f"{_snake(name)}_bool", lambda x: fn(x > 0.5, axis=0), ((3, 4),)))
    return cases + _REDUCTION_CASES.get(name, [])


_REDUCTION_CASES = {
    "Max": [case("max_initial", lambda x: ops.max(x, axis=1, initial=0.5), ((None, 4),)),
            cf_case("max_all_keepdims", lambda x: ops.max(x, keepdims=True))],
    "Mean": [cf_case("mean_spatial", lambda x: ops.mean(x, axis=(1, 2), keepdims=True))],
    "Sum": [cf_case("sum_last", lambda x: ops.sum(x, axis=-1))],
}
for _name, _build in _REDUCTIONS.items():
    register(_name, layout=ANY, cases=_reduction_cases(_name))(_reduction_converter(_build))


def _arg_converter(onnx_op, nan_fill_value=None):
    """argmax / argmin (int32), optionally ignoring NaNs (nanargmax: -1 for all-NaN slices)."""
    def convert(ctx, op, x):
        axis, keepdims = setting(op, "axis"), bool(setting(op, "keepdims", default=False))
        rank = len(ctx.in_shape())
        if keras_dtype(x) == "bool":
            x = cast(ctx, x, "int32")
        if axis is None:  # over the flattened tensor, in Keras' order
            x = operand(ctx, keras_order(ctx), keras_dtype(x))
            x, onnx_axis = flat(ctx, x), 0
        else:
            onnx_axis = ctx.axis(int(axis) % rank, rank)
        filled = nan_fill(ctx, x, nan_fill_value) if nan_fill_value is not None else x
        keep = keepdims and axis is not None
        y = cast_free(ctx.op(onnx_op, [filled], {"axis": onnx_axis, "keepdims": int(keep)}), "int64")
        if nan_fill_value is not None and is_float(keras_dtype(x)):
            all_nan = truth_reduce(ctx, "ReduceMin", isnan(ctx, x), [onnx_axis], keep)
            y = like(ctx.op("Where", [all_nan, ctx.const(np.asarray(-1, np.int64)), y]), y)
        if axis is None and keepdims:
            y = reshape(ctx, y, [1] * rank)
        return operand(ctx, y, ctx.out_dtype())
    return convert


def _arg_cases(name, nan: bool):
    fn, prep = lazy_op(ops, _snake(name)), (_specials if nan else (lambda x: x))
    return [
        case(f"{_snake(name)}_all", lambda x: fn(prep(x)), ((3, 4),)),
        case(f"{_snake(name)}_axis1", lambda x: fn(prep(x), axis=1), ((None, 4),)),
        case(f"{_snake(name)}_keepdims", lambda x: fn(prep(x), axis=-1, keepdims=True), ((None, 4),)),
        case(f"{_snake(name)}_all_keepdims", lambda x: fn(prep(x), keepdims=True), ((3, 4),)),
        case(f"{_snake(name)}_int", lambda x: fn(x, axis=0), ((5,),), dtypes=("int32",)),
        cf_case(f"{_snake(name)}_all_keepdims", lambda x: fn(x, keepdims=True)),
        cf_case(f"{_snake(name)}_axis", lambda x: fn(x, axis=-1, keepdims=True)),
    ]


for _name, (_onnx, _fill) in {"Argmax": ("ArgMax", None), "Argmin": ("ArgMin", None),
                              "Nanargmax": ("ArgMax", -np.inf), "Nanargmin": ("ArgMin", np.inf)}.items():
    register(_name, layout=ANY, cases=_arg_cases(_name, _fill is not None))(_arg_converter(_onnx, _fill))


@register("Average", cases=[
    case("average", lambda x: ops.average(x, axis=1), ((None, 4),)),
    case("average_all", lambda x: ops.average(x), ((3, 4),)),
    case("average_weights_1d", lambda x: ops.average(x, axis=1, weights=np.array([1.0, 2.0, 3.0, 4.0])), ((4,),)),
    case("average_weights_tensor", lambda x, w: ops.average(x, axis=1, weights=ops.abs(w) + 0.1),
         ((3, 4), (3, 4))),
    case("average_int", lambda x: ops.average(x, axis=0), ((4,),), dtypes=("int32",)),
])
def average(ctx, op, x):
    dtype, rank = ctx.out_dtype(), len(ctx.in_shape())
    axis = setting(op, "axis")
    axes = None if axis is None else norm_axes(axis, rank)
    x = operand(ctx, x, dtype)
    weights = ctx.kwargs.get("weights")
    if weights is None:
        return reduce(ctx, "ReduceMean", x, axes, False)
    w = operand(ctx, weights, dtype)
    w_rank = len(in_shapes(ctx, [weights])[0]) if isinstance(weights, ir.Value) else np.ndim(weights)
    if w_rank == 1 and rank > 1:  # 1-D weights along the single reduced axis
        w = ctx.op("Reshape", [w, ctx.int64s([-1 if i == axes[0] else 1 for i in range(rank)])])
    total = reduce(ctx, "ReduceSum", ctx.op("Mul", [x, w]), axes, False)
    w_sum = reduce(ctx, "ReduceSum", ctx.op("Mul", [full(ctx, x, 1, dtype), w]), axes, False)
    return ctx.op("Div", [total, w_sum])


# ---- scans: cumsum / cumprod / diff ----------------------------------------------------------------

def cumprod(ctx, x, axis: int, rank: int, size=None):
    """Cumulative product along ``axis``: CumProd from opset 26, else a product over a triangular
    mask (``out[i] = prod_j where(j <= i, x[j], 1)``, quadratic in the axis length)."""
    if ctx.opset >= 26:
        return ctx.op("CumProd", [x, ctx.const(np.asarray(axis, np.int64))])
    r = arange(ctx, dim(ctx, x, axis), size)
    lower = ctx.op("LessOrEqual", [unsqueeze(ctx, r, [0]), unsqueeze(ctx, r, [1])])  # [i, j]: j <= i
    lower = unsqueeze(ctx, lower, list(range(2, rank - axis + 1)))  # broadcast over trailing axes
    spread = unsqueeze(ctx, x, [axis])  # [..., 1 (i), n (j), ...]
    terms = like(ctx.op("Where", [lower, spread, c(ctx, 1, keras_dtype(x))]), x)
    return reduce(ctx, "ReduceProd", terms, [axis + 1], False)


def _scan_converter(kind, nan_fill_value=None):
    def convert(ctx, op, x):
        axis, shape = setting(op, "axis"), ctx.in_shape()
        x = operand(ctx, x, ctx.out_dtype())
        if nan_fill_value is not None:
            x = nan_fill(ctx, x, nan_fill_value)
        if axis is None:  # over the flattened tensor (rank 1: its layout is Keras')
            x, onnx_axis, rank = flat(ctx, x), 0, 1
            size = int(np.prod(shape)) if None not in shape else None
        else:
            rank = len(shape)
            onnx_axis = ctx.axis(int(axis) % rank, rank)
            size = stored_shape(ctx)[onnx_axis]
        if kind == "sum":
            return ctx.op("CumSum", [x, ctx.const(np.asarray(onnx_axis, np.int64))])
        return cumprod(ctx, x, onnx_axis, rank, size)
    return convert


def _scan_cases(name, nan: bool):
    fn = lazy_op(ops, _snake(name))
    prep = _specials if nan else (lambda x: ops.tanh(x) + 0.5)
    return [
        case(f"{_snake(name)}_axis1", lambda x: fn(prep(x), axis=1), ((None, 4),)),
        case(f"{_snake(name)}_flat", lambda x: fn(prep(x)), ((3, 4),)),
        case(f"{_snake(name)}_int", lambda x: fn(x - 3, axis=-1), ((5,),), dtypes=("int32",)),
        cf_case(_snake(name), lambda x: fn(x, axis=-1)),
        case(f"{_snake(name)}_opset13", lambda x: fn(prep(x), axis=-2), ((None, 3),), min_opset=13),
        case(f"{_snake(name)}_flat_opset13", lambda x: fn(prep(x)), ((None, 3),), min_opset=13),
    ]


for _name, (_kind, _fill) in {"Cumsum": ("sum", None), "Cumprod": ("prod", None),
                              "Nancumsum": ("sum", 0), "Nancumprod": ("prod", 1)}.items():
    register(_name, layout=ANY, cases=_scan_cases(_name, _fill is not None))(_scan_converter(_kind, _fill))


@register("Diff", cases=[
    case("diff", lambda x: ops.diff(x), ((None, 5),)),
    case("diff_n2_axis1", lambda x: ops.diff(x, n=2, axis=1), ((6, 3),)),
    case("diff_bool", lambda x: ops.diff(x > 0), ((5,),)),
])
def diff(ctx, op, x):
    n, axis = int(setting(op, "n", default=1)), int(setting(op, "axis", default=-1))
    axis %= len(ctx.in_shape())
    subtract = "Xor" if ctx.out_dtype() == "bool" else "Sub"
    for _ in range(n):
        x = ctx.op(subtract, [slice_(ctx, x, [1], [INT64_MAX], [axis]), slice_(ctx, x, [0], [-1], [axis])])
    return x


# ---- shapes: reshape, transpose, expand/squeeze ----------------------------------------------------

@register("Reshape", cases=[
    case("reshape", lambda x: ops.reshape(x, (-1, 2, 2)), ((None, 4),)),
    case("reshape_merge", lambda x: ops.reshape(x, (-1, 12)), ((4, 3),)),
    # Inside a traced layer call(), ops.shape(x) gives None for dynamic dims.
    traced_case("reshape_traced_batch", lambda x: ops.reshape(x, (ops.shape(x)[0], 2, 6)), ((3, 4),)),
    traced_case("reshape_traced_dims", lambda x: ops.reshape(x, (*ops.shape(x)[:2], 2, 2)), ((None, 4),)),
    traced_case("reshape_traced_infer", lambda x: ops.reshape(x, (ops.shape(x)[0], 4, ops.shape(x)[1])),
                ((None, 4),)),
    case("reshape_int", lambda x: ops.reshape(x, (-1,)), ((2, 3),), dtypes=("int32",)),
])
def reshape_(ctx, op, x):
    target = setting(op, "newshape", "new_shape", "shape")
    if target is None or isinstance(target, (ir.Value, keras.KerasTensor)) or hasattr(target, "dtype"):
        raise ctx.unsupported("reshape to a tensor-valued shape")
    target = [target] if isinstance(target, (int, np.integer)) else list(target)
    in_shape, out_shape = ctx.in_shape(), ctx.out_shape()
    dims = []
    for i, d in enumerate(target):
        if isinstance(d, (int, np.integer)):
            dims.append(int(d))
        elif i < len(in_shape) and in_shape[i] is None:
            dims.append(0)  # a dim that was dynamic at trace time: copy the input's
        else:
            dims.append(-1)
    if dims.count(-1) > 1:  # let Keras' static inference settle what it can
        dims = [out_shape[i] if d == -1 and out_shape[i] is not None else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise ctx.unsupported(f"reshape target {tuple(target)} has several unknown dims")
    return reshape(ctx, x, dims)


@register("Ravel", cases=[case("ravel", lazy_op(ops, "ravel"), ((None, 3),))])
def ravel(ctx, op, x):
    return flat(ctx, x)


def _permuted(ctx, x, keras_perm):
    """No node: the output is ``x`` stored with another permutation (consumers transpose lazily)."""
    ctx.out_perms = [L.compose(tuple(keras_perm), ctx.perm)]
    return x


@register("Transpose", layout=ANY, cases=[
    case("transpose", lambda x: ops.transpose(x, (0, 2, 1)), ((None, 4),)),
    case("transpose_default", lambda x: ops.transpose(x), ((3, 4),)),
    cf_case("transpose", lambda x: ops.transpose(x, (0, 3, 1, 2))),
    cf_case("transpose_then_add", lambda x: ops.transpose(x, (0, 2, 1, 3)) + 1.0),
])
def transpose_(ctx, op, x):
    rank = len(ctx.in_shape())
    axes = setting(op, "axes")
    return _permuted(ctx, x, tuple(reversed(range(rank))) if axes is None else norm_axes(axes, rank))


@register("Moveaxis", layout=ANY, cases=[
    case("moveaxis", lambda x: ops.moveaxis(x, 1, -1), ((None, 3, 4),)),
    case("moveaxis_multi", lambda x: ops.moveaxis(x, (1, 2), (3, 1)), ((2, 3, 4),)),
])
def moveaxis(ctx, op, x):
    rank = len(ctx.in_shape())
    source = norm_axes(setting(op, "source"), rank)
    destination = norm_axes(setting(op, "destination"), rank)
    order = [a for a in range(rank) if a not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return _permuted(ctx, x, order)


@register("Swapaxes", layout=ANY, cases=[case("swapaxes", lambda x: ops.swapaxes(x, 1, 2), ((None, 4),))])
def swapaxes(ctx, op, x):
    rank = len(ctx.in_shape())
    a, b = norm_axes([setting(op, "axis1"), setting(op, "axis2")], rank)
    order = list(range(rank))
    order[a], order[b] = b, a
    return _permuted(ctx, x, order)


@register("ExpandDims", cases=[
    case("expand_dims", lambda x: ops.expand_dims(x, 1), ((None, 4),)),
    case("expand_dims_last", lambda x: ops.expand_dims(x, -1), ((4,),)),
    case("expand_dims_multi", lambda x: ops.expand_dims(x, (1, -1)), ((None,),)),
])
def expand_dims(ctx, op, x):
    return unsqueeze(ctx, x, sorted(norm_axes(setting(op, "axis"), len(ctx.out_shape()))))


@register("Squeeze", cases=[
    case("squeeze_axis", lambda x: ops.squeeze(x, axis=2), ((None, 1, 3),)),
    case("squeeze_multi", lambda x: ops.squeeze(x, axis=(1, 3)), ((1, 3, 1),)),
])
def squeeze_(ctx, op, x):
    axis, shape = setting(op, "axis"), ctx.in_shape()
    if axis is None:  # the dims Keras knew to be 1 (a dynamic dim is never squeezed symbolically)
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:
        axes = sorted(norm_axes(axis, len(shape)))
    return squeeze(ctx, x, axes)


@register("BroadcastTo", cases=[
    traced_case("broadcast_to_traced",
                lambda x: ops.broadcast_to(ops.expand_dims(x, 1), (ops.shape(x)[0], 3, 4)), ((4,),)),
    case("broadcast_to_prepend", lambda x: ops.broadcast_to(ops.sum(x, axis=0), (2, 3, 4)), ((4,),)),
])
def broadcast_to(ctx, op, x):
    target, rank = list(setting(op, "shape")), len(ctx.in_shape())
    offset = len(target) - rank
    dims = []
    for i, d in enumerate(target):
        if d is None and i < offset:
            raise ctx.unsupported("broadcast_to a new dynamic leading dim")
        dims.append(1 if d is None else int(d))  # 1 keeps the input's (dynamic) dim
    return like(ctx.op("Expand", [x, ctx.int64s(dims)]), x)


# ---- joining and splitting -------------------------------------------------------------------------

def _joined(ctx, xs, axis, dtype):
    return ctx.op("Concat", [operand(ctx, x, dtype) for x in xs], {"axis": axis})


@register("Concatenate", layout=ANY, cases=[
    case("concatenate", lambda a, b: ops.concatenate([a, b], axis=1), ((None, 4), (2, 4))),
    case("concatenate_last", lambda a, b: ops.concatenate([a, b], axis=-1), ((3, 4), (3, 2))),
    case("concatenate_mixed_dtypes", lambda a, b: ops.concatenate([a, b], axis=1), ((4,), (2,)),
         dtypes=("int32", "float32")),
    case("concatenate_channels_first",
         lambda a: ops.concatenate([keras.layers.Conv2D(2, 1)(a), keras.layers.Conv2D(3, 1)(a)], axis=-1),
         ((4, 4, 2),)),
])
def concatenate(ctx, op, *xs):
    axis, dtype = setting(op, "axis", default=0), ctx.out_dtype()
    rank = len(ctx.out_shape())
    return _joined(ctx, xs, ctx.axis(int(axis) % rank, rank), dtype)


@register("Append", cases=[
    case("append_axis", lambda a, b: ops.append(a, b, axis=1), ((4, 3), (2, 3))),
    case("append_flat", lambda a, b: ops.append(a, b), ((3,), (2,))),
])
def append(ctx, op, a, b):
    axis, dtype = setting(op, "axis"), ctx.out_dtype()
    if axis is None:
        return _joined(ctx, [flat(ctx, a), flat(ctx, b)], 0, dtype)
    return _joined(ctx, [a, b], int(axis) % len(ctx.out_shape()), dtype)


def _at_least(ctx, x, rank, where_new):
    """numpy's atleast_2d/3d: ``where_new`` lists the new axes for each input rank."""
    return unsqueeze(ctx, x, where_new.get(rank, []))


@register("Hstack", "Vstack", "Dstack", cases=[
    case("hstack", lambda a, b: ops.hstack([a, b]), ((None, 4), (2, 4))),
    case("vstack", lambda a, b: ops.vstack([a, b]), ((3, 4), (3, 4))),
    case("dstack", lambda a, b: ops.dstack([a, b]), ((4,), (4,))),
    case("dstack_3d", lambda a, b: ops.dstack([a, b]), ((3, 4), (3, 2))),
])
def hvdstack(ctx, op, *xs):
    kind = type(op).__name__
    shapes = in_shapes(ctx, xs)
    if kind == "Hstack":
        axis = 0 if len(shapes[0]) == 1 else 1
    elif kind == "Vstack":
        xs, axis = [_at_least(ctx, x, len(s), {0: [0, 1], 1: [0]}) for x, s in zip(xs, shapes)], 0
    else:
        xs, axis = [_at_least(ctx, x, len(s), {0: [0, 1, 2], 1: [0, 2], 2: [2]}) for x, s in zip(xs, shapes)], 2
    return _joined(ctx, xs, axis, ctx.out_dtype())


@register("Stack", cases=[
    case("stack", lambda a, b: ops.stack([a, b], axis=1), ((None, 4), (None, 4))),
    case("stack_last", lambda a, b: ops.stack([a, b], axis=-1), ((3,), (3,)), dtypes=("int32", "float32")),
])
def stack(ctx, op, *xs):
    axis = int(setting(op, "axis", default=0)) % len(ctx.out_shape())
    return _joined(ctx, [unsqueeze(ctx, x, [axis]) for x in xs], axis, ctx.out_dtype())


def _split_bounds(ctx, x, axis, spec, size, even: bool):
    """Start offsets of each piece along ``axis`` (ints when the size is static, else 1-D values),
    plus the end of the axis. ``spec``: a section count or a list of split indices."""
    if not isinstance(spec, (int, np.integer)):
        starts = [0, *[int(i) for i in spec]]
        if size is not None:
            return [min(max(s if s >= 0 else s + size, 0), size) for s in starts], size
        return starts, INT64_MAX
    k = int(spec)
    if size is not None:
        if even and size % k:
            raise ctx.unsupported(f"split of {size} elements into {k} equal sections")
        q, r = divmod(size, k)
        return [i * q + min(i, r) for i in range(k)], size
    n = dim(ctx, x, axis)  # dynamic: the same formula at run time
    q = ctx.op("Div", [n, ctx.int64s([k])])
    r = ctx.op("Mod", [n, ctx.int64s([k])])
    starts = [ctx.op("Add", [ctx.op("Mul", [q, ctx.int64s([i])]), ctx.op("Min", [r, ctx.int64s([i])])])
              for i in range(k)]
    return starts, n


def split_pieces(ctx, x, axis, spec, size, even=True):
    starts, end = _split_bounds(ctx, x, axis, spec, size, even)
    ends = starts[1:] + [end]
    if all(isinstance(s, int) for s in starts) and size is not None:
        return ctx.split(x, [e - s for s, e in zip(starts, ends)], axis)
    return tuple(slice_(ctx, x, _1d(ctx, s), _1d(ctx, e), [axis]) for s, e in zip(starts, ends))


def _1d(ctx, v):
    return v if isinstance(v, ir.Value) else ctx.int64s([v])


_SPLIT_AXIS = {"Split": None, "ArraySplit": None, "Hsplit": "h", "Vsplit": 0, "Dsplit": 2}


@register(*_SPLIT_AXIS, cases=[
    case("split_sections", lambda x: ops.split(x, 2, axis=1), ((4, 3),)),
    case("split_sections_dynamic", lambda x: ops.split(x, 2, axis=1), ((None, 3),)),
    case("split_indices", lambda x: ops.split(x, [1, 3], axis=-1), ((5,),)),
    case("split_indices_dynamic", lambda x: ops.split(x, [1, 3], axis=1), ((None, 2),)),
    case("array_split_uneven", lambda x: ops.array_split(x, 3, axis=1), ((7,),)),
    case("array_split_dynamic", lambda x: ops.array_split(x, 3, axis=1), ((None, 2),)),
    case("hsplit", lambda x: ops.hsplit(x, 2), ((4, 3),)),
    case("vsplit", lambda x: ops.vsplit(x, [1]), ((4,),)),
    case("dsplit", lambda x: ops.dsplit(x, 2), ((3, 4),)),
])
def split(ctx, op, x):
    rank, kind = len(ctx.in_shape()), _SPLIT_AXIS[type(op).__name__]
    axis = setting(op, "axis", default=0) if kind is None else (1 if rank > 1 else 0) if kind == "h" else kind
    axis = int(axis) % rank
    spec = setting(op, "indices_or_sections")
    pieces = split_pieces(ctx, x, axis, spec, ctx.in_shape()[axis], even=type(op).__name__ != "ArraySplit")
    return [like(p, x) for p in pieces]


# ---- repetition, padding, flips, rolls ---------------------------------------------------------------

@register("Tile", cases=[
    case("tile", lambda x: ops.tile(x, (1, 2)), ((None, 3),)),
    case("tile_short_repeats", lambda x: ops.tile(x, 3), ((2, 3),)),
    case("tile_more_dims", lambda x: ops.tile(x, (2, 1, 2)), ((3,),)),
])
def tile(ctx, op, x):
    repeats, rank = setting(op, "repeats"), len(ctx.in_shape())
    repeats = [int(repeats)] if isinstance(repeats, (int, np.integer)) else [int(r) for r in repeats]
    if len(repeats) > rank:
        x = unsqueeze(ctx, x, list(range(len(repeats) - rank)))
    repeats = [1] * (rank - len(repeats)) + repeats
    return like(ctx.op("Tile", [x, ctx.int64s(repeats)]), x)


@register("Repeat", layout=ANY, cases=[
    case("repeat_axis", lambda x: ops.repeat(x, 2, axis=1), ((None, 3),)),
    case("repeat_flat", lambda x: ops.repeat(x, 2), ((2, 3),)),
    case("repeat_counts", lambda x: ops.repeat(x, [1, 0, 3], axis=-1), ((3,),)),
    cf_case("repeat", lambda x: ops.repeat(x, 2, axis=-1)),
])
def repeat(ctx, op, x):
    repeats, axis = setting(op, "repeats"), setting(op, "axis")
    rank = len(ctx.in_shape())
    if axis is None:
        x, axis, rank, size = flat(ctx, x), 0, 1, None
    else:
        axis = ctx.axis(int(axis) % rank, rank)
        size = stored_shape(ctx)[axis]
    counts = [int(repeats)] if isinstance(repeats, (int, np.integer)) else [int(r) for r in repeats]
    if len(counts) > 1:  # per-element counts: a Gather of repeated indices
        if size is None and rank > 1:
            raise ctx.unsupported("per-element repeat counts along a dynamic axis")
        index = np.repeat(np.arange(len(counts)), counts)
        return like(ctx.op("Gather", [x, ctx.int64s(index)], {"axis": axis}), x)
    tiles, scale = [1] * (rank + 1), [1] * rank
    tiles[axis + 1] = scale[axis] = counts[0]
    tiled = like(ctx.op("Tile", [unsqueeze(ctx, x, [axis + 1]), ctx.int64s(tiles)]), x)
    return reshape(ctx, tiled, ctx.op("Mul", [shape_of(ctx, x), ctx.int64s(scale)]))


def _mirror_pad(ctx, x, axis, before, after, mode):
    """symmetric / wrap padding of one axis by slicing and concatenation."""
    parts = []
    if before:
        if mode == "symmetric":  # x[before-1::-1]
            parts.append(slice_(ctx, x, [before - 1], [INT64_MIN], [axis], [-1]))
        else:  # wrap: x[-before:]
            parts.append(slice_(ctx, x, [-before], [INT64_MAX], [axis]))
    parts.append(x)
    if after:
        if mode == "symmetric":  # x[:-after-1:-1]
            parts.append(slice_(ctx, x, [-1], [-after - 1], [axis], [-1]))
        else:  # x[:after]
            parts.append(slice_(ctx, x, [0], [after], [axis]))
    return like(ctx.op("Concat", parts, {"axis": axis}), x) if len(parts) > 1 else x


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


@register("Pad", layout=ANY, cases=[
    case("pad_constant", lambda x: ops.pad(x, ((0, 0), (1, 2), (0, 0))), ((None, 3),)),
    case("pad_value", lambda x: ops.pad(x, ((0, 0), (1, 0), (2, 1)), constant_values=1.5), ((3, 4),)),
    case("pad_all_axes", lambda x: ops.pad(x, 1), ((3,),)),
    case("pad_reflect", lambda x: ops.pad(x, ((0, 0), (2, 1), (1, 1)), mode="reflect"), ((None, 4),)),
    case("pad_edge", lambda x: ops.pad(x, ((0, 0), (1, 2), (0, 1)), mode="edge"), ((3, 4),)),
    case("pad_symmetric", lambda x: ops.pad(x, ((0, 0), (2, 1), (1, 1)), mode="symmetric"), ((None, 4),)),
    case("pad_wrap", lambda x: ops.pad(x, ((0, 0), (1, 2)), mode="wrap"), ((4,),)),
    case("pad_int", lambda x: ops.pad(x, ((0, 0), (1, 1)), constant_values=7), ((3,),), dtypes=("int32",)),
    cf_case("pad", lambda x: ops.pad(x, ((0, 0), (1, 1), (0, 2), (0, 1)))),
    cf_case("pad_symmetric", lambda x: ops.pad(x, ((0, 0), (1, 1), (0, 2), (0, 1)), mode="symmetric")),
])
def pad(ctx, op, x):
    rank, mode = len(ctx.in_shape()), setting(op, "mode", default="constant")
    widths = [tuple(int(v) for v in p) for p in setting(op, "pad_width")]
    widths = widths * rank if len(widths) == 1 else widths
    stored = [widths[k] for k in (ctx.perm or range(rank))]
    if mode in ("symmetric", "wrap", "circular"):
        for axis, (before, after) in enumerate(stored):
            x = _mirror_pad(ctx, x, axis, before, after, "symmetric" if mode == "symmetric" else "wrap")
        return x
    if mode not in _PAD_MODES:
        raise ctx.unsupported(f"pad mode '{mode}'")
    pads = ctx.int64s([b for b, _ in stored] + [a for _, a in stored])
    value = ctx.kwargs.get("constant_values")
    inputs = [x, pads]
    if value is not None and mode == "constant":
        inputs.append(operand(ctx, value, ctx.out_dtype()))
    return like(ctx.op("Pad", inputs, {"mode": _PAD_MODES[mode]}), x)


def flip_axes(ctx, x, axes):
    n = len(axes)
    return slice_(ctx, x, [-1] * n, [INT64_MIN] * n, axes, [-1] * n) if n else x


@register("Flip", "Fliplr", "Flipud", layout=ANY, cases=[
    case("flip_axis", lambda x: ops.flip(x, axis=1), ((None, 3),)),
    case("flip_all", lambda x: ops.flip(x), ((3, 4),)),
    case("flip_axes", lambda x: ops.flip(x, axis=(1, 2)), ((3, 4),)),
    case("fliplr", lazy_op(ops, "fliplr"), ((3, 4),)),
    case("flipud", lazy_op(ops, "flipud"), ((3,),)),
    cf_case("flip", lambda x: ops.flip(x, axis=(1, -1))),
])
def flip(ctx, op, x):
    rank = len(ctx.in_shape())
    axis = {"Fliplr": 1, "Flipud": 0}.get(type(op).__name__, setting(op, "axis"))
    axes = list(range(rank)) if axis is None else norm_axes(axis, rank)
    return flip_axes(ctx, x, sorted(ctx.axis(a, rank) for a in axes))


def roll_axis(ctx, x, shift: int, axis: int, size=None):
    """``np.roll`` along one axis: the last ``shift % n`` elements move to the front."""
    if size is not None:
        k = shift % size if size else 0
        if not k:
            return x
        split_at, end = ctx.int64s([size - k]), ctx.int64s([size])
    else:
        n = dim(ctx, x, axis)
        split_at = ctx.op("Sub", [n, ctx.op("Mod", [ctx.int64s([shift]), n])])
        end = ctx.int64s([INT64_MAX])
    tail = slice_(ctx, x, split_at, end, [axis])
    head = slice_(ctx, x, [0], split_at, [axis])
    return like(ctx.op("Concat", [tail, head], {"axis": axis}), x)


@register("Roll", layout=ANY, cases=[
    case("roll_axis", lambda x: ops.roll(x, 1, axis=1), ((None, 3),)),
    case("roll_static_negative", lambda x: ops.roll(x, -5, axis=1), ((4,),)),
    case("roll_flat", lambda x: ops.roll(x, 2), ((3, 4),)),
    case("roll_multi", lambda x: ops.roll(x, (1, -1), axis=(1, 2)), ((3, None),)),
    cf_case("roll", lambda x: ops.roll(x, 2, axis=-1)),
    cf_case("roll_flat", lambda x: ops.roll(x, 7)),
])
def roll(ctx, op, x):
    shift, axis = setting(op, "shift"), setting(op, "axis")
    rank = len(ctx.in_shape())
    if axis is None:  # over the flattened tensor in Keras' order, then back to its shape
        x = keras_order(ctx)
        ctx.out_perms = [L.identity(rank)]
        size = int(np.prod(ctx.in_shape())) if None not in ctx.in_shape() else None
        rolled = roll_axis(ctx, flat(ctx, x), int(np.sum(shift)), 0, size)
        return reshape(ctx, rolled, shape_of(ctx, x))
    axes = norm_axes(axis, rank)
    shifts = np.broadcast_to(np.asarray(shift), (len(axes),)) if np.ndim(shift) == 0 else shift
    for a, s in zip(axes, shifts):
        stored_axis = ctx.axis(a, rank)
        x = roll_axis(ctx, x, int(s), stored_axis, stored_shape(ctx)[stored_axis])
    return x


@register("Rot90", cases=[
    case("rot90", lambda x: ops.rot90(x, axes=(1, 2)), ((3, 4),)),
    case("rot90_k2", lambda x: ops.rot90(x, k=2, axes=(1, 2)), ((None, 4),)),
    case("rot90_k3", lambda x: ops.rot90(x, k=-1, axes=(2, 1)), ((3, 4),)),
])
def rot90(ctx, op, x):
    rank = len(ctx.in_shape())
    k = int(setting(op, "k", default=1)) % 4
    a, b = norm_axes(setting(op, "axes", default=(0, 1)), rank)
    swap = list(range(rank))
    swap[a], swap[b] = b, a
    if k == 1:
        return transpose(ctx, flip_axes(ctx, x, [b]), swap)
    if k == 2:
        return flip_axes(ctx, x, sorted([a, b]))
    if k == 3:
        return flip_axes(ctx, transpose(ctx, x, swap), [b])
    return x


# ---- indexing: x[key], take, take_along_axis -------------------------------------------------------

def _expand_key(key, rank):
    """The key with its ellipsis (explicit or implied at the end) replaced by full slices."""
    key = list(key)
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    fill = [slice(None)] * (rank - consumed)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        return key[:i] + fill + key[i + 1:]
    return key + fill


def _slice_bounds(k: slice):
    step = 1 if k.step is None else int(k.step)
    start = (0 if step > 0 else INT64_MAX) if k.start is None else int(k.start)
    stop = (INT64_MAX if step > 0 else INT64_MIN) if k.stop is None else int(k.stop)
    return start, stop, step


@register("GetItem", cases=[
    case("getitem_slice", lambda x: x[:, 1:3], ((None, 4),)),
    case("getitem_newaxis", lambda x: x[..., None], ((None, 4),)),
    case("getitem_last", lambda x: x[:, -1], ((None, 4),)),
    case("getitem_step", lambda x: x[:, ::2], ((3, 4),)),
    case("getitem_batch_step", lambda x: x[::2, 1:], ((3, 4),)),
    case("getitem_int_negative", lambda x: x[:, 1, -2], ((3, 4),)),
    case("getitem_ellipsis", lambda x: x[..., 1:, None, 0], ((2, None, 4),)),
    case("getitem_reverse", lambda x: x[:, ::-1, 1::2], ((None, 5),)),
    case("getitem_negative_bounds", lambda x: x[:, -3:-1, None], ((None,),)),
    case("getitem_full", lambda x: x[:, :], ((3,),)),
    case("getitem_int", lambda x: x[:, 2:], ((5,),), dtypes=("int32",)),
])
def getitem(ctx, op, x, *key):
    if any(isinstance(k, ir.Value) for k in key):
        raise ctx.unsupported("indexing with tensors")
    starts, ends, axes, steps, dropped, new = [], [], [], [], [], []
    axis = out = 0
    for k in _expand_key(key, len(ctx.in_shape())):
        if k is None:
            new.append(out)
            out += 1
            continue
        if isinstance(k, slice):
            out += 1
            bounds = _slice_bounds(k)
            if bounds == (0, INT64_MAX, 1):
                axis += 1
                continue
        else:  # an integer index: slice one element, then drop the axis
            k = int(k)
            bounds = (k, INT64_MAX if k == -1 else k + 1, 1)
            dropped.append(axis)
        for lst, v in zip((starts, ends, steps), bounds):
            lst.append(v)
        axes.append(axis)
        axis += 1
    if axes:
        x = slice_(ctx, x, starts, ends, axes, steps)
    return unsqueeze(ctx, squeeze(ctx, x, dropped), new)


def _indices(ctx, args, shape):
    """Index operand(s) as an int value: a tensor, or Python ints (flattened lists) in ``shape``."""
    if len(args) == 1 and isinstance(args[0], ir.Value):
        v = args[0]
        return v if keras_dtype(v) in ("int32", "int64") else cast(ctx, v, "int64")
    return ctx.int64s(np.asarray([int(a) for a in args], dtype=np.int64).reshape(shape))


@register("Take", cases=[
    case("take_tensor", lambda x, i: ops.take(x, i, axis=1), ((None, 4), (2,)), dtypes=("float32", "int32"),
         int_range=(0, 4)),
    case("take_list", lambda x: ops.take(x, [[0, 2], [-1, 1]], axis=-1), ((3, 4),)),
    case("take_scalar", lambda x: ops.take(x, 1, axis=1), ((None, 4),)),
    case("take_flat", lambda x: ops.take(x, [0, 5, 7]), ((2, 4),)),
])
def take(ctx, op, x, *indices):
    axis, rank = setting(op, "axis"), len(ctx.in_shape())
    if axis is None:
        x, axis, rank = flat(ctx, x), 0, 1
    axis = int(axis) % rank
    out_shape = ctx.out_shape()
    index_rank = len(out_shape) - rank + 1
    index = _indices(ctx, indices, out_shape[axis:axis + index_rank])
    return like(ctx.op("Gather", [x, index], {"axis": axis}), x)


@register("TakeAlongAxis", cases=[
    case("take_along_axis", lambda x, i: ops.take_along_axis(x, i, axis=1), ((None, 4), (None, 4)),
         dtypes=("float32", "int32"), int_range=(0, 4)),
    case("take_along_axis_argsort", lambda x: ops.take_along_axis(x, ops.argsort(x, axis=-1), axis=-1), ((3, 4),)),
    case("take_along_axis_broadcast", lambda x, i: ops.take_along_axis(x, i, axis=2), ((3, 4), (1, 2)),
         dtypes=("float32", "int32"), int_range=(0, 4)),
    case("take_along_axis_flat", lambda x, i: ops.take_along_axis(x[0], i[0], axis=None), ((3, 4), (5,)),
         dtypes=("float32", "int32"), int_range=(0, 12)),
])
def take_along_axis(ctx, op, x, indices):
    axis = setting(op, "axis")
    x_shape, i_shape = in_shapes(ctx, [x, indices])
    indices = _indices(ctx, [indices], None)
    if axis is None:
        return like(ctx.op("GatherElements", [flat(ctx, x), flat(ctx, indices)], {"axis": 0}), x)
    axis = int(axis) % len(x_shape)
    if any(a != b for i, (a, b) in enumerate(zip(x_shape, i_shape)) if i != axis):
        # numpy broadcasts the other dims (GatherElements does not): expand both sides.
        x, indices = (like(ctx.op("Expand", [x, _shape_with_one(ctx, indices, axis)]), x),
                      like(ctx.op("Expand", [indices, _shape_with_one(ctx, x, axis)]), indices))
    return like(ctx.op("GatherElements", [x, indices], {"axis": axis}), x)


def _shape_with_one(ctx, v, axis):
    """The shape of ``v`` with a 1 at ``axis`` (an Expand target that keeps the other's axis)."""
    shape = shape_of(ctx, v)
    before = ctx.op("Slice", [shape, ctx.int64s([0]), ctx.int64s([axis])])
    after = ctx.op("Slice", [shape, ctx.int64s([axis + 1]), ctx.int64s([INT64_MAX])])
    return ctx.op("Concat", [before, ctx.int64s([1]), after], {"axis": 0})


# ---- triangles and diagonals --------------------------------------------------------------------------

def band_mask(ctx, x, rows_axis, cols_axis, k, relation):
    """Bool [rows, cols] with ``relation(col - row, k)`` ("Equal", "LessOrEqual", "GreaterOrEqual")
    for two axes of the converter's input ``x``; a constant when both sizes are static."""
    shape = ctx.in_shape()
    n, m = shape[rows_axis], shape[cols_axis]
    if n is not None and m is not None:
        d = np.arange(m)[None, :] - np.arange(n)[:, None]
        test = {"Equal": np.equal, "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal}[relation]
        return ctx.const(test(d, k))
    r = arange(ctx, dim(ctx, x, rows_axis))
    col = arange(ctx, dim(ctx, x, cols_axis))
    d = ctx.op("Sub", [unsqueeze(ctx, col, [0]), unsqueeze(ctx, r, [1])])
    return ctx.op(relation, [d, ctx.const(np.asarray(k, np.int64))])


@register("Tril", "Triu", cases=[
    case("tril", lambda x: ops.tril(x), ((4, 4),)),
    case("triu_k", lambda x: ops.triu(x, k=1), ((None, 4),)),
    case("tril_negative_k", lambda x: ops.tril(x, k=-1), ((3, None),)),
    case("triu_int", lambda x: ops.triu(x), ((3, 3),), dtypes=("int32",)),
])
def tril(ctx, op, x):
    rank, k = len(ctx.in_shape()), int(setting(op, "k", default=0))
    relation = "LessOrEqual" if type(op).__name__ == "Tril" else "GreaterOrEqual"
    keep = band_mask(ctx, x, rank - 2, rank - 1, k, relation)
    return where(ctx, keep, x, c(ctx, 0, ctx.out_dtype()), ctx.out_dtype())


def diagonal_of(ctx, x, offset, axis1, axis2):
    """numpy ``diagonal`` of the converter's input ``x``: the ``offset`` diagonal of axes
    (axis1, axis2), moved to the end."""
    shape = ctx.in_shape()
    rank = len(shape)
    others = [i for i in range(rank) if i not in (axis1, axis2)]
    dtype = keras_dtype(x)
    compute = "int32" if dtype == "bool" else dtype
    moved = operand(ctx, transpose(ctx, x, others + [axis1, axis2]), compute)
    mask = band_mask(ctx, x, axis1, axis2, offset, "Equal")
    picked = ctx.op("Where", [mask, moved, c(ctx, 0, compute)])
    rows = reduce(ctx, "ReduceSum", like(picked, moved), [rank - 1], False)  # rows[i] = x[i, i + offset]
    n, m = shape[axis1], shape[axis2]
    start = max(0, -offset)
    if n is not None and m is not None:
        end = ctx.int64s([max(start, min(n, m - offset))])
    else:
        end = ctx.op("Min", [dim(ctx, x, axis1, n),
                             ctx.op("Sub", [dim(ctx, x, axis2, m), ctx.int64s([offset])])])
    return operand(ctx, slice_(ctx, rows, [start], end, [rank - 2]), dtype)


@register("Diagonal", cases=[
    case("diagonal", lambda x: ops.diagonal(x, axis1=1, axis2=2), ((3, 4),)),
    case("diagonal_offset_dynamic", lambda x: ops.diagonal(x, offset=1, axis1=1, axis2=2), ((None, 4),)),
    case("diagonal_negative", lambda x: ops.diagonal(x, offset=-1, axis1=2, axis2=0), ((4, 3),)),
    case("diagonal_with_inf", lambda x: ops.diagonal(_specials(x), axis1=1, axis2=2), ((3, 3),)),
])
def diagonal(ctx, op, x):
    rank = len(ctx.in_shape())
    a1, a2 = norm_axes([setting(op, "axis1", default=0), setting(op, "axis2", default=1)], rank)
    return diagonal_of(ctx, x, int(setting(op, "offset", default=0)), a1, a2)


@register("Trace", cases=[
    case("trace", lambda x: ops.trace(x, axis1=1, axis2=2), ((3, 3),)),
    case("trace_offset", lambda x: ops.trace(x, offset=1, axis1=1, axis2=2), ((None, 4),)),
    case("trace_bool", lambda x: ops.trace(x > 0, axis1=1, axis2=2), ((3, 3),)),
])
def trace(ctx, op, x):
    rank = len(ctx.in_shape())
    a1, a2 = norm_axes([setting(op, "axis1", default=0), setting(op, "axis2", default=1)], rank)
    d = operand(ctx, diagonal_of(ctx, x, int(setting(op, "offset", default=0)), a1, a2), ctx.out_dtype())
    return reduce(ctx, "ReduceSum", d, [rank - 2], False)


def _diag_matrix(ctx, v, k, size=None):
    """A square matrix with the vector ``v`` on its ``k`` diagonal."""
    n = dim(ctx, v, 0, size)
    big = ctx.op("Add", [n, ctx.int64s([abs(k)])])
    padded = ctx.op("Pad", [v, ctx.int64s([0, abs(k)])])
    spread = unsqueeze(ctx, padded, [1] if k >= 0 else [0])  # value by row (k >= 0) or column
    r = arange(ctx, big, None if size is None else size + abs(k))
    d = ctx.op("Sub", [unsqueeze(ctx, r, [0]), unsqueeze(ctx, r, [1])])
    on_diagonal = ctx.op("Equal", [d, ctx.const(np.asarray(k, np.int64))])
    return where(ctx, on_diagonal, spread, c(ctx, 0, keras_dtype(v)), keras_dtype(v))


@register("Diag", "Diagflat", cases=[
    case("diag_extract", lambda x: ops.diag(x, k=1), ((4,),)),
    case("diag_build", lambda x: ops.diag(x[0], k=-1), ((3,),)),
    case("diag_build_dynamic", lambda x: ops.diag(x[0]), ((None,),)),
    case("diagflat", lambda x: ops.diagflat(x[0], k=1), ((2, 2),)),
])
def diag(ctx, op, x):
    k = int(setting(op, "k", default=0))
    shape = ctx.in_shape()
    if type(op).__name__ == "Diagflat":
        size = int(np.prod(shape)) if None not in shape else None
        return _diag_matrix(ctx, flat(ctx, x), k, size)
    if len(shape) == 2:
        return diagonal_of(ctx, x, k, 0, 1)
    return _diag_matrix(ctx, x, k, shape[0])


# ---- linear algebra --------------------------------------------------------------------------------

def _einsum_terms(equation: str, ranks) -> tuple[list[str], str]:
    """Operand and output subscripts with ``...`` replaced by fresh (upper-case) letters, aligned right."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    spare = [ch for ch in string.ascii_uppercase + string.ascii_lowercase if ch not in equation]
    width = max((r - (len(t) - 3) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ellipsis = "".join(spare[:width])
    terms = [t.replace("...", ellipsis[width - (r - (len(t) - 3)):]) if "..." in t else t
             for t, r in zip(terms, ranks)]
    if arrow:
        out = rhs.replace("...", ellipsis)
    else:  # numpy's implicit output: broadcast dims, then letters seen once, sorted
        letters = "".join(terms)
        once = [ch for ch in set(letters) if letters.count(ch) == 1 and ch not in ellipsis]
        out = ellipsis + "".join(sorted(once))
    return terms, out


def _matmul_plan(terms, out):
    """For a two-operand einsum that is a (batched, broadcast) matrix product, the index order of
    each MatMul operand ``[G..., M, K]`` / ``[G..., K, N]``; None otherwise. M or N may be absent."""
    if len(terms) != 2:
        return None
    a, b = terms
    if len(set(a)) != len(a) or len(set(b)) != len(b) or len(set(out)) != len(out):
        return None
    k = [ch for ch in a if ch in b and ch not in out]
    if len(k) != 1 or any(ch not in out and ch not in k for ch in a + b):
        return None
    m = [ch for ch in out if ch in a and ch not in b]
    n = [ch for ch in out if ch in b and ch not in a]
    row, col = (m[-1] if m else None), (n[-1] if n else None)
    groups = [ch for ch in out if ch not in (row, col)]
    return groups, row, k[0], col


def _matmul_operand(ctx, x, term, order):
    """``x`` (indices ``term``) arranged in ``order``; letters it lacks become size-1 dims, except
    leading ones (MatMul broadcasts from the right)."""
    present = [ch is not None and ch in term for ch in order]
    x = transpose(ctx, x, [term.index(ch) for ch, p in zip(order, present) if p])
    missing = [i for i, p in enumerate(present) if not p]
    lead = 0
    while lead < len(missing) and missing[lead] == lead and order[lead] is not None:
        lead += 1
    return unsqueeze(ctx, x, [i - lead for i in missing[lead:]])


def einsum_(ctx, equation, operands, ranks):
    """Einsum, emitted as Transpose/Unsqueeze + MatMul when it is a (batched) matrix product."""
    terms, out = _einsum_terms(equation, ranks)
    plan = _matmul_plan(terms, out)
    if plan is None:
        return ctx.op("Einsum", list(operands), {"equation": equation.replace(" ", "")})
    groups, row, k, col = plan
    a = _matmul_operand(ctx, operands[0], terms[0], groups + [row, k])
    b = _matmul_operand(ctx, operands[1], terms[1], groups + [k, col])
    y = ctx.op("MatMul", [a, b])
    y = squeeze(ctx, y, [i for i, ch in enumerate([row, col], start=len(groups)) if ch is None])
    produced = groups + [ch for ch in (row, col) if ch is not None]
    return transpose(ctx, y, [produced.index(ch) for ch in out])


@register("Einsum", cases=[
    case("einsum_matmul", lambda a, b: ops.einsum("bij,bjk->bik", a, b), ((3, 4), (4, 5))),
    case("einsum_attention_scores", lambda q, k: ops.einsum("bqhd,bkhd->bhqk", q, k),
         ((None, 2, 4), (None, 2, 4))),
    case("einsum_attention_values", lambda p, v: ops.einsum("acbe,aecd->abcd", p, v), ((2, 3, 5), (5, 2, 4))),
    case("einsum_dense", lambda x: ops.einsum("abc,cd->abd", x, np.arange(12.0).reshape(4, 3) / 10), ((None, 4),)),
    case("einsum_dense_2out", lambda x: ops.einsum("abc,cde->abde", x, np.ones((4, 2, 3)) / 7), ((3, 4),)),
    case("einsum_ellipsis", lambda a, b: ops.einsum("...ij,...jk->...ik", a, b), ((2, 3, 4), (2, 4, 2))),
    case("einsum_dot_rows", lambda a, b: ops.einsum("bi,bi->b", a, b), ((4,), (4,))),
    case("einsum_vector_matrix", lambda a: ops.einsum("bj,jk->bk", a, np.ones((4, 3))), ((4,),)),
    case("einsum_general", lambda a: ops.einsum("bii->bi", a), ((3, 3),)),
    case("einsum_sum_outer", lambda a, b: ops.einsum("bi,bj->bij", a, b), ((3,), (2,))),
    case("einsum_implicit", lambda a, b: ops.einsum("bij,bjk", a, b), ((3, 4), (4, 2))),
    case("einsum_three", lambda a, b, c: ops.einsum("bi,bj,bk->bijk", a, b, c), ((2,), (3,), (2,))),
])
def einsum(ctx, op, *operands):
    ranks = [len(s) for s in in_shapes(ctx, operands)]
    operands = [operand(ctx, x, ctx.out_dtype()) for x in operands]
    return einsum_(ctx, setting(op, "subscripts"), operands, ranks)


@register("Matmul", cases=[
    case("matmul", lambda a, b: ops.matmul(a, b), ((3, 4), (4, 2))),
    case("matmul_operator_const", lambda a: a @ np.ones((4, 3), np.float32), ((None, 4),)),
    case("matmul_vector", lambda a, b: ops.matmul(a, b[0]), ((3, 4), (4,))),
    case("matmul_vector_left", lambda a, b: ops.matmul(a[0], b), ((4,), (4, 2))),
    case("matmul_broadcast", lambda a, b: ops.matmul(a, b), ((2, 3, 4), (1, 4, 5))),
    case("matmul_int", lambda a, b: ops.matmul(a, b), ((2, 3), (3, 2)), dtypes=("int32", "int32")),
])
def matmul(ctx, op, a, b):
    dtype = ctx.out_dtype()
    return ctx.op("MatMul", [operand(ctx, a, dtype), operand(ctx, b, dtype)])


def _tensordot_equation(rank_a, rank_b, axes_a, axes_b):
    letters = iter(string.ascii_lowercase)
    a = [next(letters) for _ in range(rank_a)]
    b = [next(letters) for _ in range(rank_b)]
    for i, j in zip(axes_a, axes_b):
        b[j] = a[i]
    out = [ch for i, ch in enumerate(a) if i not in axes_a] + [ch for j, ch in enumerate(b) if j not in axes_b]
    return f"{''.join(a)},{''.join(b)}->{''.join(out)}"


def tensordot_(ctx, a, b, rank_a, rank_b, axes):
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(rank_a - int(axes), rank_a)), list(range(int(axes)))
    else:
        axes_a, axes_b = ([int(v)] if np.ndim(v) == 0 else [int(i) for i in v] for v in axes)
    axes_a, axes_b = [i % rank_a for i in axes_a], [j % rank_b for j in axes_b]
    equation = _tensordot_equation(rank_a, rank_b, axes_a, axes_b)
    return einsum_(ctx, equation, [a, b], [rank_a, rank_b])


def _two_operands(ctx, a, b):
    """Operands in the output dtype, with their Keras ranks."""
    ranks = [len(s) for s in in_shapes(ctx, [a, b])]
    dtype = ctx.out_dtype()
    return operand(ctx, a, dtype), operand(ctx, b, dtype), ranks


@register("Tensordot", cases=[
    case("tensordot_1", lambda a, b: ops.tensordot(a, b[0], axes=1), ((3, 4), (4, 2))),
    case("tensordot_pairs", lambda a, b: ops.tensordot(a, b[0], axes=([1, 2], [1, 0])), ((3, 4), (4, 3, 2))),
    case("tensordot_2", lambda a, b: ops.tensordot(a[0], b[0], axes=2), ((3, 4), (3, 4))),
])
def tensordot(ctx, op, a, b):
    a, b, (rank_a, rank_b) = _two_operands(ctx, a, b)
    return tensordot_(ctx, a, b, rank_a, rank_b, setting(op, "axes", default=2))


@register("Dot", cases=[
    case("dot_matrix", lambda a, b: ops.dot(a, b[0]), ((4,), (4, 3))),
    case("dot_vector", lambda a, b: ops.dot(a, b[0]), ((4,), (4,))),
    case("dot_nd", lambda a, b: ops.dot(a, b[0]), ((2, 3), (2, 3, 4))),
    case("dot_scalar", lambda a: ops.dot(a, 2.0), ((4,),)),
])
def dot(ctx, op, a, b):
    a, b, (rank_a, rank_b) = _two_operands(ctx, a, b)
    if rank_a == 0 or rank_b == 0:
        return ctx.op("Mul", [a, b])
    if rank_b <= 2:
        return ctx.op("MatMul", [a, b])
    return tensordot_(ctx, a, b, rank_a, rank_b, ([rank_a - 1], [rank_b - 2]))


@register("Inner", cases=[
    case("inner", lambda a, b: ops.inner(a, b), ((3, 4), (2, 4))),
    case("inner_vectors", lambda a, b: ops.inner(a[0], b[0]), ((4,), (4,))),
])
def inner(ctx, op, a, b):
    a, b, (rank_a, rank_b) = _two_operands(ctx, a, b)
    if rank_a == 0 or rank_b == 0:
        return ctx.op("Mul", [a, b])
    return tensordot_(ctx, a, b, rank_a, rank_b, ([rank_a - 1], [rank_b - 1]))


@register("Outer", cases=[case("outer", lambda a, b: ops.outer(a, b), ((3,), (2,)))])
def outer(ctx, op, a, b):
    a, b, _ = _two_operands(ctx, a, b)
    return ctx.op("Mul", [unsqueeze(ctx, flat(ctx, a), [1]), unsqueeze(ctx, flat(ctx, b), [0])])


@register("Vdot", cases=[case("vdot", lambda a, b: ops.vdot(a, b), ((3,), (3,)))])
def vdot(ctx, op, a, b):
    a, b, _ = _two_operands(ctx, a, b)
    return reduce(ctx, "ReduceSum", ctx.op("Mul", [flat(ctx, a), flat(ctx, b)]), None, False)


@register("Kron", cases=[
    case("kron", lambda a, b: ops.kron(a, b), ((2,), (3,))),
    case("kron_batched", lambda a, b: ops.kron(a, b), ((2, 2), (3, 1))),
])
def kron(ctx, op, a, b):
    a, b, (rank_a, rank_b) = _two_operands(ctx, a, b)
    rank = max(rank_a, rank_b)
    a = unsqueeze(ctx, a, list(range(rank - rank_a)))
    b = unsqueeze(ctx, b, list(range(rank - rank_b)))
    # a -> [a0, 1, a1, 1, ...], b -> [1, b0, 1, b1, ...]: their product merges pairwise.
    spread_a = unsqueeze(ctx, a, [2 * i + 1 for i in range(rank)])
    spread_b = unsqueeze(ctx, b, [2 * i for i in range(rank)])
    product = ctx.op("Mul", [spread_a, spread_b])
    return ctx.op("Reshape", [product, ctx.op("Mul", [shape_of(ctx, a), shape_of(ctx, b)])])


@register("Cross", cases=[
    case("cross", lambda a, b: ops.cross(a, b), ((3,), (3,))),
    case("cross_broadcast", lambda a, b: ops.cross(a, b[0]), ((2, 3), (3,))),
])
def cross(ctx, op, a, b):
    axes = [setting(op, n, default=-1) for n in ("axisa", "axisb", "axisc")] + [setting(op, "axis", default=-1)]
    if any(a not in (None, -1) for a in axes):
        raise ctx.unsupported("cross products along axes other than the last")
    if any(s[-1] != 3 for s in in_shapes(ctx, [a, b])):
        raise ctx.unsupported("cross products of 2-vectors")
    a, b, _ = _two_operands(ctx, a, b)

    def rotate(x, order):
        return ctx.op("Gather", [x, ctx.int64s(order)], {"axis": -1})
    yzx, zxy = [1, 2, 0], [2, 0, 1]
    return ctx.op("Sub", [ctx.op("Mul", [rotate(a, yzx), rotate(b, zxy)]),
                          ctx.op("Mul", [rotate(a, zxy), rotate(b, yzx)])])


@register("Correlate", cases=[
    case("correlate_valid", lambda a, v: ops.correlate(a[0], v[0]), ((6,), (3,))),
    case("correlate_same", lambda a, v: ops.correlate(a[0], v[0], mode="same"), ((6,), (4,))),
    case("correlate_full_swapped", lambda a, v: ops.correlate(a[0], v[0], mode="full"), ((3,), (5,))),
])
def correlate(ctx, op, a, v):
    """np.correlate of two vectors as a 1-D Conv (which correlates) of the longer by the shorter."""
    n, m = (s[0] for s in in_shapes(ctx, [a, v]))
    if n is None or m is None:
        raise ctx.unsupported("correlate of vectors of dynamic length")
    dtype = ctx.out_dtype()
    a, v = operand(ctx, a, dtype), operand(ctx, v, dtype)
    swapped = m > n  # numpy correlates the other way round and reverses the result
    if swapped:
        a, v, n, m = v, a, m, n
    mode = setting(op, "mode", default="valid")
    left = {"valid": 0, "same": m // 2, "full": m - 1}[mode]
    right = {"valid": 0, "same": m - m // 2 - 1, "full": m - 1}[mode]
    y = ctx.op("Conv", [reshape(ctx, a, [1, 1, n]), reshape(ctx, v, [1, 1, m])], {"pads": [left, right]})
    y = reshape(ctx, y, [-1])
    return flip_axes(ctx, y, [0]) if swapped else y


@register("Corrcoef", cases=[
    case("corrcoef", lambda x: ops.corrcoef(ops.transpose(x)), ((3,),)),  # batch 1: one observation, NaN
    # Keras' symbolic output shape is the input's: use square inputs.
    case("corrcoef_rows", lambda x: ops.corrcoef(x[0]), ((4, 4),)),
    case("corrcoef_vector", lambda x: ops.corrcoef(x[0, 0]) + x, ((4, 4),)),
])
def corrcoef(ctx, op, x):
    """Pearson correlations of the rows of ``x``, clipped to [-1, 1] like numpy."""
    dtype = ctx.out_dtype()
    x = operand(ctx, x, dtype)
    vector = len(ctx.in_shape()) == 1
    if vector:
        x = unsqueeze(ctx, x, [0])
    centred = ctx.op("Sub", [x, reduce(ctx, "ReduceMean", x, [1], True)])
    products = ctx.op("MatMul", [centred, ctx.op("Transpose", [centred], {"perm": [1, 0]})])
    norms = ctx.op("Sqrt", [reduce(ctx, "ReduceSum", ctx.op("Mul", [centred, centred]), [1], True)])
    scale = ctx.op("Mul", [norms, ctx.op("Transpose", [norms], {"perm": [1, 0]})])
    y = ctx.op("Clip", [ctx.op("Div", [products, scale]), c(ctx, -1, dtype), c(ctx, 1, dtype)])
    return reshape(ctx, y, []) if vector else y


@register("Slogdet", cases=[
    # Keras' symbolic shape of the sign output is wrong ((), not the batch shape): combine both.
    case("slogdet", lambda x: ops.multiply(*ops.slogdet(ops.reshape(x, (-1, 3, 3)))), ((9,),)),
])
def slogdet(ctx, op, x):
    det = ctx.op("Det", [operand(ctx, x, ctx.out_dtype())])
    return ctx.op("Sign", [det]), ctx.op("Log", [ctx.op("Abs", [det])])


@register("Trapezoid", cases=[
    case("trapezoid", lambda y: ops.trapezoid(y), ((None, 4),)),
    case("trapezoid_dx_axis", lambda y: ops.trapezoid(y, dx=0.5, axis=1), ((4, 3),)),
    case("trapezoid_x", lambda y: ops.trapezoid(y, x=np.array([0.0, 1.0, 3.0, 7.0])), ((4,),)),
])
def trapezoid(ctx, op, y):
    dtype, rank = ctx.out_dtype(), len(ctx.in_shape())
    axis = int(setting(op, "axis", default=-1)) % rank
    y = operand(ctx, y, dtype)
    pairs = ctx.op("Add", [slice_(ctx, y, [1], [INT64_MAX], [axis]), slice_(ctx, y, [0], [-1], [axis])])
    xs = setting(op, "x")
    if xs is None:
        widths = c(ctx, float(setting(op, "dx", default=1.0)) / 2, dtype)
    elif np.ndim(xs) == 1 and not isinstance(xs, keras.KerasTensor):
        shape = [1] * rank
        shape[axis] = -1
        widths = c(ctx, np.reshape(np.diff(np.asarray(xs, np.float64)) / 2, shape), dtype)
    else:
        raise ctx.unsupported("trapezoid with multi-dimensional or tensor sample points")
    return reduce(ctx, "ReduceSum", ctx.op("Mul", [pairs, widths]), [axis], False)


@register("Vander", cases=[
    case("vander", lambda x: ops.vander(x[0], 3), ((4,),)),
    case("vander_increasing_int", lambda x: ops.vander(x[0], increasing=True), ((4,),), dtypes=("int32",)),
])
def vander(ctx, op, x):
    n, shape = setting(op, "N"), ctx.in_shape()
    n = shape[0] if n is None else int(n)
    if n is None:
        raise ctx.unsupported("vander of a dynamic-length vector without N")
    powers = np.arange(n) if setting(op, "increasing", default=False) else np.arange(n)[::-1]
    dtype = ctx.out_dtype()
    compute = dtype if is_float(dtype) else "float32"
    y = ctx.op("Pow", [unsqueeze(ctx, operand(ctx, x, compute), [1]), c(ctx, powers, compute)])
    return y if is_float(dtype) else cast(ctx, ctx.op("Round", [y]), dtype)


# ---- sorting, order statistics, searching ------------------------------------------------------------

def sort_along(ctx, x, axis, size=None):
    """(values, int64 indices) of ``x`` sorted ascending along ``axis`` (TopK breaks ties by index,
    so the order is stable)."""
    values, indices = ctx.op("TopK", [x, dim(ctx, x, axis, size)], {"axis": axis, "largest": 0, "sorted": 1},
                             outputs=2)
    return like(values, x), cast_free(indices, "int64")


def _sort_converter(want_indices: bool):
    def convert(ctx, op, x):
        axis, rank = setting(op, "axis", default=-1), len(ctx.in_shape())
        if keras_dtype(x) == "bool":
            x = cast(ctx, x, "int32")
        if axis is None:
            x, onnx_axis, size = flat(ctx, x), 0, None
        else:
            onnx_axis = ctx.axis(int(axis) % rank, rank)
            size = stored_shape(ctx)[onnx_axis]
        values, indices = sort_along(ctx, x, onnx_axis, size)
        return operand(ctx, indices if want_indices else values, ctx.out_dtype())
    return convert


register("Sort", layout=ANY, cases=[
    case("sort", lambda x: ops.sort(x), ((None, 5),)),
    case("sort_axis1", lambda x: ops.sort(x, axis=1), ((4, 3),)),
    case("sort_int", lambda x: ops.sort(x), ((6,),), dtypes=("int32",)),
    cf_case("sort", lambda x: ops.sort(x, axis=1)),
])(_sort_converter(False))
register("Argsort", layout=ANY, cases=[
    case("argsort", lambda x: ops.argsort(x), ((None, 5),)),
    case("argsort_axis0", lambda x: ops.argsort(x, axis=0), ((4,),)),
    cf_case("argsort", lambda x: ops.argsort(x, axis=-1)),
])(_sort_converter(True))


def _partitioned(x, kth, axis=-1):
    """Values of ``x`` gathered by ``argpartition`` (test cases): the element at ``kth`` and the
    sorted elements on either side, which every valid partition agrees on."""
    values = ops.take_along_axis(x, ops.argpartition(x, kth, axis=axis), axis=axis)
    size = x.shape[axis]
    before, at, after = ops.split(values, [kth, kth + 1], axis=axis) if kth + 1 < size else (None, None, None)
    return ops.concatenate([ops.sort(before, axis=axis), at, ops.sort(after, axis=axis)], axis=axis)


# argpartition only promises that index ``kth`` holds the kth smallest element, with no larger one
# before it and no smaller one after: a full (stable) argsort is such a partition. The cases check
# that property, not numpy's order within each side.
register("Argpartition", layout=ANY, cases=[
    case("argpartition", lambda x: _partitioned(x, 2), ((None, 6),)),
    case("argpartition_axis0", lambda x: _partitioned(x, 1, axis=1), ((5, 3),)),
    case("argpartition_int", lambda x: _partitioned(x, 0), ((4,),), dtypes=("int32",), int_range=(0, 3)),
])(_sort_converter(True))


def quantiles(ctx, x, q, axis, keepdims, method, q_shape, skip_nan=False):
    """numpy ``quantile`` of ``x`` (float) at fractions ``q`` (a value of shape ``q_shape``) over
    ``axis`` (None, int or tuple): sort along the reduced axes merged last, then interpolate.
    ``skip_nan`` (nanquantile): NaNs sort last and each slice uses its own count of numbers."""
    shape = ctx.in_shape()
    rank = len(shape)
    axes = list(range(rank)) if axis is None else sorted(norm_axes(axis, rank))
    kept = [i for i in range(rank) if i not in axes]
    last_axis = len(kept)
    x = transpose(ctx, x, kept + axes)
    if len(axes) > 1:
        x = reshape(ctx, x, [0] * len(kept) + [-1])
    sizes = [shape[i] for i in axes]
    size = int(np.prod(sizes)) if None not in sizes else None
    dtype = keras_dtype(x)
    if skip_nan:  # per-slice counts: positions [kept..., q or 1], gathered elementwise
        valid = cast(ctx, ctx.op("Not", [isnan(ctx, x)]), dtype)
        count = reduce(ctx, "ReduceSum", valid, [last_axis], True)
        ordered, _ = sort_along(ctx, nan_fill(ctx, x, np.inf), last_axis, size)
    else:  # one count: positions [q...], gathered along the axis
        count = cast(ctx, scalar_of(ctx, dim(ctx, x, last_axis, size)), dtype)
        ordered, _ = sort_along(ctx, x, last_axis, size)
    position = ctx.op("Mul", [q, ctx.op("Sub", [count, c(ctx, 1, dtype)])])
    lower, upper = ctx.op("Floor", [position]), ctx.op("Ceil", [position])

    def at(p):
        gather = "GatherElements" if skip_nan else "Gather"
        return ctx.op(gather, [ordered, cast(ctx, p, "int64")], {"axis": last_axis})
    y = _interpolate(ctx, method, position, lower, upper, at, dtype)
    if skip_nan:  # all-NaN slices give NaN; a scalar q leaves a size-1 last axis
        y = ctx.op("Where", [ctx.op("Equal", [count, c(ctx, 0, dtype)]), c(ctx, np.nan, dtype), y])
        y = squeeze(ctx, y, [] if q_shape else [last_axis])
    q_rank = len(q_shape)
    if keepdims:  # y: [kept..., q...] -> [kept with 1s at the reduced axes..., q...]
        y = unsqueeze(ctx, y, axes)
    out_rank = (rank if keepdims else len(kept)) + q_rank
    return transpose(ctx, y, list(range(out_rank - q_rank, out_rank)) + list(range(out_rank - q_rank)))


def _interpolate(ctx, method, position, lower, upper, at, dtype):
    """numpy's quantile ``method`` between the sorted values at floor/ceil of ``position``."""
    if method == "nearest":
        return at(ctx.op("Round", [position]))
    if method in ("lower", "higher"):
        return at(lower if method == "lower" else upper)
    lo, hi = at(lower), at(upper)
    if method == "midpoint":
        return ctx.op("Mul", [ctx.op("Add", [lo, hi]), c(ctx, 0.5, dtype)])
    if method == "linear":
        return ctx.op("Add", [lo, ctx.op("Mul", [ctx.op("Sub", [hi, lo]), ctx.op("Sub", [position, lower])])])
    raise ctx.unsupported(f"quantile method '{method}'")


@functools.lru_cache(maxsize=None)
def _forwards_method(cls) -> bool:
    """Keras 3.15's ``Quantile.call`` drops ``method`` (a graph computes 'linear'): follow what
    this Keras computes."""
    try:
        return "method" in inspect.getsource(cls.call)
    except (OSError, TypeError):
        return True


def _quantile_converter(scale, skip_nan=False):
    def convert(ctx, op, x, *q):
        dtype = ctx.out_dtype()
        keepdims = bool(setting(op, "keepdims", default=False))
        method = setting(op, "method", default="linear") if _forwards_method(type(op)) else "linear"
        if q:
            q_shape = in_shapes(ctx, [x, *q])[1] if isinstance(q[0], ir.Value) else np.shape(ctx.args[1])
            if isinstance(q[0], ir.Value):
                q_value = operand(ctx, q[0], dtype)
            else:
                q_value = c(ctx, np.reshape(np.asarray(q, np.float64), q_shape), dtype)
        else:
            q_shape, q_value = (), c(ctx, 0.5 * scale, dtype)
        if scale != 1:
            q_value = ctx.op("Div", [q_value, c(ctx, scale, dtype)])
        x = operand(ctx, x, dtype)
        return quantiles(ctx, x, q_value, setting(op, "axis"), keepdims, method, q_shape, skip_nan)
    return convert


register("Median", cases=[
    case("median_axis", lambda x: ops.median(x, axis=1), ((None, 4),)),
    case("median_even", lambda x: ops.median(x, axis=-1), ((3, 4),)),
    case("median_all", lambda x: ops.median(x), ((3, 5),)),
    case("median_axes_keepdims", lambda x: ops.median(x, axis=(1, 2), keepdims=True), ((3, 5),)),
    case("median_int", lambda x: ops.median(x, axis=1), ((5,),), dtypes=("int32",)),
])(_quantile_converter(1))
register("Quantile", cases=[
    case("quantile_list", lambda x: ops.quantile(x, [0.1, 0.5, 0.95], axis=1), ((None, 4),)),
    case("quantile_scalar_keepdims", lambda x: ops.quantile(x, 0.3, axis=-1, keepdims=True), ((3, 4),)),
    case("quantile_tensor_q", lambda x, q: ops.quantile(x, ops.sigmoid(q[0]), axis=1), ((6,), (2,))),
    case("quantile_method_ignored_by_keras", lambda x: ops.quantile(x, 0.4, axis=1, method="lower"), ((7,),)),
])(_quantile_converter(1))
register("Percentile", cases=[
    case("percentile", lambda x: ops.percentile(x, [25.0, 75.0], axis=1), ((None, 4),)),
    case("percentile_methods", lambda x: ops.stack([ops.percentile(x, 40.0, axis=1, method=m) for m in
                                                    ("lower", "higher", "midpoint", "nearest")]), ((7,),)),
])(_quantile_converter(100))
register("Nanmedian", cases=[
    case("nanmedian", lambda x: ops.nanmedian(x, axis=1), ((None, 4),)),
    case("nanmedian_nans", lambda x: ops.nanmedian(ops.where(x > 0.5, float("nan"), x), axis=-1), ((3, 5),)),
    case("nanmedian_all_nan_rows", lambda x: ops.nanmedian(ops.where(x > -9.0, float("nan"), x), axis=1), ((4,),)),
    case("nanmedian_keepdims", lambda x: ops.nanmedian(ops.where(x > 0.5, float("nan"), x), axis=(1, 2),
                                                       keepdims=True), ((3, 5),)),
])(_quantile_converter(1, skip_nan=True))
register("Nanquantile", cases=[
    case("nanquantile", lambda x: ops.nanquantile(ops.where(x > 0.8, float("nan"), x), [0.2, 0.9], axis=1),
         ((None, 4),)),
])(_quantile_converter(1, skip_nan=True))
register("Nanpercentile", cases=[
    case("nanpercentile", lambda x: ops.nanpercentile(ops.where(x > 0.8, float("nan"), x), 30.0, axis=-1,
                                                      method="midpoint"), ((3, 6),)),
])(_quantile_converter(100, skip_nan=True))


@register("SearchSorted", cases=[
    case("searchsorted", lambda s, v: ops.searchsorted(ops.sort(s[0]), v), ((5,), (4,))),
    case("searchsorted_right_ties", lambda s, v: ops.searchsorted(ops.sort(s[0]), v, side="right"),
         ((6,), (4,)), dtypes=("int32", "int32"), int_range=(0, 4)),
])
def searchsorted(ctx, op, sequence, values):
    dtype = common_dtype(sequence, values)
    sequence, values = operand(ctx, sequence, dtype), operand(ctx, values, dtype)
    before = "Less" if setting(op, "side", default="left") == "left" else "LessOrEqual"
    return _count_before(ctx, sequence, values, before)


def _count_before(ctx, sorted_values, x, relation):
    """For each element of ``x``: how many of the (1-D) ``sorted_values`` satisfy ``relation`` with it."""
    hits = ctx.op(relation, [sorted_values, unsqueeze(ctx, x, [-1])])
    count = reduce(ctx, "ReduceSum", cast(ctx, hits, "int64"), [-1], False)
    return operand(ctx, count, ctx.out_dtype())


@register("Digitize", cases=[
    case("digitize", lambda x, b: ops.digitize(x, ops.sort(b[0])), ((None, 4), (3,))),
    case("digitize_const_bins", lambda x: ops.digitize(x, np.array([-1.0, 0.0, 0.5])), ((4,),)),
])
def digitize(ctx, op, x, bins):
    """``np.digitize`` with increasing bins: the number of bins <= x."""
    dtype = common_dtype(x, bins)
    return _count_before(ctx, flat(ctx, operand(ctx, bins, dtype)), operand(ctx, x, dtype), "LessOrEqual")


@register("IsIn", cases=[
    case("isin", lambda x, y: ops.isin(x, y), ((5,), (3,)), dtypes=("int32", "int32")),
    case("isin_invert_list", lambda x: ops.isin(x, [1, 3, 5], invert=True), ((5,),), dtypes=("int32",)),
])
def isin(ctx, op, x, *test):
    dtype = common_dtype(x, *test) if len(test) == 1 else keras_dtype(x)
    elements = operand(ctx, test[0], dtype) if len(test) == 1 else c(ctx, np.asarray(test), dtype)
    hits = ctx.op("Equal", [unsqueeze(ctx, operand(ctx, x, dtype), [-1]), flat(ctx, elements)])
    found = truth_reduce(ctx, "ReduceMax", cast_free(hits, "bool"), [-1], False)
    return ctx.op("Not", [found]) if setting(op, "invert", default=False) else found


@register("Nonzero", cases=[
    case("nonzero", lambda x: ops.nonzero(x > 0.5), ((3, 4),)),
    case("nonzero_int", lambda x: ops.nonzero(x - 5), ((6,),), dtypes=("int32",)),
])
def nonzero(ctx, op, x):
    coordinates = ctx.op("NonZero", [x])  # [rank, count], row-major like numpy
    rank = len(ctx.in_shape())
    return [operand(ctx, cast_free(ctx.op("Gather", [coordinates, ctx.const(np.asarray(i, np.int64))]), "int64"),
                    ctx.out_dtype(i)) for i in range(rank)]


@register("Bincount", cases=[
    case("bincount", lambda x: ops.bincount(x[0]), ((6,),), dtypes=("int32",)),
    case("bincount_rows_minlength", lambda x: ops.bincount(x, minlength=12), ((6,),), dtypes=("int32",)),
    case("bincount_weights", lambda x: ops.bincount(x[0], weights=np.array([0.5, 1, 2, 3, 4, 5.0])), ((6,),),
         dtypes=("int32",)),
    case("bincount_rows_weights", lambda x: ops.bincount(ops.reshape(x[0], (2, 3)), minlength=10,
                                                         weights=np.arange(6.0).reshape(2, 3)),
         ((6,),), dtypes=("int32",)),
])
def bincount(ctx, op, x):
    if setting(op, "sparse", default=False):
        raise ctx.unsupported("sparse bincount")
    weights = setting(op, "weights")
    if isinstance(weights, keras.KerasTensor):
        raise ctx.unsupported("bincount with tensor weights")
    x = operand(ctx, x, "int64")
    length = ctx.op("Add", [reduce(ctx, "ReduceMax", x, None, True), ctx.const(np.asarray([1], np.int64))])
    minimum = int(setting(op, "minlength", default=0) or 0)
    length = ctx.op("Max", [reshape(ctx, length, [1]), ctx.int64s([minimum])])
    hits = ctx.op("Equal", [unsqueeze(ctx, x, [-1]), arange(ctx, length)])  # [..., n, length]
    dtype = ctx.out_dtype()
    counts = operand(ctx, cast_free(hits, "bool"), dtype)
    if weights is not None:
        counts = ctx.op("Mul", [counts, c(ctx, np.asarray(weights)[..., None], dtype)])  # per element of x
    return reduce(ctx, "ReduceSum", counts, [-2], False)


# Keras' Histogram operation calls a backend function that does not exist (backend.math.histogram):
# the cases run histogram inside a traced layer, where Keras computes it eagerly.
@register("Histogram", cases=[
    # nan_to_num: Keras infers the traced layer's output shape by running call() on uninitialised
    # placeholder data, where an automatic range of NaNs would fail in Keras itself.
    traced_case("histogram", lambda x: ops.histogram(ops.nan_to_num(ops.reshape(x, (-1,))), bins=4), ((6,),)),
    traced_case("histogram_range", lambda x: ops.histogram(x[0], bins=5, range=(-1.0, 1.5)), ((12,),)),
    traced_case("histogram_constant_input", lambda x: ops.histogram(x[0] * 0.0 + 2.0, bins=3), ((4,),),
                backends=("numpy",)),  # numpy widens an empty range by 0.5
])
def histogram(ctx, op, x):
    """numpy's equal-width bins: edges ``lo + i * (hi - lo) / bins`` (range = data min/max, widened by
    0.5 when they are equal), half-open bins but the last, which holds ``hi``."""
    bins, dtype = int(op.bins), keras_dtype(x)
    compute = dtype if is_float(dtype) else "float32"
    x = operand(ctx, x, compute)
    if op.range:
        lo, hi = (c(ctx, v, compute) for v in op.range)
    else:
        lo, hi = reduce(ctx, "ReduceMin", x, None, False), reduce(ctx, "ReduceMax", x, None, False)
        same = ctx.op("Equal", [lo, hi])
        half = ctx.op("Where", [same, c(ctx, 0.5, compute), c(ctx, 0.0, compute)])
        lo, hi = ctx.op("Sub", [lo, half]), ctx.op("Add", [hi, half])
    step = ctx.op("Div", [ctx.op("Sub", [hi, lo]), c(ctx, float(bins), compute)])
    edges = ctx.op("Add", [ctx.op("Mul", [c(ctx, np.arange(bins + 1), compute), step]), lo])
    edges = ctx.op("Concat", [slice_(ctx, edges, [0], [bins], [0]), unsqueeze(ctx, hi, [0])], {"axis": 0})
    column = unsqueeze(ctx, x, [1])  # [n, 1] against [bins] edges
    above = ctx.op("GreaterOrEqual", [column, slice_(ctx, edges, [0], [bins], [0])])
    last = c(ctx, np.arange(bins) == bins - 1, "bool")
    below = ctx.op("Or", [ctx.op("Less", [column, slice_(ctx, edges, [1], [bins + 1], [0])]),
                          ctx.op("And", [last, ctx.op("Equal", [column, hi])])])
    hits = cast_free(ctx.op("And", [above, below]), "bool")
    counts = reduce(ctx, "ReduceSum", operand(ctx, hits, "int64"), [0], False)
    return operand(ctx, cast_free(counts, "int64"), ctx.out_dtype(0)), operand(ctx, cast_free(edges, compute),
                                                                               ctx.out_dtype(1))


@register("Unique", cases=[
    case("unique", lambda x: ops.unique(x[0]), ((6,),), dtypes=("int32",), int_range=(0, 4)),
    case("unique_all_outputs", lambda x: ops.unique(x, return_index=True, return_inverse=True, return_counts=True),
         ((6,),), dtypes=("int32",), int_range=(0, 5)),
    case("unique_size_fill", lambda x: ops.unique(x[0], size=5, fill_value=-1, return_index=True, return_counts=True),
         ((6,),), dtypes=("int32",), int_range=(0, 4)),
    case("unique_size_truncates", lambda x: ops.unique(x, size=2), ((3,),)),
])
def unique(ctx, op, x):
    if setting(op, "axis") is not None:
        raise ctx.unsupported("unique along an axis")
    compute = "float32" if is_float(keras_dtype(x)) else "int64"  # onnxruntime's Unique kernels
    values, first, inverse, counts = ctx.op("Unique", [flat(ctx, operand(ctx, x, compute))], {"sorted": 1},
                                            outputs=4)
    size = setting(op, "size")
    if size is not None:  # numpy backend: pad (values with fill_value, index with 1, counts 0) or truncate
        fill = setting(op, "fill_value")
        values = _to_length(ctx, cast_free(values, compute), int(size), 0 if fill is None else fill)
        first = _to_length(ctx, cast_free(first, "int64"), int(size), 1)
        counts = _to_length(ctx, cast_free(counts, "int64"), int(size), 0)
    outputs = [values]
    if setting(op, "return_index", default=False):
        outputs.append(first)
    if setting(op, "return_inverse", default=False):
        outputs.append(reshape(ctx, inverse, shape_of(ctx, x)))
    if setting(op, "return_counts", default=False):
        outputs.append(counts)
    dtypes = [compute] + ["int64"] * (len(outputs) - 1)
    return [operand(ctx, cast_free(v, d), ctx.out_dtype(i)) for i, (v, d) in enumerate(zip(outputs, dtypes))]


def _to_length(ctx, v, length, fill):
    """A 1-D value padded with ``fill`` or truncated to ``length`` elements."""
    missing = ctx.op("Max", [ctx.op("Sub", [ctx.int64s([length]), dim(ctx, v, 0)]), ctx.int64s([0])])
    padded = ctx.op("Pad", [v, ctx.op("Concat", [ctx.int64s([0]), missing], {"axis": 0}),
                            c(ctx, fill, keras_dtype(v))])
    return slice_(ctx, like(padded, v), [0], [length], [0])


@register("Size", cases=[case("size", lambda x: ops.size(x), ((None, 4),))])
def size(ctx, op, x):
    return operand(ctx, cast_free(ctx.op("Size", [x]), "int64"), ctx.out_dtype())


# Keras declares ndim's output as a float32 vector but computes a Python int: the rank, a constant.
@register("Ndim", cases=[
    case("ndim", lambda x: x * ops.cast(ops.ndim(x), "float32"), ((2,),)),
])
def ndim(ctx, op, x):
    return ctx.const(np.asarray(len(ctx.in_shape())), ctx.out_dtype())


@register("UnravelIndex", cases=[
    case("unravel_index", lambda i: ops.unravel_index(i, (3, 5)), ((4,),), dtypes=("int32",), int_range=(0, 15)),
])
def unravel_index(ctx, op, indices):
    shape = [int(d) for d in setting(op, "shape")]
    indices = operand(ctx, indices, "int64")
    strides = np.cumprod([1] + shape[::-1])[:-1][::-1]
    outputs = []
    for i, (stride, d) in enumerate(zip(strides, shape)):
        q = ctx.op("Div", [indices, ctx.const(np.asarray(stride, np.int64))])
        r = cast_free(ctx.op("Mod", [q, ctx.const(np.asarray(d, np.int64))]), "int64")
        outputs.append(operand(ctx, r, ctx.out_dtype(i)))
    return outputs


# ---- constructors from tensors ---------------------------------------------------------------------

@register("OnesLike", "ZerosLike", "EmptyLike", layout=ANY, cases=[
    case("ones_like", lambda x: ops.ones_like(x), ((None, 4),)),
    case("zeros_like_int", lambda x: ops.zeros_like(x, dtype="int32"), ((3,),)),
    case("empty_like", lambda x: ops.ones_like(ops.empty_like(x)) + x, ((3,),)),
])
def ones_like(ctx, op, x):
    return full(ctx, x, 1 if type(op).__name__ == "OnesLike" else 0, ctx.out_dtype())


@register("FullLike", layout=ANY, cases=[
    case("full_like", lambda x: ops.full_like(x, 2.5), ((None, 4),)),
    case("full_like_tensor", lambda x: ops.full_like(x, ops.max(x)), ((3,),)),
    case("full_like_int", lambda x: ops.full_like(x, 7, dtype="int32"), ((3,),)),
])
def full_like(ctx, op, x, fill):
    return full(ctx, x, fill, ctx.out_dtype())


@register("Full", cases=[case("full", lambda x: ops.full((2, 3), ops.max(x)), ((4,),))])
def full_(ctx, op, fill):
    shape = setting(op, "shape")
    if shape is None or any(not isinstance(d, (int, np.integer)) for d in shape):
        raise ctx.unsupported("full() with a dynamic shape")
    dtype = ctx.out_dtype()
    return cast_free(ctx.op("Expand", [operand(ctx, fill, dtype), ctx.int64s([int(d) for d in shape])]), dtype)


def _ramp(ctx, op, start, stop):
    """``start + t * (stop - start)`` with ``t`` the linspace fractions, samples on ``axis``."""
    num, endpoint = int(setting(op, "num", default=50)), bool(setting(op, "endpoint", default=True))
    divisor = (num - 1 if endpoint else num) or 1
    shapes = in_shapes(ctx, [start, stop])
    rank = max(len(s) for s in shapes)
    t = np.arange(num, dtype=np.float64) / divisor
    return t.reshape([num] + [1] * rank), rank, divisor


def _spaced(kind):
    def convert(ctx, op, start, stop):
        dtype = ctx.out_dtype(0)
        compute = dtype if is_float(dtype) else "float32"
        t, rank, divisor = _ramp(ctx, op, start, stop)
        start, stop = operand(ctx, start, compute), operand(ctx, stop, compute)
        if kind == "geom":  # sign * exp(log|start| + t (log|stop| - log|start|))
            sign = ctx.op("Sign", [start])
            start, stop = (ctx.op("Log", [ctx.op("Abs", [v])]) for v in (start, stop))
        delta = ctx.op("Sub", [stop, start])
        y = ctx.op("Add", [start, ctx.op("Mul", [c(ctx, t, compute), delta])])
        if kind == "log":
            y = ctx.op("Pow", [c(ctx, float(setting(op, "base", default=10)), compute), y])
        elif kind == "geom":
            y = ctx.op("Mul", [sign, ctx.op("Exp", [y])])
        axis = int(setting(op, "axis", default=0)) % (rank + 1)
        y = transpose(ctx, y, [*range(1, axis + 1), 0, *range(axis + 1, rank + 1)])
        if not is_float(dtype):
            y = cast(ctx, ctx.op("Floor", [y]), dtype)
        if kind == "lin" and setting(op, "retstep", default=False):
            return y, operand(ctx, ctx.op("Div", [delta, c(ctx, divisor, compute)]), ctx.out_dtype(1))
        return y
    return convert


register("Linspace", cases=[
    case("linspace", lambda x: ops.linspace(ops.min(x), ops.max(x), 5), ((4,),)),
    case("linspace_rows_axis", lambda x: ops.linspace(ops.min(x, axis=1), ops.max(x, axis=1), 4, axis=1,
                                                      endpoint=False), ((None, 3),)),
    case("linspace_scalar_start", lambda x: ops.linspace(0.0, x, 3, axis=-1), ((2,),)),
])(_spaced("lin"))
register("Logspace", cases=[
    case("logspace", lambda x: ops.logspace(ops.min(x), ops.max(x), 4, base=2.0), ((4,),)),
])(_spaced("log"))
register("Geomspace", cases=[
    case("geomspace", lambda x: ops.geomspace(ops.abs(x) + 1.0, 10.0, 4, axis=1), ((3,),)),
    case("geomspace_negative", lambda x: ops.geomspace(-ops.abs(x) - 1.0, -5.0, 3), ((2,),)),
])(_spaced("geom"))


@register("Meshgrid", cases=[
    case("meshgrid_xy", lambda x, y: ops.meshgrid(x[0], y[0]), ((3,), (None,))),
    case("meshgrid_ij", lambda x, y, z: ops.meshgrid(x[0], y[0], z[0], indexing="ij"), ((3,), (2,), (4,))),
])
def meshgrid(ctx, op, *xs):
    xs = [flat(ctx, x) for x in xs]
    order = list(range(len(xs)))
    if setting(op, "indexing", default="xy") == "xy" and len(xs) > 1:
        order[0], order[1] = 1, 0
    # Output i varies along axis order.index(i); the full shape lists the inputs' sizes in axis order.
    full_shape = ctx.op("Concat", [shape_of(ctx, xs[i]) for i in order], {"axis": 0})
    outputs = []
    for i, x in enumerate(xs):
        spread = [1] * len(xs)
        spread[order.index(i)] = -1
        shaped = reshape(ctx, x, spread)
        outputs.append(operand(ctx, like(ctx.op("Expand", [shaped, full_shape]), x), ctx.out_dtype(i)))
    return outputs


@register("View", layout=ANY, min_opset=26, cases=[
    case("view_float_as_int", lambda x: ops.view(x, "int32"), ((3, 4),), min_opset=26),
])
def view(ctx, op, x):
    target, source = ctx.out_dtype(), keras_dtype(x)
    if to_numpy_dtype(target).itemsize != to_numpy_dtype(source).itemsize:
        raise ctx.unsupported("view as a dtype of another width")
    return ctx.op("BitCast", [x], {"to": to_onnx_dtype(target)})


BUILTIN.refuse(*ops_classes("numpy", "Arange"),
               reason="Keras cannot build arange with tensor bounds; arange of a dynamic dim inside a traced "
                      "layer converts")
