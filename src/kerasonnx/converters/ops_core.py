"""``keras.ops`` core operations that appear as nodes in functional graphs.

The argument helpers at the top (``constant_array``, ``as_value``, ``arg_shape``, ``index_vector``)
are shared with the other ``ops_*`` modules: an op's tensor arguments arrive as ONNX values (Keras
tensors; Keras variables and concrete arrays as initializers) or as plain Python values.
"""

from __future__ import annotations

import keras
import ml_dtypes
import numpy as np
import onnx_ir as ir

from ..core import layout as L
from ..core.dtypes import to_numpy_dtype, to_onnx_dtype
from ..core.layout import Layout
from ..core.registry import Case
from ..core.walker import ops_classes
from . import BUILTIN

INT64_MAX = np.iinfo(np.int64).max


def register_op(module: str, name: str, **kwargs):
    """``BUILTIN.register`` for ``keras.src.ops.<module>.<name>``; a no-op when this Keras lacks it."""
    classes = ops_classes(module, name)
    return BUILTIN.register(*classes, **kwargs) if classes else (lambda fn: fn)


def refuse_ops(module: str, *names: str, reason: str) -> None:
    """Say why ``keras.src.ops.<module>.<name>`` ops have no built-in converter (in the UnsupportedError)."""
    BUILTIN.refuse(*ops_classes(module, *names), reason=reason)


# ---- argument helpers ----------------------------------------------------------------------------

def constant_array(x) -> np.ndarray | None:
    """The value of a constant argument (Python number/list, numpy array, initializer), else None."""
    if isinstance(x, ir.Value):
        return None if x.const_value is None else x.const_value.numpy()
    if x is None:
        return None
    if isinstance(x, (list, tuple)):  # a list mixing ints and tensors is not constant
        return None if any(isinstance(v, ir.Value) for v in keras.tree.flatten(x)) else np.asarray(x)
    return np.asarray(keras.ops.convert_to_numpy(x))


def as_value(ctx, x, dtype=None) -> ir.Value:
    """``x`` as an ONNX value in ``dtype`` (default: the node's output dtype); constants fold."""
    dtype = dtype or ctx.out_dtype()
    if isinstance(x, ir.Value) and x.dtype in (None, to_onnx_dtype(dtype)):
        return x
    arr = constant_array(x)
    if arr is not None:
        return ctx.const(arr, dtype)
    return ctx.cast(x, dtype)


def keras_tensor_of(ctx, value: ir.Value):
    """The Keras tensor of the current node that ``value`` was fetched from (None if none)."""
    for kt in ctx.in_tensors:
        rank = len(kt.shape)
        perm = ctx.perm if len(ctx.perm) == rank else L.identity(rank)
        if ctx.lookup(kt).value is value or ctx.fetch(kt, perm) is value:
            return kt
    return None


def arg_shape(ctx, x) -> tuple | None:
    """The Keras shape of a tensor argument (a constant's own shape), None for None."""
    arr = constant_array(x)
    if arr is not None:
        return arr.shape
    kt = keras_tensor_of(ctx, x) if isinstance(x, ir.Value) else None
    return None if kt is None else tuple(kt.shape)


def static_ints(x) -> list[int] | None:
    """A constant index argument (ints, list of ints, constant tensor) as a list of ints."""
    arr = constant_array(x)
    return None if arr is None else [int(v) for v in np.reshape(arr, -1)]


def index_vector(ctx, x) -> ir.Value:
    """An index argument (ints, a 1-D tensor, or a list mixing ints and scalar tensors) as int64[n]."""
    ints = static_ints(x)
    if ints is not None:
        return ctx.int64s(ints)
    if isinstance(x, ir.Value):
        return ctx.cast(x, "int64")
    parts = [ctx.op("Reshape", [as_value(ctx, v, "int64"), ctx.int64s([1])]) for v in x]
    return ctx.op("Concat", parts, {"axis": 0})


def per_axis(value, rank: int) -> tuple[int, ...]:
    """An int-or-tuple op setting (strides, pool size, ...) as one int per spatial axis."""
    return (int(value),) * rank if isinstance(value, int) else tuple(int(v) for v in value)


