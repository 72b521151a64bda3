"""Merging layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot."""

from __future__ import annotations

import string

import keras
from keras import layers

from ..core.layout import Layout
from ..core.registry import Case
from . import BUILTIN
from .layers_normalization import as_dtype, l2_normalize

register = BUILTIN.register


# ---- elementwise merges -----------------------------------------------------------------------
def _same_rank(ctx, inputs):
    """The inputs in the output dtype, lower-rank ones expanded at axis 1 like ``Merge.call`` does.

    Keras only accepts inputs whose non-batch shapes broadcast right-aligned, so after the expansion
    ONNX broadcasting gives Keras' result. (Inputs of different ranks arrive in Keras' layout.)
    """
    ranks = [len(ctx.in_shape(i)) for i in range(len(inputs))]
    top = max(ranks)
    out = []
    for i, (x, rank) in enumerate(zip(inputs, ranks)):
        x = as_dtype(ctx, x, i)
        if rank < top:
            x = ctx.op("Unsqueeze", [x, ctx.int64s(list(range(1, 1 + top - rank)))])
        out.append(x)
    return out


def _fold(ctx, op_type, inputs):
    """``((x0 op x1) op x2) ...`` in input order, as Keras computes it."""
    y = inputs[0]
    for x in inputs[1:]:
        y = ctx.op(op_type, [y, x])
    return y


def _elementwise(op_type):
    def convert(ctx, op, *inputs):
        return _fold(ctx, op_type, _same_rank(ctx, inputs))

    convert.__name__ = f"merge_{op_type.lower()}"
    return convert


def _two_convs(layer_cls):
    """A case build merging two Conv2D outputs (both stored channels-first)."""
    return lambda x: layer_cls()([layers.Conv2D(4, 3)(x), layers.Conv2D(4, 3)(x)])


def _merge_cases(name, layer_cls, two_only=False):
    cases = [
        Case(f"{name}_two", lambda: layer_cls(), ((3, 4), (3, 4))),
        Case(f"{name}_broadcast_dim", lambda: layer_cls(), ((3, 4), (1, 4))),
        Case(f"{name}_rank_mismatch", lambda: layer_cls(), ((4,), (3, 4))),
        Case(f"{name}_cf", lambda: _two_convs(layer_cls), ((5, 5, 3),)),
    ]
    if not two_only:
        cases += [
            Case(f"{name}_three", lambda: layer_cls(), ((5,), (5,), (5,))),
            Case(f"{name}_three_ranks", lambda: layer_cls(), ((2, 3, 4), (4,), (3, 4))),
        ]
    return cases


_ADD_EXTRA_CASES = [
    Case("merge_add_mixed_dtypes", lambda: layers.Add(), ((3,), (3,)), dtypes=("float16", "float32")),
    # a channels-first stored tensor and a lower-rank one: both are handed over in Keras' layout
    Case("merge_add_cf_rank_mismatch", lambda: (lambda x, y: layers.Add()([layers.Conv2D(4, 3)(x), y])),
         ((5, 5, 3), (4,))),
]


_ELEMENTWISE = {  # Keras layer -> (ONNX op, case name prefix)
    layers.Add: ("Add", "merge_add"),
    layers.Subtract: ("Sub", "merge_subtract"),
    layers.Multiply: ("Mul", "merge_multiply"),
    layers.Maximum: ("Max", "merge_maximum"),
    layers.Minimum: ("Min", "merge_minimum"),
}

for _cls, (_onnx_op, _name) in _ELEMENTWISE.items():
    _cases = _merge_cases(_name, _cls, two_only=_cls is layers.Subtract)
    register(_cls, layout=Layout.ANY, cases=_cases + (_ADD_EXTRA_CASES if _cls is layers.Add else []))(
        _elementwise(_onnx_op))


@register(layers.Average, layout=Layout.ANY, cases=_merge_cases("merge_average", layers.Average))
def average(ctx, op, *inputs):
    total = _fold(ctx, "Add", _same_rank(ctx, inputs))
    return ctx.op("Div", [total, ctx.scalar(len(inputs))])


