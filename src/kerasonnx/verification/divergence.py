"""Layer-by-layer comparison: which Keras layer's ONNX output first differs from Keras'.

The model is converted again without optimisation; the ONNX values recorded for the layers of the
model's own graph (depth 0) become extra graph outputs; one onnxruntime run is compared, layer by
layer in topological order, with the same layers' outputs computed by Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import walker
from ..core.errors import KerasOnnxError
from .runtime import compare_arrays, open_session, run_session


@dataclass
class LayerCheck:
    """One Keras layer's outputs (worst of them) against the ONNX values recorded for it."""

    path: str
    class_name: str
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class Divergence:
    """Result of a layer-by-layer comparison. ``layer`` is the first diverging layer (None when
    none does; ``note`` then says why the outputs still differ)."""

    layer: LayerCheck | None = None
    layers: list[LayerCheck] = field(default_factory=list)
    note: str = ""

    def describe(self) -> str:
        if self.layer is None:
            return self.note
        layer = self.layer
        return (f"first diverging layer: '{layer.path}' ({layer.class_name}): max abs {layer.max_abs:.1e}, "
                f"max rel {layer.max_rel:.1e}")


_PROBE = "kerasonnx_probe"


def locate_divergence(model, arrays: list[np.ndarray], *, rtol: float, atol: float,
                      conversion_options: dict | None = None) -> Divergence:
    """Compare every depth-0 layer of ``model`` on ``arrays`` (see the module docstring)."""
    from ..api import convert_with_details

    options = {**(conversion_options or {}), "optimize": False}
    try:
        conversion = convert_with_details(model, **options)
    except Exception as exc:  # a diagnosis must not hide the verification result
        detail = str(exc) if isinstance(exc, KerasOnnxError) else f"{type(exc).__name__}: {exc}"
        return Divergence(note=f"cannot compare layer by layer, reconverting failed: {detail}")
    records = [r for r in conversion.records if r.depth == 0 and r.outputs]
    probes = _add_probes(conversion.ir_model.graph, records)
    try:
        session = open_session(conversion.ir_model)
        probe_names = list(dict.fromkeys(name for names in probes for name, _ in names))
        produced = run_session(session, conversion.output_names + probe_names, arrays)
        expected = _keras_values(conversion.graph, [kt for r in records for kt in r.keras_outputs], arrays)
    except Exception as exc:  # the comparison is a diagnosis: report why it could not run
        return Divergence(note=f"cannot compare layer by layer: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    final, produced = produced[:len(conversion.output_names)], produced[len(conversion.output_names):]
    layers = _check_layers(records, probes, dict(zip(probe_names, produced)), expected, rtol, atol)
    first = next((check for check in layers if not check.passed), None)
    if first is not None:
        return Divergence(first, layers)
    keras_final = _keras_values(conversion.graph, walker.graph_outputs(conversion.graph), arrays)
    final_ok = all(compare_arrays(g, e, rtol, atol)[2] for g, e in zip(final, keras_final))
    note = ("no layer diverges and kerasonnx's unoptimized conversion matches Keras: the difference comes from "
            "the optimisation passes (try --no-optimize) or from options the checked model was converted with"
            if final_ok else
            "every layer matches within tolerance but the outputs do not: small errors accumulate "
            "(loosen --atol/--rtol?)")
    return Divergence(None, layers, note)


def _add_probes(graph, records) -> list[list[tuple[str, tuple]]]:
    """Expose each record's ONNX values as graph outputs (through Identity nodes); per record, the
    ``(output name, perm)`` of each of its Keras outputs."""
    import onnx_ir as ir

    from ..core.dtypes import to_onnx_dtype

    by_value: dict[int, str] = {}
    probes = []
    for record in records:
        names = []
        for kt, tensor in zip(record.keras_outputs, record.outputs):
            if id(tensor.value) not in by_value:
                name = f"{_PROBE}_{len(by_value)}"
                node = ir.Node("", "Identity", [tensor.value], num_outputs=1, name=name)
                node.outputs[0].name = name
                node.outputs[0].dtype = tensor.value.dtype or to_onnx_dtype(kt.dtype)
                graph.append(node)
                graph.outputs.append(node.outputs[0])
                by_value[id(tensor.value)] = name
            names.append((by_value[id(tensor.value)], tuple(tensor.perm)))
        probes.append(names)
    return probes


def _keras_values(graph, keras_tensors: list, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The values Keras computes for ``keras_tensors`` (tensors of ``graph``) on ``arrays``."""
    import keras

    inputs = walker.graph_inputs(graph)
    probe = keras.Model(inputs, list(keras_tensors))
    outputs = probe(arrays[0] if len(arrays) == 1 else list(arrays), training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(outputs)]


def _check_layers(records, probes, values: dict, expected, rtol, atol) -> list[LayerCheck]:
    """One check per record; ``values`` by probe name, ``expected`` per Keras output in record order."""
    index = 0
    checks = []
    for record, names in zip(records, probes):
        worst_abs, worst_rel, passed = 0.0, 0.0, True
        for name, perm in names:
            got = _keras_layout(values[name], perm)
            max_abs, max_rel, ok = compare_arrays(got, expected[index], rtol, atol)
            index += 1
            worst_abs, worst_rel, passed = max(worst_abs, max_abs), max(worst_rel, max_rel), passed and ok
        checks.append(LayerCheck(record.path, record.class_name, worst_abs, worst_rel, passed))
    return checks


def _keras_layout(value: np.ndarray, perm: tuple) -> np.ndarray:
    """``value`` (stored as ``np.transpose(keras_array, perm)``) back in Keras' layout."""
    if len(perm) != value.ndim or perm == tuple(range(value.ndim)):
        return value
    return np.transpose(value, np.argsort(perm))
