"""``keras.ops.linalg`` operations (``keras.src.ops.linalg``): ``norm`` and ``det``.

``norm`` covers every vector norm (``ord`` None/2, 1, inf, -inf, 0 and any other number) and the
matrix norms ONNX can express without a decomposition ("fro", 1, -1, inf, -inf); the spectral
norms (ord 2 / -2) and the nuclear norm need singular values and are refused. ``det`` is ONNX
``Det``.

Not converted (reported as unsupported): the decompositions and solvers (``cholesky``,
``cholesky_inverse``, ``eig``, ``eigh``, ``inv``, ``lstsq``, ``lu_factor``, ``matrix_rank``,
``pinv``, ``qr``, ``svd``, ``solve``, ``solve_triangular``): ONNX has no op for them and an
iterative form would not match LAPACK's results faithfully; ``jvp`` is a differentiation
transform, not an inference op.
"""

from __future__ import annotations

import math

import keras

from ..core.registry import Case
from ..core.walker import ops_classes
from . import BUILTIN
from .ops_core import in_layer, refuse_ops
from .ops_numpy import cast_free, operand, reduce, squeeze, to_bool

register = BUILTIN.register


def _vector_norm(ctx, x, ord, axes, keepdims):
    """``np.linalg.norm`` of vectors along ``axes`` (one axis, or all axes flattened)."""
    if ord is None or ord == 2:
        return reduce(ctx, "ReduceL2", x, axes, keepdims)
    if ord == 1:
        return reduce(ctx, "ReduceL1", x, axes, keepdims)
    if ord == math.inf:
        return reduce(ctx, "ReduceMax", ctx.op("Abs", [x]), axes, keepdims)
    if ord == -math.inf:
        return reduce(ctx, "ReduceMin", ctx.op("Abs", [x]), axes, keepdims)
    if ord == 0:
        nonzero = operand(ctx, cast_free(to_bool(ctx, x), "bool"), ctx.out_dtype())
        return reduce(ctx, "ReduceSum", nonzero, axes, keepdims)
    power = ctx.scalar(float(ord))
    summed = reduce(ctx, "ReduceSum", ctx.op("Pow", [ctx.op("Abs", [x]), power]), axes, keepdims)
    return ctx.op("Pow", [summed, ctx.scalar(1.0 / float(ord))])


# ord -> (axis summed first: 0 = rows, 1 = columns; reduction over the other axis)
_MATRIX_NORMS = {1: (0, "ReduceMax"), -1: (0, "ReduceMin"), math.inf: (1, "ReduceMax"),
                 -math.inf: (1, "ReduceMin")}


def _matrix_norm(ctx, x, ord, axes, keepdims):
    """``np.linalg.norm`` of matrices spanning ``axes`` (rows axis, columns axis)."""
    if ord in (None, "fro"):
        return reduce(ctx, "ReduceL2", x, sorted(axes), keepdims)
    if ord not in _MATRIX_NORMS:
        raise ctx.unsupported(f"matrix norm ord={ord!r} needs singular values (no ONNX op)")
    summed_axis, combine = _MATRIX_NORMS[ord]
    sums = reduce(ctx, "ReduceSum", ctx.op("Abs", [x]), [axes[summed_axis]], True)
    y = reduce(ctx, combine, sums, [axes[1 - summed_axis]], True)
    return y if keepdims else squeeze(ctx, y, sorted(axes))


# Keras' Norm operation turns an int ``axis`` into a list, which its own numpy backend then rejects
# when the op runs as a graph node: the cases call norm inside a layer, as real models do.
@register(*ops_classes("linalg", "Norm"), cases=[
    Case("ops_linalg_norm", lambda: (lambda x: keras.ops.norm(x)), ((3, 4),)),
    Case("ops_linalg_norm_axis_keepdims", in_layer(lambda x: keras.ops.norm(x, axis=-1, keepdims=True)),
         ((None, 4),)),
    Case("ops_linalg_norm_vector_orders", in_layer(lambda x: keras.ops.stack(
        [keras.ops.norm(x, ord=o, axis=1) for o in (1, 2, math.inf, -math.inf, 0, 3, 0.5)], axis=-1)),
         ((5, 3),)),
    Case("ops_linalg_norm_matrix_orders", lambda: (lambda x: keras.ops.stack(
        [keras.ops.norm(x, ord=o, axis=(1, 2)) for o in ("fro", 1, -1, math.inf, -math.inf)], axis=-1)),
         ((3, 4, 2),)),
    Case("ops_linalg_norm_matrix_keepdims", lambda: (lambda x: keras.ops.norm(x, ord=1, axis=(2, 1),
                                                                               keepdims=True)), ((3, 4),)),
    Case("ops_linalg_norm_vector_none_axis", lambda: (lambda x: keras.ops.norm(x[0], ord=math.inf)), ((6,),)),
    Case("ops_linalg_norm_int", in_layer(lambda x: keras.ops.norm(x, axis=-1)), ((4,),), dtypes=("int32",)),
])
def norm(ctx, op, x):
    rank, ord = len(ctx.in_shape()), op.ord
    x = operand(ctx, x, ctx.out_dtype())
    if op.axis is None:
        if ord is None:  # numpy: the 2-norm of the flattened tensor, whatever its rank
            return reduce(ctx, "ReduceL2", x, list(range(rank)), op.keepdims)
        axes = list(range(rank))
    else:
        axes = [int(a) % rank for a in op.axis]
    if len(axes) == 1:
        return _vector_norm(ctx, x, ord, axes, op.keepdims)
    if len(axes) == 2:
        return _matrix_norm(ctx, x, ord, axes, op.keepdims)
    raise ctx.unsupported(f"norm over {len(axes)} axes with ord={ord!r}")


@register(*ops_classes("linalg", "Det"), cases=[
    Case("ops_linalg_det", lambda: (lambda x: keras.ops.det(keras.ops.reshape(x, (-1, 3, 3)))), ((9,),)),
    Case("ops_linalg_det_batched", lambda: (lambda x: keras.ops.det(x)), ((2, 4, 4),)),
])
def det(ctx, op, x):
    return ctx.op("Det", [operand(ctx, x, ctx.out_dtype())])


refuse_ops("linalg", "Cholesky", "CholeskyInverse", "Eig", "Eigh", "Inv", "Lstsq", "LuFactor", "MatrixRank", "Pinv",
           "Qr", "SVD", "Solve", "SolveTriangular",
           reason="a matrix decomposition or solver: ONNX has no operator for it; compute it outside the model, "
                  "or register a converter")
refuse_ops("linalg", "JVP", reason="a differentiation transform, not an inference op")