def channel_dim(ctx, data_format: str):
    """The static channel count of the current (image) input, None when dynamic."""
    shape = ctx.in_shape()
    return shape[1] if data_format == "channels_first" else shape[-1]


def tensor_attr(array) -> ir.Tensor:
    """A tensor attribute (ConstantOfShape ``value``)."""
    return ir.tensor(np.asarray(array))


# ---- test-case helpers (shared by the ops_* modules) -------------------------------------------

def first_row(t):
    """``t[0]`` written with core ops only (test cases)."""
    return keras.ops.unstack(keras.ops.slice(t, [0] * len(t.shape), [1, *t.shape[1:]]), num=1)[0]


def scaled(x, factor):
    """``x * factor`` through a layer (test cases)."""
    return keras.layers.Rescaling(factor)(x)


class _InLayer(keras.layers.Layer):
    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, inputs):
        return self.fn(*inputs) if isinstance(inputs, (list, tuple)) else self.fn(inputs)


def in_layer(fn):
    """A case build running ``fn`` inside a layer's ``call`` (test cases): Keras runs the ops eagerly
    (for ops whose ``Operation.call`` is broken in Keras) and kerasonnx converts the traced call."""
    return lambda: _InLayer(fn)



# ---- casts ---------------------------------------------------------------------------------------

@register_op("core", "Cast", layout=Layout.ANY, cases=[
    Case("ops_cast_to_int", lambda: (lambda x: keras.ops.cast(x * 3.0, "int32")), ((3, 4),)),
    Case("ops_cast_bool_to_float", lambda: (lambda x: keras.ops.cast(keras.ops.greater(x, 0.0), "float32")),
         ((3, 4),)),
    Case("ops_cast_int_to_float", lambda: (lambda x: keras.ops.cast(x, "float32") * 0.5), ((5,),),
         dtypes=("int64",)),
])
def cast(ctx, op, x):
    return ctx.cast(x, ctx.out_dtype())


@register_op("core", "ConvertToTensor", layout=Layout.ANY, cases=[
    Case("ops_core_convert_to_tensor", lambda: (lambda x: keras.ops.convert_to_tensor(x)), ((3, 4),)),
    Case("ops_core_convert_to_tensor_dtype", lambda: (lambda x: keras.ops.convert_to_tensor(x, "float32")),
         ((5,),), dtypes=("int32",)),
])
def convert_to_tensor(ctx, op, x):
    if str(ctx.in_dtype()) == str(ctx.out_dtype()):
        return x
    return ctx.cast(x, ctx.out_dtype())


@register_op("core", "StopGradient", layout=Layout.ANY, cases=[
    Case("ops_core_stop_gradient", lambda: (lambda x: keras.ops.relu(keras.ops.stop_gradient(x))), ((3, 4),)),
])
def stop_gradient(ctx, op, x):
    return x


def _dtype_range(dtype):
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "bool":
        return 0, 1
    info = ml_dtypes.iinfo(dtype) if "int" in dtype else ml_dtypes.finfo(dtype)
    return info.min, info.max


def saturation_limits(in_dtype, out_dtype) -> tuple:
    """Keras' ``_saturate_cast`` clip bounds, in the input dtype (nudged inside the output range)."""
    in_np = to_numpy_dtype(keras.backend.standardize_dtype(in_dtype))
    (in_min, in_max), (out_min, out_max) = _dtype_range(in_dtype), _dtype_range(out_dtype)
    low = np.asarray(max(in_min, out_min)).astype(in_np)
    if low < out_min:
        low = np.nextafter(low, 0, dtype=in_np)
    high = np.asarray(min(in_max, out_max)).astype(in_np)
    if high > out_max:
        high = np.nextafter(high, 0, dtype=in_np)
    return low, high


