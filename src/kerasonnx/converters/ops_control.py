"""``keras.ops`` control flow: ``cond`` and ``switch`` -> ONNX ``If``; ``while_loop`` / ``fori_loop`` ->
``Loop``; ``scan``, ``map`` and ``vectorized_map`` -> ``Scan``.

Keras records these as one node holding Python callables. The callables are traced on symbolic
tensors (branches close over outer tensors; loop bodies get fresh symbolic loop variables) and what
they compute is converted into the ONNX subgraph.
"""

from __future__ import annotations

import keras
import numpy as np
import onnx_ir as ir

from ..core.dtypes import to_onnx_dtype
from ..core.registry import Case
from ..core.walker import is_keras_tensor, ops_classes
from . import BUILTIN
from .ops_core import in_layer

register = BUILTIN.register


def _scalar_bool(ctx, value):
    return ctx.op("Reshape", [ctx.cast(value, "bool"), ctx.int64s([])])


def _branch(ctx, fn, name):
    with ctx.subgraph(f"{ctx.scope}/{name}") as graph:
        outputs = keras.tree.flatten(fn())
        if not all(is_keras_tensor(t) for t in outputs):
            raise ctx.unsupported(f"a {name} branch returns values that do not depend on the model's inputs")
        for tensor, value in zip(outputs, ctx.emit_keras(outputs)):
            ctx.graph_output(value, tensor)
    return graph


def _cond_branches(x):
    return keras.ops.cond(keras.ops.sum(x) > 0.0, lambda: x * 2.0, lambda: keras.ops.abs(x) - 1.0)


def _cond_with_weights():
    dense = keras.layers.Dense(3)
    return in_layer(lambda x: keras.ops.cond(keras.ops.mean(x) > 0.0, lambda: dense(x),
                                             lambda: dense(-x) * 0.5))()


# cond's branches close over call-time tensors, so the cases run it inside a layer's call(), as
# real models do (a closure over a functional-API tensor only works symbolically in Keras).
@register(*ops_classes("core", "Cond"), cases=[
    Case("ops_cond_branches", in_layer(_cond_branches), ((4,),)),
    Case("ops_cond_negative_inputs", in_layer(lambda x: _cond_branches(-keras.ops.abs(x))), ((4,),)),
    Case("ops_cond_layer_in_branch", _cond_with_weights, ((5,),)),
])
def cond(ctx, op, pred, true_fn, false_fn):
    then_graph = _branch(ctx, true_fn, "then")
    else_graph = _branch(ctx, false_fn, "else")
    count = len(ctx.out_tensors)
    return ctx.op("If", [_scalar_bool(ctx, pred)], {"then_branch": then_graph, "else_branch": else_graph},
                  outputs=count)


def _loop_body(ctx, loop_vars, step):
    """A Loop body graph: inputs (iteration, cond, *vars); ``step(iteration_value, fresh_vars)``
    returns ``(cond_tensor_or_None, new_vars)`` as Keras tensors."""
    iteration, cond_in = _typed(ctx, "iteration", "int64", ()), _typed(ctx, "cond_in", "bool", ())
    carried = [_typed(ctx, "carried", v.dtype, v.shape) for v in loop_vars]
    with ctx.subgraph(f"{ctx.scope}/body", inputs=[iteration, cond_in, *carried]) as graph:
        fresh = _bound_inputs(ctx, carried, [tuple(v.shape) for v in loop_vars], [v.dtype for v in loop_vars])
        cond_out, new_vars = step(iteration, fresh)
        if cond_out is None:
            ctx.graph_output(ctx.op("Identity", [cond_in]), keras.KerasTensor((), "bool"))
        else:
            ctx.graph_output(_scalar_bool(ctx, ctx.emit_keras([cond_out])[0]), keras.KerasTensor((), "bool"))
        for tensor, value in zip(new_vars, ctx.emit_keras(new_vars)):
            ctx.graph_output(value, tensor)
    return graph


def _structure(ctx):
    """The loop variables as the op's call received them (nested), and flattened."""
    structure = ctx.args[0]
    return structure, keras.tree.flatten(structure)


def _loop_var_specs(ctx, flat_values):
    return [keras.KerasTensor(tuple(t.shape), t.dtype) for t in ctx.out_tensors][: len(flat_values)]


def _fori_model():
    return lambda x: keras.ops.fori_loop(0, 3, lambda i, v: v * 0.5 + keras.ops.cast(i, "float32"), x)


