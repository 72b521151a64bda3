"""Default verification tolerances by precision (see docs/precision.md for how they were chosen)."""

from __future__ import annotations

from typing import NamedTuple


class Tolerance(NamedTuple):
    atol: float
    rtol: float


# An output passes when |onnx - keras| <= atol + rtol * |keras|.
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),  # 11-bit mantissa: ~5e-4 per rounding, a few layers deep
    "bf16": Tolerance(atol=5e-2, rtol=5e-2),  # 8-bit mantissa: ~4e-3 per rounding of each weight
}
_ORDER = ("fp32", "fp16", "bf16")  # increasingly coarse
_KERAS_FLOATS = {"float16": "fp16", "bfloat16": "bf16"}


def precision_of(model, onnx_model) -> str:
    """The coarsest precision involved: the ONNX model's (``convert(..., precision=)``) or a
    mixed-precision Keras model's compute dtype (``mixed_float16`` / ``mixed_bfloat16`` layers)."""
    found = {onnx_precision(onnx_model), *_keras_precisions(model)}
    return max(found, key=_ORDER.index)


def default_tolerance(model, onnx_model, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """``atol``/``rtol`` as given, the unset ones from :data:`TOLERANCES` for :func:`precision_of`."""
    default = TOLERANCES[precision_of(model, onnx_model)]
    return Tolerance(default.atol if atol is None else atol, default.rtol if rtol is None else rtol)


def onnx_precision(onnx_model) -> str:
    """The precision recorded in a kerasonnx model (ModelProto, ``onnx_ir.Model`` or file path)."""
    from ..passes.precision import model_precision

    if isinstance(onnx_model, (str, bytes)) or hasattr(onnx_model, "__fspath__"):
        import onnx

        onnx_model = onnx.load(str(onnx_model), load_external_data=False)
    return model_precision(onnx_model)


def _keras_precisions(model) -> set[str]:
    found = set()
    for layer in _layers(model):
        compute = getattr(layer, "compute_dtype", None)
        if compute in _KERAS_FLOATS:
            found.add(_KERAS_FLOATS[compute])
    return found


def _layers(model):
    yield model
    for layer in getattr(model, "layers", None) or ():
        yield from _layers(layer)
