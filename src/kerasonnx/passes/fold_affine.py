"""Fold per-channel ``Mul``/``Add`` by constants (inference BatchNormalization, Rescaling after a
convolution or Dense...) into the preceding ``Conv`` / ``Gemm`` / ``MatMul`` weights and bias.

A Dense layer on a sequence is ``MatMul -> Add(bias)``; a BatchNormalization after it adds
``Mul(scale) -> Add(shift)``. Chains of constant ``Add``/``Mul`` are first normalised
(``(x + a) * s`` becomes ``x * s + a * s``; ``x + a + b`` one ``Add``), which brings the ``Mul``
next to the ``MatMul`` whose weight columns it then scales: one ``MatMul -> Add`` is left.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's array if it is a constant (initializer or folded), else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def sole_consumer(value: ir.Value) -> ir.Node | None:
    """The only node reading ``value``, if exactly one does and it is not a graph output."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def new_initializer(graph: ir.Graph, base: str, array: np.ndarray, like: ir.Value) -> ir.Value:
    """A new initializer named ``<base>_folded`` (made unique) holding ``array``."""
    name = base if base.endswith("_folded") else base + "_folded"
    taken = graph.initializers
    unique, i = name, 1
    while unique in taken:
        unique, i = f"{name}{i}", i + 1
    value = ir.Value(name=unique, const_value=ir.tensor(array, name=unique), type=like.type,
                     shape=ir.Shape(array.shape))
    graph.register_initializer(value)
    return value


