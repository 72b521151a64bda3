"""Graph optimisation passes run on every converted model (``optimize=True``).

onnxscript's constant folding and rewrite rules and onnx-ir's common passes where they fit; our own
passes where they do not (see docs/optimization.md). Every pass is deterministic: the same model
converts to byte-identical files, in one process or in two.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common

from . import library
from .fold_affine import fold_affine_into_linear
from .fold_pad import fold_pad_into_conv
from .transpose import fold_transpose_into_flatten_weights, push_transposes_down


class _Counted(ir.passes.InPlacePass):
    """One of our passes (a function returning how many rewrites it made) as an onnx-ir pass."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, self.function(model) > 0)


def default_passes() -> ir.passes.Sequential:
    rewrites = ir.passes.PassManager([
        library.FoldConstants(),
        _Counted(fold_affine_into_linear),
        _Counted(fold_pad_into_conv),
        _Counted(push_transposes_down),
        _Counted(fold_transpose_into_flatten_weights),
        library.rewrite_pass(),
        common.RemoveUnusedNodesPass(),
    ], steps=3, early_stop=True)
    return ir.passes.Sequential(
        # Our converters leave intermediate shapes to be inferred; rewrites that depend on ranks or
        # static dims (MatMul folding, Transpose before Flatten, MatMul+Add -> Gemm) need them.
        common.ShapeInferencePass(strict_mode=False),
        rewrites,
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
        common.DeduplicateInitializersPass(),
        common.RemoveUnusedOpsetsPass(),
        library.StripOptimizerMetadata(),
    )


def run_default_passes(model: ir.Model) -> ir.Model:
    default_passes()(model)
    return model
