"""Fold a zero ``Pad`` of the spatial dims (ZeroPadding2D before a 'valid' convolution, as in
ResNet and MobileNet) into the following ``Conv``'s ``pads``."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def _const(value) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _spatial_zero_pads(pad: ir.Node) -> list[int] | None:
    """The Pad's spatial pads ``[begins..., ends...]`` if it pads only spatial dims with zeros."""
    if pad.attributes.get_string("mode", "constant") != "constant" or len(pad.inputs) < 2:
        return None
    pads = _const(pad.inputs[1])
    if pads is None or (len(pad.inputs) > 3 and pad.inputs[3] is not None):  # axes input
        return None
    if len(pad.inputs) > 2 and pad.inputs[2] is not None:
        value = _const(pad.inputs[2])
        if value is None or np.any(value != 0):
            return None
    rank = len(pads) // 2
    begins, ends = list(pads[:rank]), list(pads[rank:])
    if begins[:2] != [0, 0] or ends[:2] != [0, 0] or min(pads) < 0:
        return None
    return [int(p) for p in begins[2:] + ends[2:]]


def _fold_one(graph: ir.Graph, pad: ir.Node) -> bool:
    if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
        return False
    out = pad.outputs[0]
    uses = list(out.uses())
    if out.is_graph_output() or len(uses) != 1:
        return False
    conv, index = uses[0].node, uses[0].idx
    if conv.op_type != "Conv" or index != 0 or conv.attributes.get_string("auto_pad", "NOTSET") != "NOTSET":
        return False
    extra = _spatial_zero_pads(pad)
    if extra is None:
        return False
    current = conv.attributes.get_ints("pads", [0] * len(extra))
    conv.attributes["pads"] = ir.AttrInt64s("pads", [a + b for a, b in zip(current, extra)])
    conv.replace_input_with(0, pad.inputs[0])
    graph.remove(pad, safe=True)
    return True


def fold_pad_into_conv(model: ir.Model) -> int:
    return sum(_fold_one(model.graph, node) for node in list(model.graph))