def _while_model():
    def build(x):
        def body(i, v):
            return i + 1, keras.ops.tanh(v) + 0.25

        return keras.ops.while_loop(lambda i, v: i < 4, body, (keras.ops.convert_to_tensor(0), x))[1]
    return build


@register(*ops_classes("core", "ForiLoop"), cases=[Case("ops_fori_loop", _fori_model, ((4,),))])
def fori_loop(ctx, op, *flat):
    structure, values = _structure(ctx)
    specs = _loop_var_specs(ctx, values)
    lower, upper = op.lower, op.upper
    if not all(isinstance(b, (int, np.integer)) for b in (lower, upper)):
        raise ctx.unsupported("fori_loop bounds must be Python integers")

    def step(iteration, fresh):
        shifted = ctx.op("Add", [ctx.cast(iteration, "int32"), ctx.const(np.int32(lower))])
        index = _bound_inputs(ctx, [shifted], [()], ["int32"])[0]
        result = op.body_fun(index, keras.tree.pack_sequence_as(structure, fresh))
        return None, keras.tree.flatten(result)

    body = _loop_body(ctx, specs, step)
    trip = ctx.const(np.int64(max(upper - lower, 0)))
    return ctx.op("Loop", [trip, ctx.const(np.bool_(True)), *values], {"body": body}, outputs=len(values))


@register(*ops_classes("core", "WhileLoop"), cases=[Case("ops_while_loop", _while_model, ((4,),))])
def while_loop(ctx, op, *flat):
    structure, values = _structure(ctx)
    specs = _loop_var_specs(ctx, values)

    def unpack(tensors):
        return keras.tree.pack_sequence_as(structure, tensors)

    def call(fn, tensors):
        packed = unpack(tensors)
        return fn(*packed) if isinstance(packed, (list, tuple)) else fn(packed)

    def step(iteration, fresh):
        new_vars = keras.tree.flatten(call(op.body, fresh))
        return call(op.cond, new_vars), new_vars

    # The first test runs outside the loop, on the initial values.
    initial = _bound_inputs(ctx, values, [tuple(s.shape) for s in specs], [s.dtype for s in specs])
    first = _scalar_bool(ctx, ctx.emit_keras([call(op.cond, initial)])[0])
    body = _loop_body(ctx, specs, step)
    trip = ctx.const(np.int64(op.maximum_iterations)) if op.maximum_iterations is not None else None
    return ctx.op("Loop", [trip, first, *values], {"body": body}, outputs=len(values))


def _scan_model(x):
    """Running sum and product over the leading axis (time-major data inside a layer)."""
    def step(carry, xi):
        total, prod = carry
        return (total + xi, prod * keras.ops.tanh(xi)), total * 0.5 + xi
    time_major = keras.ops.transpose(x, (1, 0, 2))
    init = (keras.ops.zeros_like(time_major[0]), keras.ops.ones_like(time_major[0]))
    (total, prod), ys = keras.ops.scan(step, init, time_major)
    return keras.ops.transpose(ys, (1, 0, 2)) + total[:, None, :] + prod[:, None, :]


def _scan_reverse_model(x):
    time_major = keras.ops.transpose(x, (1, 0, 2))
    last, ys = keras.ops.scan(lambda c, xi: (c * 0.9 + xi, c - xi), keras.ops.zeros_like(time_major[0]),
                              time_major, reverse=True)
    return keras.ops.transpose(ys, (1, 0, 2)) * last[:, None, :]


@register(*ops_classes("core", "Scan"), cases=[
    Case("ops_scan_carry_tuple", in_layer(_scan_model), ((None, 3),)),
    Case("ops_scan_reverse", in_layer(_scan_reverse_model), ((5, 2),)),
])
def scan(ctx, op, *flat):
    """ONNX ``Scan`` over the leading axis; ``reverse`` scans from the end and stores outputs in
    input order, as Keras does."""
    f, init = ctx.args[0], ctx.args[1]
    xs = ctx.args[2] if len(ctx.args) > 2 else ctx.kwargs.get("xs")
    if xs is None:
        raise ctx.unsupported("scan without xs (only a length) has no ONNX Scan equivalent")
    init_values, xs_values = keras.tree.flatten(init), keras.tree.flatten(xs)

    def step(carry, x):
        new_carry, ys = f(keras.tree.pack_sequence_as(init, carry), keras.tree.pack_sequence_as(xs, x))
        return keras.tree.flatten(new_carry), keras.tree.flatten(ys)

    return _onnx_scan(ctx, step, init_values, xs_values, reverse=op.reverse)


