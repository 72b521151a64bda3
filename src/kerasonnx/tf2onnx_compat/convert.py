"""``from_keras`` with the signature and return value of ``tf2onnx.convert.from_keras``.

Differences (docs/from_keras.md): ``custom_ops`` keys are Keras layer/op class names,
``custom_op_handlers`` maps Keras classes to kerasonnx converters (or is a ``Registry``), tf2onnx's
graph rewriters, targets and optimizer lists do not exist here and are refused, ``large_model``
writes ``output_path`` with a ``.data`` side file instead of a zip.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

from ..core.errors import InvalidInputError
from ..core.registry import Registry

_STANDARD_CONFIG = {"name", "trainable", "dtype", "autocast"}


class _Spec(NamedTuple):
    """An input shape and dtype in the form ``kerasonnx.convert`` reads (``.shape``, ``.dtype``)."""

    shape: tuple
    dtype: str


def from_keras(model, input_signature=None, opset=None, custom_ops=None, custom_op_handlers=None,
               custom_rewriter=None, inputs_as_nchw=None, outputs_as_nchw=None, extra_opset=None,
               shape_override=None, target=None, large_model=False, output_path=None, optimizers=None):
    """Convert a Keras 3 model like ``tf2onnx.convert.from_keras``; returns ``(model_proto, None)``.

    ``input_signature``: ``tf.TensorSpec``s or numpy arrays (or anything with ``.shape``/``.dtype``;
    a spec's ``name`` names the ONNX input). ``custom_ops``: ``{layer or op class name: domain}``,
    each call of such a layer becomes one node of that op type in that domain. ``custom_op_handlers``:
    ``{KerasClass: fn(ctx, op, *inputs)}`` or a :class:`kerasonnx.Registry`.
    """
    from .. import api

    _refuse("custom_rewriter", custom_rewriter, "kerasonnx has no TensorFlow graph to rewrite: register a "
            "converter (custom_op_handlers) for the layer instead")
    _refuse("target", target, "tf2onnx's runtime workarounds do not apply to kerasonnx's output")
    _refuse("optimizers", optimizers, "kerasonnx runs its own passes; pass optimizers={} to skip them")
    if large_model and not output_path:
        raise InvalidInputError("from_keras(large_model=True) needs output_path: kerasonnx writes the weights "
                                "to '<output_path>.data' beside the model (no zip file)")
    names, signature = _signature(model, input_signature, shape_override)
    proto = api.convert(model, opset=opset, input_signature=signature, input_names=names,
                        converters=_registry(custom_ops, custom_op_handlers),
                        optimize=optimizers is None, **_nchw_options(inputs_as_nchw, outputs_as_nchw))
    _add_opsets(proto, extra_opset)
    if output_path:
        api.save(proto, output_path, external_data=True if large_model else None)
    return proto, None


def _refuse(option: str, value, why: str) -> None:
    if option == "optimizers" and value is not None and not value:
        return  # an empty optimizer list: no optimisation, which we support
    if value:
        raise InvalidInputError(f"from_keras: {option}= is not supported by kerasonnx ({why})")


def _nchw_options(inputs_as_nchw, outputs_as_nchw) -> dict:
    """Pass the NCHW interface options through when ``kerasonnx.convert`` supports them."""
    from .. import api

    given = {k: v for k, v in (("inputs_as_nchw", inputs_as_nchw), ("outputs_as_nchw", outputs_as_nchw)) if v}
    accepted = inspect.signature(api.convert).parameters
    missing = [k for k in given if k not in accepted]
    if missing:
        raise InvalidInputError(f"from_keras: {', '.join(missing)} is not supported yet by kerasonnx.convert")
    return given


def _add_opsets(proto, extra_opset) -> None:
    """Record ``extra_opset`` (``onnx.helper.make_opsetid(domain, version)`` entries) in the model."""
    present = {o.domain for o in proto.opset_import}
    for opset in extra_opset or []:
        if opset.domain not in present:
            proto.opset_import.append(opset)
            present.add(opset.domain)


# ---- input signature ----------------------------------------------------------------------------

def _signature(model, input_signature, shape_override):
    """``(input names or None, signature for kerasonnx.convert)`` from tf2onnx-style arguments."""
    override = {_tensor_name(k): tuple(v) for k, v in (shape_override or {}).items()}
    if input_signature is None:
        return None, (override or None)
    specs = list(input_signature) if isinstance(input_signature, (list, tuple)) else [input_signature]
    given = [_spec_name(s) for s in specs]
    names = None
    if any(given):
        defaults = _default_input_names(model, len(specs))
        names = [g or d for g, d in zip(given, defaults)]
    unknown = set(override) - set(names or [])
    if unknown:
        raise InvalidInputError(f"from_keras: shape_override names {sorted(unknown)} are not inputs of the "
                                f"input_signature {names or '(unnamed)'}")
    signature = [_Spec(override.get(n) or _shape(s), _dtype(s)) for s, n in zip(specs, names or [None] * len(specs))]
    return names, signature


def _tensor_name(name: str) -> str:
    """``"input:0"`` (a TensorFlow tensor name) -> ``"input"``."""
    base, _, index = name.rpartition(":")
    return base if base and index.isdigit() else name


def _spec_name(spec) -> str | None:
    name = getattr(spec, "name", None)
    return _tensor_name(name) if isinstance(name, str) and name else None


def _shape(spec) -> tuple:
    shape = getattr(spec, "shape", None)
    if shape is None:
        raise InvalidInputError(f"from_keras: input_signature entries need a shape (tf.TensorSpec or array), "
                                f"got {type(spec).__name__}")
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(None if d is None else int(d) for d in dims)


def _dtype(spec) -> str:
    dtype = getattr(spec, "dtype", None)
    return getattr(dtype, "name", None) or str(dtype or "float32")


def _default_input_names(model, count: int) -> list[str]:
    """The names kerasonnx gives the inputs when none are given."""
    from ..core import walker

    if walker.has_graph(model):
        return [walker.producer_name(t) for t in walker.graph_inputs(walker.functional_of(model))]
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


# ---- converters -----------------------------------------------------------------------------------

def _registry(custom_ops, custom_op_handlers) -> Registry | None:
    if not custom_ops and not custom_op_handlers:
        return None
    registry = Registry(name="user")
    if isinstance(custom_op_handlers, Registry):
        for spec in custom_op_handlers.specs():
            registry.register(spec.keras_class, min_opset=spec.min_opset, layout=spec.layout,
                              cases=spec.cases)(spec.fn)
    else:
        for keras_class, fn in (custom_op_handlers or {}).items():
            if not isinstance(keras_class, type):
                raise InvalidInputError(
                    f"from_keras: custom_op_handlers keys must be Keras layer/op classes, got {keras_class!r} "
                    "(tf2onnx's TensorFlow op names do not occur in a Keras graph)")
            registry.register(keras_class)(fn[0] if isinstance(fn, tuple) else fn)
    for name, domain in (custom_ops or {}).items():
        for keras_class in _classes_named(name):
            registry.register(keras_class)(_custom_op(domain))
    return registry


def _classes_named(name) -> list[type]:
    """Keras layer/op classes called ``name`` (or ``[name]`` when it is a class)."""
    import keras

    if isinstance(name, type):
        return [name]
    found, stack = [], [keras.Operation]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            found.append(cls)
        stack.extend(cls.__subclasses__())
    if not found:
        raise InvalidInputError(f"from_keras: custom_ops names '{name}', which is no Keras layer or op class "
                                "(keys are class names such as 'MyLayer')")
    return list(dict.fromkeys(found))


def _custom_op(domain: str):
    """A converter emitting the layer as one node ``<class name>`` in ``domain`` with its scalar
    config entries as attributes (for a runtime that implements the op)."""

    def convert_custom_op(ctx, op, *inputs):
        import onnx_ir as ir

        values = [x for x in inputs if isinstance(x, ir.Value)]
        return ctx.op(type(op).__name__, values, _attributes(op), outputs=len(ctx.out_tensors), domain=domain)

    return convert_custom_op


def _attributes(op) -> dict:
    try:
        config = op.get_config()
    except Exception:  # keras.ops operations without a config
        return {}
    return {k: _attribute(v) for k, v in config.items() if k not in _STANDARD_CONFIG and _attribute(v) is not None}


def _attribute(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in value):
        return list(value)
    return None
