"""Sequence layers: LSTM / GRU / SimpleRNN (native ONNX ``LSTM`` / ``GRU`` / ``RNN`` ops), Bidirectional,
TimeDistributed, ConvLSTM1D/2D/3D (ONNX ``Loop``), Embedding, Masking.

Keras semantics reproduced here (Keras 3.15, numpy/jax backends, ``keras.src.backend.*.rnn``):

- ``go_backwards``: the layer reads the sequence from its end; its sequence output is in processing order.
- ``mask`` (an explicit ``mask=`` edge, found in ``ctx.kwargs``): a masked step is skipped: the states
  carry over, and the sequence output at that step is the carried output, i.e. the previous state ``h``
  (the initial state before the first valid step; zeros with ``unroll=True``), or zeros when the layer
  has ``zero_output_for_mask`` (Bidirectional forces it when returning sequences).
- Any mask pattern (right padding, left padding, holes) is converted exactly: the valid steps are
  moved to the front of the sequence (``ScatterElements``), the native op runs with
  ``sequence_lens = sum(mask)``, and the outputs are gathered back to their time steps
  (``GatherElements``). For a right-padded mask the compaction is the identity.
- Activations ONNX recurrent ops lack (gelu, swish, selu, relu6, ...) fall back to an ONNX ``Loop``
  that runs Keras' cell equations step by step (with the same mask semantics).
- The TensorFlow backend differs in one corner: with a mask, a non-unrolled layer outputs zeros (not
  the initial state) at masked steps before the first valid one. The numpy/jax behaviour is converted.

All sequences are handled in a *working layout*: time-major ``(T, B, F)``, what the ONNX ops take by
default, or batch-major ``(B, T, F)`` (``layout=1``, opset >= 14) when ``BATCH_MAJOR_MIN_OPSET`` is set.
"""

from __future__ import annotations

import logging

import contextlib
import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import onnx_ir as ir
from keras import layers

from ..core import layout as L
from ..core import walker
from ..core.context import Tensor
from ..core.dtypes import to_onnx_dtype
from ..core.registry import Case
from . import BUILTIN

logger = logging.getLogger(__name__)
from .activations import ACTIVATIONS, activation_name, apply_activation

register = BUILTIN.register

# ONNX LSTM/GRU/RNN take ``layout=1`` (batch-major X/Y/states, no Transposes) from opset 14, but
# onnxruntime's CPU kernels (checked on 1.31) reject it: "Batchwise recurrent operations (layout == 1)
# are not supported". So the converters emit time-major ops with Transposes at every opset; set this
# to 14 to emit ``layout=1`` for runtimes that implement it.
BATCH_MAJOR_MIN_OPSET: int | None = None

_INT64_MIN = np.iinfo(np.int64).min

# ---------------------------------------------------------------------------------------------------
# Cells: weights in ONNX order, activations
# ---------------------------------------------------------------------------------------------------

_CELL_KINDS = {layers.LSTMCell: "LSTM", layers.GRUCell: "GRU", layers.SimpleRNNCell: "RNN"}
_LSTM_TO_ONNX = [0, 3, 1, 2]  # Keras gates i, f, c, o -> ONNX i, o, f, c

# Keras activation -> (ONNX activation, alpha, beta). onnxruntime reads activation_alpha / _beta only
# for the activations that take them, in order. Keras hard_sigmoid is clip(x / 6 + 1 / 2, 0, 1).
_NATIVE_ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
}


@dataclass
class _Dir:
    """One recurrent pass: a Keras RNN layer (or one half of a Bidirectional) and its initial states."""

    layer: Any
    kind: str  # "LSTM" | "GRU" | "RNN"
    backwards: bool
    states: list | None  # initial states, Keras (B, units) values; None = zeros

    @property
    def cell(self):
        return self.layer.cell

    @property
    def units(self) -> int:
        return int(self.cell.units)

    @property
    def num_states(self) -> int:
        return 2 if self.kind == "LSTM" else 1

    @property
    def reset_after(self) -> bool:
        return self.kind == "GRU" and bool(self.cell.reset_after)

    @property
    def zero_output(self) -> bool:
        # the unrolled Keras loop ignores zero_output_for_mask
        return bool(getattr(self.layer, "zero_output_for_mask", False)) and not self.layer.unroll

    def keras_activations(self) -> list:
        cell = self.cell
        if self.kind == "LSTM":
            return [cell.recurrent_activation, cell.activation, cell.activation]
        if self.kind == "GRU":
            return [cell.recurrent_activation, cell.activation]
        return [cell.activation]

    def native_activations(self) -> list | None:
        names = [activation_name(fn) for fn in self.keras_activations()]
        if not all(n in _NATIVE_ACTIVATIONS for n in names):
            return None
        return [_NATIVE_ACTIVATIONS[n] for n in names]


def _check_stateless(ctx, layer):
    if getattr(layer, "stateful", False):
        raise ctx.unsupported(
            f"'{layer.name}' is stateful: its states live in variables across calls, which an ONNX graph "
            "cannot hold; rebuild the model with stateful=False, feed the states as inputs "
            "(layer(x, initial_state=...)) and return them (return_state=True)")


def _direction(ctx, layer, states) -> _Dir:
    """Check that ``layer`` can be converted and describe its pass."""
    _check_stateless(ctx, layer)
    kind = _CELL_KINDS.get(type(getattr(layer, "cell", None)))
    if kind is None:
        raise ctx.unsupported(
            f"'{layer.name}' ({type(layer).__name__}) with cell {type(getattr(layer, 'cell', None)).__name__}: "
            "only LSTM, GRU and SimpleRNN cells (alone, not stacked) are converted")
    if states is not None and len(states) != (2 if kind == "LSTM" else 1):
        raise ctx.unsupported(f"'{layer.name}' got {len(states)} initial state(s)")
    return _Dir(layer, kind, bool(layer.go_backwards), states)


