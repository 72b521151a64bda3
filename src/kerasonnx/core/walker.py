"""The only module that touches Keras' private graph API (``keras.src``, ``_nodes_by_depth``,
``Node``, ``SymbolicArguments``, ``Sequential._functional``). Checked on Keras 3.8 to 3.15; when Keras
moves something, this is the one file to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from .errors import InvalidInputError


@dataclass
class GraphNode:
    """One call of a layer or ``keras.ops`` operation in a functional graph."""

    operation: Any
    input_tensors: list
    outputs: list
    _arguments: Any

    def filled_arguments(self, lookup, constant=None) -> tuple[tuple, dict]:
        """Positional and keyword call arguments with Keras tensors replaced by ``lookup(tensor)``
        and, when ``constant`` is given, Keras variables and concrete backend arrays (values a
        traced ``call()`` computed eagerly) replaced by ``constant(value)``."""
        swap = lambda x: _swap(x, lookup, constant)  # noqa: E731
        args = keras.tree.map_structure(swap, self._arguments.args)
        kwargs = keras.tree.map_structure(swap, self._arguments.kwargs)
        return args, kwargs


    def settings(self) -> list:
        """The non-tensor call arguments and public attributes of this node's operation, as plain
        Python/numpy leaves (to compare two traces of the same code). Layers' attributes are skipped:
        they are the same objects in every trace."""
        leaves = _plain_leaves((self._arguments.args, self._arguments.kwargs))
        if not is_layer(self.operation):
            public = {k: v for k, v in vars(self.operation).items() if not k.startswith("_") and k != "name"}
            leaves += _plain_leaves([public[k] for k in sorted(public)])
        return leaves


def _plain_leaves(structure) -> list:
    import numpy as np

    leaves = []
    for x in keras.tree.flatten(structure):
        if isinstance(x, (bool, int, float, np.number, np.ndarray)):
            leaves.append(x)
        elif is_concrete_tensor(x) and not is_variable(x):
            leaves.append(np.asarray(keras.ops.convert_to_numpy(x)))
    return leaves


def _swap(x, lookup, constant):
    if is_keras_tensor(x):
        return lookup(x)
    if constant is not None and is_concrete_tensor(x):
        return constant(x)
    return x


def is_variable(x) -> bool:
    return isinstance(x, keras.Variable)


def is_concrete_tensor(x) -> bool:
    """A Keras variable or a backend array (not a symbolic tensor, not a Python scalar)."""
    import numpy as np

    if is_keras_tensor(x) or isinstance(x, (bool, int, float, str)) or x is None:
        return False
    return is_variable(x) or isinstance(x, np.ndarray) or keras.ops.is_tensor(x)


def is_keras_tensor(x) -> bool:
    return isinstance(x, keras.KerasTensor)


def is_model(operation) -> bool:
    return isinstance(operation, keras.Model)


def is_layer(operation) -> bool:
    return isinstance(operation, keras.layers.Layer)


def has_graph(model) -> bool:
    """True for Functional and Sequential models (a graph to walk); False for subclassed ones."""
    if isinstance(model, keras.Sequential):
        return True
    return hasattr(model, "_nodes_by_depth") and bool(getattr(model, "inputs", None))


def is_nested_graph(operation) -> bool:
    """A Functional or Sequential model used as a layer: converted by recursing into its graph."""
    return is_model(operation) and has_graph(operation)


def built_input_shapes(model) -> list | None:
    """Input shapes recorded when a subclassed model was built or called, if any."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes:
        return None
    values = list(shapes.values())
    if len(values) == 1 and isinstance(values[0], (list, tuple)) and values[0] and \
            all(isinstance(s, (list, tuple)) for s in values[0]):
        return [tuple(s) for s in values[0]]
    return [tuple(v) for v in values]


