"""Conversion context: builds the onnx_ir graph, names values after Keras layers, tracks layouts,
and offers the small helpers converters share (constants, weights, opset-dependent ops)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np
import onnx_ir as ir

from . import dynamic_dims as dyn
from . import layout as L
from .dtypes import to_numpy_dtype, to_onnx_dtype
from .errors import UnsupportedError, UnsupportedItem
from . import walker
from .tracing import Tracer
from .walker import variable_path

_SMALL_CONST = 16
# Per-node attributes the driver sets before calling a converter.
_NODE_STATE = ("scope", "operation", "in_tensors", "out_tensors", "args", "kwargs", "perm", "out_perms",
               "input_masks")


@dataclass
class Tensor:
    """A converted value and how it is stored relative to its Keras tensor."""

    value: ir.Value
    perm: L.Perm


@dataclass
class LayerRecord:
    """What one Keras layer/op node became: for conversion reports and layer-by-layer verification.

    ``how`` is "converter" (built-in), "user converter", "traced" (its ``call()`` was converted op by
    op; the ops have records of their own) or "nested model". ``outputs`` are the ONNX values of the
    node's Keras outputs with their layouts; ``nodes`` counts the ONNX nodes emitted for it (nested
    records included). ``depth`` is 0 for nodes of the model's own graph.
    """

    path: str
    class_name: str
    how: str
    keras_outputs: list
    outputs: list[Tensor]
    nodes: int
    depth: int


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./:-]", "_", name)


class ConversionContext:
    def __init__(self, opset: int, registry, graph_name: str = "keras_model"):
        self.opset = opset
        self.registry = registry
        self.graph = ir.Graph([], [], nodes=[], opset_imports={"": opset}, name=_clean(graph_name))
        self.main_graph = self.graph  # initializers always live here, also while in a subgraph
        self._names: set[str] = set()
        self._values: dict[int, Tensor] = {}
        self._transposed: dict[tuple[int, L.Perm], ir.Value] = {}
        self._small_consts: dict[tuple, ir.Value] = {}
        self._constants: dict[int, tuple] = {}
        self.tracer = Tracer()
        self.records: list[LayerRecord] = []
        self.on_progress = None  # optional callback(stage, done, total, item), see kerasonnx.logs
        self.emitted = 0  # ONNX nodes appended so far (subgraphs included)
        self._dynamic: dict[int, tuple] = {}  # sentinel -> (input value, stored axis) in a traced layer
        self._dynamic_values: dict[tuple, ir.Value] = {}
        # Per-node state, set by the converter driver before calling a converter.
        self.scope = ""
        self.operation: Any = None
        self.in_tensors: list = []
        self.out_tensors: list = []
        self.args: tuple = ()
        self.input_masks: list = []  # per input tensor: the ONNX value of its Keras mask, or None
        self.kwargs: dict = {}
        self.perm: L.Perm = ()
        self.out_perms: list[L.Perm] | None = None

    # ---- naming -------------------------------------------------------------------------------
    def reserve(self, name: str) -> None:
        self._names.add(name)

    def unique_name(self, base: str) -> str:
        base = _clean(base) or "v"
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def _scoped(self, hint: str) -> str:
        return self.unique_name(f"{self.scope}/{hint}" if self.scope else hint)

    # ---- node emission ------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[ir.Value | None], attrs: dict | None = None, *,
           outputs: int = 1, domain: str = "", domain_version: int = 1) -> ir.Value | tuple[ir.Value, ...]:
        """Append one ONNX node; returns its output value (or a tuple when ``outputs > 1``).

        A custom ``domain`` (an op you implement in onnxruntime, say) is recorded in the model's
        opset imports with ``domain_version``.
        """
        if domain not in ("", "ai.onnx"):
            self.main_graph.opset_imports.setdefault(domain, domain_version)
        attributes = ir.convenience.convert_attributes(
            {k: v for k, v in (attrs or {}).items() if v is not None}
        )
        node = ir.Node(domain, op_type, list(inputs), attributes, num_outputs=outputs,
                       name=self._scoped(op_type))
        for out in node.outputs:
            out.name = self._scoped(op_type.lower())
        self.graph.append(node)
        self.emitted += 1
        return node.outputs[0] if outputs == 1 else tuple(node.outputs)

    # ---- constants ----------------------------------------------------------------------------
    def const(self, array, dtype=None, name: str = "const") -> ir.Value:
        """An initializer holding ``array`` (cast to ``dtype``). Small constants are shared."""
        arr = np.asarray(array, dtype=to_numpy_dtype(dtype) if dtype is not None else None)
        if arr.size <= _SMALL_CONST:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._small_consts:
                return self._small_consts[key]
            name = self.unique_name(f"const_{arr.dtype.name}_{_short(arr)}")
        else:
            name = self._scoped(name)
        value = ir.Value(name=name, const_value=ir.tensor(_contiguous(arr), name=name),
                         type=ir.TensorType(to_onnx_dtype(arr.dtype)), shape=ir.Shape(arr.shape))
        self.main_graph.register_initializer(value)
        if arr.size <= _SMALL_CONST:
            self._small_consts[key] = value
        return value

    def int64s(self, values) -> ir.Value:
        """An int64 constant; inside a layer traced with dynamic dims, entries that stand for them
        (sentinel products) are computed from the inputs' shapes at run time."""
        arr = np.asarray(values, dtype=np.int64)
        if self._dynamic and arr.ndim <= 1 and any(dyn.is_dynamic(v, self._dynamic) for v in arr.ravel()):
            return self._runtime_ints(arr)
        return self.const(arr)

    def dims(self, x: ir.Value, start: int, end: int | None = None) -> ir.Value:
        """``shape(x)[start:end]`` as a 1-D int64 value (``end=None``: to the last dim)."""
        if self.opset >= 15:
            return self.op("Shape", [x], {"start": start, "end": end})
        stop = self.const(np.asarray([end if end is not None else np.iinfo(np.int64).max], np.int64))
        return self.op("Slice", [self.op("Shape", [x]), self.int64s([start]), stop])

    # ---- dims that were dynamic while a layer was traced (see dynamic_dims) -------------------
    @contextlib.contextmanager
    def dynamic_scope(self, sources, inputs: Sequence[Tensor], path: str):
        """Convert a layer traced with sentinel dims: ``sources[i]`` says which input axis the i-th
        sentinel stands for. Refuses (UnsupportedError) any sentinel left baked into a constant."""
        saved = self._dynamic
        self._dynamic = dict(saved)
        for sentinel, src in zip(dyn.SENTINELS[0], sources):
            tensor = inputs[src.input_index]
            self._dynamic[sentinel] = (tensor.value, L.actual_axis(tensor.perm, src.axis))
        first = len(self.main_graph.initializers)
        try:
            yield
        finally:
            self._dynamic = saved
        self._refuse_baked_sentinels(first, path)

    def _runtime_dim(self, sentinel: int) -> ir.Value:
        key = (sentinel, id(self.graph))
        if key not in self._dynamic_values:
            value, axis = self._dynamic[sentinel]
            self._dynamic_values[key] = self.dims(value, axis, axis + 1)
        return self._dynamic_values[key]

    def _runtime_ints(self, arr: np.ndarray) -> ir.Value:
        sentinels = list(self._dynamic)
        pieces: list[ir.Value] = []
        static: list[int] = []
        for v in arr.ravel():
            if not dyn.is_dynamic(v, sentinels):
                static.append(int(v))
                continue
            powers, rest = dyn.factor(int(v), sentinels)
            if static:
                pieces.append(self.const(np.asarray(static, np.int64)))
                static = []
            dim = None
            for sentinel, n in zip(sentinels, powers):
                for _ in range(n):
                    d = self._runtime_dim(sentinel)
                    dim = d if dim is None else self.op("Mul", [dim, d])
            pieces.append(dim if rest == 1 else self.op("Mul", [dim, self.const(np.asarray([rest], np.int64))]))
        if static:
            pieces.append(self.const(np.asarray(static, np.int64)))
        out = pieces[0] if len(pieces) == 1 else self.op("Concat", pieces, {"axis": 0})
        out = self.op("Squeeze", [out, self.const(np.asarray([0], np.int64))]) if arr.ndim == 0 else out
        out.dtype = ir.DataType.INT64
        return out

    def _runtime_array(self, arr: np.ndarray) -> ir.Value | None:
        """An eagerly computed array that depends on dynamic dims (a dim as a 0-d tensor, or an array
        whose shape holds sentinels) rebuilt at run time, or None."""
        value = self._rebuilt_array(arr)
        if value is not None:
            value.dtype = to_onnx_dtype(arr.dtype)
        return value

    def _rebuilt_array(self, arr: np.ndarray) -> ir.Value | None:
        sentinels = list(self._dynamic)
        if arr.ndim == 0 and np.issubdtype(arr.dtype, np.number) and float(arr).is_integer() \
                and dyn.is_dynamic(int(arr), sentinels):
            return self.cast(self.int64s(int(arr)), arr.dtype.name)
        if not any(d in self._dynamic for d in arr.shape):
            return None
        plan = dyn.runtime_array(arr, sentinels)
        if plan is None:
            return None
        if plan[0] == "triangle" and self.opset < 14:  # no Trilu: refused (a baked sentinel)
            return None
        shape = self.int64s(arr.shape)  # its sentinel dims become run-time dims
        if plan[0] == "arange":
            limit = self.int64s(sentinels[plan[1]])
            if arr.dtype != np.int64:
                limit = self.cast(limit, arr.dtype.name)
            arange = self.op("Range", [self.const(np.asarray(0, arr.dtype)), limit, self.const(np.asarray(1, arr.dtype))])
            return arange if arr.ndim == 1 else self.op("Reshape", [arange, shape])
        if plan[0] == "broadcast":
            return self.op("Expand", [self.const(plan[1], name="array"), shape])
        _, upper, k, _ = plan
        ones = self.op("Expand", [self.const(np.asarray(1, np.float32)), shape])
        triangle = self.op("Trilu", [ones, self.const(np.asarray(k, np.int64))], {"upper": int(upper)})
        return triangle if arr.dtype == np.float32 else self.cast(triangle, arr.dtype.name)

    def _refuse_baked_sentinels(self, first: int, path: str) -> None:
        for value in list(self.main_graph.initializers.values())[first:]:
            arr = value.const_value.numpy()
            baked = any(d in dyn.ALL for d in arr.shape) or (
                np.issubdtype(arr.dtype, np.integer) and arr.size <= 64
                and any(dyn.is_dynamic(v, dyn.ALL) for v in arr.ravel()))
            if baked:
                raise UnsupportedError([UnsupportedItem(
                    path, "traced layer", "a converter baked a dimension that is dynamic into a constant "
                    "(register a converter for this layer, or give static shapes)")])
        for node in self.main_graph.all_nodes():  # sentinels must not survive as static shapes
            for out in node.outputs:
                if out.shape is not None and any(d in dyn.ALL for d in out.shape if isinstance(d, int)):
                    out.shape = ir.Shape([None if isinstance(d, int) and d in dyn.ALL else d for d in out.shape])

    def scalar(self, number, dtype=None) -> ir.Value:
        """A scalar constant in ``dtype`` (default: the current layer's output dtype)."""
        return self.const(np.asarray(number), dtype or self.out_dtype())

    @staticmethod
    def numpy(variable) -> np.ndarray:
        """The value of a Keras variable (or backend tensor) as a numpy array. On the numpy backend
        a read-only view of the variable's own array: big weights are not copied."""
        value = variable.value if walker.is_variable(variable) else variable
        if isinstance(value, np.ndarray):
            view = value.view()
            view.flags.writeable = False
            return view
        return keras.ops.convert_to_numpy(value)

    def weight(self, variable, transform=None, dtype=None) -> ir.Value:
        """An initializer from a Keras variable, named after its path; ``transform`` reshapes it."""
        arr = self.numpy(variable)
        if transform is not None:
            arr = transform(arr)
        arr = np.asarray(arr, dtype=to_numpy_dtype(dtype or self.out_dtype()))
        name = self.unique_name(variable_path(variable))
        value = ir.Value(name=name, const_value=ir.tensor(_contiguous(arr), name=name),
                         type=ir.TensorType(to_onnx_dtype(arr.dtype)), shape=ir.Shape(arr.shape))
        self.main_graph.register_initializer(value)
        return value

    def constant(self, array) -> ir.Value:
        """An initializer for a Keras variable (named after its path, in its own dtype, one per
        variable) or for a concrete backend array met as a call argument."""
        key = id(array)
        if key not in self._constants:
            if walker.is_variable(array):
                value = self.weight(array, dtype=array.dtype)
            else:
                arr = self.numpy(array)
                value = self._runtime_array(arr) if self._dynamic else None
                if value is None:
                    value = self.const(arr, name="array")
            self._constants[key] = (array, value)  # keep ``array`` alive so its id stays unique
        return self._constants[key][1]

    def channel_const(self, vector, keras_axis: int = -1, rank: int | None = None, dtype=None,
                      name: str = "const") -> ir.Value:
        """A per-channel constant broadcastable against the current (possibly permuted) input."""
        rank = rank or len(self.perm)
        shape = [1] * rank
        shape[L.actual_axis(self.perm or L.identity(rank), keras_axis)] = -1
        return self.const(np.reshape(np.asarray(vector), shape), dtype or self.out_dtype(), name)

    def unsupported(self, reason: str) -> UnsupportedError:
        """An UnsupportedError naming the layer being converted (``raise ctx.unsupported(...)``)."""
        return UnsupportedError([UnsupportedItem(self.scope, type(self.operation).__name__, reason)])

    # ---- Keras metadata of the current node ---------------------------------------------------
    def in_shape(self, i: int = 0) -> tuple:
        return self._keras_shape(self.in_tensors[i])

    def in_dtype(self, i: int = 0) -> str:
        return self.in_tensors[i].dtype

    def out_shape(self, i: int = 0) -> tuple:
        return self._keras_shape(self.out_tensors[i])

    def _keras_shape(self, keras_tensor) -> tuple:
        """A Keras tensor's shape, with the dims that are dynamic at run time as None."""
        return tuple(None if d in self._dynamic else d for d in keras_tensor.shape)

    def out_dtype(self, i: int = 0) -> str:
        return self.out_tensors[i].dtype

    def axis(self, keras_axis: int, rank: int | None = None) -> int:
        """Where Keras axis ``keras_axis`` of the current input lives in the stored tensor."""
        rank = rank or len(self.perm) or len(self.in_shape())
        return L.actual_axis(self.perm or L.identity(rank), keras_axis)

    # ---- value bookkeeping (driver) -----------------------------------------------------------
    def bind(self, keras_tensor, tensor: Tensor) -> None:
        self._values[id(keras_tensor)] = tensor

    def lookup(self, keras_tensor) -> Tensor:
        return self._values[id(keras_tensor)]

    def fetch(self, keras_tensor, perm: L.Perm) -> ir.Value:
        """The value of ``keras_tensor`` stored with ``perm`` (Transposes are inserted once)."""
        stored = self.lookup(keras_tensor)
        if stored.perm == perm:
            return stored.value
        key = (id(stored.value), perm)
        if key not in self._transposed:
            target = L.unit_move_shape(tuple(keras_tensor.shape), stored.perm, perm)
            if target is not None:  # only size-1 dims move: a Reshape is free, a Transpose is not
                transposed = self.op("Reshape", [stored.value, self.int64s(target)])
            else:
                transposed = self.op("Transpose", [stored.value], {"perm": list(L.compose(stored.perm, perm))})
            transposed.dtype = stored.value.dtype
            self._transposed[key] = transposed
            # Going back to the original layout must not stack a second Transpose.
            self._transposed[(id(transposed), stored.perm)] = stored.value
        return self._transposed[key]

    # ---- subgraphs (If / Loop bodies) --------------------------------------------------------
    @contextlib.contextmanager
    def subgraph(self, name: str, inputs: Sequence[ir.Value] = ()):
        """Emit into a new graph (yielded) for an If branch or Loop body. Keras tensors converted
        inside stay visible only inside; outer values can be used directly (ONNX scoping)."""
        saved = (self.graph, dict(self._values), dict(self._transposed))
        self.graph = ir.Graph(list(inputs), [], nodes=[], name=self.unique_name(name))
        try:
            yield self.graph
        finally:
            self.graph, self._values, self._transposed = saved

    def emit_keras(self, keras_tensors) -> list[ir.Value]:
        """Convert whatever Keras ops compute ``keras_tensors`` from already converted tensors
        (the body of a ``keras.ops.cond`` branch or loop), returning their values in Keras layout."""
        from .driver import convert_nodes

        state = {k: getattr(self, k) for k in _NODE_STATE}  # converting nested nodes resets them
        try:
            convert_nodes(self, walker.nodes_producing(keras_tensors, self.is_bound), prefix=self.scope + "/")
        finally:
            for k, v in state.items():
                setattr(self, k, v)
        return [self.fetch(t, L.identity(len(t.shape))) for t in keras_tensors]

    def is_bound(self, keras_tensor) -> bool:
        return id(keras_tensor) in self._values

    def graph_output(self, value: ir.Value, keras_tensor) -> ir.Value:
        """``value`` as an output of the current (sub)graph, typed from ``keras_tensor``: values from
        outside it, or used twice, get an Identity."""
        if value.graph is not self.graph or value.is_graph_input() or value.is_graph_output():
            value = self.op("Identity", [value])
        value.dtype = to_onnx_dtype(keras_tensor.dtype)
        value.shape = ir.Shape(list(keras_tensor.shape))
        self.graph.outputs.append(value)
        return value

    # ---- opset-aware helpers ------------------------------------------------------------------
    def reduce(self, op_type: str, x: ir.Value, axes: Sequence[int] | None, keepdims: bool) -> ir.Value:
        """ReduceXxx with ``axes`` as attribute or input, whichever the opset wants."""
        as_input = self.opset >= 18 or op_type == "ReduceSum"
        attrs = {"keepdims": int(keepdims)}
        if axes is None:
            return self.op(op_type, [x], attrs)
        if as_input:
            return self.op(op_type, [x, self.int64s(list(axes))], attrs)
        return self.op(op_type, [x], {**attrs, "axes": list(axes)})

    def split(self, x: ir.Value, sizes: Sequence[int], axis: int) -> tuple[ir.Value, ...]:
        outs = self.op("Split", [x, self.int64s(list(sizes))], {"axis": axis}, outputs=len(sizes))
        return outs if len(sizes) > 1 else (outs,)

    def cast(self, x: ir.Value, dtype) -> ir.Value:
        return self.op("Cast", [x], {"to": to_onnx_dtype(dtype)})


def _short(arr: np.ndarray) -> str:
    if arr.size == 1:
        return _clean(str(arr.reshape(-1)[0].item()).replace("-", "m").replace(".", "p"))
    return f"{arr.size}v"


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous ``arr`` keeping 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")
