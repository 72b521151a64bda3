"""Tracing fallback: a layer with no converter is converted by calling its ``call()`` on fresh
symbolic inputs (``training=False``). Keras records every ``keras.ops`` call and every nested layer
call as a node, so the result is a small graph the driver converts like a nested model."""

from __future__ import annotations

import inspect

import keras

from . import walker
from .errors import UnsupportedItem

_CONTROL_FLOW_HINT = ("Python control flow on a tensor value (if/while on a symbolic tensor) cannot "
                      "be traced: use keras.ops.cond / keras.ops.where, or register a converter")


class TraceFailure(Exception):
    def __init__(self, item: UnsupportedItem):
        super().__init__(item.reason)
        self.item = item


def trace_node(node):
    """A ``keras.Function`` computing ``node.operation.call`` for this call's input shapes/dtypes."""
    layer = node.operation
    fresh: dict[int, keras.KerasTensor] = {}

    def fresh_input(kt):
        if id(kt) not in fresh:
            dtype = walker.autocast_dtype(layer, kt) or kt.dtype
            fresh[id(kt)] = keras.Input(batch_shape=tuple(kt.shape), dtype=dtype)
        return fresh[id(kt)]

    args, kwargs = node.filled_arguments(fresh_input)
    if _accepts(layer.call, "training"):
        kwargs["training"] = False
    try:
        with walker.autocast_scope(layer):
            outputs = layer.call(*args, **kwargs)
    except TypeError as exc:
        reason = _CONTROL_FLOW_HINT if "symbolic" in str(exc) and "bool" in str(exc) else _short(exc)
        raise TraceFailure(UnsupportedItem(layer.name, type(layer).__name__, reason)) from exc
    except Exception as exc:  # the layer's own code failed on symbolic inputs (tf.* calls, ...)
        raise TraceFailure(UnsupportedItem(layer.name, type(layer).__name__,
                                           f"tracing call() failed: {_short(exc)}")) from exc
    inputs = [fresh[id(kt)] for kt in node.input_tensors]
    flat_outputs = keras.tree.flatten(outputs)
    if not all(walker.is_keras_tensor(t) for t in flat_outputs):
        raise TraceFailure(UnsupportedItem(layer.name, type(layer).__name__,
                                           "call() returned values that are not computed from its inputs"))
    return keras.Function(inputs, flat_outputs, name=f"{layer.name}_traced")


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

    def trace(self, node):
        key = (id(node.operation), tuple(id(t) for t in node.input_tensors))
        if key not in self._traces:
            try:
                self._traces[key] = trace_node(node)
            except TraceFailure as failure:
                self._traces[key] = failure
        result = self._traces[key]
        if isinstance(result, TraceFailure):
            raise result
        return result


def trace_model(model, shapes, dtypes=None, names=None):
    """A ``keras.Function`` for a subclassed model's ``call`` on inputs of ``shapes``."""
    dtypes = dtypes or ["float32"] * len(shapes)
    names = names or [f"input_{i}" if len(shapes) > 1 else "input" for i in range(len(shapes))]
    inputs = [keras.Input(batch_shape=tuple(s), dtype=d, name=n) for s, d, n in zip(shapes, dtypes, names)]
    kwargs = {"training": False} if _accepts(model.call, "training") else {}
    try:
        with walker.autocast_scope(model):
            outputs = model.call(inputs[0] if len(inputs) == 1 else inputs, **kwargs)
    except Exception as exc:
        reason = (_CONTROL_FLOW_HINT if isinstance(exc, TypeError) and "symbolic" in str(exc)
                  else f"tracing call() failed: {_short(exc)}")
        raise TraceFailure(UnsupportedItem(model.name, type(model).__name__, reason)) from exc
    return keras.Function(inputs, keras.tree.flatten(outputs), name=model.name)
