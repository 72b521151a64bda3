"""Public entry points: convert, save."""

from __future__ import annotations

import contextlib
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
from .engines import uses_tf2onnx
from .loading import legacy
from .core import dynamic_dims as dyn
from .core.dtypes import to_onnx_dtype
from .core.errors import InvalidInputError, OutputWriteError, UnsupportedError
from .core.interface import channels_first_names, interface_perm
from .core.opsets import ir_version_for, resolve_opset
from .core.registry import Registry
from .core.signature import input_shapes
from .passes import run_default_passes
from .passes.precision import check_precision, convert_precision

_TWO_GB = 2**31


def convert(model, *, opset: int | None = None, input_signature=None, input_names=None,
            output_names=None, dynamic_batch: bool = True, converters: Registry | None = None,
            optimize: bool = True, precision: str = "fp32", inputs_as_nchw=None,
            outputs_as_nchw=None) -> onnx.ModelProto:
    """Convert an in-memory Keras 3 model to an ONNX ``ModelProto``.

    ``input_signature``: list (or dict by input name) of shapes such as ``(None, 224, 224, 3)``;
    ``None`` or a string marks a dynamic dim. ``converters``: a :class:`Registry` whose converters
    win over the built-in ones. A loaded SavedModel (``load_model(dir)``) or a ``tf.function`` with
    an ``input_signature`` is converted by tf2onnx instead (``pip install "kerasonnx[tf]"``).
    ``precision``: "fp32", "fp16" or "bf16" (weights and compute; inputs and outputs stay float32;
    see docs/precision.md). ``inputs_as_nchw`` / ``outputs_as_nchw``: names of 3-D to 5-D inputs /
    outputs to expose channels-first (docs/optimization.md). For models over 2 GB prefer :func:`convert_to_ir` + :func:`save`, which
    never copies the weights into a protobuf.
    """
    check_precision(precision)
    if uses_tf2onnx(model):
        if inputs_as_nchw or outputs_as_nchw:
            raise InvalidInputError("inputs_as_nchw/outputs_as_nchw need a Keras model, not a SavedModel "
                                    "or tf.function converted by tf2onnx")
        from .engines import tf2onnx_engine

        proto = tf2onnx_engine.convert(model, opset=opset, input_names=input_names, output_names=output_names,
                                       input_signature=input_signature, dynamic_batch=dynamic_batch,
                                       converters=converters)
        return proto if precision == "fp32" else ir.to_proto(convert_precision(ir.from_proto(proto), precision))
    return ir.to_proto(convert_to_ir(model, opset=opset, input_signature=input_signature,
                                     input_names=input_names, output_names=output_names,
                                     dynamic_batch=dynamic_batch, converters=converters,
                                     optimize=optimize, precision=precision,
                                     inputs_as_nchw=inputs_as_nchw, outputs_as_nchw=outputs_as_nchw))


def convert_to_ir(model, *, opset=None, input_signature=None, input_names=None, output_names=None,
                  dynamic_batch=True, converters=None, optimize=True, precision="fp32", inputs_as_nchw=None,
                  outputs_as_nchw=None) -> ir.Model:
    """Like :func:`convert`, returning the ``onnx_ir.Model``: its weights are the Keras variables'
    own arrays where the backend allows it (no copy), and :func:`save` streams them to disk."""
    return convert_with_details(model, opset=opset, input_signature=input_signature, input_names=input_names,
                                output_names=output_names, dynamic_batch=dynamic_batch, converters=converters,
                                optimize=optimize, precision=precision, inputs_as_nchw=inputs_as_nchw,
                                outputs_as_nchw=outputs_as_nchw).ir_model


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
    graph: object = None  # the Keras graph walked (Functional, or the traced call() of a subclassed model)


