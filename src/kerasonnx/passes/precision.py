"""Lower a converted float32 model to float16 or bfloat16 (``convert(..., precision="fp16"|"bf16")``).

The rule follows ``torch.autocast`` (see docs/precision.md):

- compute-heavy ops (``LOW_PRECISION_OPS``: MatMul, Gemm, Conv, Attention, RNNs...) run in the low type;
- numerically sensitive ops (``FLOAT32_OPS``: Softmax, normalisations, Exp/Log/Pow, sums and means,
  Sin/Cos...) run in float32;
- every other op runs in its inputs' type, float32 if any non-constant float input is float32
  (type promotion), so e.g. ``rsqrt(mean(x^2) + eps)`` stays float32 after the ReduceMean;
- constants follow their consumer, model inputs and outputs stay float32 (Casts at the edges).

``fp16`` lowers compute and weights. ``bf16`` stores the weights of the compute-heavy ops in bfloat16
and computes in float32, because onnxruntime's CPU provider has no bfloat16 arithmetic kernels (as of
1.31 only data movement such as Transpose/Concat); see ``bf16_storage_only``.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from ..core.dtypes import to_numpy_dtype
from ..core.errors import InvalidInputError

PRECISIONS = ("fp32", "fp16", "bf16")
METADATA_KEY = "kerasonnx.precision"
LOW_TYPES = {"fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}
_FLOAT = ir.DataType.FLOAT

LOW_PRECISION_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "Attention", "LSTM", "GRU", "RNN",
})
FLOAT32_OPS = frozenset({
    "Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization", "GroupNormalization",
    "InstanceNormalization", "BatchNormalization", "LpNormalization", "MeanVarianceNormalization",
    "Exp", "Log", "Pow", "Softplus", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
    "CumSum", "Range", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "LpPool",
})
# Ops whose output type comes from an attribute or that create values: never retyped.
_TYPE_FIXED_OPS = frozenset({
    "Cast", "CastLike", "Constant", "ConstantOfShape", "EyeLike", "RandomNormal", "RandomNormalLike",
    "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial",
})
# Inputs that hold weights, by op: what bf16 storage converts.
_WEIGHT_OPS = LOW_PRECISION_OPS | {"Gather"}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision {precision!r} is not supported: choose one of {', '.join(PRECISIONS)}")
    return precision


def model_precision(model) -> str:
    """The precision a kerasonnx model was converted with (``ir.Model`` or ``onnx.ModelProto``)."""
    if isinstance(model, ir.Model):
        return model.metadata_props.get(METADATA_KEY, "fp32")
    props = {p.key: p.value for p in getattr(model, "metadata_props", [])}
    return props.get(METADATA_KEY, "fp32")


def bf16_storage_only() -> bool:
    """bf16 computes in float32: onnxruntime's CPU provider lacks bfloat16 MatMul/Conv/Add kernels."""
    return True


def convert_precision(model: ir.Model, precision: str) -> ir.Model:
    """Lower ``model`` (in place) to ``precision``. Whatever the precision, bfloat16 arithmetic that
    a ``mixed_bfloat16`` Keras model performs is run in float32 between bfloat16 values (see
    :func:`compute_bf16_in_float32`)."""
    check_precision(precision)
    graph = model.graph
    if precision == "fp32" and not _has_bf16(graph):
        return model
    opset = model.opset_imports.get("", 13)
    _infer_missing_dtypes(graph, opset)
    if precision == "bf16" and bf16_storage_only():
        _store_weights(graph, LOW_TYPES[precision])
    elif precision != "fp32":
        _Lowering(graph, LOW_TYPES[precision], opset).run()
    compute_bf16_in_float32(graph)
    if precision != "fp32":
        model.metadata_props[METADATA_KEY] = precision
    return model


# ---- dtypes -------------------------------------------------------------------------------------
def _schema(node: ir.Node, opset: int):
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset)
    except onnx.defs.SchemaError:
        return None


