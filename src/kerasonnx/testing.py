"""Public helpers to test converters the way kerasonnx tests its own: build the model a ``Case``
describes, convert, run onnxruntime, compare with Keras."""

from __future__ import annotations

import keras
import numpy as np
import onnx

from .api import convert
from .core.registry import Case
from .verification import verify


def build_case_model(case: Case):
    dtypes = case.dtypes or ("float32",) * len(case.input_shapes)
    inputs = [keras.Input(shape, dtype=dtype, name=f"in{i}")
              for i, (shape, dtype) in enumerate(zip(case.input_shapes, dtypes))]
    fn = case.build()
    if isinstance(fn, keras.layers.Layer) and len(inputs) > 1:
        outputs = fn(inputs)
    else:
        outputs = fn(*inputs)
    return keras.Model(inputs, outputs, name=case.name)


def run_case(case: Case, opset: int | None = None, batch_sizes=(1, 3), converters=None):
    """Build ``case``'s model, convert it (with your ``converters`` registry if given), check the
    ONNX model and compare onnxruntime with Keras. Returns ``(onnx_model, VerifyReport)``.

    This is how every built-in converter is tested; use it for your own::

        for case in my_registry.cases():
            _, report = run_case(case, converters=my_registry)
            assert report.passed, report.summary()
    """
    model = build_case_model(case)
    onnx_model = convert(model, opset=opset, converters=converters)
    onnx.checker.check_model(onnx_model, full_check=True)
    report = verify(model, onnx_model, batch_sizes=batch_sizes, atol=case.atol, rtol=1e-3,
                    int_range=case.int_range)
    return onnx_model, report


def randomise_batchnorm(model, seed: int = 0) -> None:
    """Give every BatchNormalization of ``model`` (nested models included) non-trivial statistics,
    so that tests and benchmarks really exercise BatchNorm folding."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for var, make in ((layer.gamma, lambda s: rng.uniform(0.5, 1.5, s)),
                              (layer.beta, lambda s: rng.normal(0, 0.1, s)),
                              (layer.moving_mean, lambda s: rng.normal(0, 0.1, s)),
                              (layer.moving_variance, lambda s: rng.uniform(0.5, 1.5, s))):
                if var is not None:
                    var.assign(make(var.shape).astype(var.dtype))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
