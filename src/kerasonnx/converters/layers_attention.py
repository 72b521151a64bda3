"""Attention: MultiHeadAttention, GroupedQueryAttention, Attention, AdditiveAttention and
``keras.ops.nn.dot_product_attention``.

Two forms:

- fused: the ONNX ``Attention`` op (opset >= 23) on 3-D ``(batch, seq, heads * dim)`` inputs, which is
  exactly what the head projections produce when their kernels are flattened, so the fused form needs
  no head split/merge at all (``q_num_heads``/``kv_num_heads`` give MHA, GQA and MQA);
- decomposed: projections as MatMul + Add, one Reshape + Transpose per tensor into heads (the key
  straight into ``(.., dim, seq)``), ``MatMul -> mask -> Softmax -> MatMul`` and one Transpose +
  Reshape back.

Keras masking, checked in Keras 3.15. Masked logits are *replaced* by a large negative number
(``dot_product_attention``: -0.7 * float32 max; the Softmax layer: -1e9) or, in Attention and
AdditiveAttention, 1e9 is *subtracted*. What a fully masked query row gets differs:

- ``dot_product_attention``, Attention, AdditiveAttention, and MultiHeadAttention/GroupedQueryAttention
  on their ``dot_product_attention`` path (3-D inputs, no dropout, no returned scores): softmax of equal
  logits, i.e. the mean of all values;
- MultiHeadAttention/GroupedQueryAttention on their einsum path (scores returned, dropout > 0, or
  MHA inputs of rank != 3): the Softmax layer zeroes masked probabilities afterwards: a zero row.

The fused op zeroes fully masked rows for a boolean ``attn_mask`` (and for rows ``is_causal`` masks):
that is the einsum path's semantics, so those get a boolean mask; the others get an additive float
mask whose large negative absorbs the logit, and use ``is_causal`` only when the causal mask is the
only mask (a top-left causal mask never masks a whole row). Keras' causal mask is top-left aligned
(``tril(ones(T, S))``), like ONNX's without a KV cache. onnxruntime wants the mask's last two dims
to be exactly (T, S), so the fused op's mask is expanded to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import keras
import numpy as np
import onnx_ir as ir
from keras import layers

from ..core import layout as L
from ..core.registry import Case
from ..core.walker import keras_mask
from ..core.walker import ops_class
from . import BUILTIN
from .activations import apply_activation

register = BUILTIN.register

_FUSED_OPSET = 23
_ATTENTION_LAYER_PENALTY = {"float16": 65504.0}  # Attention._apply_scores: scores - max_value
_SOFTMAX_NEGATIVE = {"float16": -3e4}  # Softmax layer / MHA masked softmax (else -1e9)


# ---- small graph helpers ----------------------------------------------------------------------
def _unsqueeze(ctx, x, axes):
    return ctx.op("Unsqueeze", [x, ctx.int64s(list(axes))])


def _reshape(ctx, x, shape):
    return ctx.op("Reshape", [x, ctx.int64s(list(shape))])


def _transpose(ctx, x, perm):
    perm = [int(p) for p in perm]
    return x if perm == sorted(perm) else ctx.op("Transpose", [x], {"perm": perm})


def _swap_last(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


def _keras_tensor(ctx, value):
    """The Keras tensor of the current node whose converted value is ``value`` (seen through the
    Cast/Transpose the driver may insert), or None."""
    candidates = [value]
    producer = value.producer()
    if producer is not None and producer.op_type in ("Cast", "Transpose", "Reshape"):
        candidates.append(producer.inputs[0])
    for kt in ctx.in_tensors:
        if any(ctx.lookup(kt).value is c for c in candidates):
            return kt
    return None


def _rank(ctx, value) -> int:
    kt = _keras_tensor(ctx, value)
    if kt is not None:
        return len(kt.shape)
    if value.shape is not None:
        return len(value.shape)
    raise ctx.unsupported("cannot tell the rank of an attention input")


def _large_negative(ctx) -> float:
    """``dot_product_attention``'s masked logit; added to a logit it absorbs it (for float32)."""
    return -0.7 * (65500.0 if str(ctx.out_dtype()) == "float16" else 3.38953e38)


def _softmax_negative(ctx) -> float:
    return _SOFTMAX_NEGATIVE.get(str(ctx.out_dtype()), -1e9)


# ---- masks ------------------------------------------------------------------------------------
@dataclass
class _Mask:
    """A boolean keep-mask (True = attend) and its rank (converted values carry no shapes)."""

    value: ir.Value
    rank: int


def _as_bool(ctx, value) -> ir.Value:
    """Keras casts masks to bool (non-zero = keep)."""
    return value if value.dtype == ir.DataType.BOOL else ctx.op("Cast", [value], {"to": ir.DataType.BOOL})


def _and(ctx, a: _Mask | None, b: _Mask | None) -> _Mask | None:
    if a is None or b is None:
        return a or b
    return _Mask(ctx.op("And", [a.value, b.value]), max(a.rank, b.rank))


def _all(ctx, masks) -> _Mask | None:
    return reduce(lambda a, b: _and(ctx, a, b), masks, None)


def _expand_mask(ctx, mask: _Mask, rank: int) -> _Mask:
    """Keras' mask expansion to the scores' rank: unit axes inserted at axis -3 (before (T, S)). For a
    mask of rank <= 2 that is plain (right-aligned) broadcasting: nothing to emit."""
    missing = rank - mask.rank
    if missing <= 0 or mask.rank <= 2:
        return mask
    start = mask.rank - 2
    return _Mask(_unsqueeze(ctx, mask.value, range(start, start + missing)), rank)


def _length(ctx, x, axis: int) -> ir.Value:
    """``x.shape[axis]`` as an int64 scalar."""
    return ctx.op("Gather", [ctx.op("Shape", [x]), ctx.const(np.asarray(axis, np.int64))])


def _positions(ctx, x, axis: int) -> ir.Value:
    zero, one = ctx.const(np.asarray(0, np.int64)), ctx.const(np.asarray(1, np.int64))
    return ctx.op("Range", [zero, _length(ctx, x, axis), one])


