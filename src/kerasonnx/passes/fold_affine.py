"""Fold per-channel ``Mul``/``Add`` by constants (inference BatchNormalization, Rescaling after a
convolution...) into the preceding ``Conv`` / ``ConvTranspose`` / ``Gemm`` weights and bias."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _sole_consumer(value: ir.Value, graph: ir.Graph) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def _per_channel(arr: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``arr`` as a length-``channels`` vector if it only varies along ``axis`` of a rank-``rank`` tensor."""
    if arr.ndim > rank:
        return None
    full = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis) or full.shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float64)


_LAYOUT = {  # op -> (channel axis of output, output-channel axis of weight)
    "Conv": (1, 0),
    "Gemm": (-1, 1),
}


def _fold_one(graph: ir.Graph, node: ir.Node) -> bool:
    if node.op_type not in _LAYOUT or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Gemm" and (node.attributes.get_int("transB", 0) or
                                   node.attributes.get_float("alpha", 1.0) != 1.0):
        return False
    weight = _const(node.inputs[1])
    bias = _const(node.inputs[2]) if len(node.inputs) > 2 else None
    if weight is None or (len(node.inputs) > 2 and node.inputs[2] is not None and bias is None):
        return False
    out_axis, w_axis = _LAYOUT[node.op_type]
    channels = weight.shape[w_axis]
    rank = 2 if node.op_type == "Gemm" else weight.ndim
    axis = out_axis % rank
    consumer = _sole_consumer(node.outputs[0], graph)
    if consumer is None or consumer.op_type not in ("Mul", "Add") or len(consumer.inputs) != 2:
        return False
    other = consumer.inputs[1] if consumer.inputs[0] is node.outputs[0] else consumer.inputs[0]
    vec = _per_channel(_const(other), rank, axis, channels) if _const(other) is not None else None
    if vec is None:
        return False
    b = np.zeros(channels) if bias is None else bias.astype(np.float64)
    if consumer.op_type == "Mul":
        shape = [1] * weight.ndim
        shape[w_axis] = channels
        weight = weight.astype(np.float64) * vec.reshape(shape)
        b = b * vec
    else:
        b = b + vec
    dtype = node.inputs[1].const_value.numpy().dtype
    if consumer.op_type == "Mul":
        node.replace_input_with(1, _initializer(graph, node.inputs[1].name, weight.astype(dtype), node.inputs[1]))
    new_b = _initializer(graph, node.name + "/bias", b.astype(dtype), node.inputs[1])
    if len(node.inputs) < 3:
        node.resize_inputs(3)
    node.replace_input_with(2, new_b)
    out = consumer.outputs[0]
    produced = node.outputs[0]
    for i, graph_output in enumerate(graph.outputs):
        if graph_output is out:
            graph.outputs[i] = produced
            produced.type, produced.shape = out.type, out.shape
    ir.convenience.replace_all_uses_with(out, produced)
    name = out.name
    graph.remove(consumer, safe=True)
    produced.name = name
    return True


def _initializer(graph: ir.Graph, base: str, array: np.ndarray, like: ir.Value) -> ir.Value:
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


def fold_affine_into_linear(model: ir.Model) -> int:
    """Repeat until nothing folds; returns the number of folds."""
    count = 0
    changed = True
    while changed:
        changed = False
        for node in list(model.graph):
            if node.graph is model.graph and _fold_one(model.graph, node):
                count += 1
                changed = True
    return count