def _per_channel(arr: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``arr`` as a length-``channels`` vector if it only varies along ``axis`` of a rank-``rank`` tensor."""
    if arr.ndim > rank:
        return None
    full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis) or full.shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float64)


def _constant_operand(node: ir.Node, data: ir.Value) -> np.ndarray | None:
    """For a two-input ``node`` reading ``data``, its other operand if that is a constant."""
    if len(node.inputs) != 2 or data not in node.inputs:
        return None
    other = node.inputs[1] if node.inputs[0] is data else node.inputs[0]
    return None if other is data else constant(other)


def _bypass(graph: ir.Graph, consumer: ir.Node, produced: ir.Value) -> None:
    """Remove ``consumer`` (whose effect has been folded): its readers read ``produced`` instead,
    which also takes its name (and its place among the graph outputs)."""
    out = consumer.outputs[0]
    for i, graph_output in enumerate(graph.outputs):
        if graph_output is out:
            graph.outputs[i] = produced
            produced.type, produced.shape = out.type, out.shape
    ir.convenience.replace_all_uses_with(out, produced)
    name = out.name
    graph.remove(consumer, safe=True)
    produced.name = name


# ------------------------------------------------------------------ folding into Conv/Gemm/MatMul

_LAYOUT = {  # op -> (channel axis of output, output-channel axis of weight)
    "Conv": (1, 0),
    "Gemm": (-1, 1),
    "MatMul": (-1, 1),
}


def _output_rank(node: ir.Node, weight: np.ndarray) -> int | None:
    if node.op_type == "Conv":
        return weight.ndim
    if node.op_type == "Gemm":
        return 2
    shape = node.outputs[0].shape
    return None if shape is None else len(shape)


def _fold_one(graph: ir.Graph, node: ir.Node) -> bool:
    if node.op_type not in _LAYOUT or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Gemm" and (node.attributes.get_int("transB", 0) or
                                   node.attributes.get_float("alpha", 1.0) != 1.0):
        return False
    weight = constant(node.inputs[1])
    has_bias_slot = node.op_type != "MatMul"
    bias = constant(node.inputs[2]) if len(node.inputs) > 2 else None
    if weight is None or (len(node.inputs) > 2 and node.inputs[2] is not None and bias is None):
        return False
    if node.op_type == "MatMul" and weight.ndim != 2:
        return False
    out_axis, w_axis = _LAYOUT[node.op_type]
    channels = weight.shape[w_axis]
    rank = _output_rank(node, weight)
    consumer = sole_consumer(node.outputs[0])
    if rank is None or consumer is None or consumer.op_type not in ("Mul", "Add"):
        return False
    if consumer.op_type == "Add" and not has_bias_slot:
        return False  # MatMul -> Add is the Dense bias; it stays (ORT fuses it, or it becomes a Gemm)
    operand = _constant_operand(consumer, node.outputs[0])
    vec = None if operand is None else _per_channel(operand, rank, out_axis % rank, channels)
    if vec is None:
        return False
    dtype = weight.dtype
    b = np.zeros(channels) if bias is None else bias.astype(np.float64)
    if consumer.op_type == "Mul":
        shape = [1] * weight.ndim
        shape[w_axis] = channels
        scaled = weight.astype(np.float64) * vec.reshape(shape)
        node.replace_input_with(1, new_initializer(graph, node.inputs[1].name, scaled.astype(dtype),
                                                   node.inputs[1]))
        b = b * vec
    else:
        b = b + vec
    if has_bias_slot and (bias is not None or consumer.op_type == "Add"):
        if len(node.inputs) < 3:
            node.resize_inputs(3)
        node.replace_input_with(2, new_initializer(graph, node.name + "/bias", b.astype(dtype), node.inputs[1]))
    _bypass(graph, consumer, node.outputs[0])
    return True


# ------------------------------------------------------------------ constant Add/Mul chains

def _combined(first: np.ndarray, second: np.ndarray, op_type: str, rank: int) -> np.ndarray | None:
    """``first`` and ``second`` merged into one operand when that cannot change the output shape."""
    if max(first.ndim, second.ndim) > rank:
        return None
    result = first + second if op_type == "Add" else first * second
    return result if result.shape in (first.shape, second.shape) else None


def _normalise_pair(graph: ir.Graph, node: ir.Node) -> bool:
    """``(x + a) + b -> x + (a + b)``, ``(x * a) * b -> x * (a * b)``, ``(x + a) * s -> x * s + a * s``."""
    if node.op_type not in ("Add", "Mul") or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    data = node.inputs[0] if constant(node.inputs[1]) is not None else node.inputs[1]
    first = _constant_operand(node, data)
    consumer = sole_consumer(node.outputs[0])
    if first is None or constant(data) is not None or consumer is None or data.shape is None:
        return False
    second = _constant_operand(consumer, node.outputs[0])
    if second is None or consumer.op_type not in ("Add", "Mul") or consumer.domain not in ("", "ai.onnx"):
        return False
    rank = len(data.shape)
    dtype = first.dtype
    if dtype.kind != "f" or second.dtype != dtype:
        return False  # integer arithmetic: leave it as written
    if consumer.op_type == node.op_type:
        merged = _combined(first.astype(np.float64), second.astype(np.float64), node.op_type, rank)
        if merged is None:
            return False
        _set_constant(graph, node, data, merged.astype(dtype))
        _bypass(graph, consumer, node.outputs[0])
        return True
    if node.op_type == "Mul":
        return False  # (x * s) + a is already the normal form
    shifted = _combined(first.astype(np.float64), second.astype(np.float64), "Mul", rank)
    if shifted is None or second.shape != np.broadcast_shapes(second.shape, first.shape):
        return False
    # x + a -> (.) * s  becomes  x * s -> (.) + a * s: swap the two nodes' roles.
    _set_constant(graph, node, data, second.astype(dtype), op_type="Mul")
    _set_constant(graph, consumer, node.outputs[0], shifted.astype(dtype), op_type="Add")
    return True


def _set_constant(graph: ir.Graph, node: ir.Node, data: ir.Value, array: np.ndarray, op_type=None) -> None:
    index = 1 if node.inputs[0] is data else 0
    node.replace_input_with(index, new_initializer(graph, node.inputs[index].name, array, node.inputs[index]))
    if op_type is not None:
        node.op_type = op_type


def fold_affine_into_linear(model: ir.Model) -> int:
    """Repeat until nothing folds; returns the number of rewrites."""
    count = 0
    changed = True
    while changed:
        changed = False
        for node in list(model.graph):
            if node.graph is model.graph and (_fold_one(model.graph, node) or _normalise_pair(model.graph, node)):
                count += 1
                changed = True
    return count