def _query_key_positions(ctx, query, key, axis: int = 1):
    """``(T, 1)`` query positions and ``(S,)`` key positions along ``axis``."""
    cols = _positions(ctx, key, axis)
    rows = cols if query is key else _positions(ctx, query, axis)
    return _unsqueeze(ctx, rows, [1]), cols


def _causal_mask(ctx, query, key, axis: int = 1) -> _Mask:
    """Keras' top-left causal mask ``(T, S)``: query i attends key j iff j <= i."""
    rows, cols = _query_key_positions(ctx, query, key, axis)
    return _Mask(ctx.op("GreaterOrEqual", [rows, cols]), 2)


def _sliding_window_mask(ctx, query, key, window: int) -> _Mask:
    """Keras' symmetric band ``(T, S)``: ``|i - j| < window``."""
    rows, cols = _query_key_positions(ctx, query, key)
    distance = ctx.op("Abs", [ctx.op("Sub", [rows, cols])])
    return _Mask(ctx.op("Less", [distance, ctx.const(np.asarray(window, np.int64))]), 2)


def _lengths(ctx, query, key, axis: int = 1) -> ir.Value:
    """``[T, S]``: the query's and the key's lengths along ``axis`` (a 1-D int64 value)."""
    if query is key:
        return ctx.op("Gather", [ctx.op("Shape", [query]), ctx.int64s([axis, axis])])
    index = ctx.int64s([axis])
    dims = [ctx.op("Gather", [ctx.op("Shape", [x]), index]) for x in (query, key)]
    return ctx.op("Concat", dims, {"axis": 0})


def _additive(ctx, keep: _Mask, negative: float, bias=None) -> ir.Value:
    """A float mask: ``bias`` (or 0) where kept, ``negative`` where masked."""
    kept = bias if bias is not None else ctx.scalar(0.0)
    return ctx.op("Where", [keep.value, kept, ctx.scalar(negative)])


# ---- scaled dot product -----------------------------------------------------------------------
def _softmax_attention(ctx, q, key_t, v, *, scale=None, bias=None, keep=None, negative=None,
                       zero_rows=False):
    """``softmax(mask(q @ key_t * scale + bias)) @ v`` with Keras' replace-by-``negative`` masking;
    ``zero_rows``: masked probabilities are then zeroed (Keras' Softmax layer).

    Returns ``(output, probabilities)``.
    """
    scores = ctx.op("MatMul", [q, key_t])
    if scale is not None:
        scores = ctx.op("Mul", [scores, scale])
    if bias is not None:
        scores = ctx.op("Add", [scores, bias])
    if keep is not None:
        scores = ctx.op("Where", [keep.value, scores, ctx.scalar(negative)])
    probs = ctx.op("Softmax", [scores], {"axis": -1})
    if zero_rows and keep is not None:
        probs = ctx.op("Where", [keep.value, probs, ctx.scalar(0.0)])
    return ctx.op("MatMul", [probs, v]), probs


def _fused_attention(ctx, q, k, v, *, mask=None, causal=False, scale=None, heads=None, want_probs=False):
    """The ONNX Attention op; ``heads=(q_heads, kv_heads)`` for 3-D inputs; ``mask`` from
    :func:`_fused_mask`. With ``want_probs`` the softmax output comes back too (qk_matmul_output mode 3).

    Returns ``(output, probabilities or None)``.
    """
    attrs = {"is_causal": 1 if causal else None, "scale": None if scale is None else float(scale)}
    if heads is not None:
        attrs.update(q_num_heads=int(heads[0]), kv_num_heads=int(heads[1]))
    inputs = [q, k, v] + ([mask] if mask is not None else [])
    if not want_probs:
        return ctx.op("Attention", inputs, attrs), None
    y, present_key, present_value, probs = ctx.op("Attention", inputs, {**attrs, "qk_matmul_output_mode": 3},
                                                  outputs=4)
    present_key.name = present_value.name = ""  # optional outputs left out
    return y, probs


def _fused_mask(ctx, keep: _Mask | None, lengths, bias=None, zero_rows=False, negative=None):
    """The fused op's rank-4 mask expanded to ``lengths`` ``[T, S]`` (``None``: nothing to mask):
    boolean for ``zero_rows`` semantics, else additive (``bias`` or 0 kept, ``negative`` masked)."""
    if keep is None and bias is None:
        return None
    if keep is not None:
        keep = _expand_mask(ctx, keep, 4)
    if keep is not None and zero_rows and bias is None:
        mask = keep.value
    elif keep is not None:
        mask = _additive(ctx, keep, _large_negative(ctx) if negative is None else negative, bias)
    else:
        mask = bias
    shape = ctx.op("Concat", [ctx.int64s([1, 1]), lengths], {"axis": 0})
    return ctx.op("Expand", [mask, shape])


def _fusable(ctx, scale=None) -> bool:
    """ONNX Attention exists and accepts the scale (onnxruntime requires scale > 0)."""
    return ctx.opset >= _FUSED_OPSET and (scale is None or scale > 0)


# ---- heads ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _HeadLayout:
    """Where attention runs in a ``(batch, d1..dk, features)`` input: ``axes`` among ``1..k``."""

    rank: int
    axes: tuple[int, ...]

    @property
    def batch(self) -> tuple[int, ...]:
        return (0, *(i for i in range(1, self.rank - 1) if i not in self.axes))

    def perm(self, key: bool) -> tuple[int, ...]:
        """From ``(batch, d.., heads, dim)`` to ``(batch dims.., heads, attention dims.., dim)``, or
        ``(.., heads, dim, attention dims..)`` for the key."""
        heads, dim = self.rank - 1, self.rank
        tail = (dim, *self.axes) if key else (*self.axes, dim)
        return (*self.batch, heads, *tail)


