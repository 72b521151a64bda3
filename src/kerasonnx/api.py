"""Public entry points: convert, save."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import onnx
import onnx_ir as ir

from . import __version__
from .converters import BUILTIN
from .core import layout as L
from .core import walker
from .core.context import ConversionContext, LayerRecord, Tensor
from .core.driver import convert_graph, find_unsupported
from .core.tracing import TraceFailure, trace_model
from .core.dtypes import to_onnx_dtype
from .core.errors import InvalidInputError, OutputWriteError, UnsupportedError
from .core.opsets import ir_version_for, resolve_opset
from .core.registry import Registry
from .core.signature import input_shapes
from .passes import run_default_passes

_TWO_GB = 2**31


def convert(model, *, opset: int | None = None, input_signature=None, input_names=None,
            output_names=None, dynamic_batch: bool = True, converters: Registry | None = None,
            optimize: bool = True) -> onnx.ModelProto:
    """Convert an in-memory Keras 3 model to an ONNX ``ModelProto``.

    ``input_signature``: list (or dict by input name) of shapes such as ``(None, 224, 224, 3)``;
    ``None`` or a string marks a dynamic dim. ``converters``: a :class:`Registry` whose converters
    win over the built-in ones.
    """
    return ir.to_proto(convert_to_ir(model, opset=opset, input_signature=input_signature,
                                     input_names=input_names, output_names=output_names,
                                     dynamic_batch=dynamic_batch, converters=converters,
                                     optimize=optimize))


def convert_to_ir(model, *, opset=None, input_signature=None, input_names=None, output_names=None,
                  dynamic_batch=True, converters=None, optimize=True) -> ir.Model:
    return convert_with_details(model, opset=opset, input_signature=input_signature, input_names=input_names,
                                output_names=output_names, dynamic_batch=dynamic_batch, converters=converters,
                                optimize=optimize).ir_model


@dataclass
class Conversion:
    """A conversion's result and what happened on the way (for reports and layer-by-layer checks).

    ``records`` map each Keras layer/op node to the ONNX values it produced, in conversion order (see
    :class:`~kerasonnx.core.context.LayerRecord`); values removed or renamed by the optimisation
    passes are no longer in ``ir_model``. ``seconds`` holds the time of each stage.
    """

    ir_model: ir.Model
    records: list[LayerRecord]
    input_names: list[str]
    output_names: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def convert_with_details(model, *, opset=None, input_signature=None, input_names=None, output_names=None,
                         dynamic_batch=True, converters=None, optimize=True) -> Conversion:
    started = time.perf_counter()
    opset = resolve_opset(opset)
    registry = converters.chain(BUILTIN) if converters is not None else BUILTIN
    if not walker.is_model(model):
        raise InvalidInputError(f"expected a Keras 3 model, got {type(model).__name__}")
    if input_signature is not None and isinstance(model, keras.Sequential):
        first = input_signature[0] if isinstance(input_signature, (list, tuple)) else None
        if first is not None:
            walker.build_sequential(model, _shape_of(first))
    ctx = ConversionContext(opset, registry, graph_name=model.name)
    functional = _graph_of(model, input_signature, input_names)
    unsupported = find_unsupported(functional, registry, opset, ctx.tracer)
    if unsupported:
        raise UnsupportedError(unsupported)

    keras_inputs = walker.graph_inputs(functional)
    keras_outputs = walker.graph_outputs(functional)
    in_names = _names(input_names, [walker.producer_name(t) for t in keras_inputs], "input")
    out_names = _names(output_names, _dedupe(walker.output_names(model, functional)), "output")
    if len(set(in_names + out_names)) != len(in_names) + len(out_names):
        raise InvalidInputError(f"input and output names must be unique: {in_names + out_names}")
    for name in in_names + out_names:
        ctx.reserve(name)
    shapes = input_shapes(keras_inputs, in_names, input_signature, dynamic_batch)

    graph_inputs = []
    for kt, name, shape in zip(keras_inputs, in_names, shapes):
        value = ir.Value(name=name, type=ir.TensorType(to_onnx_dtype(kt.dtype)), shape=ir.Shape(shape))
        graph_inputs.append(Tensor(value, L.identity(len(shape))))
        ctx.graph.inputs.append(value)

    results = convert_graph(ctx, functional, graph_inputs)
    batch = shapes[0][0] if shapes and shapes[0] else None
    for kt, tensor, name in zip(keras_outputs, results, out_names):
        ctx.bind(kt, tensor)
        value = ctx.fetch(kt, L.identity(len(kt.shape)))
        if value.is_graph_input() or value.is_graph_output() or value.producer() is None:
            value = ctx.op("Identity", [value])
        value.name = name
        value.dtype = to_onnx_dtype(kt.dtype)
        value.shape = ir.Shape([batch if i == 0 and d is None and batch is not None else d
                                for i, d in enumerate(kt.shape)])
        ctx.graph.outputs.append(value)

    ir_model = ir.Model(ctx.graph, ir_version=ir_version_for(opset), producer_name="kerasonnx",
                        producer_version=__version__)
    seconds = {"convert": time.perf_counter() - started}
    if optimize:
        run_default_passes(ir_model)
        seconds["optimize"] = time.perf_counter() - started - seconds["convert"]
    return Conversion(ir_model, ctx.records, in_names, out_names, seconds)


def _shape_of(spec) -> tuple:
    shape = getattr(spec, "shape", spec)
    return tuple(None if isinstance(d, str) else d for d in shape)


def _graph_of(model, signature, input_names):
    """The graph to convert: the model's own, or its traced ``call()`` for subclassed models."""
    if walker.has_graph(model):
        return walker.functional_of(model)
    names = list(signature) if isinstance(signature, dict) else input_names
    specs = list(signature.values()) if isinstance(signature, dict) else signature
    if specs is None:
        specs = walker.built_input_shapes(model)
        if specs is None:
            raise InvalidInputError(
                f"subclassed model '{model.name}' has no known input shapes: pass input_signature "
                "(e.g. [(None, 128)]) or call the model once before converting")
    dtypes = [str(getattr(s, "dtype", None) or "float32").replace("tf.", "") for s in specs]
    try:
        return trace_model(model, [_shape_of(s) for s in specs], dtypes, names)
    except TraceFailure as failure:
        raise UnsupportedError([failure.item]) from None


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name] - 1}")
    return result


