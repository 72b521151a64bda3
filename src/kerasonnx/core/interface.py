"""Channels-first model interface (``inputs_as_nchw`` / ``outputs_as_nchw``, as in tf2onnx).

A named input or output of rank 3 to 5 is exposed channels-first: the ONNX graph input/output is
the Keras tensor with its last axis moved to position 1. Inside, the value simply carries the
channels-first layout (core/layout.py), so an NCHW input feeds the first convolution directly and
an output already stored channels-first needs no Transpose.
"""

from __future__ import annotations

from . import layout as L
from .errors import InvalidInputError


def channels_first_names(requested, names: list[str], ranks: list[int], kind: str) -> set[str]:
    """The validated set of ``names`` to expose channels-first (``requested``: None, a name or a list)."""
    if requested is None:
        return set()
    requested = [requested] if isinstance(requested, str) else list(requested)
    unknown = [n for n in requested if n not in names]
    if unknown:
        raise InvalidInputError(f"{kind}s_as_nchw: unknown {kind} name(s) {', '.join(map(repr, unknown))}; "
                                f"the model's {kind}s are {', '.join(map(repr, names))}")
    rank_of = dict(zip(names, ranks))
    wrong = [f"{n!r} (rank {rank_of[n]})" for n in requested if not 3 <= rank_of[n] <= 5]
    if wrong:
        raise InvalidInputError(f"{kind}s_as_nchw: only 3-D to 5-D {kind}s have a channels axis to move: "
                                f"{', '.join(wrong)}")
    return set(requested)


def interface_perm(name: str, rank: int, channels_first: set[str]) -> L.Perm:
    """How graph input/output ``name`` is stored relative to its Keras tensor."""
    return L.channels_first(rank) if name in channels_first else L.identity(rank)
