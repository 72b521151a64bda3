"""Tracing fallback: a layer with no converter is converted by calling its ``call()`` on fresh
symbolic inputs (``training=False``). Keras records every ``keras.ops`` call and every nested layer
call as a node, so the result is a small graph the driver converts like a nested model."""

from __future__ import annotations

import inspect
import re

import keras

from . import dynamic_dims, walker
from .errors import UnsupportedItem

_CONTROL_FLOW_HINT = ("Python control flow on a tensor value (if/while on a symbolic tensor) cannot "
                      "be traced: use keras.ops.cond / keras.ops.where, or register a converter")


class TraceFailure(Exception):
    def __init__(self, item: UnsupportedItem, control_flow: bool = False):
        super().__init__(item.reason)
        self.item = item
        self.control_flow = control_flow


def trace_node(node):
    """A ``keras.Function`` computing ``node.operation.call`` for this call's input shapes/dtypes,
    and the dynamic dims it stands for (see :func:`trace_with_dynamic_dims`)."""
    layer = node.operation
    shapes = [tuple(kt.shape) for kt in node.input_tensors]
    return trace_with_dynamic_dims(lambda s: _trace_call(node, s), shapes, layer)


def trace_with_dynamic_dims(trace, shapes, owner):
    """``trace(shapes)`` -> ``(keras.Function, sources)``, ``sources`` describing the sentinel dims
    the function was traced with (:mod:`.dynamic_dims`; empty for a plain trace).

    With dynamic dims, ``trace`` runs with ``None`` dims and twice with sentinel dims: when the
    sentinel traces agree, nothing depends on the dims' values and the ``None`` trace is used; when
    they differ in ways the sentinels explain (or Keras cannot trace with ``None``), the first
    sentinel trace is used; otherwise ``owner`` (the layer or model) is refused.
    """
    plain = failure = None
    try:
        plain = trace(shapes)
    except TraceFailure as exc:
        if exc.control_flow:
            raise
        failure = exc
    if not any(d is None for shape in shapes for d in shape):
        if failure is not None:
            raise failure
        return plain, []
    try:
        sources, (shapes1, shapes2) = dynamic_dims.assign(shapes)
        traces = [trace(shapes1), trace(shapes2)]
    except (TraceFailure, ValueError):
        if plain is not None:
            return plain, []
        raise failure from None
    same, reason = _compare(traces, len(sources))
    if reason:
        raise TraceFailure(UnsupportedItem(owner.name, type(owner).__name__,
                                           f"tracing with dynamic dims: {reason}"))
    if same and plain is not None:
        return plain, []
    return traces[0], sources


def _compare(traces, count: int) -> tuple[bool, str | None]:
    nodes1, nodes2 = (walker.nodes(fn) for fn in traces)
    if [type(n.operation) for n in nodes1] != [type(n.operation) for n in nodes2]:
        return False, "the traced graph changes with the size of a dynamic dimension"
    return dynamic_dims.compare([n.settings() for n in nodes1], [n.settings() for n in nodes2], count)


def _trace_call(node, shapes):
    layer = node.operation
    fresh: dict[int, keras.KerasTensor] = {}
    shape_of = {id(kt): shape for kt, shape in zip(node.input_tensors, shapes)}

    def fresh_input(kt):
        if id(kt) not in fresh:
            dtype = walker.autocast_dtype(layer, kt) or kt.dtype
            fresh[id(kt)] = keras.Input(batch_shape=shape_of[id(kt)], dtype=dtype)
        return fresh[id(kt)]

    args, kwargs = node.filled_arguments(fresh_input)
    if _accepts(layer.call, "training"):
        kwargs["training"] = False
    try:
        with walker.autocast_scope(layer):
            outputs = layer.call(*args, **kwargs)
    except TypeError as exc:
        control_flow = "symbolic" in str(exc) and "bool" in str(exc)
        reason = _CONTROL_FLOW_HINT if control_flow else _short(exc)
        raise TraceFailure(UnsupportedItem(layer.name, type(layer).__name__, reason), control_flow) from exc
    except Exception as exc:  # the layer's own code failed on symbolic inputs (tf.* calls, ...)
        raise TraceFailure(UnsupportedItem(layer.name, type(layer).__name__,
                                           f"tracing call() failed: {_short(exc)}")) from exc
    inputs = [fresh[id(kt)] for kt in node.input_tensors]
    flat_outputs = keras.tree.flatten(outputs)
    if not all(walker.is_keras_tensor(t) for t in flat_outputs):
        raise TraceFailure(UnsupportedItem(layer.name, type(layer).__name__,
                                           "call() returned values that are not computed from its inputs"))
    function = keras.Function(inputs, flat_outputs, name=f"{layer.name}_traced")
    _name_ops_deterministically(function)
    return function


def _name_ops_deterministically(function) -> None:
    """Give the ops this trace created names numbered within the trace (``split``, ``split_1``):
    Keras numbers them with process-wide counters, which would make ONNX names (and files) depend on
    what ran before. Nested layers are the user's objects and keep their names."""
    seen: dict[str, int] = {}
    for node in walker.nodes(function):
        op = node.operation
        if walker.is_layer(op):
            continue
        base = re.sub(r"_\d+$", "", op.name)
        count = seen.get(base, 0)
        seen[base] = count + 1
        op.name = base if count == 0 else f"{base}_{count}"


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


class Tracer:
    """Traces each layer call once (the support check and the conversion share the result)."""

    def __init__(self):
        self._traces: dict[tuple, object] = {}
        self._dims: dict[int, list] = {}

    def trace(self, node):
        key = (id(node.operation), tuple(id(t) for t in node.input_tensors))
        if key not in self._traces:
            try:
                function, sources = trace_node(node)
                self._traces[key] = function
                self._dims[id(function)] = sources
            except TraceFailure as failure:
                self._traces[key] = failure
        result = self._traces[key]
        if isinstance(result, TraceFailure):
            raise result
        return result

    def dynamic_dims(self, function) -> list:
        """The :class:`~.dynamic_dims.DimSource` of each sentinel ``function`` was traced with."""
        return self._dims.get(id(function), [])


def trace_model(model, shapes, dtypes=None, names=None):
    """A ``keras.Function`` for a subclassed model's ``call`` on inputs of ``shapes``, and its
    sentinel dims (see :func:`trace_with_dynamic_dims`)."""
    dtypes = dtypes or ["float32"] * len(shapes)
    names = names or [f"input_{i}" if len(shapes) > 1 else "input" for i in range(len(shapes))]
    kwargs = {"training": False} if _accepts(model.call, "training") else {}

    def trace(traced_shapes):
        inputs = [keras.Input(batch_shape=tuple(s), dtype=d, name=n)
                  for s, d, n in zip(traced_shapes, dtypes, names)]
        try:
            with walker.autocast_scope(model):
                outputs = model.call(inputs[0] if len(inputs) == 1 else inputs, **kwargs)
        except Exception as exc:
            control_flow = isinstance(exc, TypeError) and "symbolic" in str(exc)
            reason = _CONTROL_FLOW_HINT if control_flow else f"tracing call() failed: {_short(exc)}"
            raise TraceFailure(UnsupportedItem(model.name, type(model).__name__, reason), control_flow) from exc
        function = keras.Function(inputs, keras.tree.flatten(outputs), name=model.name)
        _name_ops_deterministically(function)
        return function

    return trace_with_dynamic_dims(trace, [tuple(s) for s in shapes], model)