@register_op("core", "SaturateCast", layout=Layout.ANY, cases=[
    Case("ops_core_saturate_cast_uint8", lambda: (lambda x: keras.ops.saturate_cast(scaled(x, 200.0), "uint8")),
         ((3, 4),)),
    Case("ops_core_saturate_cast_int8_from_int32",
         lambda: (lambda x: keras.ops.saturate_cast(x, "int8")), ((6,),), dtypes=("int32",), int_range=(-300, 300)),
    Case("ops_core_saturate_cast_float16", lambda: (lambda x: keras.ops.saturate_cast(scaled(x, 1e5), "float16")),
         ((6,),), atol=1.0),
])
def saturate_cast(ctx, op, x):
    low, high = saturation_limits(ctx.in_dtype(), ctx.out_dtype())
    clipped = ctx.op("Clip", [x, ctx.const(low), ctx.const(high)])
    return ctx.cast(clipped, ctx.out_dtype())


# ---- slicing and scattering ----------------------------------------------------------------------

def _start(s):
    """A start-index tensor ``[0, *s[0]]`` from an int input (test cases)."""
    return keras.ops.slice_update(np.zeros(1 + s.shape[1], "int32"), [1], first_row(s))


@register_op("core", "Slice", cases=[
    Case("ops_core_slice", lambda: (lambda x: keras.ops.slice(x, [0, 1, 2], [1, 2, 3])), ((4, 6),)),
    Case("ops_core_slice_tensor_start", lambda: (lambda x, s: keras.ops.slice(x, _start(s), [1, 2, 3])),
         ((5, 6), (2,)), dtypes=("float32", "int32"), int_range=(0, 3)),
    Case("ops_core_slice_scalar_tensor_start",
         lambda: (lambda x, s: keras.ops.slice(x, [0, first_row(first_row(s)), 1], [1, 3, 2])),
         ((6, 4), (1,)), dtypes=("float32", "int32"), int_range=(0, 4)),
])
def slice_(ctx, op, *_):
    x, start = ctx.args[0], ctx.args[1]
    sizes = [int(s) for s in op.shape]
    ints = static_ints(start)
    if ints is not None:
        ends = [INT64_MAX if n == -1 else b + n for b, n in zip(ints, sizes)]
        return ctx.op("Slice", [x, ctx.int64s(ints), ctx.int64s(ends)])
    starts = index_vector(ctx, start)
    ends = ctx.op("Add", [starts, ctx.int64s([0 if n == -1 else n for n in sizes])])
    if -1 in sizes:  # shape -1: up to the end of that axis
        ends = ctx.op("Where", [ctx.const(np.asarray(sizes) == -1), ctx.int64s([INT64_MAX] * len(sizes)), ends])
    return ctx.op("Slice", [x, starts, ends])


@register_op("core", "SliceUpdate", cases=[
    Case("ops_core_slice_update", lambda: (lambda x, u: keras.ops.slice_update(x, [0, 1, 2], u)),
         ((4, 6), (2, 3))),
    Case("ops_core_slice_update_constant",
         lambda: (lambda x: keras.ops.slice_update(x, [0, 2], np.full((1, 3), 7.0, "float32"))), ((6,),)),
    Case("ops_core_slice_update_tensor_start",
         lambda: (lambda x, s: keras.ops.slice_update(x, _start(s), np.ones((1, 2, 3), "float32"))),
         ((5, 4), (2,)), dtypes=("float32", "int32"), int_range=(0, 2)),
    Case("ops_core_slice_update_opset13", lambda: (lambda x, u: keras.ops.slice_update(x, [0, 2, 1], u)),
         ((4, 6), (2, 3)), min_opset=13),
    Case("ops_core_slice_update_dynamic",
         lambda: (lambda x: keras.ops.slice_update(x, [0, 2], scaled(keras.ops.slice(x, [0, 0], [1, 3]), 10.0))),
         ((None,),)),
])
def slice_update(ctx, op, *_):
    """Keras writes ``updates`` into ``inputs`` at ``start_indices``: pad the updates (and a mask) to
    the input's shape at run time, then select."""
    x, start, updates = ctx.args
    updates = as_value(ctx, updates)
    begins = index_vector(ctx, start)
    ends = ctx.op("Sub", [ctx.op("Sub", [ctx.op("Shape", [x]), ctx.op("Shape", [updates])]), begins])
    pads = ctx.op("Concat", [begins, ends], {"axis": 0})
    ones = ctx.op("ConstantOfShape", [ctx.op("Shape", [updates])], {"value": tensor_attr([True])})
    mask = ctx.op("Pad", [ones, pads])
    return ctx.op("Where", [mask, ctx.op("Pad", [updates, pads]), x])