def _split_heads(ctx, x, layout: _HeadLayout, heads: int, dim: int, key: bool = False, groups: int = 1):
    """``(batch, d.., heads * dim)`` (or ``(.., heads, dim)``) into heads, attention axes flattened
    into one. With ``groups > 1`` each of the ``heads // groups`` heads is repeated ``groups`` times
    (Keras' ``ops.repeat`` for grouped-query attention). Returns ``(flat, unflattened)``."""
    lead = [0] * (layout.rank - 1)
    if groups > 1:
        x = _reshape(ctx, x, lead + [heads // groups, 1, dim])
        x = ctx.op("Expand", [x, ctx.int64s([1] * layout.rank + [groups, 1])])
    x = _reshape(ctx, x, lead + [heads, dim])
    x = _transpose(ctx, x, layout.perm(key))
    if len(layout.axes) == 1:
        return x, x
    kept = len(layout.batch) + (2 if key else 1)
    return _reshape(ctx, x, [0] * kept + ([-1] if key else [-1, dim])), x


def _merge_heads(ctx, y, layout: _HeadLayout, q_heads, heads: int, dim: int):
    """Inverse of :func:`_split_heads` for the output: back to ``(batch, d.., heads * dim)``."""
    if len(layout.axes) > 1:
        kept = len(layout.batch) + 1
        dims = ctx.dims(q_heads, kept, kept + len(layout.axes))
        y = ctx.op("Reshape", [y, ctx.op("Concat", [ctx.int64s([0] * kept), dims, ctx.int64s([dim])],
                                         {"axis": 0})])
    y = _transpose(ctx, y, np.argsort(layout.perm(False)))
    return _reshape(ctx, y, [0] * (layout.rank - 1) + [heads * dim])


# ---- MultiHeadAttention / GroupedQueryAttention -----------------------------------------------
_MHA_ARGS = ("query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask",
             "return_attention_scores", "training", "use_causal_mask")


@dataclass
class _Heads:
    """What MultiHeadAttention and GroupedQueryAttention share once their settings are read."""

    q_heads: int
    kv_heads: int
    key_dim: int
    value_dim: int
    query_dense: object
    key_dense: object
    value_dense: object
    output_dense: object
    gate_dense: object
    sliding_window: int | None
    layout: _HeadLayout
    dropout: float = 0.0
    explicit_query_mask: bool = False  # MultiHeadAttention.call ignores query_mask=: it reads query's mask

    def zero_rows(self, want_probs: bool) -> bool:
        """Keras takes its einsum path (masked probabilities zeroed) instead of dot_product_attention."""
        return self.dropout > 0 or want_probs or self.layout.rank != 3

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(float(self.key_dim))


def _implicit_mask(ctx, kt):
    """The Keras mask attached to input ``kt`` (e.g. by Embedding(mask_zero=True)), if any."""
    mask_kt = keras_mask(kt) if kt is not None else None
    if mask_kt is None:
        return None
    try:
        return ctx.fetch(mask_kt, L.identity(len(mask_kt.shape)))
    except KeyError:
        raise ctx.unsupported("an input carries an implicit Keras mask (e.g. from Embedding(mask_zero=True) "
                              "or Masking) that is not part of the converted graph; pass it explicitly as "
                              "attention_mask=query_mask[:, :, None] & value_mask[:, None, :]") from None


def _call_arguments(ctx, inputs, names) -> dict:
    """The call's arguments by name: positional ``inputs`` (flattened) then keyword arguments."""
    return {**dict(zip(names, inputs)), **ctx.kwargs}


def _mha_masks(ctx, args, heads: _Heads, query, value) -> tuple[_Mask | None, bool]:
    """Keras' ``_compute_attention_mask``: returns ``(keep mask or None, causal_only)``."""
    query_mask = args.get("query_mask") if heads.explicit_query_mask else None
    if query_mask is None:
        query_mask = _implicit_mask(ctx, _keras_tensor(ctx, query))
    value_mask = args.get("value_mask")
    if value_mask is None:
        value_mask = _implicit_mask(ctx, _keras_tensor(ctx, value))
    key_mask = args.get("key_mask")
    if key_mask is None and args.get("key") is not None:
        key_mask = _implicit_mask(ctx, _keras_tensor(ctx, args["key"]))
    causal = bool(args.get("use_causal_mask"))
    attention_mask = args.get("attention_mask")
    auto = [m is not None for m in (query_mask, value_mask, key_mask, heads.sliding_window)]
    if (any(auto) or causal) and heads.layout.rank != 3:
        raise ctx.unsupported("Keras builds (T, S) input/causal/sliding-window masks for 3-D inputs only")
    if attention_mask is not None and len(heads.layout.axes) > 1:
        raise ctx.unsupported("attention_mask with several attention_axes")
    if causal and not any(auto) and attention_mask is None:
        return None, True
    masks = []
    if query_mask is not None:
        masks.append(_Mask(_unsqueeze(ctx, _as_bool(ctx, query_mask), [-1]), 3))  # (B, T, 1)
    for mask in (value_mask, key_mask):
        if mask is not None:
            masks.append(_Mask(_unsqueeze(ctx, _as_bool(ctx, mask), [-2]), 3))  # (B, 1, S)
    if causal:
        masks.append(_causal_mask(ctx, query, value))
    if heads.sliding_window is not None:
        masks.append(_sliding_window_mask(ctx, query, value, heads.sliding_window))
    if attention_mask is not None:
        masks.append(_Mask(_as_bool(ctx, attention_mask), _rank(ctx, attention_mask)))
    return _all(ctx, masks), False


def _projection(ctx, dense, x, bound_axes: int = 1, scale: float | None = None):
    """An EinsumDense sublayer of the attention layer as MatMul + Add: its kernel
    ``(bound.., out..)`` flattened to ``(prod(bound), prod(out))``; ``scale`` is folded in."""
    factor = 1.0 if scale is None else scale

    def flat_kernel(k):
        return np.reshape(k, (int(np.prod(k.shape[:bound_axes])), -1)) * factor

    y = ctx.op("MatMul", [x, ctx.weight(dense.kernel, transform=flat_kernel)])
    if dense.bias is not None:
        y = ctx.op("Add", [y, ctx.weight(dense.bias, transform=lambda b: np.reshape(b, -1) * factor)])
    return apply_activation(ctx, y, dense.activation)


def _attend_fused(ctx, heads: _Heads, q, k, v, query, value, keep, causal_only, want_probs):
    mask = _fused_mask(ctx, keep, _lengths(ctx, query, value), zero_rows=heads.zero_rows(want_probs))
    return _fused_attention(ctx, q, k, v, mask=mask, causal=causal_only, scale=heads.scale,
                            heads=(heads.q_heads, heads.kv_heads), want_probs=want_probs)


def _attend_decomposed(ctx, heads: _Heads, q, k, v, query, value, keep, causal_only, want_probs):
    """Per-head attention on projected ``q`` (scale folded in), ``k``, ``v``; returns the merged
    output ``(batch, d.., heads * value_dim)`` and the scores ``(batch.., heads, T, S)``."""
    layout, groups = heads.layout, heads.q_heads // heads.kv_heads
    q_flat, q_heads = _split_heads(ctx, q, layout, heads.q_heads, heads.key_dim)
    k_flat, _ = _split_heads(ctx, k, layout, heads.q_heads, heads.key_dim, key=True, groups=groups)
    v_flat, _ = _split_heads(ctx, v, layout, heads.q_heads, heads.value_dim, groups=groups)
    if causal_only:
        keep = _causal_mask(ctx, query, value)
    score_rank = len(layout.batch) + 3
    keep = None if keep is None else _expand_mask(ctx, keep, score_rank)
    y, probs = _softmax_attention(ctx, q_flat, k_flat, v_flat, keep=keep, negative=_softmax_negative(ctx),
                                  zero_rows=heads.zero_rows(want_probs))
    return _merge_heads(ctx, y, layout, q_heads, heads.q_heads, heads.value_dim), probs


def _multi_head(ctx, heads: _Heads, inputs):
    """MultiHeadAttention/GroupedQueryAttention: projections, attention, optional gate, output."""
    args = _call_arguments(ctx, inputs, _MHA_ARGS)
    query, value = args["query"], args["value"]
    key = args.get("key") if args.get("key") is not None else value
    keep, causal_only = _mha_masks(ctx, args, heads, query, value)
    want_probs = bool(args.get("return_attention_scores"))
    if want_probs:
        _check_scores_shape(ctx, heads, key)
    fused = _fusable(ctx) and heads.layout.rank == 3
    k = _projection(ctx, heads.key_dense, key)
    v = _projection(ctx, heads.value_dense, value)
    if fused:
        q = _projection(ctx, heads.query_dense, query)
        y, probs = _attend_fused(ctx, heads, q, k, v, query, value, keep, causal_only, want_probs)
    else:
        q = _projection(ctx, heads.query_dense, query, scale=heads.scale)
        y, probs = _attend_decomposed(ctx, heads, q, k, v, query, value, keep, causal_only, want_probs)
    if heads.gate_dense is not None:
        y = ctx.op("Mul", [y, _projection(ctx, heads.gate_dense, query)])
    out = _projection(ctx, heads.output_dense, y, bound_axes=2)
    out_shape = ctx.out_shape(0)
    if len(out_shape) != heads.layout.rank:  # a multi-dimensional output_shape
        out = _reshape(ctx, out, [0] * (heads.layout.rank - 1) + list(out_shape[heads.layout.rank - 1:]))
    return (out, probs) if want_probs else out


def _check_scores_shape(ctx, heads: _Heads, key) -> None:
    """MultiHeadAttention.compute_output_spec declares the scores as (B, N, T, T) whatever the key
    length and the attention axes: the ONNX output must not contradict its declared shape."""
    declared = ctx.out_shape(1)
    key_kt = _keras_tensor(ctx, key)
    key_len = key_kt.shape[1] if key_kt is not None else None
    if heads.layout.rank != 3:
        raise ctx.unsupported("return_attention_scores on inputs of rank != 3: Keras declares the scores' "
                              f"shape as {declared}, which is not the shape it computes")
    if declared[-1] != key_len:
        raise ctx.unsupported(f"return_attention_scores with a key of length {key_len}: Keras declares "
                              f"the scores' shape as {declared}")


def _mha_heads(ctx, op) -> _Heads:
    rank = len(op.query_dense.equation.split(",")[0])
    value_rank = len(op.value_dense.equation.split(",")[0])
    if value_rank != rank:
        raise ctx.unsupported(f"query of rank {rank} with value of rank {value_rank}")
    axes = tuple(int(a) for a in op.attention_axes)  # made non-negative by MHA.build
    if not axes or any(not 1 <= a <= rank - 2 for a in axes):
        raise ctx.unsupported(f"attention_axes {op.attention_axes} on a rank-{rank} input")
    return _Heads(op.num_heads, op.num_heads, op.key_dim, op.value_dim, op.query_dense, op.key_dense,
                  op.value_dense, op.output_dense, getattr(op, "_gate_dense", None) if
                  getattr(op, "_use_gate", False) else None, getattr(op, "_sliding_window", None),
                  _HeadLayout(rank, tuple(sorted(axes))), float(op.dropout))


def _gqa_heads(ctx, op) -> _Heads:
    return _Heads(op.num_query_heads, op.num_key_value_heads, op.head_dim, op.head_dim, op._query_dense,
                  op._key_dense, op._value_dense, op._output_dense,
                  op._gate_dense if getattr(op, "use_gate", False) else None,
                  getattr(op, "sliding_window", None), _HeadLayout(3, (1,)), float(op.dropout),
                  explicit_query_mask=True)


def _mha(**kw):
    return layers.MultiHeadAttention(**{"bias_initializer": "random_normal", **kw})


def _self_attention(layer_fn, **call_kw):
    return lambda: (lambda x: layer_fn()(x, x, **call_kw))


def _cross_attention(layer_fn, **call_kw):
    return lambda: (lambda q, v: layer_fn()(q, v, **call_kw))


def _pooled_value(layer_fn, **call_kw):
    """Query of length 16, value/key of length 8 (MaxPooling1D): dynamic and different lengths."""
    return lambda: (lambda q, v: layer_fn()(q, layers.MaxPooling1D(2)(v), **call_kw))


def _pooled_query(layer_fn, **call_kw):
    return lambda: (lambda q, v: layer_fn()(layers.MaxPooling1D(2)(q), v, **call_kw))


def _masked(layer_fn, **call_kw):
    return lambda: (lambda q, v, m: layer_fn()(q, v, attention_mask=m, **call_kw))


_SEQ = ((None, 8),)
_SEQ2 = ((None, 8), (None, 6))
_ROW_MASK = ((None, 8), (None, 8), (None, 1))  # (B, T, 1): whole query rows masked
_KEY_MASK = ((None, 8), (None, 8), (1, None))  # (B, 1, S): key padding
_FULL_MASK = ((None, 8), (None, 8), (None, None))  # (B, T, S)
_BOOL3 = ("float32", "float32", "bool")
_MASK_DTYPES = ("float32", "float32", "bool", "bool")
_QV = ((None, 4), (None, 4))
_QV_MASKS = ((None, 4), (None, 4), (None,), (None,))


def _both_forms(name, build, shapes, **kw):
    """A case at the newest opset (fused) and its twin at opset 17 (decomposed)."""
    return [Case(name, build, shapes, **kw), Case(f"{name}_opset17", build, shapes, min_opset=17, **kw)]


_MHA_CASES = [
    *_both_forms("mha_self", _self_attention(lambda: _mha(num_heads=2, key_dim=4)), _SEQ),
    *_both_forms("mha_causal", _self_attention(lambda: _mha(num_heads=2, key_dim=4), use_causal_mask=True), _SEQ),
    *_both_forms("mha_cross", _cross_attention(lambda: _mha(num_heads=3, key_dim=2)), _SEQ2),
    *_both_forms("mha_cross_lengths_causal", _pooled_value(lambda: _mha(num_heads=2, key_dim=4),
                                                          use_causal_mask=True), _SEQ2),
    *_both_forms("mha_short_query_causal", _pooled_query(lambda: _mha(num_heads=2, key_dim=4),
                                                        use_causal_mask=True), _SEQ2),
    *_both_forms("mha_key", lambda: (lambda q, v, k: _mha(num_heads=2, key_dim=3, value_dim=5)(q, v, k)),
                 ((5, 8), (7, 6), (7, 4))),
    *_both_forms("mha_mask_rows", _masked(lambda: _mha(num_heads=2, key_dim=4)), _ROW_MASK, dtypes=_BOOL3),
    *_both_forms("mha_mask_keys_causal", _masked(lambda: _mha(num_heads=2, key_dim=4), use_causal_mask=True),
                 _KEY_MASK, dtypes=_BOOL3),
    Case("mha_mask_full", _masked(lambda: _mha(num_heads=2, key_dim=4)), _FULL_MASK, dtypes=_BOOL3),
    *_both_forms("mha_scores", _cross_attention(lambda: _mha(num_heads=2, key_dim=4),
                                                return_attention_scores=True), _SEQ2),
    *_both_forms("mha_scores_mask_rows", _masked(lambda: _mha(num_heads=2, key_dim=4),
                                                 return_attention_scores=True), _ROW_MASK, dtypes=_BOOL3),
    Case("mha_value_mask", lambda: (lambda q, v, m: _mha(num_heads=2, key_dim=4)(q, v, value_mask=m)),
         ((None, 8), (None, 8), (None,)), dtypes=_BOOL3),
    Case("mha_query_mask_ignored", lambda: (lambda q, v, m: _mha(num_heads=2, key_dim=4)(q, v, query_mask=m)),
         ((None, 8), (None, 8), (None,)), dtypes=_BOOL3),
    Case("mha_output_shape", _cross_attention(lambda: _mha(num_heads=2, key_dim=4, output_shape=(2, 3))), _SEQ2),
    Case("mha_output_shape_int", _self_attention(lambda: _mha(num_heads=2, key_dim=4, output_shape=5)), _SEQ),
    *_both_forms("mha_no_bias", _self_attention(lambda: _mha(num_heads=2, key_dim=4, value_dim=3,
                                                             use_bias=False)), _SEQ),
    Case("mha_dropout", _self_attention(lambda: _mha(num_heads=2, key_dim=4, dropout=0.5)), _SEQ),
    # dropout > 0 takes Keras' einsum path: fully masked rows are zero rows (a boolean fused mask)
    *_both_forms("mha_dropout_mask_rows", _masked(lambda: _mha(num_heads=2, key_dim=4, dropout=0.1)), _ROW_MASK,
                 dtypes=_BOOL3),
    *_both_forms("mha_gate", _self_attention(lambda: _mha(num_heads=2, key_dim=4, use_gate=True),
                                             use_causal_mask=True), _SEQ),
    *_both_forms("mha_sliding_window", _self_attention(lambda: _mha(num_heads=2, key_dim=4, sliding_window=3),
                                                       use_causal_mask=True), _SEQ),
    Case("mha_axis2", _self_attention(lambda: _mha(num_heads=2, key_dim=3, attention_axes=2)), ((3, None, 6),)),
    Case("mha_axis2_mask", lambda: (lambda x, m: _mha(num_heads=2, key_dim=3, attention_axes=(2,))(
        x, x, attention_mask=m)), ((3, 5, 6), (3, 5, 5)), dtypes=("float32", "bool")),
    Case("mha_axes_1_2", _self_attention(lambda: _mha(num_heads=2, key_dim=3, attention_axes=(1, 2))),
         ((3, 4, 6),)),
    Case("mha_axes_1_2_rank5", _self_attention(lambda: _mha(num_heads=2, key_dim=3, attention_axes=(2, 3),
                                                            dropout=0.2)), ((2, 3, 4, 6),)),
]


@register(layers.MultiHeadAttention, cases=_MHA_CASES)
def multi_head_attention(ctx, op, *inputs):
    return _multi_head(ctx, _mha_heads(ctx, op), inputs)


_GROUPED_QUERY_ATTENTION = getattr(layers, "GroupQueryAttention", None)  # class GroupedQueryAttention


def _gqa(**kw):
    return _GROUPED_QUERY_ATTENTION(**{"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2,
                                           "bias_initializer": "random_normal", **kw})


_GQA_CASES = [
    *_both_forms("gqa_self", _self_attention(_gqa), _SEQ),
    *_both_forms("gqa_causal", _self_attention(_gqa, use_causal_mask=True), _SEQ),
    *_both_forms("gqa_mask_rows", _masked(_gqa), _ROW_MASK, dtypes=_BOOL3),
    *_both_forms("gqa_mask_keys_causal", _masked(_gqa, use_causal_mask=True), _KEY_MASK, dtypes=_BOOL3),
    *_both_forms("gqa_scores", _self_attention(_gqa, return_attention_scores=True), _SEQ),
    *_both_forms("gqa_mqa_cross_lengths", _pooled_value(lambda: _gqa(num_key_value_heads=1),
                                                       use_causal_mask=True), ((None, 8), (None, 8))),
    *_both_forms("gqa_query_value_masks", lambda: (lambda q, v, qm, vm: _gqa()(q, v, query_mask=qm,
                                                                                value_mask=vm)),
                 ((None, 8), (None, 8), (None,), (None,)), dtypes=_MASK_DTYPES),
    Case("gqa_no_bias_gate", _self_attention(lambda: _gqa(use_bias=False, use_gate=True)), _SEQ),
    *_both_forms("gqa_sliding_window", _self_attention(lambda: _gqa(sliding_window=2)), _SEQ),
]


def grouped_query_attention(ctx, op, *inputs):
    return _multi_head(ctx, _gqa_heads(ctx, op), inputs)


if _GROUPED_QUERY_ATTENTION is not None:
    register(_GROUPED_QUERY_ATTENTION, cases=_GQA_CASES)(grouped_query_attention)


# ---- Attention / AdditiveAttention ------------------------------------------------------------
@dataclass
class _AttentionCall:
    query: ir.Value
    value: ir.Value
    key: ir.Value
    query_mask: ir.Value | None
    value_mask: ir.Value | None
    causal: bool
    return_scores: bool


def _attention_call(ctx, inputs) -> _AttentionCall:
    """``layer([q, v(, k)], mask=[q_mask, v_mask(, k_mask)])``; Keras ignores a key mask. The inputs'
    own Keras masks are not used: ``inputs`` is a list, so ``Layer.__call__`` never fills ``mask``."""
    args = getattr(ctx, "args", None) or (list(inputs),)
    flat = list(args[0]) if isinstance(args[0], (list, tuple)) else list(inputs)
    masks = ctx.kwargs.get("mask", args[1] if len(args) > 1 else None)
    tensors = [t for t in flat if isinstance(t, ir.Value)]
    masks = list(masks or []) + [None, None]
    query, value = tensors[0], tensors[1]
    key = tensors[2] if len(tensors) > 2 else value
    return _AttentionCall(query, value, key, masks[0], masks[1], bool(ctx.kwargs.get("use_causal_mask")),
                          bool(ctx.kwargs.get("return_attention_scores")))


def _attention_keep(ctx, call: _AttentionCall, rank: int) -> _Mask | None:
    """``Attention._calculate_score_mask``/``_apply_scores``: the value mask, as ``(.., 1, Tv)`` when it
    is ``(B, Tv)`` or combined with the causal mask (else as given), and the causal mask."""
    keep = None
    if call.value_mask is not None:
        mask_rank = _rank(ctx, call.value_mask)
        keep = _Mask(_as_bool(ctx, call.value_mask), mask_rank)
        if call.causal or mask_rank == 2:
            keep = _Mask(_unsqueeze(ctx, keep.value, [-2]), mask_rank + 1)
    if call.causal:
        keep = _and(ctx, keep, _causal_mask(ctx, call.query, call.key, axis=rank - 2))
    return keep


def _dot_scores(ctx, op, q, k, rank):
    scores = ctx.op("MatMul", [q, _transpose(ctx, k, _swap_last(rank))])
    if op.scale is not None:
        scores = ctx.op("Mul", [scores, ctx.weight(op.scale)])
    return scores


def _tanh_sum_scores(ctx, q, k, rank, inner_scale, weights):
    """``sum(weights * tanh(inner_scale * (q[.., :, None, :] + k[.., None, :, :])), -1)`` as a MatMul
    with the ``weights`` vector."""
    summed = ctx.op("Add", [_unsqueeze(ctx, q, [rank - 1]), _unsqueeze(ctx, k, [rank - 2])])
    if inner_scale is not None:
        summed = ctx.op("Mul", [summed, inner_scale])
    return ctx.op("MatMul", [ctx.op("Tanh", [summed]), weights])


def _concat_scores(ctx, op, q, k, rank):
    dim = ctx.in_shape(0)[-1]
    weight = float(ctx.numpy(op.concat_score_weight))
    inner = ctx.weight(op.scale) if op.scale is not None else None
    return _tanh_sum_scores(ctx, q, k, rank, inner, ctx.const(np.full(dim, weight), ctx.out_dtype(), "concat"))


def _additive_scores(ctx, op, q, k, rank):
    dim = ctx.in_shape(0)[-1]
    weights = ctx.weight(op.scale) if op.use_scale else ctx.const(np.ones(dim), ctx.out_dtype(), "ones")
    return _tanh_sum_scores(ctx, q, k, rank, None, weights)


def _attention_fused(ctx, op, call, keep, bias_value, rank):
    """Dot-product Attention layer as the ONNX op: 3-D inputs as one head, 4-D as (B, heads, T, D).
    The trainable scale (any sign) multiplies the query; the op's own scale is 1."""
    q = call.query if op.scale is None else ctx.op("Mul", [call.query, ctx.weight(op.scale)])
    if keep is not None and rank == 3 and keep.rank == 3:  # (B, Tq|1, Tv) -> (B, 1, Tq|1, Tv)
        keep = _Mask(_unsqueeze(ctx, keep.value, [1]), 4)
    mask = _fused_mask(ctx, keep, _lengths(ctx, call.query, call.key, rank - 2), negative=bias_value)
    y, probs = _fused_attention(ctx, q, call.key, call.value, mask=mask, causal=call.causal and keep is None,
                                scale=1.0, heads=(1, 1) if rank == 3 else None, want_probs=call.return_scores)
    if probs is not None and rank == 3:
        probs = ctx.op("Squeeze", [probs, ctx.int64s([1])])
    return y, probs


def _attention_layer(ctx, op, inputs, scores_fn):
    """Attention/AdditiveAttention: scores, ``scores - 1e9`` where masked, softmax, weighted sum;
    query-masked output rows are zeroed."""
    call = _attention_call(ctx, inputs)
    rank = _rank(ctx, call.query)
    penalty = -_ATTENTION_LAYER_PENALTY.get(str(ctx.out_dtype()), 1e9)
    fused = scores_fn is _dot_scores and _fusable(ctx) and rank in (3, 4)
    if fused:  # a causal mask alone is the op's is_causal; with a value mask it is folded in
        keep = _attention_keep(ctx, call, rank) if call.value_mask is not None else None
        y, probs = _attention_fused(ctx, op, call, keep, penalty, rank)
    else:
        keep = _attention_keep(ctx, call, rank)
        bias = None if keep is None else _additive(ctx, keep, penalty)
        scores = scores_fn(ctx, op, call.query, call.key, rank)
        probs = ctx.op("Softmax", [scores if bias is None else ctx.op("Add", [scores, bias])], {"axis": -1})
        y = ctx.op("MatMul", [probs, call.value])
    if call.query_mask is not None:
        keep_rows = _unsqueeze(ctx, _as_bool(ctx, call.query_mask), [-1])
        y = ctx.op("Where", [keep_rows, y, ctx.scalar(0.0)])
    return (y, probs) if call.return_scores else y


def _with_scale(layer_fn, scale_value):
    """A case build whose layer gets a non-trivial (trainable, initially 1) scale weight."""
    def build():
        layer = layer_fn()

        def apply(*tensors, **kw):
            y = layer(list(tensors), **kw)
            for weight in layer.weights:
                weight.assign(np.full(weight.shape, scale_value, dtype="float32")
                              + np.linspace(0, 0.5, int(np.prod(weight.shape)) or 1).reshape(weight.shape))
            return y

        return apply

    return build


def _masked_attention(layer_fn, **call_kw):
    return lambda: (lambda q, v, qm, vm: layer_fn()([q, v], mask=[qm, vm], **call_kw))


def _attention_call_kw(layer_fn, **call_kw):
    return lambda: (lambda q, v: layer_fn()([q, v], **call_kw))



_ATTENTION_CASES = [
    *_both_forms("attention_dot", lambda: layers.Attention(), _QV),
    Case("attention_dot_key", lambda: layers.Attention(), ((None, 4), (None, 6), (None, 4))),
    *_both_forms("attention_scaled_negative", _with_scale(lambda: layers.Attention(use_scale=True), -1.5), _QV),
    *_both_forms("attention_masks", _masked_attention(layers.Attention), _QV_MASKS, dtypes=_MASK_DTYPES),
    *_both_forms("attention_causal", _attention_call_kw(layers.Attention, use_causal_mask=True), _QV),
    *_both_forms("attention_masks_causal", _masked_attention(layers.Attention, use_causal_mask=True),
                 _QV_MASKS, dtypes=_MASK_DTYPES),
    *_both_forms("attention_scores", _masked_attention(layers.Attention, return_attention_scores=True),
                 _QV_MASKS, dtypes=_MASK_DTYPES),
    Case("attention_cross_lengths_causal", lambda: (lambda q, v: layers.Attention()(
        [q, layers.MaxPooling1D(2)(v)], use_causal_mask=True)), _QV),
    Case("attention_rank4", lambda: layers.Attention(), ((3, None, 4), (3, None, 4))),
    # Keras fails on a rank-4 value mask without the causal mask (it is not expanded to (B, X, 1, Tv))
    *_both_forms("attention_rank4_masks_causal", _masked_attention(layers.Attention, use_causal_mask=True),
                 ((2, 5, 4), (2, 6, 4), (2, 5), (2, 6)), dtypes=_MASK_DTYPES),
    Case("attention_concat", _with_scale(lambda: layers.Attention(score_mode="concat"), 0.7), _QV),
    Case("attention_concat_scaled_masks", _masked_attention(lambda: layers.Attention(
        score_mode="concat", use_scale=True)), _QV_MASKS, dtypes=_MASK_DTYPES),
]


@register(layers.Attention, cases=_ATTENTION_CASES)
def attention(ctx, op, *inputs):
    return _attention_layer(ctx, op, inputs, _dot_scores if op.score_mode == "dot" else _concat_scores)


_ADDITIVE_CASES = [
    Case("additive_attention", lambda: layers.AdditiveAttention(), _QV),
    Case("additive_attention_key", lambda: layers.AdditiveAttention(), ((None, 4), (None, 3), (None, 4))),
    Case("additive_attention_no_scale", lambda: layers.AdditiveAttention(use_scale=False), _QV),
    Case("additive_attention_masks_causal", _masked_attention(layers.AdditiveAttention, use_causal_mask=True),
         _QV_MASKS, dtypes=_MASK_DTYPES),
    Case("additive_attention_scores", _attention_call_kw(layers.AdditiveAttention, return_attention_scores=True),
         _QV),
]


@register(layers.AdditiveAttention, cases=_ADDITIVE_CASES)
def additive_attention(ctx, op, *inputs):
    return _attention_layer(ctx, op, inputs, _additive_scores)


# ---- keras.ops.nn.dot_product_attention -------------------------------------------------------
_DPA_ARGS = ("query", "key", "value", "bias", "mask", "scale")


def _dpa_fused(ctx, q, k, v, keep, bias, scale, causal_only, heads):
    """``(B, T, N, H)`` tensors as 3-D ``(B, T, N * H)`` for the fused op (Reshapes, no Transposes)."""
    flat = [_reshape(ctx, t, [0, 0, -1]) for t in (q, k, v)]
    mask = _fused_mask(ctx, keep, _lengths(ctx, q, k), bias)
    y, _ = _fused_attention(ctx, *flat, mask=mask, causal=causal_only, scale=scale, heads=heads)
    return _reshape(ctx, y, [0, 0, heads[0], -1])


def _dpa_decomposed(ctx, q, k, v, keep, bias, scale, heads, head_dim, value_dim):
    groups = heads[0] // heads[1]
    layout = _HeadLayout(3, (1,))
    q = _transpose(ctx, q, (0, 2, 1, 3))
    if groups > 1:  # repeat each key/value head (Keras' GQA semantics)
        k, _ = _split_heads(ctx, k, layout, heads[0], head_dim, key=True, groups=groups)
        v, _ = _split_heads(ctx, v, layout, heads[0], value_dim, groups=groups)
    else:
        k, v = _transpose(ctx, k, (0, 2, 3, 1)), _transpose(ctx, v, (0, 2, 1, 3))
    scale_value = scale if isinstance(scale, ir.Value) else ctx.scalar(scale)
    y, _ = _softmax_attention(ctx, q, k, v, scale=scale_value, bias=bias, keep=keep,
                              negative=_large_negative(ctx))
    return _transpose(ctx, y, (0, 2, 1, 3))


def dot_product_attention(ctx, op, *inputs):
    """``(B, T, N, H)`` query, ``(B, S, K, H)`` key/value (K divides N: grouped-query attention)."""
    args = _call_arguments(ctx, inputs, _DPA_ARGS)
    q, k, v = args["query"], args["key"], args["value"]
    if getattr(op, "attn_logits_soft_cap", None) is not None:
        raise ctx.unsupported("attn_logits_soft_cap (JAX on TPU only)")
    q_shape, k_shape, v_shape = (tuple(_keras_tensor(ctx, t).shape) for t in (q, k, v))
    heads, head_dim, value_dim = (q_shape[2], k_shape[2]), k_shape[3], v_shape[3]
    if None in heads or head_dim is None or value_dim is None:
        raise ctx.unsupported("dot_product_attention needs static head counts and head sizes")
    if value_dim != q_shape[3]:
        raise ctx.unsupported(f"value head size {value_dim} != query head size {q_shape[3]}: Keras declares "
                              "the output with the query's shape")
    scale = args.get("scale")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    mask, bias = args.get("mask"), args.get("bias")
    keep = None if mask is None else _Mask(_as_bool(ctx, mask), _rank(ctx, mask))
    causal = bool(op.is_causal)
    if not isinstance(scale, ir.Value) and _fusable(ctx, scale):
        if causal and keep is not None:
            keep = _and(ctx, keep, _causal_mask(ctx, q, k))
        return _dpa_fused(ctx, q, k, v, keep, bias, float(scale), causal and keep is None, heads)
    if causal:
        keep = _and(ctx, keep, _causal_mask(ctx, q, k))
    return _dpa_decomposed(ctx, q, k, v, keep, bias, scale, heads, head_dim, value_dim)


def _dpa(**kw):
    return lambda: (lambda q, k, v: keras.ops.nn.dot_product_attention(q, k, v, **kw))


def _dpa_masked(**kw):
    return lambda: (lambda q, k, v, m: keras.ops.nn.dot_product_attention(q, k, v, mask=m, **kw))


_QKV = ((None, 2, 4), (None, 2, 4), (None, 2, 4))
_QKV_MASK = (*_QKV, (1, None, None))  # (B, 1, T, S)
_QKV_ROW_MASK = (*_QKV, (1, None, 1))  # (B, 1, T, 1): whole query rows masked
_QKV_MASK_DTYPES = ("float32", "float32", "float32", "bool")

_DPA_CASES = [
    *_both_forms("ops_dot_product_attention", _dpa(), _QKV),
    *_both_forms("ops_dot_product_attention_causal", _dpa(is_causal=True), _QKV),
    *_both_forms("ops_dot_product_attention_cross_causal", _dpa(is_causal=True),
                 ((5, 2, 4), (7, 2, 4), (7, 2, 4))),
    *_both_forms("ops_dot_product_attention_mask", _dpa_masked(), _QKV_MASK, dtypes=_QKV_MASK_DTYPES),
    *_both_forms("ops_dot_product_attention_mask_rows_causal_scale", _dpa_masked(is_causal=True, scale=0.3),
                 _QKV_ROW_MASK, dtypes=_QKV_MASK_DTYPES),
    *_both_forms("ops_dot_product_attention_bias_mask_rows", lambda: (
        lambda q, k, v, b, m: keras.ops.nn.dot_product_attention(q, k, v, bias=b, mask=m)),
        (*_QKV, (2, None, None), (1, None, 1)), dtypes=(*_QKV_MASK_DTYPES[:3], "float32", "bool")),
    Case("ops_dot_product_attention_negative_scale", _dpa(scale=-0.5), _QKV),
    # numpy's dot_product_attention has no grouped-query support; jax/tensorflow/torch repeat the heads.
    *_both_forms("ops_dot_product_attention_gqa", _dpa(is_causal=True),
                 ((None, 4, 2), (None, 2, 2), (None, 2, 2)), backends=("jax", "tensorflow", "torch")),
]

_DOT_PRODUCT_ATTENTION = ops_class("nn", "DotProductAttention")
if _DOT_PRODUCT_ATTENTION is not None:
    register(_DOT_PRODUCT_ATTENTION, cases=_DPA_CASES)(dot_product_attention)