def _formal(params, index: int):
    """The schema parameter of input/output ``index`` (the last one repeats when variadic)."""
    if index < len(params):
        return params[index]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _infer_missing_dtypes(graph: ir.Graph, opset: int) -> None:
    """Fill in output dtypes converters left unset, from the op schemas' type constraints."""
    for node in graph:
        for i, out in enumerate(node.outputs):
            if out.dtype is None:
                out.dtype = _output_dtype(node, i, opset)


def _output_dtype(node: ir.Node, index: int, opset: int) -> ir.DataType | None:
    if node.op_type == "Cast" and node.domain in ("", "ai.onnx"):
        return ir.DataType(node.attributes.get_int("to"))
    schema = _schema(node, opset)
    formal = _formal(schema.outputs, index) if schema else None
    if formal is None:
        return None
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    allowed = constraints.get(formal.type_str, [formal.type_str])
    if len(allowed) == 1:
        return _from_type_str(allowed[0])
    for i, value in enumerate(node.inputs):
        param = _formal(schema.inputs, i)
        if value is not None and param is not None and param.type_str == formal.type_str and value.dtype:
            return value.dtype
    return None


def _from_type_str(type_str: str) -> ir.DataType | None:
    names = {"float": _FLOAT, "float16": ir.DataType.FLOAT16, "bfloat16": ir.DataType.BFLOAT16,
             "double": ir.DataType.DOUBLE, "int64": ir.DataType.INT64, "int32": ir.DataType.INT32,
             "bool": ir.DataType.BOOL}
    if type_str.startswith("tensor(") and type_str.endswith(")"):
        return names.get(type_str[len("tensor("):-1])
    return None


def _low_type_str(low: ir.DataType) -> str:
    return "tensor(float16)" if low == ir.DataType.FLOAT16 else "tensor(bfloat16)"


# ---- shared graph edits ---------------------------------------------------------------------------
def _is_constant(value: ir.Value) -> bool:
    return value.const_value is not None or (value.producer() is not None and value.producer().op_type == "Constant")


def _converted_initializer(graph: ir.Graph, value: ir.Value, dtype: ir.DataType, names: set[str]) -> ir.Value:
    array = value.const_value.numpy().astype(to_numpy_dtype(dtype))
    name = _unique(f"{value.name}/{dtype.name.lower()}", names)
    converted = ir.Value(name=name, const_value=ir.tensor(array, name=name), type=ir.TensorType(dtype),
                         shape=ir.Shape(array.shape))
    graph.register_initializer(converted)
    return converted


def _cast_node(value: ir.Value, dtype: ir.DataType, names: set[str]) -> ir.Node:
    node = ir.Node("", "Cast", [value], ir.convenience.convert_attributes({"to": dtype}),
                   name=_unique(f"{value.name}/Cast_{dtype.name.lower()}", names))
    out = node.outputs[0]
    out.name = _unique(f"{value.name}/{dtype.name.lower()}", names)
    out.dtype = dtype
    out.shape = value.shape
    return node


def _unique(base: str, names: set[str]) -> str:
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    names.add(name)
    return name


def _all_names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | set(graph.initializers)
    for node in ir.traversal.RecursiveGraphIterator(graph):
        names.add(node.name)
        names.update(v.name for v in node.outputs)
    return names


def _replace_initializer_if_unused(graph: ir.Graph, original: ir.Value, converted: ir.Value) -> None:
    """Give ``converted`` the weight's own name once nothing reads the float32 original."""
    if original.uses() or original.is_graph_output() or original.is_graph_input():
        return
    name = original.name
    graph.initializers.pop(name)
    graph.initializers.pop(converted.name)
    converted.name = name
    converted.const_value.name = name
    graph.register_initializer(converted)


def _values_used_in_subgraphs(graph: ir.Graph) -> set[int]:
    used = set()
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.graph is not graph:
            used.update(id(v) for v in node.inputs if v is not None)
    return used


def _has_subgraph(node: ir.Node) -> bool:
    return any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values())