def _onnx_scan(ctx, step, init_values, xs_values, reverse=False):
    """ONNX ``Scan`` of ``step(carry, x) -> (new_carry, ys)`` (flat lists of Keras tensors, traced
    on fresh inputs) over the leading axis of ``xs_values``; the node's Keras outputs are the final
    carries then the stacked ys."""
    xs_specs = ctx.in_tensors[len(ctx.in_tensors) - len(xs_values):]
    carry_specs = ctx.out_tensors[: len(init_values)]
    y_specs = ctx.out_tensors[len(init_values):]
    carry_in = [_typed(ctx, "carry", s.dtype, s.shape) for s in carry_specs]
    x_in = [_typed(ctx, "x", s.dtype, s.shape[1:]) for s in xs_specs]
    with ctx.subgraph(f"{ctx.scope}/body", inputs=[*carry_in, *x_in]):
        fresh_carry = _bound_inputs(ctx, carry_in, [tuple(s.shape) for s in carry_specs],
                                    [s.dtype for s in carry_specs])
        fresh_x = _bound_inputs(ctx, x_in, [tuple(s.shape[1:]) for s in xs_specs], [s.dtype for s in xs_specs])
        new_carry, ys = step(fresh_carry, fresh_x)
        outputs = list(new_carry) + list(ys)
        for tensor, value in zip(outputs, ctx.emit_keras(outputs)):
            ctx.graph_output(value, tensor)
        body = ctx.graph
    direction = [1 if reverse else 0]
    return ctx.op("Scan", [*init_values, *xs_values],
                  {"body": body, "num_scan_inputs": len(xs_values),
                   "scan_input_directions": direction * len(xs_values),
                   "scan_output_directions": direction * len(y_specs)},
                  outputs=len(carry_specs) + len(y_specs))


def _map_model(x):
    """A per-example function with a reduction, on a (values, scales) structure (test cases)."""
    return keras.ops.map(lambda pair: keras.ops.softmax(pair[0]) * keras.ops.max(pair[1]), (x, x * 2.0))


@register(*ops_classes("core", "Map"), cases=[
    Case("ops_map", lambda: (lambda x: keras.ops.map(lambda row: keras.ops.cumsum(row) / keras.ops.sum(row), x)),
         ((4,),)),
    Case("ops_map_structure", in_layer(_map_model), ((None, 3),)),
])
def map_(ctx, op, *flat):
    """``map(f, xs)``: an ONNX ``Scan`` with no carry over the leading axis of ``xs``."""
    f, xs = ctx.args[0], ctx.args[1]
    xs_values = keras.tree.flatten(xs)

    def step(carry, x):
        return [], keras.tree.flatten(f(keras.tree.pack_sequence_as(xs, x)))

    return _onnx_scan(ctx, step, [], xs_values)


@register(*ops_classes("core", "VectorizedMap"), cases=[
    Case("ops_vectorized_map", lambda: (lambda x: keras.ops.vectorized_map(
        lambda row: keras.ops.outer(row, row)[:, :2], x)), ((3,),)),
    Case("ops_vectorized_map_list", in_layer(lambda x, y: keras.ops.vectorized_map(
        lambda pair: keras.ops.matmul(pair[0], pair[1]), [x, y])), ((2, 3), (3, 4))),
])
def vectorized_map(ctx, op, *flat):
    """``vectorized_map(function, elements)``: an ONNX ``Scan`` (the function sees one example; a
    list/tuple of elements reaches it as a list, as on Keras' numpy backend)."""
    elements = ctx.args[0]
    xs_values = keras.tree.flatten(elements)

    def step(carry, x):
        example = list(x) if isinstance(elements, (list, tuple)) else x[0]
        return [], keras.tree.flatten(op.function(example))

    return _onnx_scan(ctx, step, [], xs_values)


def _switch_model(x, index):
    branches = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: keras.ops.tanh(a) - b]
    return keras.ops.switch(keras.ops.sum(index), branches, x, x * 0.5)