def functional_of(model):
    """The walkable functional graph of a Functional or Sequential model (built if needed)."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise InvalidInputError(
                f"Sequential model '{model.name}' has no input shape yet: build it first "
                "(model.build((None, ...))) or pass input_signature"
            )
        return functional
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise InvalidInputError(
            f"model '{model.name}' ({type(model).__name__}) is not a Functional or Sequential model "
            "with known inputs; subclassed models are not supported yet"
        )
    return model


def build_sequential(model, input_shape) -> None:
    """Build a Sequential model created without an ``Input`` so that it gets a functional graph."""
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is None:
        model.build(tuple(input_shape))


def graph_inputs(functional) -> list:
    return list(keras.tree.flatten(functional.inputs))


def graph_outputs(functional) -> list:
    return list(keras.tree.flatten(functional.outputs))


def producer_name(keras_tensor) -> str:
    """Name of the layer/op that produced ``keras_tensor`` (an input's InputLayer for inputs)."""
    history = getattr(keras_tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None) or keras_tensor.name


def output_names(model, functional) -> list[str]:
    names = getattr(model, "output_names", None)
    if names and len(names) == len(graph_outputs(functional)):
        return list(names)
    return [producer_name(t) for t in graph_outputs(functional)]


def nodes(functional) -> list[GraphNode]:
    """Non-input nodes of ``functional`` in topological order."""
    ordered = []
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.is_input:
                continue
            ordered.append(
                GraphNode(node.operation, list(node.input_tensors), list(node.outputs), node.arguments)
            )
    return ordered


def variable_path(variable, default: str = "weight") -> str:
    """A Keras variable's path (``dense/kernel``); ``default`` for plain arrays."""
    return getattr(variable, "path", None) or getattr(variable, "name", None) or default


def ops_class(module: str, name: str):
    """The ``keras.src.ops.<module>.<name>`` Operation class, or None if this Keras lacks it."""
    import importlib

    try:
        return getattr(importlib.import_module(f"keras.src.ops.{module}"), name)
    except (ImportError, AttributeError):
        return None


def ops_classes(module: str, *names: str) -> list:
    return [c for c in (ops_class(module, n) for n in names) if c is not None]


def app_class(module: str, name: str):
    """A layer class defined in ``keras.src.applications.<module>``, or None."""
    import importlib

    try:
        return getattr(importlib.import_module(f"keras.src.applications.{module}"), name)
    except (ImportError, AttributeError):
        return None


def autocast_dtype(operation, keras_tensor) -> str | None:
    """The dtype ``Layer.__call__`` casts this float input to (mixed precision), or None."""
    if not is_layer(operation) or not getattr(operation, "_convert_input_args", True):
        return None
    if not getattr(operation, "autocast", True):
        return None
    target = getattr(operation, "input_dtype", None)
    dtype = keras.backend.standardize_dtype(keras_tensor.dtype)
    if target is None or dtype == target or not keras.backend.is_float_dtype(dtype):
        return None
    return target if keras.backend.is_float_dtype(target) else None


def autocast_scope(layer):
    """The autocast scope ``Layer.__call__`` opens for a mixed-precision layer (else a no-op)."""
    import contextlib

    compute = getattr(layer, "compute_dtype", None)
    variable = getattr(layer, "variable_dtype", None)
    if (getattr(layer, "autocast", True) and compute and variable and compute != variable
            and keras.backend.is_float_dtype(compute)):
        from keras.src.backend import AutocastScope

        return AutocastScope(compute)
    return contextlib.nullcontext()


def nodes_producing(keras_tensors, is_bound) -> list[GraphNode]:
    """The nodes computing ``keras_tensors`` from tensors for which ``is_bound`` is true, in
    topological order (walks Keras' history links: for bodies of ``keras.ops`` control flow)."""
    ordered: list[GraphNode] = []
    seen: set[int] = set()

    def visit(tensor):
        if is_bound(tensor):
            return
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            raise InvalidInputError(f"tensor {tensor.name} is not computed from the model's inputs")
        node = history.operation._inbound_nodes[history.node_index]
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.input_tensors:
            visit(parent)
        if not node.is_input:
            ordered.append(GraphNode(node.operation, list(node.input_tensors), list(node.outputs),
                                     node.arguments))

    for tensor in keras_tensors:
        visit(tensor)
    return ordered


def keras_mask(keras_tensor):
    """The mask Keras attached to a symbolic tensor (``Embedding(mask_zero=True)``, ``Masking``)."""
    return getattr(keras_tensor, "_keras_mask", None)


def ops_catalog(module: str) -> list:
    """Every Operation class defined in ``keras.src.ops.<module>`` (for the coverage table)."""
    import importlib
    import inspect

    try:
        mod = importlib.import_module(f"keras.src.ops.{module}")
    except ImportError:
        return []
    base = importlib.import_module("keras.src.ops.operation").Operation
    return [cls for cls in vars(mod).values()
            if inspect.isclass(cls) and issubclass(cls, base) and cls is not base and cls.__module__ == mod.__name__]