# ---- fp16: compute in low precision ------------------------------------------------------------
class _Lowering:
    """One pass over the main graph in topological order: each node computes low or float32, and
    Casts are inserted where a value's stored type differs from what its consumer computes in."""

    def __init__(self, graph: ir.Graph, low: ir.DataType, opset: int):
        self.graph, self.low, self.opset = graph, low, opset
        self.names = _all_names(graph)
        self.lowered: set[int] = set()  # ids of float32 values now stored in the low type
        self.casts: dict[tuple[int, ir.DataType], ir.Value] = {}
        self.initializers: list[tuple[ir.Value, ir.Value]] = []  # (float32 original, converted)
        self.captured = _values_used_in_subgraphs(graph)

    def run(self) -> None:
        for node in list(self.graph):
            slots = self._low_slots(node)
            if slots is not None and self._computes_low(node):
                self._lower(node, *slots)
            else:
                self._restore_inputs(node)
        self._restore_outputs()
        for original, converted in self.initializers:
            _replace_initializer_if_unused(self.graph, original, converted)

    # which inputs/outputs of a node take the low type, or None when it cannot compute low
    def _low_slots(self, node: ir.Node):
        if node.op_type in _TYPE_FIXED_OPS or node.op_type in FLOAT32_OPS or _has_subgraph(node):
            return None
        if any(id(out) in self.captured for out in node.outputs):
            return None
        schema = _schema(node, self.opset)
        if schema is None or any(v is not None and v.dtype is None for v in node.inputs):
            return None
        constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        low_str = _low_type_str(self.low)
        outs = [i for i, v in enumerate(node.outputs)
                if v.dtype == _FLOAT and _lowerable(_formal(schema.outputs, i), constraints, low_str)]
        if not outs:
            return None
        out_params = {_formal(schema.outputs, i).type_str for i in outs}
        ins = [i for i, v in enumerate(node.inputs)
               if v is not None and v.dtype in (_FLOAT, self.low)
               and (_formal(schema.inputs, i) is not None and _formal(schema.inputs, i).type_str in out_params)]
        return ins, outs

    def _computes_low(self, node: ir.Node) -> bool:
        if node.op_type in LOW_PRECISION_OPS:
            return True
        dynamic = [v for v in node.inputs if v is not None and v.dtype in (_FLOAT, self.low) and not _is_constant(v)]
        return bool(dynamic) and all(v.dtype == self.low for v in dynamic)

    def _lower(self, node: ir.Node, ins: list[int], outs: list[int]) -> None:
        for i in ins:
            value = node.inputs[i]
            if value.dtype == _FLOAT:
                node.replace_input_with(i, self._as(value, self.low, node))
        for i in outs:
            node.outputs[i].dtype = self.low
            self.lowered.add(id(node.outputs[i]))
        if node.op_type == "Attention" and self.opset >= 23:  # softmax in float32, as everywhere else
            node.attributes["softmax_precision"] = ir.AttrInt64("softmax_precision", int(_FLOAT))

    def _restore_inputs(self, node: ir.Node) -> None:
        for i, value in enumerate(node.inputs):
            if value is not None and id(value) in self.lowered:
                node.replace_input_with(i, self._as(value, _FLOAT, node))

    def _restore_outputs(self) -> None:
        for i, value in enumerate(self.graph.outputs):
            if id(value) not in self.lowered:
                continue
            cast = _cast_node(value, _FLOAT, self.names)
            self.graph.append(cast)
            name = value.name
            value.name = _unique(f"{name}/{self.low.name.lower()}", self.names)
            cast.outputs[0].name = name
            self.graph.outputs[i] = cast.outputs[0]

    def _as(self, value: ir.Value, dtype: ir.DataType, consumer: ir.Node) -> ir.Value:
        """``value`` in ``dtype``: a converted copy of a constant, else a Cast (one per value and type)."""
        key = (id(value), dtype)
        if key not in self.casts:
            if value.const_value is not None and value.is_initializer():
                converted = _converted_initializer(self.graph, value, dtype, self.names)
                self.initializers.append((value, converted))
                self.casts[key] = converted
            else:
                cast = _cast_node(value, dtype, self.names)
                self.graph.insert_before(consumer, cast)
                self.casts[key] = cast.outputs[0]
        return self.casts[key]


