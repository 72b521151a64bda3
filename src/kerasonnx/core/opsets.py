"""Which ONNX opsets can be targeted, and the IR version each needs."""

from __future__ import annotations

import functools
import logging

import onnx
import onnx.helper

from .errors import InvalidInputError

MIN_OPSET = 13
logger = logging.getLogger(__name__)


def _ort_accepts(opset: int) -> bool:
    import onnxruntime as ort

    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Identity", ["x"], ["y"])],
        "probe",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = ir_version_for(opset)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own Fail type for an unknown opset
        return False
    return True


@functools.lru_cache(maxsize=None)
def max_supported_opset() -> int:
    """Newest opset that both the installed onnx and onnxruntime support."""
    newest = onnx.defs.onnx_opset_version()
    for opset in range(newest, MIN_OPSET - 1, -1):
        if _ort_accepts(opset):
            return opset
    return MIN_OPSET


def ir_version_for(opset: int) -> int:
    return onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])


def resolve_opset(opset: int | None) -> int:
    newest = max_supported_opset()
    if opset is None:
        return newest
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise InvalidInputError(
            f"opset {opset!r} is not supported: choose an integer from {MIN_OPSET} to {newest} "
            "(the newest that both the installed onnx and onnxruntime support)"
        )
    return opset
