"""The parts of onnxscript's optimizer kerasonnx uses: constant folding and a chosen set of its
rewrite rules (see docs/optimization.md for why these and not ``onnxscript.optimizer.optimize``)."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript import optimizer, rewriter
from onnxscript.rewriter.rules import common as rules

# The rules that find something in converted Keras graphs. The rest of onnxscript's default set
# (ScatterND, ConstantOfShape, Expand, BatchNormalization...) never matches what kerasonnx emits
# and only costs matching time: 90 % of optimize()'s time is spent trying rules.
REWRITE_RULES = (
    rules.no_op_cast_rule, rules.cast_cast_rule,
    rules.no_op_transpose_rule, rules.transpose_transpose_rule,
    rules.flatten_to_reshape_rule, rules.reshape_reshape_rule,
    rules.unsqueeze_unsqueeze_rule, rules.squeeze_reshape_1d_rule,
    rules.collapse_slice_rule, rules.collapse_slice2_rule,
    rules.add_0_rule, rules.sub_0_rule, rules.mul_by_1_rule, rules.div_by_1_rule,
    rules.successive_relu_rule, rules.successive_clip_rule, rules.successive_clip_relu_rule,
    rules.successive_relu_clip_rule,
    rules.matmul_add_to_gemm_rule,
)

_METADATA_PREFIX = "pkg.onnxscript."  # provenance tags the optimizer leaves on nodes and values


class FoldConstants(ir.passes.InPlacePass):
    """onnxscript's constant folding (without ONNX shape inference: our values carry Keras' shapes)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = optimizer.fold_constants(model, onnx_shape_inference=False)
        return ir.passes.PassResult(model, bool(result.modified))


def rewrite_pass() -> ir.passes.InPlacePass:
    return rewriter.RewritePass(rewriter.RewriteRuleSet(list(REWRITE_RULES)))


class StripOptimizerMetadata(ir.passes.InPlacePass):
    """Drop onnxscript's ``pkg.onnxscript.*`` provenance entries from ``metadata_props``."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            for item in (node, *node.outputs):
                for key in [k for k in item.metadata_props if k.startswith(_METADATA_PREFIX)]:
                    del item.metadata_props[key]
                    modified = True
        return ir.passes.PassResult(model, modified)
