"""The tf2onnx engine: TensorFlow SavedModel directories and ``tf.function``s to ONNX.

The only module that imports TensorFlow or tf2onnx (both optional: ``pip install "kerasonnx[tf]"``).
tf2onnx 1.17 is unmaintained, so its behaviour is pinned down here:

- it targets opsets up to 18 only;
- TensorFlow ops it cannot map are only *logged*, and left in the graph as non-ONNX nodes: we collect
  them (from its log and from the graph) and raise an :class:`UnsupportedError` listing all of them;
- TensorFlow's C++ runtime writes INFO lines to stderr whatever ``TF_CPP_MIN_LOG_LEVEL`` says, so
  imports and graph work run with the native stderr silenced (Python exceptions are unaffected).

It follows tf2onnx's own command line (``tf_loader.from_saved_model`` then ``_convert_common``), the
best-tested path through tf2onnx.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ..core.errors import ConversionError, InvalidInputError, ModelLoadError, UnsupportedError, UnsupportedItem
from ..core.opsets import MIN_OPSET, max_supported_opset

MAX_OPSET = 18  # the newest opset tf2onnx 1.17 knows
INSTALL_HINT = 'pip install "kerasonnx[tf]"'
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
_UNSUPPORTED_LOG = re.compile(r"Tensorflow op \[(.+): (\w+)\] is not supported")


def missing_packages() -> list[str]:
    """The packages this engine needs that are not installed (found without importing them)."""
    return [name for name in ("tensorflow", "tf2onnx") if importlib.util.find_spec(name) is None]


def engine_name() -> str:
    return f"tf2onnx {_import()[1].__version__}"


@contextlib.contextmanager
def quiet_native_stderr():
    """Send file descriptor 2 to /dev/null (TensorFlow's C++ INFO lines), restoring it afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import(what: str = "this model"):
    missing = missing_packages()
    if missing:
        raise ModelLoadError(f"{what} needs {' and '.join(missing)} (not installed here): {INSTALL_HINT}")
    with quiet_native_stderr():
        import tensorflow as tf
        import tf2onnx
    return tf, tf2onnx


@contextlib.contextmanager
def _captured_tf2onnx_logs():
    """Collect tf2onnx's log records instead of printing them (it logs unsupported ops as errors)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("tf2onnx")
    handler, propagate, level = Collect(), logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


@dataclass
class TFModel:
    """A TensorFlow graph ready for tf2onnx: its frozen GraphDef and the concrete function that runs it.

    Calling it runs the TensorFlow function on numpy inputs given in ONNX input order and returns the
    outputs in ONNX output order, so :func:`kerasonnx.verify` compares it with onnxruntime directly.
    """

    name: str
    function: Any  # a tf ConcreteFunction (a SavedModel signature or a tf.function's trace)
    graph_def: Any
    tf_inputs: list[str]
    tf_outputs: list[str]
    renames: dict[str, str] = field(default_factory=dict)
    tables: Any = None
    owner: Any = None  # the loaded SavedModel: keeps the function's variables alive

    def __call__(self, inputs, training: bool = False):
        tf = sys.modules["tensorflow"]
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        args, kwargs = tf.nest.pack_sequence_as(self.function.structured_input_signature,
                                                [tf.constant(a) for a in arrays])
        return [t.numpy() for t in tf.nest.flatten(self.function(*args, **kwargs))]


def handles(model) -> bool:
    """A loaded SavedModel or a ``tf.function`` (call only when TensorFlow is imported)."""
    if isinstance(model, TFModel):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(model, tf.types.experimental.GenericFunction)


def as_tf_model(model) -> TFModel:
    return model if isinstance(model, TFModel) else from_function(model)


def load_savedmodel(path, *, signature: str | None = None) -> TFModel:
    """Load a SavedModel directory's serving signature (``signature``, default: its first one)."""
    path = Path(path)
    _import(f"{path} is a TensorFlow SavedModel directory: converting it")
    from tf2onnx import tf_loader

    with quiet_native_stderr(), _captured_tf2onnx_logs():
        try:
            graph_def, inputs, outputs, function, imported, tables, renames = tf_loader.from_saved_model(
                str(path), None, None, tag=["serve"], signatures=[signature] if signature else None,
                return_concrete_func=True, return_initialized_tables=True, return_tensors_to_rename=True)
        except Exception as exc:  # TensorFlow and tf2onnx raise many types
            raise ModelLoadError(f"cannot load SavedModel {path}: {_explain_load_failure(exc)}") from exc
    return TFModel(path.name, function, graph_def, inputs, outputs, renames, tables, imported)


def _explain_load_failure(exc: Exception) -> str:
    text = _one_line(exc)
    if "No signatures found" in text:
        return ("it has no serving signature; save it with tf.saved_model.save(obj, dir, "
                "signatures=obj.f.get_concrete_function(...)) or Keras' model.export(dir)")
    if "not in model" in text:
        return f"{text} (choose one of the signatures it has)"
    return f"{type(exc).__name__}: {text}"


def from_function(function) -> TFModel:
    """A ``tf.function`` with an ``input_signature``, traced for tf2onnx."""
    tf, _ = _import("a tf.function")
    from tf2onnx import tf_loader
    from tf2onnx.convert import tensor_names_from_structed

    if getattr(function, "input_signature", None) is None:
        raise InvalidInputError("the tf.function has no input_signature: declare one, e.g. "
                                "@tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])")
    with quiet_native_stderr(), _captured_tf2onnx_logs():
        concrete = function.get_concrete_function()
        inputs = [t.name for t in concrete.inputs if t.dtype != tf.dtypes.resource]
        outputs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
        graph_def = tf_loader.from_function(concrete, inputs, outputs)
    name = getattr(function, "__name__", None) or "tf_function"
    return TFModel(name, concrete, graph_def, inputs, outputs,
                   tensor_names_from_structed(concrete, inputs, outputs))


def resolve_opset(opset: int | None) -> int:
    newest = min(MAX_OPSET, max_supported_opset())
    if opset is None:
        return newest
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise InvalidInputError(
            f"opset {opset!r} is not available for TensorFlow SavedModels/tf.functions: their engine "
            f"(tf2onnx 1.17) supports opsets {MIN_OPSET} to {newest}; for newer opsets save the model "
            "as .keras and convert it with the kerasonnx engine")
    return opset


def convert(model, *, opset=None, input_names=None, output_names=None, input_signature=None,
            dynamic_batch=True, converters=None) -> onnx.ModelProto:
    """Convert a :class:`TFModel` or a ``tf.function`` with tf2onnx; fail on any op it left unconverted.

    ``input_signature``, ``dynamic_batch=False`` and ``converters`` apply to Keras models only.
    """
    keras_only = [option for option, given in (("input_signature (--input-shape)", input_signature is not None),
                                                ("dynamic_batch=False (--static-batch)", not dynamic_batch),
                                                ("converters", converters is not None)) if given]
    if keras_only:
        raise InvalidInputError(f"{', '.join(keras_only)}: only for Keras models; a SavedModel or tf.function "
                                "is converted with the shapes of its signature")
    opset = resolve_opset(opset)
    tf, _ = _import()
    from tf2onnx.convert import _convert_common

    model = as_tf_model(model)
    with quiet_native_stderr(), _captured_tf2onnx_logs() as logs, tf.device("/cpu:0"):
        try:
            proto, _ = _convert_common(model.graph_def, name=model.name, opset=opset, continue_on_error=True,
                                       input_names=model.tf_inputs, output_names=model.tf_outputs,
                                       tensors_to_rename=dict(model.renames),
                                       initialized_tables=model.tables)
        except Exception as exc:
            raise ConversionError(f"tf2onnx failed on {model.name}: {type(exc).__name__}: "
                                  f"{_one_line(exc)}") from exc
    unsupported = _unsupported_items(proto, logs)
    if unsupported:
        raise _unsupported_error(unsupported)
    proto = _renamed(proto, input_names, output_names)
    _check_loads_in_onnxruntime(proto, model.name)
    return proto


def _unsupported_items(proto: onnx.ModelProto, logs) -> list[UnsupportedItem]:
    """TensorFlow ops tf2onnx logged as unsupported, and nodes that are no ONNX op (subgraphs too)."""
    found: dict[str, UnsupportedItem] = {}
    for record in logs:
        match = _UNSUPPORTED_LOG.search(record.getMessage())
        if match:
            found[match.group(1)] = UnsupportedItem(match.group(1), match.group(2), "tf2onnx has no mapping")
    for node in _all_nodes(proto.graph):
        if node.domain in _STANDARD_DOMAINS and not onnx.defs.has(node.op_type, node.domain or ""):
            found.setdefault(node.name, UnsupportedItem(node.name, node.op_type, "not an ONNX op"))
    return list(found.values())


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _all_nodes(sub)


def _unsupported_error(items: list[UnsupportedItem]) -> UnsupportedError:
    error = UnsupportedError(items)
    parts = [f"'{i.layer_name}' ({i.class_name}: {i.reason})" for i in items]
    error.args = (f"{len(items)} TensorFlow op(s) tf2onnx cannot convert: " + "; ".join(parts)
                  + ". Fix: express them with other TensorFlow ops, or rebuild the model in Keras 3, save "
                  "it as .keras and convert that with the kerasonnx engine.",)
    return error


def _renamed(proto: onnx.ModelProto, input_names, output_names) -> onnx.ModelProto:
    if input_names is None and output_names is None:
        return proto
    import onnx_ir as ir

    from ..api import _names

    model = ir.from_proto(proto)
    for values, given, kind in ((model.graph.inputs, input_names, "input"),
                                (model.graph.outputs, output_names, "output")):
        for value, name in zip(values, _names(given, [v.name for v in values], kind)):
            value.name = name
    names = [v.name for v in [*model.graph.inputs, *model.graph.outputs]]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"input and output names must be unique: {names}")
    return ir.to_proto(model)


def _check_loads_in_onnxruntime(proto: onnx.ModelProto, name: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise _unsupported_error([UnsupportedItem(name, "onnxruntime", f"cannot load the tf2onnx output: "
                                                  f"{_one_line(exc, 200)}")]) from exc