def _split_gates(arr, n, order, axis=-1):
    parts = np.split(arr, n, axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


def _onnx_weights(d: _Dir):
    """W (gates*H, I), R (gates*H, H), B (2*gates*H,) or None, in ONNX gate order."""
    cell = d.cell
    kernel = keras.ops.convert_to_numpy(cell.kernel)
    recurrent = keras.ops.convert_to_numpy(cell.recurrent_kernel)
    bias = keras.ops.convert_to_numpy(cell.bias) if cell.use_bias else None
    if d.kind == "LSTM":
        kernel, recurrent = _split_gates(kernel, 4, _LSTM_TO_ONNX), _split_gates(recurrent, 4, _LSTM_TO_ONNX)
        bias = None if bias is None else _split_gates(bias, 4, _LSTM_TO_ONNX)
    if bias is not None:
        # GRU reset_after: bias is (2, 3H) = [input bias Wb, recurrent bias Rb]; else Rb = 0
        bias = bias.reshape(-1) if d.reset_after else np.concatenate([bias, np.zeros_like(bias)])
    return kernel.T, recurrent.T, bias


# ---------------------------------------------------------------------------------------------------
# Small graph helpers
# ---------------------------------------------------------------------------------------------------

def _reverse(ctx, x, axis):
    """``x`` reversed along ``axis`` (dynamic length)."""
    return ctx.op("Slice", [x, ctx.int64s([-1]), ctx.int64s([_INT64_MIN]), ctx.int64s([axis]), ctx.int64s([-1])])


def _unsqueeze(ctx, x, axes):
    return ctx.op("Unsqueeze", [x, ctx.int64s(list(axes))])


def _dim(ctx, x, axis):
    """``shape(x)[axis]`` as a 0-D int64 tensor."""
    return ctx.op("Gather", [ctx.op("Shape", [x]), ctx.int64s(axis)], {"axis": 0})


def _take(ctx, x, index, axis):
    """``x`` at ``index`` (an int or 0-D value) along ``axis``, which disappears."""
    index = ctx.int64s(index) if isinstance(index, int) else index
    return ctx.op("Gather", [x, index], {"axis": axis})


def _where(ctx, cond, a, b):
    return ctx.op("Where", [cond, a, b])


def _zero(ctx):
    return ctx.scalar(0.0)


def _initial_states(ctx, rest) -> list | None:
    """Initial states given to an RNN call, flattened (keyword ``initial_state`` or positional), in
    the compute dtype."""
    given = ctx.kwargs.get("initial_state")
    states = keras.tree.flatten(given) if given is not None else list(rest)
    states = [s for s in states if s is not None]
    if not states:
        return None
    if not all(isinstance(s, ir.Value) for s in states):
        raise ctx.unsupported("initial_state must be Keras tensors (model inputs or layer outputs), "
                              "not constant arrays")
    dtype = ctx.out_dtype()
    return [s if s.dtype == to_onnx_dtype(dtype) else ctx.cast(s, dtype) for s in states]


def _fetch_as(ctx, kt, perm):
    """Keras tensor ``kt`` stored with ``perm``, in the compute dtype (``ctx.out_dtype()``)."""
    value, dtype = ctx.fetch(kt, tuple(perm)), ctx.out_dtype()
    return value if keras.backend.standardize_dtype(kt.dtype) == dtype else ctx.cast(value, dtype)


def _float32_core(fn):
    """onnxruntime has no float64 LSTM/GRU/RNN kernels and crashes on float16 Loops: a layer computing
    in another float type runs its recurrence in float32, between Casts (inside, ``ctx.out_dtype()``
    reads float32, so constants, weights and inputs follow)."""

    @functools.wraps(fn)
    def convert(ctx, op, *inputs):
        saved = ctx.out_tensors
        dtypes = [keras.backend.standardize_dtype(kt.dtype) for kt in saved]
        if all(d == "float32" for d in dtypes):
            return fn(ctx, op, *inputs)
        ctx.out_tensors = [keras.KerasTensor(kt.shape, dtype="float32") for kt in saved]
        try:
            result = fn(ctx, op, *inputs)
        finally:
            ctx.out_tensors = saved
        results = [ctx.cast(v, d) for v, d in zip(result if isinstance(result, tuple) else (result,), dtypes)]
        return tuple(results) if len(results) > 1 else results[0]

    return convert


# ---------------------------------------------------------------------------------------------------
# Working layout: time-major (T, B, F) or batch-major (B, T, F)
# ---------------------------------------------------------------------------------------------------

class _Layout:
    def __init__(self, ctx):
        self.batch_major = BATCH_MAJOR_MIN_OPSET is not None and ctx.opset >= BATCH_MAJOR_MIN_OPSET
        self.time = 1 if self.batch_major else 0

    def attrs(self) -> dict:
        return {"layout": 1} if self.batch_major else {}

    def sequence(self, ctx):
        """The layer's input sequence (Keras (B, T, F)) in the working layout: one Transpose from
        however the input is stored, shared with other readers."""
        return _fetch_as(ctx, ctx.in_tensors[0], (0, 1, 2) if self.batch_major else (1, 0, 2))

    def from_keras(self, ctx, x, rank=3):
        """A Keras (B, T, ...) tensor in the working layout."""
        if self.batch_major:
            return x
        return ctx.op("Transpose", [x], {"perm": [1, 0, *range(2, rank)]})

    def direction_output(self, ctx, y, d):
        """Direction ``d`` of the op's Y ((T, D, B, H) or (B, T, D, H)) as a sequence."""
        return _take(ctx, y, d, 2 if self.batch_major else 1)

    def direction_state(self, ctx, y_h, d):
        """Direction ``d`` of Y_h / Y_c ((D, B, H) or (B, D, H)) as (B, H)."""
        return _take(ctx, y_h, d, 1 if self.batch_major else 0)

    def stack_states(self, ctx, states):
        axis = 1 if self.batch_major else 0
        parts = [_unsqueeze(ctx, s, [axis]) for s in states]
        return parts[0] if len(parts) == 1 else ctx.op("Concat", parts, {"axis": axis})

    def per_step(self, ctx, v):
        """A (B, H) value broadcastable against a working-layout sequence."""
        return _unsqueeze(ctx, v, [1]) if self.batch_major else v


# ---------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------

@dataclass
class _Mask:
    keep: ir.Value  # bool, working layout (T, B) / (B, T)
    steps: ir.Value  # int64 0/1 of keep
    count_before: ir.Value  # int64, valid steps up to and including each step
    lens: ir.Value  # int32 (B,): sequence_lens
    any_valid: ir.Value  # bool (B, 1)
    positions: ir.Value  # int64: index of each step in the compacted sequence
    count: ir.Value  # int64 number of valid steps, keepdims along time


def _keras_rank(ctx, value) -> int | None:
    for kt in ctx.in_tensors:
        if ctx.lookup(kt).value is value:
            return len(kt.shape)
    return None


def _call_mask(ctx):
    """The mask Keras applies to this call, and its Keras rank: the ``mask=`` argument or else, as
    ``Layer.__call__`` does when the call has a single tensor argument, the mask attached to the input
    (which the graph does not always record as an edge, e.g. when the layer casts its input)."""
    mask = ctx.kwargs.get("mask")
    if isinstance(mask, ir.Value):
        return mask, _keras_rank(ctx, mask) or 2
    if mask is not None:
        raise ctx.unsupported("a constant or nested mask is not supported; pass a Keras tensor")
    implicit = getattr(ctx, "input_masks", None) or [None]
    if len(ctx.in_tensors) == 1 and implicit[0] is not None:
        return implicit[0], len(walker.keras_mask(ctx.in_tensors[0]).shape)
    return None, 0


def _prepare_mask(ctx, lay: _Layout) -> _Mask | None:
    mask, rank = _call_mask(ctx)
    if mask is None:
        return None
    if mask.dtype != ir.DataType.BOOL:
        mask = ctx.cast(mask, "bool")
    if rank > 2:  # a step is kept when any of its trailing entries is
        flat = ctx.op("Reshape", [ctx.cast(mask, "int32"), ctx.int64s([0, 0, -1])])
        mask = ctx.cast(ctx.reduce("ReduceMax", flat, [2], keepdims=False), "bool")
    keep = lay.from_keras(ctx, mask, rank=2)
    t = lay.time
    steps = ctx.cast(keep, "int64")
    axis = ctx.int64s(t)
    count_before = ctx.op("CumSum", [steps, axis])
    skipped_before = ctx.op("CumSum", [ctx.op("Sub", [ctx.int64s(1), steps]), axis])
    count = ctx.reduce("ReduceSum", steps, [t], keepdims=True)
    one = ctx.int64s(1)
    positions = _where(ctx, keep, ctx.op("Sub", [count_before, one]),
                       ctx.op("Sub", [ctx.op("Add", [count, skipped_before]), one]))
    flat_count = ctx.op("Reshape", [count, ctx.int64s([-1])])
    any_valid = ctx.op("Greater", [ctx.op("Reshape", [count, ctx.int64s([-1, 1])]), ctx.int64s(0)])
    return _Mask(keep, steps, count_before, ctx.cast(flat_count, "int32"), any_valid, positions, count)


def _compact(ctx, lay: _Layout, x, mask: _Mask):
    """``x`` with each sequence's valid steps moved to its front, in order."""
    index = ctx.op("Expand", [_unsqueeze(ctx, mask.positions, [-1]), ctx.op("Shape", [x])])
    return ctx.op("ScatterElements", [x, index, x], {"axis": lay.time})


def _expand_back(ctx, lay: _Layout, y, d: _Dir, mask: _Mask, init_out):
    """Per-time-step outputs from the outputs of the compacted sequence ``y`` (Keras mask semantics)."""
    if d.backwards:  # after a masked step comes the next valid step in time
        index = ctx.op("Sub", [mask.count_before, mask.steps])
        valid = ctx.op("Less", [index, mask.count])
    else:
        index = ctx.op("Sub", [mask.count_before, ctx.int64s(1)])
        valid = ctx.op("Greater", [mask.count_before, ctx.int64s(0)])
    index = ctx.op("Expand", [_unsqueeze(ctx, index, [-1]), ctx.op("Shape", [y])])
    gathered = ctx.op("GatherElements", [y, index], {"axis": lay.time})
    if d.zero_output:
        return _where(ctx, _unsqueeze(ctx, mask.keep, [-1]), gathered, _zero(ctx))
    return _where(ctx, _unsqueeze(ctx, valid, [-1]), gathered, init_out)


# ---------------------------------------------------------------------------------------------------
# Running passes
# ---------------------------------------------------------------------------------------------------

@dataclass
class _Result:
    seq: Any  # per-step outputs aligned with input time, working layout (None when not needed)
    states: list  # final states (B, H)
    last: Any  # Keras' last output (B, H)


def _run(ctx, lay: _Layout, x, dirs: list[_Dir], mask: _Mask | None, need_seq: bool) -> list[_Result]:
    """Run each pass over the working-layout sequence ``x``."""
    native = [d.native_activations() is not None for d in dirs]
    compacted = _compact(ctx, lay, x, mask) if mask is not None and any(native) else x
    if len(dirs) == 2 and _fusable(dirs):
        return _native(ctx, lay, compacted, dirs, mask, need_seq)
    results = []
    for d, is_native in zip(dirs, native):
        if is_native:
            results.extend(_native(ctx, lay, compacted, [d], mask, need_seq))
        else:
            logger.warning("%s: its activations have no native ONNX %s form; converted as an ONNX Loop "
                           "over time steps (slower than the native op)", ctx.scope, d.kind)
            results.append(_looped(ctx, lay, x, d, mask))
    return results


def _fusable(dirs: list[_Dir]) -> bool:
    f, b = dirs
    return (not f.backwards and b.backwards and f.kind == b.kind and f.units == b.units
            and f.reset_after == b.reset_after and (f.states is None) == (b.states is None)
            and f.native_activations() is not None and b.native_activations() is not None)


def _activation_attrs(dirs: list[_Dir]) -> dict:
    acts = [a for d in dirs for a in d.native_activations()]
    alphas = [float(a) for _, a, _ in acts if a is not None]
    betas = [float(b) for _, _, b in acts if b is not None]
    attrs = {"activations": [name for name, _, _ in acts]}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _stacked_weights(ctx, dirs):
    """The op's W, R and B inputs (one slice per direction; B None when no pass has a bias)."""
    weights = [_onnx_weights(d) for d in dirs]
    dtype = ctx.out_dtype()
    w = ctx.const(np.stack([wt[0] for wt in weights]), dtype, name="W")
    r = ctx.const(np.stack([wt[1] for wt in weights]), dtype, name="R")
    if all(wt[2] is None for wt in weights):
        return w, r, None
    zeros = np.zeros(2 * weights[0][0].shape[0])
    return w, r, ctx.const(np.stack([zeros if wt[2] is None else wt[2] for wt in weights]), dtype, name="B")


def _native(ctx, lay, x, dirs, mask, need_seq) -> list[_Result]:
    """One ONNX LSTM/GRU/RNN node for one pass, or both passes of a Bidirectional."""
    d0 = dirs[0]
    w, r, b = _stacked_weights(ctx, dirs)
    init = [None, None]
    if d0.states is not None:
        init[:d0.num_states] = [lay.stack_states(ctx, [d.states[i] for d in dirs]) for i in range(d0.num_states)]
    direction = "bidirectional" if len(dirs) == 2 else ("reverse" if d0.backwards else "forward")
    attrs = {"hidden_size": d0.units, "direction": direction, **_activation_attrs(dirs), **lay.attrs()}
    if d0.kind == "GRU":
        attrs["linear_before_reset"] = int(d0.reset_after)
    inputs = [x, w, r, b, mask.lens if mask is not None else None, init[0]]
    if d0.kind == "LSTM":
        inputs.append(init[1])
    outs = ctx.op(d0.kind, inputs, attrs, outputs=1 + d0.num_states)
    results = []
    for i, d in enumerate(dirs):
        y = lay.direction_output(ctx, outs[0], i) if need_seq else None
        finals = [lay.direction_state(ctx, o, i) for o in outs[1:]]
        results.append(_native_result(ctx, lay, d, y, finals, mask))
    return results


def _native_result(ctx, lay, d: _Dir, y, finals, mask: _Mask | None) -> _Result:
    if mask is None:
        return _Result(y, finals, finals[0])
    raw_h = finals[0]
    if d.states is not None:  # a fully masked sequence keeps its initial states
        finals = [_where(ctx, mask.any_valid, f, s) for f, s in zip(finals, d.states)]
    if d.zero_output:
        keep_last = _take(ctx, mask.keep, 0 if d.backwards else -1, lay.time)
        last = _where(ctx, _unsqueeze(ctx, keep_last, [1]), finals[0], _zero(ctx))
    elif d.layer.unroll and d.states is not None:  # before any valid step the unrolled loop outputs 0
        last = _where(ctx, mask.any_valid, raw_h, _zero(ctx))
    else:
        last = finals[0]
    if y is not None:
        init_out = _zero(ctx) if (d.layer.unroll or d.states is None) else lay.per_step(ctx, d.states[0])
        y = _expand_back(ctx, lay, y, d, mask, init_out)
    return _Result(y, finals, last)


# ---------------------------------------------------------------------------------------------------
# Fallback: an ONNX Loop running Keras' cell equations
# ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _loop_body(ctx, inputs, perm):
    """``ctx.subgraph`` for a Loop body whose tensors are stored with ``perm`` relative to Keras'
    (for activations that take an axis, e.g. softmax)."""
    saved = ctx.perm
    with ctx.subgraph(f"{ctx.scope}/loop_body", inputs) as body:
        ctx.perm = tuple(perm)
        try:
            yield body
        finally:
            ctx.perm = saved


def _typed(value, dtype, shape):
    value.dtype = dtype
    value.shape = ir.Shape(shape)
    return value


def _input_projection(ctx, d: _Dir, x):
    """x @ kernel + input bias, Keras gate order, over the whole sequence."""
    cell = d.cell
    y = ctx.op("MatMul", [x, ctx.weight(cell.kernel)])
    if cell.use_bias:
        bias = keras.ops.convert_to_numpy(cell.bias)
        y = ctx.op("Add", [y, ctx.const(bias[0] if d.reset_after else bias, ctx.out_dtype(), name="bias")])
    return y


def _recurrent_weights(ctx, d: _Dir):
    cell, units = d.cell, d.units
    kernel = keras.ops.convert_to_numpy(cell.recurrent_kernel)
    dtype = ctx.out_dtype()
    if d.kind != "GRU":
        return {"R": ctx.const(kernel, dtype, name="recurrent_kernel")}
    if d.reset_after:
        weights = {"R": ctx.const(kernel, dtype, name="recurrent_kernel")}
        if cell.use_bias:
            weights["Rb"] = ctx.const(keras.ops.convert_to_numpy(cell.bias)[1], dtype, name="recurrent_bias")
        return weights
    return {"Rzr": ctx.const(kernel[:, :2 * units], dtype, name="recurrent_kernel_zr"),
            "Rh": ctx.const(kernel[:, 2 * units:], dtype, name="recurrent_kernel_h")}


def _cell_step(ctx, d: _Dir, xw, states, weights):
    """One step of Keras' cell equations; returns the new states (h first)."""
    cell, units = d.cell, d.units
    act = lambda v: apply_activation(ctx, v, cell.activation)  # noqa: E731
    if d.kind == "RNN":
        return [act(ctx.op("Add", [xw, ctx.op("MatMul", [states[0], weights["R"]])]))]
    rec = lambda v: apply_activation(ctx, v, cell.recurrent_activation)  # noqa: E731
    if d.kind == "LSTM":
        z = ctx.op("Add", [xw, ctx.op("MatMul", [states[0], weights["R"]])])
        i, f, g, o = ctx.split(z, [units] * 4, axis=-1)
        c = ctx.op("Add", [ctx.op("Mul", [rec(f), states[1]]), ctx.op("Mul", [rec(i), act(g)])])
        return [ctx.op("Mul", [rec(o), act(c)]), c]
    h = states[0]
    x_z, x_r, x_h = ctx.split(xw, [units] * 3, axis=-1)
    if d.reset_after:
        inner = ctx.op("MatMul", [h, weights["R"]])
        if "Rb" in weights:
            inner = ctx.op("Add", [inner, weights["Rb"]])
        r_z, r_r, r_h = ctx.split(inner, [units] * 3, axis=-1)
        z, r = rec(ctx.op("Add", [x_z, r_z])), rec(ctx.op("Add", [x_r, r_r]))
        candidate = act(ctx.op("Add", [x_h, ctx.op("Mul", [r, r_h])]))
    else:
        r_z, r_r = ctx.split(ctx.op("MatMul", [h, weights["Rzr"]]), [units] * 2, axis=-1)
        z, r = rec(ctx.op("Add", [x_z, r_z])), rec(ctx.op("Add", [x_r, r_r]))
        candidate = act(ctx.op("Add", [x_h, ctx.op("MatMul", [ctx.op("Mul", [r, h]), weights["Rh"]])]))
    one_minus_z = ctx.op("Sub", [ctx.scalar(1.0), z])
    return [ctx.op("Add", [ctx.op("Mul", [z, h]), ctx.op("Mul", [one_minus_z, candidate])])]


def _zeros_state(ctx, lay, x, units):
    batch = ctx.dims(x, 1 - lay.time, 2 - lay.time)
    shape = ctx.op("Concat", [batch, ctx.int64s([units])], {"axis": 0})
    return ctx.op("Expand", [_zero(ctx), shape])


@dataclass
class _LoopPass:
    """What the generic time Loop needs to know about a recurrent pass."""

    backwards: bool
    unroll: bool
    zero_output: bool
    state_shape: list  # ONNX shape of each state, batch first (dynamic dims None)
    num_states: int


def _time_loop(ctx, xw, time_axis, init, step_fn, spec: _LoopPass, keep=None, cell_perm=(0, 1)):
    """An ONNX Loop over the time axis of ``xw`` (per-step inputs) with Keras' mask semantics.

    ``step_fn(ctx, xw_t, states) -> new states`` (output first) builds the cell's equations;
    ``keep`` (bool, time on ``time_axis``, batch on the other of the first two axes) masks steps.
    Returns the final states and the stacked per-step outputs (T, B, ...) in processing order."""
    steps = _dim(ctx, xw, time_axis)
    last_index = ctx.op("Sub", [steps, ctx.int64s(1)])
    init = list(init)
    carry_output = keep is not None and spec.unroll  # the unrolled Keras loop outputs 0 before a valid step
    if carry_output:
        init.append(ctx.op("Mul", [init[0], _zero(ctx)]))
    dtype = to_onnx_dtype(ctx.out_dtype())
    loop_inputs = [_typed(ir.Value(name=ctx.unique_name(f"{ctx.scope}/{n}")), t, s) for n, t, s in
                   [("i", ir.DataType.INT64, []), ("cond", ir.DataType.BOOL, [])]
                   + [(f"state{k}", dtype, spec.state_shape) for k in range(len(init))]]
    with _loop_body(ctx, loop_inputs, cell_perm) as body:
        step, cond, *carried = loop_inputs
        t = ctx.op("Sub", [last_index, step]) if spec.backwards else step
        states = carried[:spec.num_states]
        new = step_fn(ctx, _take(ctx, xw, t, time_axis), states)
        out = new[0]
        if keep is not None:
            keep_t = _unsqueeze(ctx, _take(ctx, keep, t, time_axis), range(1, len(spec.state_shape)))
            new = [_where(ctx, keep_t, n, s) for n, s in zip(new, states)]
            if carry_output:
                new.append(_where(ctx, keep_t, out, carried[-1]))
                out = new[-1]
            elif spec.zero_output:
                out = _where(ctx, keep_t, out, _zero(ctx))
            else:
                out = new[0]
        outputs = [ctx.op("Identity", [cond])] + new + [ctx.op("Identity", [out])]
        body.outputs.extend([_typed(outputs[0], ir.DataType.BOOL, [])]
                            + [_typed(v, dtype, spec.state_shape) for v in outputs[1:]])
    outs = ctx.op("Loop", [steps, None, *init], {"body": body}, outputs=len(init) + 1)
    return list(outs[:spec.num_states]), outs[-1]


def _looped(ctx, lay: _Layout, x, d: _Dir, mask: _Mask | None) -> _Result:
    """A pass as an ONNX Loop over time steps (activations the native ops lack)."""
    for fn in d.keras_activations():
        if activation_name(fn) not in ACTIVATIONS:
            raise ctx.unsupported(f"activation '{activation_name(fn)}' of '{d.layer.name}' has no ONNX mapping")
    weights = _recurrent_weights(ctx, d)
    init = list(d.states) if d.states is not None else [_zeros_state(ctx, lay, x, d.units)] * d.num_states
    spec = _LoopPass(d.backwards, bool(d.layer.unroll), d.zero_output, [None, d.units], d.num_states)
    finals, ys = _time_loop(ctx, _input_projection(ctx, d, x), lay.time, init,
                            lambda c, xw_t, states: _cell_step(c, d, xw_t, states, weights), spec,
                            keep=mask.keep if mask is not None else None)
    last = _take(ctx, ys, -1, 0)
    seq = _reverse(ctx, ys, 0) if d.backwards else ys  # (T, B, H) aligned with input time
    if lay.batch_major:
        seq = ctx.op("Transpose", [seq], {"perm": [1, 0, 2]})
    return _Result(seq, finals, last)


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------

def _in_order(ctx, lay, seq, reverse: bool):
    return _reverse(ctx, seq, lay.time) if reverse else seq


def _seq_case(name, build, features=3, steps=None, **kw):
    return Case(name, build, ((steps, features),), **kw)


def _with_states(make_layer):
    return lambda: (lambda x, *s: make_layer()(x, initial_state=list(s)))


def _state_shapes(n, units, features=3, steps=None):
    return ((steps, features),) + ((units,),) * n


def _nonzero(ids):
    # Keras does not propagate a mask to a layer called with initial_state: pass it explicitly
    return keras.ops.not_equal(ids, 0)


def _masked_by_embedding(make_layer, vocab=4):
    return lambda: (lambda t: make_layer()(layers.Embedding(vocab, 3, mask_zero=True)(t)))


def _masked_with_states(make_layer, vocab=4):
    return lambda: (lambda t, *states: make_layer()(layers.Embedding(vocab, 3, mask_zero=True)(t),
                                                    initial_state=list(states), mask=_nonzero(t)))


def _masked_by_masking(make_layer):
    # one feature through ReLU: about half of the steps are all-zero and get masked
    return lambda: (lambda x: make_layer()(layers.Masking(0.0)(layers.ReLU()(x))))


def _ids_case(name, build, vocab=4, steps=None, extra_shapes=()):
    return Case(name, build, ((steps,), *extra_shapes), dtypes=("int32",) + ("float32",) * len(extra_shapes),
                int_range=(0, vocab))


_RNN_CASES = [
    # LSTM
    _seq_case("rnn_lstm", lambda: layers.LSTM(4)),
    _seq_case("rnn_lstm_sequences", lambda: layers.LSTM(4, return_sequences=True)),
    _seq_case("rnn_lstm_state", lambda: layers.LSTM(4, return_sequences=True, return_state=True)),
    _seq_case("rnn_lstm_backwards", lambda: layers.LSTM(4, go_backwards=True)),
    _seq_case("rnn_lstm_backwards_sequences", lambda: layers.LSTM(4, go_backwards=True, return_sequences=True,
                                                                  return_state=True)),
    _seq_case("rnn_lstm_no_bias", lambda: layers.LSTM(5, use_bias=False, return_sequences=True)),
    _seq_case("rnn_lstm_unroll", lambda: layers.LSTM(4, unroll=True, return_sequences=True), steps=6),
    _seq_case("rnn_lstm_static_steps", lambda: layers.LSTM(4, return_state=True), steps=5),
    Case("rnn_lstm_initial_state", _with_states(lambda: layers.LSTM(4, return_state=True)),
         _state_shapes(2, 4)),
    Case("rnn_lstm_initial_state_backwards",
         _with_states(lambda: layers.LSTM(4, return_sequences=True, go_backwards=True)), _state_shapes(2, 4)),
    _seq_case("rnn_lstm_hard_sigmoid_relu", lambda: layers.LSTM(4, activation="relu",
                                                                recurrent_activation="hard_sigmoid",
                                                                return_sequences=True)),
    _seq_case("rnn_lstm_native_activations", lambda: layers.LSTM(4, activation="softsign",
                                                                 recurrent_activation="hard_sigmoid")),
    _seq_case("rnn_lstm_elu_linear", lambda: layers.LSTM(4, activation="elu", recurrent_activation="linear",
                                                         return_sequences=True), steps=6),
    _seq_case("rnn_lstm_loop_gelu", lambda: layers.LSTM(4, activation="gelu", return_sequences=True,
                                                        return_state=True)),
    _seq_case("rnn_lstm_loop_backwards", lambda: layers.LSTM(4, recurrent_activation="hard_silu",
                                                             go_backwards=True, return_sequences=True)),
    Case("rnn_lstm_loop_initial_state", _with_states(lambda: layers.LSTM(4, activation="swish",
                                                                         return_state=True)),
         _state_shapes(2, 4)),
    _ids_case("rnn_lstm_masked", _masked_by_embedding(lambda: layers.LSTM(4))),
    _ids_case("rnn_lstm_masked_sequences", _masked_by_embedding(lambda: layers.LSTM(4, return_sequences=True,
                                                                                    return_state=True))),
    _ids_case("rnn_lstm_masked_backwards", _masked_by_embedding(lambda: layers.LSTM(
        4, return_sequences=True, return_state=True, go_backwards=True))),
    _ids_case("rnn_lstm_masked_unroll", _masked_by_embedding(lambda: layers.LSTM(4, return_sequences=True,
                                                                                 unroll=True)), steps=7),
    _ids_case("rnn_lstm_masked_zero_output", _masked_by_embedding(lambda: layers.LSTM(
        4, return_sequences=True, zero_output_for_mask=True))),
    _ids_case("rnn_lstm_masked_initial_state", _masked_with_states(lambda: layers.LSTM(
        4, return_sequences=True, return_state=True)), extra_shapes=((4,), (4,))),
    _ids_case("rnn_lstm_masked_initial_state_unroll", _masked_with_states(lambda: layers.LSTM(
        4, return_sequences=True, unroll=True)), steps=6, extra_shapes=((4,), (4,))),
    _ids_case("rnn_lstm_masked_loop", _masked_by_embedding(lambda: layers.LSTM(
        4, activation="relu6", return_sequences=True, return_state=True))),
    _ids_case("rnn_lstm_masked_loop_backwards_unroll", _masked_with_states(lambda: layers.LSTM(
        4, activation="selu", return_sequences=True, go_backwards=True, unroll=True)),
        steps=6, extra_shapes=((4,), (4,))),
    # GRU
    _seq_case("rnn_gru", lambda: layers.GRU(4)),
    _seq_case("rnn_gru_reset_before", lambda: layers.GRU(4, reset_after=False, return_sequences=True)),
    _seq_case("rnn_gru_state", lambda: layers.GRU(4, return_sequences=True, return_state=True)),
    _seq_case("rnn_gru_reset_before_backwards", lambda: layers.GRU(4, reset_after=False, go_backwards=True,
                                                                   return_sequences=True, return_state=True)),
    _seq_case("rnn_gru_no_bias", lambda: layers.GRU(4, use_bias=False, return_sequences=True)),
    _seq_case("rnn_gru_no_bias_reset_before", lambda: layers.GRU(4, use_bias=False, reset_after=False)),
    _seq_case("rnn_gru_unroll", lambda: layers.GRU(4, unroll=True, go_backwards=True), steps=5),
    Case("rnn_gru_initial_state", _with_states(lambda: layers.GRU(4, return_state=True, return_sequences=True)),
         _state_shapes(1, 4)),
    _seq_case("rnn_gru_hard_sigmoid_softplus", lambda: layers.GRU(4, activation="softplus",
                                                                  recurrent_activation="hard_sigmoid",
                                                                  return_sequences=True)),
    _seq_case("rnn_gru_leaky_relu", lambda: layers.GRU(4, activation="leaky_relu", reset_after=False)),
    _seq_case("rnn_gru_loop", lambda: layers.GRU(4, activation="mish", return_sequences=True, return_state=True)),
    _seq_case("rnn_gru_loop_reset_before", lambda: layers.GRU(4, recurrent_activation="log_sigmoid",
                                                              reset_after=False, return_sequences=True)),
    _seq_case("rnn_gru_loop_no_bias", lambda: layers.GRU(4, activation="hard_tanh", use_bias=False)),
    _ids_case("rnn_gru_masked", _masked_by_embedding(lambda: layers.GRU(4, return_sequences=True,
                                                                        return_state=True))),
    _ids_case("rnn_gru_masked_reset_before_backwards", _masked_by_embedding(lambda: layers.GRU(
        4, reset_after=False, go_backwards=True, return_sequences=True))),
    _ids_case("rnn_gru_masked_initial_state", lambda: (lambda t, h: layers.GRU(
        4, go_backwards=True, return_sequences=True, return_state=True)(
            layers.Embedding(4, 3, mask_zero=True)(t), initial_state=h, mask=_nonzero(t))), extra_shapes=((4,),)),
    _ids_case("rnn_gru_masked_loop", _masked_by_embedding(lambda: layers.GRU(
        4, activation="silu", return_sequences=True, zero_output_for_mask=True))),
    # SimpleRNN
    _seq_case("rnn_simple", lambda: layers.SimpleRNN(4)),
    _seq_case("rnn_simple_sequences_state", lambda: layers.SimpleRNN(4, return_sequences=True, return_state=True)),
    _seq_case("rnn_simple_backwards", lambda: layers.SimpleRNN(4, go_backwards=True, return_sequences=True)),
    _seq_case("rnn_simple_no_bias_unroll", lambda: layers.SimpleRNN(4, use_bias=False, unroll=True), steps=5),
    Case("rnn_simple_initial_state", _with_states(lambda: layers.SimpleRNN(4, return_sequences=True)),
         _state_shapes(1, 4)),
    _ids_case("rnn_simple_masked", _masked_by_embedding(lambda: layers.SimpleRNN(4, return_sequences=True))),
    _ids_case("rnn_simple_masked_backwards_state", _masked_with_states(lambda: layers.SimpleRNN(
        4, go_backwards=True, return_state=True)), extra_shapes=((4,),)),
    _seq_case("rnn_gru_feature_mask", lambda: (lambda x: layers.GRU(3, return_sequences=True)(
        x, mask=keras.ops.greater(x, 0.0)))),  # a (B, T, F) mask: a step counts when any entry is set
    _seq_case("rnn_simple_masking_layer", _masked_by_masking(lambda: layers.SimpleRNN(
        4, return_sequences=True, return_state=True)), features=1),
    # sequence outputs stay time-major: layout-agnostic layers after them must still be right
    _seq_case("rnn_stacked_residual", lambda: (lambda x: (lambda a: layers.LSTM(3)(layers.Add()(
        [a, layers.GRU(3, return_sequences=True)(a)])))(layers.LSTM(3, return_sequences=True)(x)))),
    _seq_case("rnn_sequences_into_norms", lambda: (lambda x: layers.Softmax()(layers.LayerNormalization()(
        layers.BatchNormalization()(layers.Dropout(0.2)(layers.SimpleRNN(4, return_sequences=True)(x))))))),
    _seq_case("rnn_sequences_concat_ops", lambda: (lambda x: (lambda a, b: layers.Concatenate(axis=1)(
        [a * 2.0, layers.Subtract()([a, b])]))(
            layers.GRU(3, return_sequences=True)(x), layers.LSTM(3, return_sequences=True, go_backwards=True)(x)))),
    # other float types: the recurrence runs in float32 between Casts
    _seq_case("rnn_lstm_mixed_float16", lambda: layers.LSTM(4, return_sequences=True, return_state=True,
                                                            dtype="mixed_float16"), atol=1e-2),
    _seq_case("rnn_simple_loop_mixed_float16", lambda: layers.SimpleRNN(4, activation="relu6",
                                                                        dtype="mixed_float16"), atol=1e-2),
    _seq_case("rnn_gru_float64", lambda: layers.GRU(4, return_sequences=True, dtype="float64")),
    Case("rnn_lstm_float64_initial_state", _with_states(lambda: layers.LSTM(3, return_state=True, dtype="float64")),
         _state_shapes(2, 3), dtypes=("float64",) * 3),
    # generic RNN layer with a built-in cell
    _seq_case("rnn_generic_lstm_cell", lambda: layers.RNN(layers.LSTMCell(4), return_sequences=True)),
    _seq_case("rnn_generic_gru_cell", lambda: layers.RNN(layers.GRUCell(3, reset_after=False), go_backwards=True)),
    _seq_case("rnn_generic_simple_cell", lambda: layers.RNN(layers.SimpleRNNCell(3, activation="relu"),
                                                            return_state=True)),
]

# every activation kerasonnx maps, through SimpleRNN (native where ONNX has it, Loop otherwise)
_RNN_CASES += [
    _seq_case(f"rnn_simple_activation_{name}", (lambda n=name: layers.SimpleRNN(4, activation=n,
                                                                               return_sequences=True)), steps=6)
    for name in sorted(ACTIVATIONS)
]
# and as recurrent_activation of LSTM / GRU
_RNN_CASES += [
    _seq_case(f"rnn_{kind.__name__.lower()}_recurrent_activation_{name}",
              (lambda k=kind, n=name: k(3, recurrent_activation=n, return_sequences=True)), steps=5)
    for kind in (layers.LSTM, layers.GRU)
    for name in ("relu", "softsign", "softplus", "elu", "leaky_relu", "linear", "sparse_sigmoid", "tanh")
]


@register(layers.LSTM, layers.GRU, layers.SimpleRNN, layers.RNN, cases=_RNN_CASES)
@_float32_core
def recurrent(ctx, op, x, *rest):
    lay = _Layout(ctx)
    d = _direction(ctx, op, _initial_states(ctx, rest))
    mask = _prepare_mask(ctx, lay)
    [result] = _run(ctx, lay, lay.sequence(ctx), [d], mask, need_seq=op.return_sequences)
    if op.return_sequences:
        outputs = [_in_order(ctx, lay, result.seq, reverse=d.backwards)]
    else:
        outputs = [result.last]
    if op.return_state:
        outputs += result.states
    return _outputs(ctx, lay, outputs, n_sequences=int(op.return_sequences))


def _bidirectional_case(name, merge_mode, make_layer=lambda: layers.LSTM(4, return_sequences=True), **kw):
    return _seq_case(f"bidirectional_{name}", lambda: layers.Bidirectional(make_layer(), merge_mode=merge_mode),
                     **kw)


_BIDIRECTIONAL_CASES = [
    _bidirectional_case("concat", "concat"),
    _bidirectional_case("sum", "sum"),
    _bidirectional_case("mul", "mul"),
    _bidirectional_case("ave", "ave"),
    _bidirectional_case("none", None),
    _bidirectional_case("gru_last", "concat", lambda: layers.GRU(4)),
    _bidirectional_case("gru_reset_before_state", "sum", lambda: layers.GRU(3, reset_after=False,
                                                                           return_state=True)),
    _bidirectional_case("simple_none_state", None, lambda: layers.SimpleRNN(3, return_sequences=True,
                                                                            return_state=True)),
    _bidirectional_case("lstm_state_last", "ave", lambda: layers.LSTM(3, return_state=True)),
    _bidirectional_case("loop_activation", "concat", lambda: layers.GRU(3, activation="gelu",
                                                                       return_sequences=True)),
    _seq_case("bidirectional_backward_layer", lambda: layers.Bidirectional(
        layers.LSTM(4, return_sequences=True),
        backward_layer=layers.GRU(4, go_backwards=True, return_sequences=True))),
    _seq_case("bidirectional_backward_layer_mixed", lambda: layers.Bidirectional(
        layers.GRU(3, return_sequences=True),
        backward_layer=layers.GRU(3, activation="relu6", go_backwards=True, return_sequences=True)), steps=6),
    Case("bidirectional_initial_state", lambda: (lambda x, h1, c1, h2, c2: layers.Bidirectional(
        layers.LSTM(4, return_sequences=True, return_state=True))(x, initial_state=[h1, c1, h2, c2])),
        ((None, 3), (4,), (4,), (4,), (4,))),
    _ids_case("bidirectional_masked", _masked_by_embedding(lambda: layers.Bidirectional(
        layers.LSTM(4, return_sequences=True)))),
    _ids_case("bidirectional_masked_last_state", _masked_by_embedding(lambda: layers.Bidirectional(
        layers.GRU(4, return_state=True), merge_mode="mul"))),
    _ids_case("bidirectional_masked_initial_state", _masked_with_states(lambda: layers.Bidirectional(
        layers.SimpleRNN(3, return_sequences=True, return_state=True), merge_mode=None)),
        extra_shapes=((3,), (3,))),
    _ids_case("bidirectional_masked_loop", _masked_by_embedding(lambda: layers.Bidirectional(
        layers.LSTM(3, activation="gelu", return_sequences=True)))),
    _ids_case("bidirectional_float64_masked", _masked_by_embedding(lambda: layers.Bidirectional(
        layers.LSTM(3, return_sequences=True, dtype="float64"), dtype="float64"))),
    _seq_case("bidirectional_masking_stacked", lambda: (lambda x: layers.Bidirectional(layers.LSTM(3))(
        layers.Bidirectional(layers.GRU(3, return_sequences=True))(layers.Masking()(layers.ReLU()(x))))),
        features=1),
]


@register(layers.Bidirectional, cases=_BIDIRECTIONAL_CASES)
@_float32_core
def bidirectional(ctx, op, x, *rest):
    lay = _Layout(ctx)
    states = _initial_states(ctx, rest)
    half = len(states) // 2 if states else 0
    forward, backward = op.forward_layer, op.backward_layer
    dirs = [_direction(ctx, forward, states[:half] if states else None),
            _direction(ctx, backward, states[half:] if states else None)]
    mask = _prepare_mask(ctx, lay)
    fwd, bwd = _run(ctx, lay, lay.sequence(ctx), dirs, mask, need_seq=op.return_sequences)
    if op.return_sequences:  # Keras flips the backward layer's output back to input time order
        y = _in_order(ctx, lay, fwd.seq, reverse=dirs[0].backwards)
        y_rev = _in_order(ctx, lay, bwd.seq, reverse=not dirs[1].backwards)
        outputs = _merge(ctx, op.merge_mode, y, y_rev)
    else:
        outputs = _merge(ctx, op.merge_mode, fwd.last, bwd.last)
    n_sequences = len(outputs) if op.return_sequences else 0
    if op.return_state:
        outputs += fwd.states + bwd.states
    return _outputs(ctx, lay, outputs, n_sequences)


def _outputs(ctx, lay, outputs, n_sequences):
    """Return values; the first ``n_sequences`` stay in the working layout (a following recurrent
    layer then reads them without a Transpose pair): ``ctx.out_perms`` records it."""
    seq_perm = (0, 1, 2) if lay.batch_major else (1, 0, 2)
    ctx.out_perms = [seq_perm] * n_sequences + [(0, 1)] * (len(outputs) - n_sequences)
    return tuple(outputs) if len(outputs) > 1 else outputs[0]


def _merge(ctx, mode, y, y_rev) -> list:
    if mode is None:
        return [y, y_rev]
    if mode == "concat":
        return [ctx.op("Concat", [y, y_rev], {"axis": -1})]
    if mode == "sum":
        return [ctx.op("Add", [y, y_rev])]
    if mode == "mul":
        return [ctx.op("Mul", [y, y_rev])]
    if mode == "ave":
        return [ctx.op("Div", [ctx.op("Add", [y, y_rev]), ctx.scalar(2.0)])]
    raise ctx.unsupported(f"merge_mode '{mode}'")


# ---------------------------------------------------------------------------------------------------
# TimeDistributed: time folded into batch, the wrapped layer converted by its own converter
# ---------------------------------------------------------------------------------------------------

def _fold_time(ctx, x, keras_shape):
    """(B, T, *rest) -> (B*T, *rest)."""
    rest = keras_shape[2:]
    if all(d is not None for d in rest):
        shape = ctx.int64s([-1, *rest])
    else:
        shape = ctx.op("Concat", [ctx.int64s([-1]), ctx.dims(x, 2)], {"axis": 0})
    return ctx.op("Reshape", [x, shape])


def _unfold_time(ctx, y, x, keras_out_shape):
    """(B*T, *rest) -> (B, T, *rest), batch and time taken from ``x`` at run time."""
    rest = keras_out_shape[2:]
    if all(d is not None for d in rest):
        tail = ctx.int64s(list(rest))
    else:
        tail = ctx.dims(y, 1)
    shape = ctx.op("Concat", [ctx.dims(x, 0, 2), tail], {"axis": 0})
    return ctx.op("Reshape", [y, shape])


@contextlib.contextmanager
def _saved_node_state(ctx):
    """Converting a wrapped layer resets the per-node state the driver set for this one."""
    try:
        from ..core.context import _NODE_STATE as names
    except ImportError:  # older core
        names = ("scope", "operation", "in_tensors", "out_tensors", "kwargs", "perm", "out_perms")
    saved = {k: getattr(ctx, k) for k in names if hasattr(ctx, k)}
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)


