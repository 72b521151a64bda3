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
    new_w = ir.Value(name=node.inputs[1].name + "_folded", const_value=ir.tensor(weight.astype(dtype)),
                     type=node.inputs[1].type, shape=ir.Shape(weight.shape))
    new_b = ir.Value(name=(node.inputs[2].name if bias is not None else node.name + "/bias") + "_folded",
                     const_value=ir.tensor(b.astype(dtype)), type=node.inputs[1].type, shape=ir.Shape(b.shape))
    for v in (new_w, new_b):
        v.const_value.name = v.name
        graph.register_initializer(v)
    node.replace_input_with(1, new_w)
    if len(node.inputs) > 2:
        node.replace_input_with(2, new_b)
    else:
        node.resize_inputs(3)
        node.replace_input_with(2, new_b)
    out = consumer.outputs[0]
    produced = node.outputs[0]
    for i, graph_output in enumerate(graph.outputs):
        if graph_output is out:
            graph.outputs[i] = produced
    ir.convenience.replace_all_uses_with(out, produced)
    name = out.name
    graph.remove(consumer, safe=True)
    produced.name = name
    return True


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
