"""Tensor layouts used during conversion.

Keras image layers are channels-last (NHWC); ONNX convolution and pooling are channels-first (NCHW).
Each converted value carries a permutation ``perm``: the ONNX tensor equals
``transpose(keras_tensor, perm)``. Converters declare which layout they accept; the context inserts
(and caches) the Transposes needed, so a stack of convolutions stays channels-first and a CNN gets
one Transpose after its input and, at most, one before its first layout-sensitive layer.
"""

from __future__ import annotations

import enum

Perm = tuple[int, ...]


class Layout(str, enum.Enum):
    KERAS = "keras"  # inputs in Keras' own layout; outputs in Keras' layout
    ANY = "any"  # layout-agnostic (elementwise, per-channel ops): outputs keep the inputs' layout
    CHANNELS_FIRST = "channels_first"  # inputs channels-first; same-rank outputs stay channels-first


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def channels_first(rank: int) -> Perm:
    """Permutation turning a channels-last tensor of ``rank`` into channels-first."""
    if rank < 3:
        return identity(rank)
    return (0, rank - 1, *range(1, rank - 1))


def compose(current: Perm, wanted: Perm) -> Perm:
    """Transpose permutation taking a tensor stored with ``current`` to one stored with ``wanted``."""
    return tuple(current.index(axis) for axis in wanted)


def actual_axis(perm: Perm, keras_axis: int) -> int:
    """Position, in the stored tensor, of Keras axis ``keras_axis`` (negative allowed)."""
    return perm.index(keras_axis % len(perm))


def permute_shape(shape, perm: Perm) -> tuple:
    return tuple(shape[p] for p in perm)


def unit_move_shape(keras_shape, current: Perm, wanted: Perm) -> list[int] | None:
    """Reshape target (batch copied with 0) equivalent to transposing from ``current`` to ``wanted``
    layout, when only static size-1 dims change place; None otherwise."""
    if current[:1] != (0,) or wanted[:1] != (0,) or any(d is None for d in keras_shape[1:]):
        return None
    if [a for a in current[1:] if keras_shape[a] != 1] != [a for a in wanted[1:] if keras_shape[a] != 1]:
        return None
    return [0, *permute_shape(keras_shape, wanted)[1:]]
