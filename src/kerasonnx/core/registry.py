"""Converter registries: objects mapping a Keras layer/op class to a converter function.

A converter is ``fn(ctx, op, *inputs) -> value | sequence of values``. ``inputs`` are the node's
positional call arguments, flattened, with Keras tensors replaced by ONNX values (non-tensor
arguments such as Python scalars stay as they are). Registries are plain objects: user registries
chain to the built-in one and win over it; nothing global changes during a conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .layout import Layout


@dataclass(frozen=True)
class Case:
    """A test case declared beside a converter.

    ``build`` returns a Keras layer (or any callable on Keras tensors). ``input_shapes`` are the
    per-input shapes without the batch dimension. ``dtypes`` default to float32.
    """

    name: str
    build: Callable[[], Any]
    input_shapes: tuple = ((4,),)
    dtypes: tuple | None = None
    int_range: tuple[int, int] = (0, 10)
    atol: float = 1e-4
    min_opset: int | None = None
    backends: tuple[str, ...] | None = None  # Keras backends whose semantics the converter follows


@dataclass(frozen=True)
class ConverterSpec:
    fn: Callable
    keras_class: type
    min_opset: int
    layout: Layout
    cases: tuple[Case, ...] = field(default_factory=tuple)
    origin: str = "user"  # name of the registry it was registered in ("builtin" for ours)

    @property
    def qualname(self) -> str:
        return f"{self.keras_class.__module__}.{self.keras_class.__qualname__}"


class Registry:
    """Maps Keras classes to converters. ``parent`` is consulted when this registry has no entry."""

    def __init__(self, parent: "Registry | None" = None, name: str = "user"):
        self._specs: dict[type, ConverterSpec] = {}
        self._refusals: dict[type, str] = {}
        self.parent = parent
        self.name = name

    def register(
        self,
        *keras_classes: type,
        min_opset: int = 13,
        layout: Layout = Layout.KERAS,
        cases: Iterable[Case] = (),
    ) -> Callable[[Callable], Callable]:
        """Decorator registering ``fn`` for each of ``keras_classes`` (exact class match).

        With no class (an op this Keras version lacks, from ``walker.ops_classes``) it does nothing.
        """

        def decorator(fn: Callable) -> Callable:
            for cls in keras_classes:
                self._specs[cls] = ConverterSpec(fn, cls, min_opset, Layout(layout), tuple(cases), self.name)
            return fn

        return decorator

    def refuse(self, *keras_classes: type, reason: str) -> None:
        """Record why ``keras_classes`` have no converter here, for the ``UnsupportedError`` (a class
        registered later, here or in a chained user registry, still converts)."""
        for cls in keras_classes:
            self._refusals[cls] = reason

    def refusal(self, keras_class: type) -> str | None:
        """Why ``keras_class`` is not converted (None when nothing was recorded)."""
        if keras_class in self._refusals:
            return self._refusals[keras_class]
        return self.parent.refusal(keras_class) if self.parent is not None else None

    def lookup(self, keras_class: type) -> ConverterSpec | None:
        spec = self._specs.get(keras_class)
        if spec is None and self.parent is not None:
            return self.parent.lookup(keras_class)
        return spec

    def chain(self, parent: "Registry") -> "Registry":
        """A new registry with this one's converters, falling back to ``parent`` (then ours)."""
        merged = Registry(parent=parent, name=self.name)
        merged._specs = dict(self._specs)
        merged._refusals = dict(self._refusals)
        return merged

    def specs(self) -> list[ConverterSpec]:
        seen: dict[type, ConverterSpec] = {}
        registry: Registry | None = self
        while registry is not None:
            for cls, spec in registry._specs.items():
                seen.setdefault(cls, spec)
            registry = registry.parent
        return list(seen.values())

    def cases(self) -> list[Case]:
        """Every declared test case once (a converter registered for several classes shares them)."""
        unique: dict[int, Case] = {}
        for spec in self.specs():
            for case in spec.cases:
                unique.setdefault(id(case), case)
        return list(unique.values())

    def __contains__(self, keras_class: type) -> bool:
        return self.lookup(keras_class) is not None


class MissingOp(AttributeError):
    """A test case uses a ``keras.ops`` function this Keras version does not have."""


def lazy_op(namespace, name: str) -> Callable:
    """``getattr(namespace, name)`` resolved when called, so that declaring test cases never fails
    at import time on a Keras version without that op (the case is skipped instead)."""

    def call(*args, **kwargs):
        fn = getattr(namespace, name, None)
        if fn is None:
            raise MissingOp(f"{getattr(namespace, '__name__', namespace)}.{name} is not in this Keras version")
        return fn(*args, **kwargs)

    call.__name__ = name
    return call