def _names(given, default: list[str], kind: str) -> list[str]:
    if given is None:
        return list(default)
    given = [given] if isinstance(given, str) else list(given)
    if len(given) != len(default):
        raise InvalidInputError(f"got {len(given)} {kind} name(s) for a model with {len(default)} {kind}(s)")
    return given


def save(onnx_model, path, *, external_data: bool | None = None) -> Path:
    """Write ``onnx_model`` to ``path`` atomically; big models get a ``<name>.data`` side file.

    ``external_data=None`` stores weights externally only when the model would exceed 2 GB.
    """
    path = Path(path)
    if isinstance(onnx_model, ir.Model):
        onnx_model = ir.to_proto(onnx_model)
    if not isinstance(onnx_model, onnx.ModelProto):
        raise InvalidInputError(f"save() expects an onnx.ModelProto, got {type(onnx_model).__name__}")
    if external_data is None:
        external_data = _weights_size(onnx_model) > _TWO_GB - 64 * 2**20
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputWriteError(f"cannot write {path}: directory {directory} does not exist")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".kerasonnx-", dir=directory))
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    data_name = path.name + ".data"
    try:
        onnx.save_model(onnx_model, tmpdir / path.name, save_as_external_data=external_data,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        if (tmpdir / data_name).exists():
            os.replace(tmpdir / data_name, directory / data_name)
        os.replace(tmpdir / path.name, path)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _weights_size(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) or 4 * max(1, len(t.float_data)) for t in model.graph.initializer)
