"""onnxruntime sessions and array comparison shared by output checks and layer-by-layer checks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import VerificationError


def open_session(onnx_model):
    """An onnxruntime CPU session for a ModelProto, an ``onnx_ir.Model`` or a file path."""
    import onnx_ir as ir
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if _over_protobuf_limit(onnx_model):  # cannot be serialised in one piece: load it from files
        from ..api import save

        with tempfile.TemporaryDirectory(prefix="kerasonnx-verify-") as tmp:
            return open_session(save(onnx_model, Path(tmp) / "model.onnx", external_data=True))
    if isinstance(onnx_model, ir.Model):
        onnx_model = ir.to_proto(onnx_model)
    source = str(onnx_model) if not hasattr(onnx_model, "SerializeToString") else onnx_model.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise VerificationError(f"onnxruntime cannot load the model: {_one_line(exc)}") from exc


def _over_protobuf_limit(onnx_model) -> bool:
    """A model (ModelProto or onnx_ir.Model) too big for one protobuf (2 GB, less a margin)."""
    import onnx_ir as ir

    limit = 2**31 - 64 * 2**20
    if isinstance(onnx_model, ir.Model):
        return sum(v.const_value.nbytes for g in onnx_model.graphs() for v in g.initializers.values()
                   if v.const_value is not None) > limit
    return hasattr(onnx_model, "ByteSize") and onnx_model.ByteSize() > limit


def run_session(session, output_names: list[str], arrays: list[np.ndarray]) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    try:
        return [np.asarray(a) for a in session.run(output_names, dict(zip(names, arrays)))]
    except Exception as exc:  # onnxruntime's own error types
        shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
        raise VerificationError(f"onnxruntime failed on inputs of shape {shapes}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def compare_arrays(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> tuple[float, float, bool]:
    """``(max abs error, max rel error, passed)``; passes when ``|got - expected| <= atol + rtol *
    |expected|`` everywhere and both have non-finite values at the same places."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return float("inf"), float("inf"), False
    g = got.astype(np.float64)
    e = expected.astype(np.float64)
    finite = np.isfinite(e)
    same_nonfinite = np.array_equal(np.isfinite(g), finite) and np.array_equal(g[~finite], e[~finite], equal_nan=True)
    diff = np.abs(g - e)[finite & np.isfinite(g)]
    if not diff.size:
        return 0.0, 0.0, same_nonfinite
    reference = np.abs(e[finite & np.isfinite(g)])
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(reference, 1e-6)).max())
    return max_abs, max_rel, bool(same_nonfinite and np.all(diff <= atol + rtol * reference))
