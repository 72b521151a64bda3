"""Dimensions that are dynamic while a layer's ``call()`` is traced.

Keras gives ``ops.shape(x)[i] = None`` for a dynamic dim, and many layers cannot be traced with
``None`` (``ops.broadcast_to(self.cls_token, (batch, 1, d))``, ``ops.arange(seq_len)``: Keras computes
them eagerly). Such layers are traced twice more with each dynamic dim replaced by a *sentinel*: a
large prime, different in the two traces. Where the two traces differ, the difference must be
explained by the sentinels, or the layer is refused:

- an integer setting equal to a product of sentinels (times a static factor) becomes a runtime
  ``Shape`` expression when a converter turns it into an int64 tensor (``ctx.int64s``);
- an array computed eagerly whose shape holds sentinels is rebuilt at run time when it is
  ``arange(dim)`` or a broadcast of a static array (``Range`` / ``Expand``);
- anything else (``dim // 2``, ``float(dim)``, an array whose values depend on a dim) is an
  :class:`~kerasonnx.core.errors.UnsupportedError` naming the layer: a baked-in number would give
  a graph that is only right for one size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Two disjoint sets of primes, one per trace; dims are numbered in the order inputs list them. Small
# enough that arrays a layer builds eagerly from several of them (B x T x T masks) stay small; a
# static setting that happens to be a multiple of one is refused rather than guessed.
SENTINELS = ((101, 103, 107, 109, 113, 127, 131, 137),
             (139, 149, 151, 157, 163, 167, 173, 179))
ALL = frozenset(SENTINELS[0] + SENTINELS[1])


@dataclass(frozen=True)
class DimSource:
    """Dynamic dim number ``index`` is axis ``axis`` of traced input ``input_index``."""

    input_index: int
    axis: int


def assign(shapes) -> tuple[list[DimSource], list[list[tuple]]]:
    """Sentinel numbering for the ``None`` dims of ``shapes``, and the shapes of the two traces.

    The batch axis is one dim shared by every input; other dynamic axes get a dim each.
    """
    sources: list[DimSource] = []
    index_of: dict[tuple, int] = {}
    numbered = []
    for i, shape in enumerate(shapes):
        row = []
        for axis, d in enumerate(shape):
            if d is not None:
                row.append(None)
                continue
            key = ("batch",) if axis == 0 else (i, axis)
            if key not in index_of:
                if len(sources) == len(SENTINELS[0]):
                    raise ValueError("too many dynamic dims")
                index_of[key] = len(sources)
                sources.append(DimSource(i, axis))
            row.append(index_of[key])
        numbered.append(row)
    traces = [[tuple(d if n is None else SENTINELS[t][n] for d, n in zip(shape, row))
               for shape, row in zip(shapes, numbered)] for t in (0, 1)]
    return sources, traces


def factor(value: int, sentinels) -> tuple[tuple[int, ...], int]:
    """``value`` as ``rest * prod(sentinels[i] ** powers[i])`` (rest has no sentinel factor)."""
    powers = []
    for s in sentinels:
        n = 0
        while value and value % s == 0:
            value //= s
            n += 1
        powers.append(n)
    return tuple(powers), value


_LARGEST_DIM = 2**40  # bigger values are "until the end" markers (INT64_MAX), never a dim product


def is_dynamic(value: int, sentinels) -> bool:
    value = int(value)
    return 0 < value < _LARGEST_DIM and any(factor(value, sentinels)[0])


def explains(v1, v2, count: int) -> bool:
    """Whether integers ``v1`` (first trace) and ``v2`` (second) are the same product of dims."""
    if not (is_dynamic(v1, SENTINELS[0][:count]) and is_dynamic(v2, SENTINELS[1][:count])):
        return False
    p1, r1 = factor(int(v1), SENTINELS[0][:count])
    p2, r2 = factor(int(v2), SENTINELS[1][:count])
    return p1 == p2 and r1 == r2


def compare(settings1, settings2, count: int) -> tuple[bool, str | None]:
    """Compare two traces' settings (one list of leaves per node): ``(same, reason)``, ``same`` when
    nothing depends on the dims, ``reason`` when something does in a way sentinels do not explain."""
    same = True
    for leaves1, leaves2 in zip(settings1, settings2):
        for a, b in zip(leaves1, leaves2):
            if _equal(a, b):
                if isinstance(a, (int, np.integer)) and not isinstance(a, bool) and is_dynamic(a, SENTINELS[0][:count]):
                    return False, f"the static value {a} is a multiple of a sentinel dimension; give static shapes"
                continue
            same = False
            reason = _leaf_difference(a, b, count)
            if reason:
                return False, reason
    return same, None


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
            and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _leaf_difference(a, b, count: int) -> str | None:
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return None if a == b else "a Python bool depends on a dynamic dimension"
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        if a == b or explains(a, b, count):
            return None
        return f"a dimension is derived from a dynamic dimension by arithmetic kerasonnx cannot express ({a})"
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return None if a == b else "a float is computed from a dynamic dimension"
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape == b.shape == () and float(a).is_integer() and float(b).is_integer() \
                and explains(int(a), int(b), count):
            return None  # a dim as a 0-d tensor: ops.cast(ops.shape(x)[1], "float32")
        if a.shape == b.shape:
            return None if np.array_equal(a, b) else "an array computed eagerly depends on a dynamic dimension"
        one, two = runtime_array(a, SENTINELS[0][:count]), runtime_array(b, SENTINELS[1][:count])
        if one is None or two is None or not _same_plan(one, two):
            return "an array computed eagerly has a dynamic size and is not arange(dim), a broadcast or a triangle of ones"
    return None


def _same_plan(one, two) -> bool:
    if one[0] != two[0]:
        return False
    if one[0] in ("arange", "triangle"):
        return one[1:] == two[1:]
    return np.array_equal(one[1], two[1]) and one[2] == two[2]


def runtime_array(arr: np.ndarray, sentinels):
    """How to rebuild an eagerly computed ``arr`` whose shape holds sentinel dims, or None:
    ``("arange", dim, rank)``, ``("broadcast", base, dims)`` with ``dims[i]`` the dim index of axis i
    (None: static, ``base.shape[i]``), or ``("triangle", upper, k, dims)`` for ``tril``/``triu`` of
    ones (causal masks such as ``ops.tril(ops.ones((t, t)))``)."""
    dims = [sentinels.index(d) if d in sentinels else None for d in arr.shape]
    axes = [i for i, d in enumerate(dims) if d is not None]
    if len(axes) == 1 and arr.size == arr.shape[axes[0]] and np.array_equal(arr.ravel(), np.arange(arr.size)):
        return "arange", dims[axes[0]], arr.ndim  # arange(dim), reshaped to arr's rank
    base = arr[tuple(slice(0, 1) if d is not None else slice(None) for d in dims)]
    if np.array_equal(np.broadcast_to(base, arr.shape), arr):
        return "broadcast", base, tuple(dims)
    if arr.ndim >= 2 and None not in dims[-2:]:
        ones = np.ones_like(arr)
        for upper, k in ((u, k) for u in (False, True) for k in (0, 1, -1)):
            if np.array_equal(arr, np.triu(ones, k) if upper else np.tril(ones, k)):
                return "triangle", upper, k, tuple(dims)
    return None
