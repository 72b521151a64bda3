"""Compare an ONNX model with its Keras model in onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import layout as L
from ..core.errors import InvalidInputError, VerificationError
from ..engines import uses_tf2onnx
from ..loading import legacy
from .divergence import Divergence, LayerCheck, locate_divergence
from .inputs import (DEFAULT_INT_RANGE, embedding_int_ranges, has_dynamic_inner_dims, load_inputs, make_inputs,
                     onnx_input_specs, static_batch)
from .runtime import compare_arrays, open_session, run_session
from .tolerance import default_tolerance, onnx_precision

__all__ = ["verify", "VerifyReport", "OutputCheck", "Divergence", "LayerCheck", "load_inputs", "make_inputs"]


@dataclass
class OutputCheck:
    name: str
    batch_size: int
    max_abs: float
    max_rel: float
    passed: bool
    input_shapes: tuple = ()  # shapes of the inputs this check ran on


@dataclass
class VerifyReport:
    """Per output and input set: errors and pass/fail. ``divergence`` (set when outputs differ and
    the layer-by-layer comparison ran) names the first Keras layer whose ONNX output diverges."""

    checks: list[OutputCheck] = field(default_factory=list)
    rtol: float = 1e-3
    atol: float = 1e-4
    divergence: Divergence | None = None

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
        located = f"; {self.divergence.describe()}" if self.divergence is not None else ""
        return f"verify {state} (atol {self.atol:g}, rtol {self.rtol:g}) " + "; ".join(parts) + located

    @property
    def input_shapes(self) -> list[tuple]:
        """The distinct input shape sets checked (batch sizes, sequence lengths, image sizes)."""
        return list(dict.fromkeys(c.input_shapes for c in self.checks))

    def raise_for_failure(self) -> None:
        if not self.passed:
            raise VerificationError(self.summary())


def verify(model, onnx_model, *, inputs=None, batch_sizes=(1, 3), rtol: float | None = None, atol: float | None = None,
           int_range=DEFAULT_INT_RANGE, seed: int = 0, locate: bool = True,
           conversion_options: dict | None = None) -> VerifyReport:
    """Run ``onnx_model`` in onnxruntime and ``model(x, training=False)`` in Keras on the same inputs.

    Generated inputs cover each of ``batch_sizes`` (only the fixed one for a static batch) and, when
    inputs have other dynamic dims, a second sequence length / image size. Integer inputs feeding an
    ``Embedding`` get ids below its ``input_dim``, other integer inputs values in ``int_range``.
    ``inputs``: a list (or dict by ONNX input name) of arrays to use instead. An output passes when
    ``|onnx - keras| <= atol + rtol * |keras|``. When one does not and ``locate`` is true, the model
    is converted again (with ``conversion_options``: the ``convert`` keyword arguments it was
    converted with, e.g. ``converters``; ``inputs_as_nchw``/``outputs_as_nchw`` there also say which
    ONNX inputs/outputs are channels-first) and compared layer by layer: ``report.divergence``.
    Unset ``atol``/``rtol`` depend on the precision (verification/tolerance.py): 1e-4/1e-3 for float32,
    1e-2/1e-2 for fp16 and mixed_float16, 5e-2/5e-2 for bf16 and mixed_bfloat16.
    """
    if uses_tf2onnx(model):  # a SavedModel or tf.function: run in TensorFlow, no layer-by-layer search
        from ..engines.tf2onnx_engine import as_tf_model

        model, locate = as_tf_model(model), False
    graph_model = legacy.as_keras3(model)  # a tf_keras model: its Keras 3 twin is inspected, the original run
    atol, rtol = default_tolerance(graph_model, onnx_model, atol, rtol)
    session = open_session(onnx_model)
    names = [i.name for i in session.get_inputs()]
    out_names = [o.name for o in session.get_outputs()]
    if inputs is not None:
        feeds = [_align(inputs, names)]
    else:
        feeds = _generated_feeds(graph_model, onnx_input_specs(session), batch_sizes, seed, int_range)

    options = dict(conversion_options or {})
    nchw_in = _names_list(options.pop("inputs_as_nchw", None))
    nchw_out = _names_list(options.pop("outputs_as_nchw", None))
    report = VerifyReport(rtol=rtol, atol=atol)
    first_failure = None
    for onnx_arrays in feeds:
        got = run_session(session, out_names, onnx_arrays)
        arrays = [_channels_last(a) if n in nchw_in else a for n, a in zip(names, onnx_arrays)]
        expected = [_channels_first(e) if n in nchw_out else e
                    for n, e in zip(out_names, keras_outputs(model, arrays))]
        batch = int(arrays[0].shape[0]) if arrays and np.ndim(arrays[0]) else 1
        shapes = tuple(tuple(a.shape) for a in onnx_arrays)
        for name, g, e in zip(out_names, got, expected):
            report.checks.append(OutputCheck(name, batch, *compare_arrays(g, e, rtol, atol), shapes))
        if first_failure is None and not all(c.passed for c in report.checks):
            first_failure = arrays
    if first_failure is not None and locate:
        options = {"opset": _default_opset(onnx_model), "precision": onnx_precision(onnx_model), **options}
        report.divergence = locate_divergence(graph_model, first_failure, rtol=rtol, atol=atol, conversion_options=options)
    return report


def _names_list(names) -> set[str]:
    return {names} if isinstance(names, str) else set(names or ())


def _channels_first(array: np.ndarray) -> np.ndarray:
    """A Keras (channels-last) array as an ``outputs_as_nchw`` output stores it."""
    return np.transpose(array, L.channels_first(array.ndim))


def _channels_last(array: np.ndarray) -> np.ndarray:
    """An ``inputs_as_nchw`` input as the Keras model takes it."""
    return np.transpose(array, np.argsort(L.channels_first(array.ndim)))


def keras_outputs(model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``model(arrays, training=False)``, flattened, as numpy arrays."""
    import keras

    keras_args = arrays[0] if len(arrays) == 1 else list(arrays)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(keras_args, training=False))]


def _generated_feeds(model, specs, batch_sizes, seed: int, int_range) -> list[list[np.ndarray]]:
    ranges = embedding_int_ranges(model, len(specs))
    fixed = static_batch(specs)
    sizes = [fixed] if fixed is not None else list(dict.fromkeys(batch_sizes))
    if not sizes:
        raise InvalidInputError("verify needs at least one batch size")
    feeds = [make_inputs(specs, b, seed=seed + b, int_range=int_range, int_ranges=ranges) for b in sizes]
    if has_dynamic_inner_dims(specs):
        feeds.append(make_inputs(specs, sizes[-1], seed=seed + 1000, int_range=int_range, int_ranges=ranges,
                                 alternate=True))
    return feeds


def _default_opset(onnx_model) -> int | None:
    import onnx
    import onnx_ir as ir

    if isinstance(onnx_model, ir.Model):
        return onnx_model.opset_imports.get("")
    if not isinstance(onnx_model, onnx.ModelProto):
        onnx_model = onnx.load(str(onnx_model), load_external_data=False)
    return next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), None)


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