def _convert_inner(ctx, inner, folded: Tensor, in_kt, out_kts) -> list[Tensor]:
    """Convert ``inner`` called on ``folded`` (``in_kt`` describes it); returns its stored outputs."""
    from ..core.driver import _convert_node, convert_graph

    prefix = ctx.scope + "/"
    with _saved_node_state(ctx):
        if walker.is_model(inner):
            return convert_graph(ctx, walker.functional_of(inner), [folded], prefix=f"{prefix}{inner.name}/")
        spec = ctx.registry.lookup(type(inner))
        if spec is None:
            raise ctx.unsupported(f"wrapped layer '{inner.name}' ({type(inner).__name__}) has no converter")
        if spec.min_opset > ctx.opset:
            raise ctx.unsupported(f"wrapped layer '{inner.name}' needs opset >= {spec.min_opset}")
        ctx.bind(in_kt, folded)
        node = walker.GraphNode(inner, [in_kt], out_kts, SimpleNamespace(args=(in_kt,), kwargs={}))
        _convert_node(ctx, node, spec, prefix)
        return [ctx.lookup(kt) for kt in out_kts]


@register(layers.TimeDistributed, cases=[
    _seq_case("time_distributed_dense", lambda: layers.TimeDistributed(layers.Dense(5, activation="relu")),
              features=4),
    _seq_case("time_distributed_dense_static", lambda: layers.TimeDistributed(layers.Dense(3)), steps=6),
    Case("time_distributed_conv2d", lambda: layers.TimeDistributed(layers.Conv2D(4, 3, activation="relu")),
         ((None, 6, 6, 2),)),
    Case("time_distributed_conv2d_static", lambda: layers.TimeDistributed(layers.Conv2D(3, 3, padding="same",
                                                                                        strides=2)),
         ((4, 8, 8, 3),)),
    Case("time_distributed_conv_pool_flatten", lambda: (lambda x: layers.TimeDistributed(layers.Flatten())(
        layers.TimeDistributed(layers.MaxPooling2D())(layers.TimeDistributed(layers.Conv2D(2, 3))(x)))),
        ((None, 8, 8, 1),)),
    Case("time_distributed_dynamic_image", lambda: layers.TimeDistributed(layers.Conv2D(2, 3, padding="same")),
         ((3, None, None, 2),)),
    Case("time_distributed_model", lambda: layers.TimeDistributed(keras.Sequential(
        [keras.Input((5,)), layers.Dense(4, activation="tanh"), layers.Dense(2)])), ((None, 5),)),
    _ids_case("time_distributed_masked_dense_lstm", lambda: (lambda t: layers.LSTM(3)(layers.TimeDistributed(
        layers.Dense(4))(layers.Embedding(4, 3, mask_zero=True)(t))))),
])
def time_distributed(ctx, op, x, *rest):
    """Time folded into batch. The input is folded as it is stored (e.g. channels-first after a
    TimeDistributed Conv2D) and the outputs stay as the wrapped layer stores them, so a stack of
    TimeDistributed convolutions has no Transposes between its layers."""
    inner = op.layer
    if _call_mask(ctx)[0] is not None and getattr(inner, "_call_has_mask_arg", False):
        raise ctx.unsupported(f"a mask given to the wrapped layer '{inner.name}' ({type(inner).__name__})")
    kt = ctx.in_tensors[0]
    stored = ctx.lookup(kt)
    if stored.perm[:2] != (0, 1) or walker.autocast_dtype(op, kt) is not None:
        stored = Tensor(x, L.identity(len(kt.shape)))
    folded = _fold_time(ctx, stored.value, L.permute_shape(tuple(kt.shape), stored.perm))
    folded.dtype = to_onnx_dtype(ctx.in_dtype())
    in_kt = keras.KerasTensor((None, *kt.shape[2:]), dtype=ctx.in_dtype())
    out_kts = [keras.KerasTensor((None, *o.shape[2:]), dtype=o.dtype) for o in ctx.out_tensors]
    inner_perm = (0, *(a - 1 for a in stored.perm[2:]))
    results, perms = [], []
    for out, outer in zip(_convert_inner(ctx, inner, Tensor(folded, inner_perm), in_kt, out_kts), ctx.out_tensors):
        perm = (0, 1, *(a + 1 for a in out.perm[1:]))
        results.append(_unfold_time(ctx, out.value, stored.value, L.permute_shape(tuple(outer.shape), perm)))
        perms.append(perm)
    ctx.out_perms = perms
    return tuple(results) if len(results) > 1 else results[0]