@register_op("core", "Scatter", min_opset=16, cases=[
    Case("ops_core_scatter", lambda: (lambda i, v: keras.ops.scatter(i, v, (4, 5))), ((2,), ()),
         dtypes=("int32", "float32"), int_range=(0, 4)),
    Case("ops_core_scatter_rows", lambda: (lambda i, v: keras.ops.scatter(i, v, (3, 4))), ((1,), (4,)),
         dtypes=("int64", "float32"), int_range=(0, 3)),
])
def scatter(ctx, op, *_):
    """Keras adds ``values`` at ``indices`` into zeros of ``shape`` (duplicates accumulate)."""
    indices, values = ctx.args
    shape = [int(d) for d in op.shape]
    depth = arg_shape(ctx, indices)[-1]
    indices = ctx.op("Reshape", [as_value(ctx, indices, "int64"), ctx.int64s([-1, depth])])
    values = ctx.op("Reshape", [as_value(ctx, values), ctx.int64s([-1, *shape[depth:]])])
    zeros = ctx.op("ConstantOfShape", [ctx.int64s(shape)],
                   {"value": tensor_attr(np.zeros(1, to_numpy_dtype(ctx.out_dtype())))})
    return ctx.op("ScatterND", [zeros, indices, values], {"reduction": "add"})


_SCATTER_REDUCTIONS = {None: (13, None), "add": (16, "add"), "mul": (16, "mul"), "max": (18, "max"),
                       "min": (18, "min")}


def _scatter_update_case(name, reduction):
    return Case(f"ops_core_scatter_update{name}", lambda: (lambda x, u: keras.ops.scatter_update(
        x, np.array([[0, 1, 2], [0, 3, 0], [0, 1, 2]]), first_row(u), reduction=reduction)), ((4, 3), (3,)))


@register_op("core", "ScatterUpdate", cases=[
    Case("ops_core_scatter_update", lambda: (lambda x, u: keras.ops.scatter_update(
        x, np.array([[0, 1], [0, 3]]), first_row(u))), ((4, 5), (2, 5))),
    Case("ops_core_scatter_update_points", lambda: (lambda x: keras.ops.scatter_update(
        x, [[0, 1, 2], [0, 3, 0]], np.array([5.0, -5.0], "float32"))), ((4, 3),)),
    _scatter_update_case("_add", "add"),
    _scatter_update_case("_max", "max"),
    _scatter_update_case("_mul", "mul"),
])
def scatter_update(ctx, op, *_):
    x, indices, updates = ctx.args
    min_opset, reduction = _SCATTER_REDUCTIONS[op.reduction]
    if ctx.opset < min_opset:
        raise ctx.unsupported(f"scatter_update(reduction={op.reduction!r}) needs opset >= {min_opset}")
    inputs = [x, as_value(ctx, indices, "int64"), as_value(ctx, updates)]
    return ctx.op("ScatterND", inputs, {"reduction": reduction})


@register_op("core", "Unstack", cases=[
    Case("ops_core_unstack", lambda: (lambda x: keras.ops.unstack(x, axis=1)), ((3, 4),)),
    Case("ops_core_unstack_last", lambda: (lambda x: keras.ops.unstack(x, axis=-1)[1]), ((None, 2),)),
    Case("ops_core_unstack_num", lambda: (lambda x: keras.ops.unstack(x, num=2, axis=2)), ((3, 2, 4),)),
])
def unstack(ctx, op, x):
    rank = len(ctx.in_shape())
    axis = op.axis % rank
    parts = ctx.split(x, [1] * len(ctx.out_tensors), axis)
    return tuple(ctx.op("Squeeze", [p, ctx.int64s([axis])]) for p in parts)
