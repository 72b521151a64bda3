"""Transpose push-down and cancellation, and folding a Transpose before Flatten into the weights of
the following Gemm/MatMul.

- ``Transpose -> elementwise ops (constant operands) -> Transpose``: the first Transpose is pushed
  through the elementwise chain (constants are permuted instead) until it meets the second; the two
  merge into one Transpose, or none when they cancel (a Permute layer feeding a Rescaling and a Conv,
  an NCHW model input...). A Transpose is only moved when it cancels or merges that way, so no
  graph gets more Transposes than it had.
- ``Transpose -> Flatten -> Gemm/MatMul`` with constant weights (a CNN classifier's ``Flatten`` on
  channels-first activations): the rows of the weight matrix are permuted instead, and the
  Transpose disappears.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .fold_affine import constant, new_initializer, sole_consumer

# Ops that act elementwise on their data input, so that f(transpose(x)) == transpose(f(x)).
UNARY = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
         "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt",
         "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Not", "Identity", "Cast", "Clip",
         "ThresholdedRelu", "Sin", "Cos"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "And", "Or", "Xor", "Equal", "Less",
          "Greater", "LessOrEqual", "GreaterOrEqual", "Where"}


def _is_default_domain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _perm(node: ir.Node) -> list[int] | None:
    if node.op_type != "Transpose" or not _is_default_domain(node):
        return None
    perm = node.attributes.get_ints("perm", None)
    return None if perm is None else list(perm)


def _inverse(perm: list[int]) -> list[int]:
    return [perm.index(axis) for axis in range(len(perm))]


def _elementwise_step(node: ir.Node, data: ir.Value, rank: int) -> bool:
    """``node`` is elementwise in ``data`` and every other input is a constant of rank <= ``rank``
    (Clip's scalar bounds, a per-channel scale...)."""
    if not _is_default_domain(node) or node.op_type not in UNARY | BINARY:
        return False
    if node.op_type in UNARY and node.op_type not in ("Clip", "PRelu") and len(node.inputs) != 1:
        return False
    others = [v for v in node.inputs if v is not data]
    if [v for v in node.inputs if v is data] != [data]:
        return False
    return all(v is None or (constant(v) is not None and constant(v).ndim <= rank) for v in others)


def _chain_to_transpose(first: ir.Node) -> tuple[list[ir.Node], ir.Node] | None:
    """The elementwise nodes after Transpose ``first`` up to the Transpose they lead to."""
    rank = len(_perm(first))
    chain: list[ir.Node] = []
    value = first.outputs[0]
    while True:
        node = sole_consumer(value)
        if node is None:
            return None
        if _perm(node) is not None:
            return chain, node
        if not _elementwise_step(node, value, rank) or len(node.outputs) != 1:
            return None
        chain.append(node)
        value = node.outputs[0]


def _permute_constant(graph: ir.Graph, node: ir.Node, index: int, inverse: list[int]) -> None:
    array = constant(node.inputs[index])
    if array.ndim == 0:
        return
    rank = len(inverse)
    full = array.reshape((1,) * (rank - array.ndim) + array.shape)
    moved = np.ascontiguousarray(np.transpose(full, inverse))
    if moved.shape != full.shape or not np.array_equal(moved, full):
        node.replace_input_with(index, new_initializer(graph, node.inputs[index].name, moved,
                                                       node.inputs[index]))


def _push_through(graph: ir.Graph, first: ir.Node) -> bool:
    found = _chain_to_transpose(first)
    if found is None:
        return False
    chain, last = found
    perm = _perm(first)
    inverse = _inverse(perm)
    source = first.inputs[0]
    previous = first.outputs[0]
    for node in chain:
        for index, value in enumerate(node.inputs):
            if value is previous:
                node.replace_input_with(index, source)
            elif value is not None and constant(value) is not None:
                _permute_constant(graph, node, index, inverse)
        out = node.outputs[0]
        if out.shape is not None:
            out.shape = ir.Shape([out.shape[i] for i in inverse])
        previous, source = out, out
    last.replace_input_with(0, source)
    last.attributes["perm"] = ir.AttrInt64s("perm", [perm[p] for p in _perm(last)])
    graph.remove(first, safe=True)
    return True


def push_transposes_down(model: ir.Model) -> int:
    """Merge each Transpose with the next one across elementwise ops; returns how many merged."""
    count = 0
    for node in list(model.graph):
        if node.graph is model.graph and _perm(node) is not None and _push_through(model.graph, node):
            count += 1
    return count


# ------------------------------------------------------------------ Transpose -> Flatten -> Gemm

def _flatten_weight_fold(graph: ir.Graph, transpose: ir.Node) -> bool:
    perm = _perm(transpose)
    source = transpose.inputs[0]
    flatten = sole_consumer(transpose.outputs[0])
    if (perm is None or perm[0] != 0 or flatten is None or flatten.op_type != "Flatten"
            or flatten.attributes.get_int("axis", 1) != 1 or source.shape is None):
        return False
    dims = list(source.shape)[1:]
    if not all(isinstance(d, int) for d in dims):
        return False
    linear = sole_consumer(flatten.outputs[0])
    if linear is None or linear.op_type not in ("Gemm", "MatMul") or linear.inputs[0] is not flatten.outputs[0]:
        return False
    if linear.op_type == "Gemm" and linear.attributes.get_int("transA", 0):
        return False
    weight = constant(linear.inputs[1])
    trans_b = linear.op_type == "Gemm" and linear.attributes.get_int("transB", 0)
    if weight is None or weight.ndim != 2:
        return False
    # Row r of the weight multiplies flattened element r of the transposed tensor; find, for each
    # element of the untransposed tensor, the row it used to meet.
    rows = np.arange(int(np.prod(dims))).reshape([dims[p - 1] for p in perm[1:]])
    order = np.transpose(rows, _inverse([p - 1 for p in perm[1:]])).reshape(-1)
    permuted = weight[:, order] if trans_b else weight[order, :]
    linear.replace_input_with(1, new_initializer(graph, linear.inputs[1].name, np.ascontiguousarray(permuted),
                                                 linear.inputs[1]))
    flatten.replace_input_with(0, source)
    graph.remove(transpose, safe=True)
    return True


def fold_transpose_into_flatten_weights(model: ir.Model) -> int:
    return sum(_flatten_weight_fold(model.graph, node) for node in list(model.graph)
               if node.graph is model.graph and _perm(node) is not None)