# ---------------------------------------------------------------------------------------------------
# Embedding, Masking (their masks are NotEqual / Any nodes of the Keras graph)
# ---------------------------------------------------------------------------------------------------

@register(layers.Embedding, cases=[
    _ids_case("embedding", lambda: layers.Embedding(10, 4), vocab=10),
    _ids_case("embedding_mask_zero", lambda: layers.Embedding(6, 3, mask_zero=True), vocab=6),
    Case("embedding_2d_ids", lambda: layers.Embedding(7, 2), ((3, 4),), dtypes=("int64",), int_range=(0, 7)),
    _ids_case("embedding_mask_zero_dense", lambda: (lambda t: layers.Dense(2)(
        layers.Embedding(5, 3, mask_zero=True)(t))), vocab=5, steps=6),
])
def embedding(ctx, op, ids):
    if getattr(op, "quantization_mode", None):
        raise ctx.unsupported(f"quantized embeddings ({op.quantization_mode})")
    if ctx.in_dtype() not in ("int32", "int64"):
        ids = ctx.cast(ids, "int32")  # as Keras does
    return ctx.op("Gather", [ctx.weight(op.embeddings), ids], {"axis": 0})


@register(layers.Masking, cases=[
    _seq_case("masking", lambda: (lambda x: layers.Masking(0.0)(layers.ReLU()(x))), features=2),
    _seq_case("masking_value", lambda: layers.Masking(mask_value=0.5)),
    _seq_case("masking_lstm", _masked_by_masking(lambda: layers.LSTM(4, return_sequences=True)), features=1),
    _seq_case("masking_gru_backwards", _masked_by_masking(lambda: layers.GRU(3, go_backwards=True,
                                                                             return_state=True)), features=1),
])
def masking(ctx, op, x):
    # Keras: out = where(any(x != mask_value, axis=-1, keepdims=True), x, 0)
    equal = ctx.cast(ctx.op("Equal", [x, ctx.scalar(op.mask_value, ctx.in_dtype())]), "int32")
    all_equal = ctx.reduce("ReduceMin", equal, [-1], keepdims=True)
    return _where(ctx, ctx.cast(all_equal, "bool"), ctx.scalar(0.0), x)