@register(*ops_classes("core", "Switch"), cases=[
    Case("ops_switch", lambda: _switch_model, ((4,), ()), dtypes=("float32", "int32"), int_range=(0, 3)),
    Case("ops_switch_clamped", lambda: _switch_model, ((4,), ()), dtypes=("float32", "int32"),
         int_range=(-3, 7)),
    Case("ops_switch_static_index", lambda: (lambda x: keras.ops.switch(
        1, [lambda a: a * 2.0, lambda a: keras.ops.abs(a) + 1.0], x)), ((3,),)),
])
def switch(ctx, op, *flat):
    """``switch(index, branches, *operands)``: a chain of ONNX ``If`` (``index <= i`` selects branch
    i, so out-of-range indices clamp like Keras); a Python ``index`` picks the branch now."""
    index, branches, operands = ctx.args[0], list(ctx.args[1]), ctx.args[2:]
    flat_operands = keras.tree.flatten(operands)
    if not all(isinstance(v, ir.Value) and v.const_value is None for v in flat_operands):
        raise ctx.unsupported("switch operands that are not tensors computed by the model")
    tensors = keras.tree.pack_sequence_as(operands, ctx.in_tensors[len(ctx.in_tensors) - len(flat_operands):])

    def call(branch):
        return lambda: branch(*tensors)

    if not isinstance(index, ir.Value):
        chosen = branches[min(max(int(index), 0), len(branches) - 1)]
        return ctx.emit_keras(keras.tree.flatten(call(chosen)()))
    index = ctx.op("Reshape", [ctx.cast(index, "int64"), ctx.int64s([])])
    return _switch_chain(ctx, index, [call(b) for b in branches])


def _switch_chain(ctx, index, calls):
    """Values of ``calls[0]()`` if ``index <= 0``, else of the chain over ``calls[1:]`` (index - 1)."""
    count = len(ctx.out_tensors)
    if len(calls) == 1:
        return ctx.emit_keras(keras.tree.flatten(calls[0]()))
    then_graph = _branch(ctx, calls[0], "case")
    with ctx.subgraph(f"{ctx.scope}/otherwise") as else_graph:
        specs = list(ctx.out_tensors)
        rest = _switch_chain(ctx, ctx.op("Sub", [index, ctx.const(np.int64(1))]), calls[1:])
        for value, tensor in zip(rest, specs):
            ctx.graph_output(value, tensor)
    pred = ctx.op("LessOrEqual", [index, ctx.const(np.int64(0))])
    outputs = ctx.op("If", [pred], {"then_branch": then_graph, "else_branch": else_graph}, outputs=count)
    return list(outputs) if count > 1 else [outputs]


def onnx_loop(ctx, trip_count: int, carried, step, name: str = "loop"):
    """An ONNX ``Loop`` over plain ONNX values (no Keras callables): ``step(carried_in)`` emits the
    body with ``ctx.op`` and returns ``(keep_going, new_values)``, ``keep_going`` a bool value (any
    shape with one element) or None to always run ``trip_count`` iterations. Returns the final values."""
    iteration = _plain_input(ctx, "iteration", ir.DataType.INT64, ir.Shape([]))
    cond_in = _plain_input(ctx, "cond_in", ir.DataType.BOOL, ir.Shape([]))
    inputs = [_plain_input(ctx, "carried", v.dtype, v.shape) for v in carried]
    with ctx.subgraph(f"{ctx.scope}/{name}", inputs=[iteration, cond_in, *inputs]) as graph:
        keep_going, new_values = step(inputs)
        keep_going = cond_in if keep_going is None else ctx.op("Reshape", [keep_going, ctx.int64s([])])
        for value, like in zip([keep_going, *new_values], [cond_in, *inputs]):
            if value.graph is not graph or value.is_graph_input() or value.is_graph_output():
                value = ctx.op("Identity", [value])
            value.dtype, value.shape = like.dtype, like.shape
            graph.outputs.append(value)
    outputs = ctx.op("Loop", [ctx.const(np.int64(trip_count)), ctx.const(np.bool_(True)), *carried],
                     {"body": graph}, outputs=len(carried))
    outputs = outputs if len(carried) > 1 else (outputs,)
    for value, source in zip(outputs, carried):
        value.dtype = source.dtype
    return outputs


def _plain_input(ctx, hint, dtype, shape):
    return ir.Value(name=ctx.unique_name(f"{ctx.scope}/{hint}"), type=ir.TensorType(dtype),
                    shape=None if shape is None else ir.Shape(list(shape)))


def _typed(ctx, hint, dtype, shape):
    return ir.Value(name=ctx.unique_name(f"{ctx.scope}/{hint}"), type=ir.TensorType(to_onnx_dtype(dtype)),
                    shape=ir.Shape(list(shape)))


def _bound_inputs(ctx, values, shapes, dtypes):
    """Fresh symbolic Keras inputs bound to the subgraph's input ``values``."""
    from ..core.context import Tensor
    from ..core.layout import identity

    fresh = [keras.Input(batch_shape=shape, dtype=dtype) for shape, dtype in zip(shapes, dtypes)]
    for kt, value in zip(fresh, values):
        ctx.bind(kt, Tensor(value, identity(len(kt.shape))))
    return fresh
