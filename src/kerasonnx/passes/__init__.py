"""Graph clean-up passes run on every converted model (onnx_ir's own passes where they fit)."""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common

from .fold_affine import fold_affine_into_linear
from .fold_pad import fold_pad_into_conv


def run_default_passes(model: ir.Model) -> ir.Model:
    fold_affine_into_linear(model)
    fold_pad_into_conv(model)
    common.RemoveUnusedNodesPass()(model)
    common.DeduplicateInitializersPass()(model)
    return model