def convert_with_details(model, *, opset=None, input_signature=None, input_names=None, output_names=None,
                         dynamic_batch=True, converters=None, optimize=True, progress=None,
                         precision="fp32", inputs_as_nchw=None, outputs_as_nchw=None) -> Conversion:
    """Like :func:`convert`, with the records and stage timings. ``progress``: an optional
    ``callback(stage, done, total, item)`` told about each converted layer (see kerasonnx.logs)."""
    started = time.perf_counter()
    opset = resolve_opset(opset)
    check_precision(precision)
    registry = converters.chain(BUILTIN) if converters is not None else BUILTIN
    model = legacy.as_keras3(model)  # a tf_keras (Keras 2) model is rebuilt as Keras 3
    if not walker.is_model(model):
        raise InvalidInputError(f"expected a Keras 3 model, got {type(model).__name__}")
    if input_signature is not None and isinstance(model, keras.Sequential):
        first = input_signature[0] if isinstance(input_signature, (list, tuple)) else None
        if first is not None:
            walker.build_sequential(model, _shape_of(first))
    ctx = ConversionContext(opset, registry, graph_name=model.name)
    ctx.on_progress = progress
    functional, sources = _graph_of(model, input_signature, input_names)
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
    sentinels = set(dyn.SENTINELS[0][:len(sources)])  # dims a subclassed model was traced with

    def keras_shape(kt):
        return tuple(None if d in sentinels else d for d in kt.shape)

    shapes = input_shapes(keras_inputs, in_names, input_signature, dynamic_batch, keras_shape)
    nchw_in = channels_first_names(inputs_as_nchw, in_names, [len(s) for s in shapes], "input")
    nchw_out = channels_first_names(outputs_as_nchw, out_names, [len(t.shape) for t in keras_outputs], "output")

    graph_inputs = []
    for kt, name, shape in zip(keras_inputs, in_names, shapes):
        perm = interface_perm(name, len(shape), nchw_in)
        value = ir.Value(name=name, type=ir.TensorType(to_onnx_dtype(kt.dtype)),
                         shape=ir.Shape(L.permute_shape(shape, perm)))
        graph_inputs.append(Tensor(value, perm))
        ctx.graph.inputs.append(value)

    scope = ctx.dynamic_scope(sources, graph_inputs, model.name) if sources else contextlib.nullcontext()
    with scope:
        results = convert_graph(ctx, functional, graph_inputs)
        batch = shapes[0][0] if shapes and shapes[0] else None
        for kt, tensor, name in zip(keras_outputs, results, out_names):
            ctx.bind(kt, tensor)
            perm = interface_perm(name, len(kt.shape), nchw_out)
            value = ctx.fetch(kt, perm)
            if value.is_graph_input() or value.is_graph_output() or value.producer() is None:
                value = ctx.op("Identity", [value])
            value.name = name
            value.dtype = to_onnx_dtype(kt.dtype)
            value.shape = ir.Shape(L.permute_shape([batch if i == 0 and d is None and batch is not None else d
                                                    for i, d in enumerate(keras_shape(kt))], perm))
            ctx.graph.outputs.append(value)

    ir_model = ir.Model(ctx.graph, ir_version=ir_version_for(opset), producer_name="kerasonnx",
                        producer_version=__version__)
    seconds = {"convert": time.perf_counter() - started}
    if optimize:
        if progress is not None:
            progress("optimize", 0, 0, "")
        run_default_passes(ir_model)
        seconds["optimize"] = time.perf_counter() - started - seconds["convert"]
    lowering = time.perf_counter()
    convert_precision(ir_model, precision)  # also runs mixed_bfloat16 arithmetic in float32 (no CPU kernels)
    seconds["precision"] = time.perf_counter() - lowering
    return Conversion(ir_model, ctx.records, in_names, out_names, seconds, functional)


def _shape_of(spec) -> tuple:
    shape = getattr(spec, "shape", spec)
    return tuple(None if isinstance(d, str) else d for d in shape)


def _graph_of(model, signature, input_names):
    """The graph to convert: the model's own, or its traced ``call()`` for subclassed models; and
    the sentinel dims it was traced with (see core.dynamic_dims)."""
    if walker.has_graph(model):
        return walker.functional_of(model), []
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


def save(onnx_model, path, *, external_data: bool | None = None, check=None) -> Path:
    """Write ``onnx_model`` (``onnx.ModelProto`` or ``onnx_ir.Model``) to ``path`` atomically; big
    models get a ``<name>.data`` side file (standard ONNX external data, which ``onnx.load`` and
    onnxruntime open directly).

    ``external_data=None`` stores weights externally only when the model would exceed 2 GB. Weights
    are streamed to disk from their arrays, never serialised into one protobuf (so an ``onnx_ir.Model``
    from :func:`convert_to_ir` is saved without copying them). ``check``: called with the path of the
    fully written temporary model before it replaces ``path`` (to verify the very file being saved);
    if it raises, nothing is written.
    """
    path = Path(path)
    if isinstance(onnx_model, onnx.ModelProto):
        onnx_model = ir.from_proto(onnx_model)
    if not isinstance(onnx_model, ir.Model):
        raise InvalidInputError(f"save() expects an onnx.ModelProto or onnx_ir.Model, got {type(onnx_model).__name__}")
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
        _write(onnx_model, tmpdir / path.name, data_name if external_data else None)
        if check is not None:
            check(tmpdir / path.name)
        if (tmpdir / data_name).exists():
            os.replace(tmpdir / data_name, directory / data_name)
        os.replace(tmpdir / path.name, path)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _write(model: ir.Model, path: Path, data_name: str | None) -> None:
    try:
        ir.save(model, path, external_data=data_name, size_threshold_bytes=1024)
    except ValueError as exc:  # protobuf's 2 GB limit when external_data=False
        raise OutputWriteError(f"cannot write {path.name}: {' '.join(str(exc).split())[:200]} "
                               "(store the weights as external data)") from None


def _weights_size(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for graph in model.graphs() for v in graph.initializers.values()
               if v.const_value is not None)
