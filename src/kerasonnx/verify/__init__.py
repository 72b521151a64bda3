"""Compare an ONNX model with its Keras model in onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InvalidInputError, VerificationError
from .inputs import make_inputs, onnx_input_specs


@dataclass
class OutputCheck:
    name: str
    batch_size: int
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class VerifyReport:
    checks: list[OutputCheck] = field(default_factory=list)
    rtol: float = 1e-3
    atol: float = 1e-4

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.checks), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((c.max_rel for c in self.checks), default=0.0)

    def per_output(self) -> dict[str, tuple[float, float]]:
        worst: dict[str, tuple[float, float]] = {}
        for c in self.checks:
            a, r = worst.get(c.name, (0.0, 0.0))
            worst[c.name] = (max(a, c.max_abs), max(r, c.max_rel))
        return worst

    def summary(self) -> str:
        state = "passed" if self.passed else "FAILED"
        parts = [f"{n}: max abs {a:.2e}, max rel {r:.2e}" for n, (a, r) in self.per_output().items()]
        return f"verify {state} (atol {self.atol:g}, rtol {self.rtol:g}) " + "; ".join(parts)

    def raise_for_failure(self) -> None:
        if not self.passed:
            raise VerificationError(self.summary())


def verify(model, onnx_model, *, inputs=None, batch_sizes=(1, 3), rtol: float = 1e-3, atol: float = 1e-4,
           int_range=(0, 10), seed: int = 0) -> VerifyReport:
    """Run ``onnx_model`` in onnxruntime and ``model(x, training=False)`` in Keras on the same inputs.

    ``inputs``: a list (or dict by ONNX input name) of arrays to use instead of generated ones; then
    ``batch_sizes`` is ignored. An output passes when ``|onnx - keras| <= atol + rtol * |keras|``.
    """
    import keras
    import onnxruntime as ort

    try:
        session = _session(onnx_model, ort)
    except Exception as exc:
        raise VerificationError(f"onnxruntime cannot load the model: {' '.join(str(exc).split())[:400]}") from exc
    names = [i.name for i in session.get_inputs()]
    out_names = [o.name for o in session.get_outputs()]
    if inputs is not None:
        feeds = [_align(inputs, names)]
    else:
        specs = onnx_input_specs(session)
        feeds = [make_inputs(specs, b, seed=seed + b, int_range=int_range) for b in batch_sizes]

    report = VerifyReport(rtol=rtol, atol=atol)
    for arrays in feeds:
        try:
            got = session.run(out_names, dict(zip(names, arrays)))
        except Exception as exc:  # onnxruntime's own error types
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise VerificationError(f"onnxruntime failed on inputs of shape {shapes}: "
                                    f"{' '.join(str(exc).split())[:400]}") from exc
        keras_args = arrays[0] if len(arrays) == 1 else list(arrays)
        expected = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(model(keras_args, training=False))]
        batch = int(arrays[0].shape[0]) if arrays and np.ndim(arrays[0]) else 1
        for name, g, e in zip(out_names, got, expected):
            report.checks.append(_compare(name, batch, np.asarray(g), np.asarray(e), rtol, atol))
    return report


def _compare(name, batch, got, expected, rtol, atol) -> OutputCheck:
    if got.shape != expected.shape:
        return OutputCheck(name, batch, float("inf"), float("inf"), False)
    g = got.astype(np.float64)
    e = expected.astype(np.float64)
    diff = np.abs(g - e)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(e), 1e-6)).max()) if diff.size else 0.0
    finite = np.array_equal(np.isfinite(g), np.isfinite(e))
    passed = finite and bool(np.all(diff[np.isfinite(e)] <= atol + rtol * np.abs(e[np.isfinite(e)])))
    return OutputCheck(name, batch, max_abs, max_rel, passed)


def _align(inputs, names):
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise InvalidInputError(f"verify inputs miss {missing}")
        return [np.asarray(inputs[n]) for n in names]
    arrays = [np.asarray(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    if len(arrays) != len(names):
        raise InvalidInputError(f"verify got {len(arrays)} input array(s) for {len(names)} ONNX input(s)")
    return arrays


def _session(onnx_model, ort):
    import onnx_ir as ir

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if isinstance(onnx_model, ir.Model):
        onnx_model = ir.to_proto(onnx_model)
    source = onnx_model if isinstance(onnx_model, str) else onnx_model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
