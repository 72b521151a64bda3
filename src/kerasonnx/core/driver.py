"""Drives a conversion: checks support up front, walks the graph, applies layouts, calls converters."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

import keras

from . import layout as L
from . import walker
from .context import ConversionContext, LayerRecord, Tensor
from .dtypes import to_onnx_dtype
from .errors import ConversionError, UnsupportedError, UnsupportedItem
from .tracing import TraceFailure, Tracer
from .registry import ConverterSpec

logger = logging.getLogger(__name__)


def find_unsupported(functional, registry, opset: int, tracer: Tracer, prefix: str = "") -> list[UnsupportedItem]:
    """Every layer/op of ``functional`` (nested models and traced layers included) that cannot be
    converted, named by its path (``block_1/attention``)."""
    items: list[UnsupportedItem] = []
    for node in walker.nodes(functional):
        op = node.operation
        path = prefix + op.name
        if walker.is_nested_graph(op):
            items.extend(find_unsupported(walker.functional_of(op), registry, opset, tracer, path + "/"))
            continue
        spec = registry.lookup(type(op))
        if spec is None and walker.is_layer(op):
            try:
                traced = tracer.trace(node)
            except TraceFailure as failure:
                items.append(replace(failure.item, layer_name=path))
                continue
            items.extend(find_unsupported(traced, registry, opset, tracer, path + "/"))
        elif spec is None:
            items.append(_no_converter(registry, op, path))
        elif spec.min_opset > opset:
            items.append(UnsupportedItem(path, type(op).__name__, f"needs opset >= {spec.min_opset}"))
    return items


def _no_converter(registry, op, path: str) -> UnsupportedItem:
    item = UnsupportedItem(path, type(op).__name__)
    reason = registry.refusal(type(op))
    return replace(item, reason=reason) if reason else item


def convert_graph(ctx: ConversionContext, functional, inputs: list[Tensor], prefix: str = "") -> list[Tensor]:
    """Convert ``functional`` given its input values; returns its output values."""
    for kt, tensor in zip(walker.graph_inputs(functional), inputs):
        ctx.bind(kt, tensor)
    convert_nodes(ctx, walker.nodes(functional), prefix)
    return [ctx.lookup(kt) for kt in walker.graph_outputs(functional)]


def convert_nodes(ctx: ConversionContext, nodes, prefix: str = "") -> None:
    """Convert ``nodes`` (topologically ordered) with converters, recursion or tracing."""
    for done, node in enumerate(nodes, 1):
        op = node.operation
        spec = ctx.registry.lookup(type(op))
        emitted = ctx.emitted
        if walker.is_nested_graph(op):
            how = "nested model"
            inner, inner_inputs = walker.functional_of(op), [ctx.lookup(t) for t in node.input_tensors]
        elif spec is not None:
            _convert_node(ctx, node, spec, prefix)
            _record(ctx, node, prefix, "converter" if spec.origin == "builtin" else "user converter", emitted)
            _progress(ctx, prefix, done, len(nodes), op.name)
            continue
        elif walker.is_layer(op):  # a layer without converter: convert what its call() does
            how = "traced"
            try:
                inner = ctx.tracer.trace(node)
            except TraceFailure as failure:
                raise UnsupportedError([replace(failure.item, layer_name=prefix + op.name)]) from None
            stored = [ctx.lookup(t) for t in node.input_tensors]
            inner_inputs = [Tensor(_autocast(ctx, op, t, s.value), s.perm) for t, s in zip(node.input_tensors, stored)]
        else:  # only reachable inside control-flow bodies, which the up-front check cannot see
            raise UnsupportedError([_no_converter(ctx.registry, op, prefix + op.name)])
        sources = ctx.tracer.dynamic_dims(inner)
        scope = ctx.dynamic_scope(sources, inner_inputs, prefix + op.name) if sources else contextlib.nullcontext()
        with scope:
            outs = convert_graph(ctx, inner, inner_inputs, prefix=f"{prefix}{op.name}/")
        for kt, tensor in zip(node.outputs, outs):
            ctx.bind(kt, tensor)
        _record(ctx, node, prefix, how, emitted)
        _progress(ctx, prefix, done, len(nodes), op.name)


def _progress(ctx: ConversionContext, prefix: str, done: int, total: int, name: str) -> None:
    """Tell ``ctx.on_progress`` (if set) about each converted node of the model's own graph."""
    if ctx.on_progress is not None and not prefix and ctx.graph is ctx.main_graph:
        ctx.on_progress("convert", done, total, name)