def _lowerable(formal, constraints: dict, low_str: str) -> bool:
    return formal is not None and low_str in constraints.get(formal.type_str, ())


# ---- bf16: weights stored low, computed in float32 -------------------------------------------------
def _store_weights(graph: ir.Graph, low: ir.DataType) -> None:
    """Store every float32 initializer read only by weight-holding ops (MatMul, Gemm, Conv, Gather's
    table...) in ``low``, followed by a Cast back to float32 that onnxruntime folds at load time."""
    names = _all_names(graph)
    captured = _values_used_in_subgraphs(graph)
    first_node = next(iter(graph), None)
    for value in list(graph.initializers.values()):
        uses = list(value.uses())
        if (value.dtype != _FLOAT or not uses or id(value) in captured or value.is_graph_output()
                or any(use.node.op_type not in _WEIGHT_OPS or use.node.graph is not graph for use in uses)
                or any(use.node.op_type == "Gather" and use.idx != 0 for use in uses)):
            continue
        stored = _converted_initializer(graph, value, low, names)
        cast = _cast_node(stored, _FLOAT, names)
        graph.insert_before(first_node, cast)
        for use in uses:
            use.node.replace_input_with(use.idx, cast.outputs[0])
        _replace_initializer_if_unused(graph, value, stored)


# ---- bfloat16 arithmetic onnxruntime's CPU provider lacks ------------------------------------------
# Ops it runs on bfloat16 tensors (1.31: data movement only; tests/test_precision.py checks the list).
BF16_CPU_OPS = frozenset({
    "Cast", "CastLike", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Flatten",
    "Transpose", "Concat", "Clip", "Shape",
})


def _has_bf16(graph: ir.Graph) -> bool:
    bf16 = ir.DataType.BFLOAT16
    values = [*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)]
    return any(v.dtype == bf16 for v in values) or any(
        node.op_type == "Cast" and node.attributes.get_int("to") == bf16 for node in graph)


def compute_bf16_in_float32(graph: ir.Graph) -> None:
    """Every main-graph node that computes on bfloat16 values (a ``mixed_bfloat16`` layer) but has no
    onnxruntime CPU kernel for them computes in float32 instead: its bfloat16 inputs are cast up and
    its outputs cast back to bfloat16, so values between nodes are rounded exactly where Keras rounds."""
    bf16 = ir.DataType.BFLOAT16
    names = _all_names(graph)
    for node in list(graph):
        if node.op_type in BF16_CPU_OPS or node.domain not in ("", "ai.onnx") or _has_subgraph(node):
            continue
        outputs = [v for v in node.outputs if v.dtype == bf16]
        if not outputs:
            continue
        for i, value in enumerate(node.inputs):
            if value is not None and value.dtype == bf16:
                cast = _cast_node(value, _FLOAT, names)
                graph.insert_before(node, cast)
                node.replace_input_with(i, cast.outputs[0])
        for value in outputs:
            _round_output_to(graph, node, value, bf16, names)


def _round_output_to(graph: ir.Graph, node: ir.Node, value: ir.Value, dtype: ir.DataType, names: set[str]) -> None:
    """Make ``value`` float32 and give its consumers (and the graph output) a Cast of it to ``dtype``."""
    uses = list(value.uses())
    value.dtype = _FLOAT
    cast = _cast_node(value, dtype, names)
    graph.insert_after(node, cast)
    for use in uses:
        use.node.replace_input_with(use.idx, cast.outputs[0])
    for i, output in enumerate(graph.outputs):
        if output is value:
            name = value.name
            value.name = _unique(f"{name}/float", names)
            cast.outputs[0].name = name
            graph.outputs[i] = cast.outputs[0]