# ---- Concatenate ------------------------------------------------------------------------------
@register(layers.Concatenate, layout=Layout.ANY, cases=[
    Case("concatenate", lambda: layers.Concatenate(), ((3,), (5,))),
    Case("concatenate_axis1", lambda: layers.Concatenate(axis=1), ((2, 4), (3, 4), (1, 4))),
    Case("concatenate_rank4", lambda: layers.Concatenate(), ((2, 2, 3), (2, 2, 1))),
    Case("concatenate_cf", lambda: _two_convs(layers.Concatenate), ((5, 5, 3),)),
    Case("concatenate_cf_axis1", lambda: _two_convs(lambda: layers.Concatenate(axis=1)), ((5, 5, 3),)),
    Case("concatenate_cf_with_input", lambda: (lambda x, y: layers.Concatenate()([layers.Conv2D(4, 3)(x), y])),
         ((5, 5, 3), (3, 3, 2))),
    Case("concatenate_dynamic", lambda: layers.Concatenate(axis=1), ((None, 3), (None, 3))),
    Case("concatenate_float64", lambda: layers.Concatenate(dtype="float64"), ((3,), (2,)),
         dtypes=("float64", "float64")),
])
def concatenate(ctx, op, *inputs):
    values = [as_dtype(ctx, x, i) for i, x in enumerate(inputs)]
    return ctx.op("Concat", values, {"axis": ctx.axis(op.axis)})


# ---- Dot --------------------------------------------------------------------------------------
def _dot_axes(axes, ranks) -> list[int]:
    """``Dot.axes`` (int or pair, negatives allowed) as one non-negative axis per input."""
    pair = [axes, axes] if isinstance(axes, int) else list(axes)
    return [a % rank for a, rank in zip(pair, ranks)]


def _batch_dot_equation(ranks, axes) -> str:
    """Einsum equation of Keras' ``batch_dot``: contract ``axes``, keep batch, x's dims then y's."""
    letters = iter(string.ascii_lowercase[2:])
    x = ["a"] + [next(letters) for _ in range(ranks[0] - 1)]
    y = ["a"] + [next(letters) for _ in range(ranks[1] - 1)]
    x[axes[0]] = y[axes[1]] = "b"
    out = [c for c in x if c != "b"] + [c for c in y[1:] if c != "b"]
    return f"{''.join(x)},{''.join(y)}->{''.join(out)}"


@register(layers.Dot, cases=[
    Case("dot_vectors", lambda: layers.Dot(axes=1), ((4,), (4,))),
    Case("dot_normalize", lambda: layers.Dot(axes=-1, normalize=True), ((4,), (4,))),
    Case("dot_matrix_pair", lambda: layers.Dot(axes=(1, 2)), ((3, 5), (2, 3))),
    Case("dot_matrix_neg", lambda: layers.Dot(axes=-1), ((3, 4), (2, 4))),
    Case("dot_mixed_rank", lambda: layers.Dot(axes=(1, 2)), ((4,), (3, 4))),
    Case("dot_rank4_normalize", lambda: layers.Dot(axes=(2, 1), normalize=True), ((2, 3, 2), (3, 4))),
    Case("dot_float64", lambda: layers.Dot(axes=1, dtype="float64"), ((3, 2), (3, 4)),
         dtypes=("float64", "float64")),
])
def dot(ctx, op, x, y):
    ranks = [len(ctx.in_shape(0)), len(ctx.in_shape(1))]
    axes = _dot_axes(op.axes, ranks)
    x, y = as_dtype(ctx, x, 0), as_dtype(ctx, y, 1)
    if op.normalize:
        epsilon = keras.config.epsilon()
        x, y = l2_normalize(ctx, x, [axes[0]], epsilon), l2_normalize(ctx, y, [axes[1]], epsilon)
    z = ctx.op("Einsum", [x, y], {"equation": _batch_dot_equation(ranks, axes)})
    if sum(ranks) - 3 == 1:  # only the batch dim is left: Keras returns (batch, 1)
        z = ctx.op("Unsqueeze", [z, ctx.int64s([1])])
    return z