def _record(ctx: ConversionContext, node, prefix: str, how: str, emitted_before: int) -> None:
    if ctx.graph is not ctx.main_graph:  # inside a control-flow body: its values are not addressable
        return
    op = node.operation
    ctx.records.append(LayerRecord(
        path=prefix + op.name, class_name=type(op).__name__, how=how, keras_outputs=list(node.outputs),
        outputs=[ctx.lookup(kt) for kt in node.outputs], nodes=ctx.emitted - emitted_before,
        depth=prefix.count("/")))
    logger.debug("%s (%s): %s, %d ONNX node(s)", prefix + op.name, type(op).__name__, how,
                 ctx.emitted - emitted_before)


def _mask_value(ctx: ConversionContext, keras_tensor, scope: str):
    mask = walker.keras_mask(keras_tensor)
    if mask is None:
        return None
    ctx.scope = scope
    return ctx.emit_keras([mask])[0]


def _autocast(ctx: ConversionContext, op, keras_tensor, value):
    """``value`` cast the way ``Layer.__call__`` casts this input (mixed precision), if it does."""
    dtype = walker.autocast_dtype(op, keras_tensor)
    return value if dtype is None else ctx.cast(value, dtype)


def _layer_perm(ctx: ConversionContext, op, spec: ConverterSpec, node) -> L.Perm:
    rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
    if spec.layout is L.Layout.CHANNELS_FIRST:
        if getattr(op, "data_format", "channels_last") == "channels_first":
            return L.identity(rank)
        return L.channels_first(rank)
    if spec.layout is L.Layout.ANY and node.input_tensors:
        out_rank = len(node.outputs[0].shape) if node.outputs else rank
        if all(len(t.shape) == out_rank for t in node.input_tensors):
            return ctx.lookup(node.input_tensors[0]).perm
    return L.identity(rank)


def _convert_node(ctx: ConversionContext, node, spec: ConverterSpec, prefix: str) -> None:
    op = node.operation
    # Masks Keras attached to the inputs (Embedding(mask_zero), Masking) that the graph does not
    # carry as edges: converted first, so that the converter can read them from ctx.input_masks.
    masks = [_mask_value(ctx, kt, prefix + op.name) for kt in node.input_tensors]
    perm = _layer_perm(ctx, op, spec, node)
    ctx.input_masks = masks
    ctx.scope = prefix + op.name
    ctx.operation = op
    ctx.in_tensors = node.input_tensors
    ctx.out_tensors = node.outputs
    ctx.perm = perm
    ctx.out_perms = None

    def fetch(kt):
        rank = len(kt.shape)
        return _autocast(ctx, op, kt, ctx.fetch(kt, perm if len(perm) == rank else L.identity(rank)))

    args, ctx.kwargs = node.filled_arguments(fetch, ctx.constant)
    ctx.args = args
    flat_args = keras.tree.flatten(args)
    try:
        result = spec.fn(ctx, op, *flat_args)
    except (UnsupportedError, ConversionError):
        raise
    except Exception as exc:  # a converter bug must name the layer it failed on
        raise ConversionError(
            f"converter for '{ctx.scope}' ({type(op).__name__}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(results) != len(node.outputs):
        raise ConversionError(
            f"converter for '{ctx.scope}' ({type(op).__name__}) returned {len(results)} value(s) "
            f"for {len(node.outputs)} Keras output(s)"
        )
    out_perms = ctx.out_perms or [
        perm if (spec.layout is not L.Layout.KERAS and len(kt.shape) == len(perm)) else L.identity(len(kt.shape))
        for kt in node.outputs
    ]
    inputs_ids = {id(ctx.lookup(t).value) for t in node.input_tensors}
    for i, (kt, value, out_perm) in enumerate(zip(node.outputs, results, out_perms)):
        if value.producer() is not None and id(value) not in inputs_ids and not value.is_graph_input():
            value.name = ctx.unique_name(ctx.scope if len(results) == 1 else f"{ctx.scope}:{i}")
            value.dtype = value.dtype or to_onnx_dtype(kt.dtype)
        ctx.bind(kt, Tensor(value, tuple(out_perm)))