# ---------------------------------------------------------------------------------------------------
# ConvLSTM
# ---------------------------------------------------------------------------------------------------

_CONV_LSTM = [cls for cls in (getattr(layers, n, None) for n in ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"))
              if cls is not None]


def _conv_attrs(cell, padding, strides, dilations) -> dict:
    from .layers_conv import padding_attrs

    kernel_size = list(cell.kernel_size)
    attrs = {"kernel_shape": kernel_size, "strides": list(strides)}
    if any(d != 1 for d in dilations):
        attrs["dilations"] = list(dilations)
    # stride-1 'same' pads do not depend on the input size
    return {**attrs, **padding_attrs(padding, [None] * cell.rank, kernel_size, strides, dilations)}


def _conv_weight(ctx, cell, variable):
    """Keras (*kernel, C, 4F) -> ONNX Conv (4F, C, *kernel)."""
    rank = cell.rank
    return ctx.weight(variable, transform=lambda k: np.transpose(k, (rank + 1, rank, *range(rank))))


def _input_convolution(ctx, cell, xt):
    """The input convolution of every step at once: (T, B, C, *sp) -> (T, B, 4F, *sp')."""
    folded = ctx.op("Reshape", [xt, ctx.op("Concat", [ctx.int64s([-1]), ctx.dims(xt, 2)], {"axis": 0})])
    inputs = [folded, _conv_weight(ctx, cell, cell.kernel)] + ([ctx.weight(cell.bias)] if cell.use_bias else [])
    conv = ctx.op("Conv", inputs, _conv_attrs(cell, cell.padding.lower(), cell.strides, cell.dilation_rate))
    shape = ctx.op("Concat", [ctx.dims(xt, 0, 2), ctx.dims(conv, 1)], {"axis": 0})
    return ctx.op("Reshape", [conv, shape])


def _conv_lstm_step(cell):
    ones = (1,) * cell.rank
    attrs = _conv_attrs(cell, "same", ones, ones)
    filters = int(cell.filters)

    def step(ctx, xw_t, states, recurrent):
        h, c = states
        z = ctx.op("Add", [xw_t, ctx.op("Conv", [h, recurrent], attrs)])
        i, f, g, o = ctx.split(z, [filters] * 4, axis=1)
        rec = lambda v: apply_activation(ctx, v, cell.recurrent_activation)  # noqa: E731
        act = lambda v: apply_activation(ctx, v, cell.activation)  # noqa: E731
        c = ctx.op("Add", [ctx.op("Mul", [rec(f), c]), ctx.op("Mul", [rec(i), act(g)])])
        return [ctx.op("Mul", [rec(o), act(c)]), c]

    return step


@register(*_CONV_LSTM, cases=[
    Case("rnn_conv_lstm2d", lambda: layers.ConvLSTM2D(2, 3), ((None, 5, 5, 1),)),
    Case("rnn_conv_lstm2d_same_sequences_state", lambda: layers.ConvLSTM2D(
        3, (3, 2), padding="same", return_sequences=True, return_state=True), ((4, 6, 5, 2),)),
    Case("rnn_conv_lstm2d_strides_backwards", lambda: layers.ConvLSTM2D(
        2, 3, strides=2, padding="same", go_backwards=True, return_sequences=True), ((3, 7, 6, 2),)),
    Case("rnn_conv_lstm2d_dilation_unroll", lambda: layers.ConvLSTM2D(
        2, 3, dilation_rate=2, unroll=True, activation="relu", recurrent_activation="hard_sigmoid"),
        ((3, 7, 7, 1),)),
    Case("rnn_conv_lstm2d_channels_first", lambda: layers.ConvLSTM2D(
        2, 3, data_format="channels_first", return_sequences=True, return_state=True), ((3, 2, 6, 5),)),
    Case("rnn_conv_lstm2d_initial_state", lambda: (lambda x, h, c: layers.ConvLSTM2D(
        3, 3, padding="same", return_sequences=True, go_backwards=True)(x, initial_state=[h, c])),
        ((3, 5, 5, 2), (5, 5, 3), (5, 5, 3))),
    Case("rnn_conv_lstm2d_then_conv", lambda: (lambda x: layers.Conv2D(2, 1)(layers.ConvLSTM2D(
        3, 3, activation="gelu")(x))), ((3, 6, 6, 2),)),
    Case("rnn_conv_lstm2d_mixed_float16", lambda: layers.ConvLSTM2D(2, 3, return_state=True, dtype="mixed_float16"),
         ((3, 5, 5, 2),), atol=1e-2),
    Case("rnn_conv_lstm1d", lambda: layers.ConvLSTM1D(3, 3, return_sequences=True), ((None, 8, 2),)),
    Case("rnn_conv_lstm3d", lambda: layers.ConvLSTM3D(2, 2, padding="same", return_state=True),
         ((3, 4, 4, 3, 1),)),
])
@_float32_core
def conv_lstm(ctx, op, x, *rest):
    """ONNX has no convolutional recurrent op: an ONNX Loop runs the ConvLSTM cell, channels-first,
    after one batched Conv computes every step's input convolution."""
    _check_stateless(ctx, op)
    cell = op.cell
    if _call_mask(ctx)[0] is not None:
        raise ctx.unsupported("a mask on ConvLSTM (Keras applies it to the state's trailing axes, not per "
                              "batch entry)")
    for fn in (cell.activation, cell.recurrent_activation):
        if activation_name(fn) not in ACTIVATIONS:
            raise ctx.unsupported(f"activation '{activation_name(fn)}' has no ONNX mapping")
    rank, n = cell.rank, cell.rank + 3
    channels_last = cell.data_format == "channels_last"
    seq_perm = (1, 0, n - 1, *range(2, n - 1)) if channels_last else (1, 0, *range(2, n))
    state_perm = L.channels_first(rank + 2) if channels_last else L.identity(rank + 2)
    xw = _input_convolution(ctx, cell, _fetch_as(ctx, ctx.in_tensors[0], seq_perm))
    states = _initial_states(ctx, rest)
    filters = int(cell.filters)
    if states is not None:
        init = [ctx.op("Transpose", [s], {"perm": list(state_perm)}) for s in states]
    else:
        shape = ctx.op("Concat", [ctx.dims(xw, 1, 2), ctx.int64s([filters]), ctx.dims(xw, 3)], {"axis": 0})
        init = [ctx.op("Expand", [_zero(ctx), shape])] * 2
    out_spatial = list(ctx.out_shape(0)[-rank - 1:-1] if channels_last else ctx.out_shape(0)[-rank:])
    spec = _LoopPass(op.go_backwards, bool(op.unroll), False, [None, filters, *out_spatial], 2)
    recurrent = _conv_weight(ctx, cell, cell.recurrent_kernel)
    step = _conv_lstm_step(cell)
    finals, ys = _time_loop(ctx, xw, 0, init, lambda c, xw_t, s: step(c, xw_t, s, recurrent), spec,
                            cell_perm=state_perm)
    outputs = [ys if op.return_sequences else _take(ctx, ys, -1, 0)]  # Keras: processing order
    perms = [seq_perm if op.return_sequences else state_perm]
    if op.return_state:
        outputs += finals
        perms += [state_perm] * 2
    ctx.out_perms = perms
    return tuple(outputs) if len(outputs) > 1 else outputs[0]
