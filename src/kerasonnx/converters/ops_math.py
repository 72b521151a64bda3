"""``keras.ops`` math operations (``keras.src.ops.math``): rsqrt, erf/erfc/erfinv, logsumexp, top_k,
in_top_k, cdist, logdet, segment reductions, extract_sequences, and the Fourier transforms
(fft, fft2, ifft2, rfft, irfft, stft, istft) on ONNX ``DFT`` (opset >= 17).

Keras passes complex values as (real, imaginary) pairs of float tensors; ONNX ``DFT`` takes them
stacked on a last axis of size 2, so the converters stack, transform and split again.

Not converted (reported as unsupported): ``view_as_complex`` / ``view_as_real`` (their tensors are
complex, which ONNX Runtime cannot compute with); ``SegmentReduction`` is only a base class."""

from __future__ import annotations

import keras
import numpy as np

from ..core.dtypes import to_numpy_dtype
from ..core.layout import Layout
from ..core.registry import Case, lazy_op
from ..core.walker import ops_classes
from . import BUILTIN
from .ops_core import constant_array, refuse_ops
from .ops_numpy import (INT64_MAX, arange, c, dim, operand, polynomial, reduce, scalar_of, slice_, squeeze,
                        unsqueeze)

register = BUILTIN.register


def _float(ctx, x):
    return operand(ctx, x, ctx.out_dtype())


@register(*ops_classes("math", "Rsqrt"), layout=Layout.ANY, cases=[
    Case("ops_math_rsqrt", lambda: (lambda x: keras.ops.rsqrt(keras.ops.abs(x) + 0.1)), ((3, 4),)),
])
def rsqrt(ctx, op, x):
    return ctx.op("Reciprocal", [ctx.op("Sqrt", [_float(ctx, x)])])


@register(*ops_classes("math", "Erf"), layout=Layout.ANY, cases=[
    Case("ops_math_erf", lambda: (lambda x: keras.ops.erf(x)), ((3, 4),)),
])
def erf(ctx, op, x):
    return ctx.op("Erf", [_float(ctx, x)])


@register(*ops_classes("math", "Erfc"), layout=Layout.ANY, cases=[
    Case("ops_math_erfc", lambda: (lambda x: keras.ops.erfc(x)), ((3, 4),)),
])
def erfc(ctx, op, x):
    return ctx.op("Sub", [ctx.scalar(1.0), ctx.op("Erf", [_float(ctx, x)])])


@register(*ops_classes("math", "Logsumexp"), cases=[
    Case("ops_math_logsumexp", lambda: (lambda x: keras.ops.logsumexp(x * 30.0, axis=-1)), ((3, 4),)),
    Case("ops_math_logsumexp_keepdims", lambda: (lambda x: keras.ops.logsumexp(x, axis=1, keepdims=True)),
         ((3, 4),)),
    Case("ops_math_logsumexp_all", lambda: (lambda x: keras.ops.logsumexp(x)), ((3, 4),)),
])
def logsumexp(ctx, op, x):
    """max + log(sum(exp(x - max))): stable for large inputs, like Keras."""
    rank = len(ctx.in_shape())
    axes = op.axis if op.axis is not None else list(range(rank))
    axes = [a % rank for a in ([axes] if isinstance(axes, int) else axes)]
    x = _float(ctx, x)
    peak = ctx.reduce("ReduceMax", x, axes, keepdims=True)
    summed = ctx.reduce("ReduceSum", ctx.op("Exp", [ctx.op("Sub", [x, peak])]), axes, keepdims=op.keepdims)
    if not op.keepdims:
        peak = ctx.op("Squeeze", [peak, ctx.int64s(axes)])
    return ctx.op("Add", [ctx.op("Log", [summed]), peak])


@register(*ops_classes("math", "TopK"), cases=[
    Case("ops_math_top_k", lambda: (lambda x: keras.ops.top_k(x, 3)), ((7,),)),
    Case("ops_math_top_k_rank3", lambda: (lambda x: keras.ops.top_k(x, 2)[0]), ((2, 5),)),
])
def top_k(ctx, op, x):
    values, indices = ctx.op("TopK", [x, ctx.int64s([op.k])], {"axis": -1, "largest": 1, "sorted": 1},
                             outputs=2)
    return values, ctx.cast(indices, ctx.out_dtype(1))



@register(*ops_classes("math", "InTopK"), cases=[
    Case("ops_math_in_top_k", lambda: (lambda t, p: keras.ops.in_top_k(t, p, 2)), ((), (5,)),
         dtypes=("int32", "float32"), int_range=(0, 5)),
    Case("ops_math_in_top_k_k_above_classes", lambda: (lambda t, p: keras.ops.in_top_k(t, p, 7)), ((), (4,)),
         dtypes=("int64", "float32"), int_range=(0, 4)),
])
def in_top_k(ctx, op, targets, predictions):
    """Keras: the target's score is >= the k-th largest score of its row (ties count as in)."""
    classes = ctx.in_shape(1)[-1]
    k = ctx.int64s([op.k]) if classes is None else ctx.int64s([min(op.k, classes)])
    if classes is None:
        k = ctx.op("Min", [k, dim(ctx, predictions, 1)])
    top = ctx.op("TopK", [predictions, k], {"axis": -1, "largest": 1, "sorted": 1}, outputs=2)[0]
    kth = reduce(ctx, "ReduceMin", top, [1], False)
    score = ctx.op("GatherElements", [predictions, unsqueeze(ctx, operand(ctx, targets, "int64"), [1])], {"axis": 1})
    return ctx.op("GreaterOrEqual", [squeeze(ctx, score, [1]), kth])


@register(*ops_classes("math", "CDist"), cases=[
    Case("ops_math_cdist", lambda: (lambda x, y: keras.ops.cdist(x, y)), ((4, 3), (5, 3))),
    Case("ops_math_cdist_broadcast", lambda: (lambda x: keras.ops.cdist(x, np.ones((2, 3), "float32"))),
         ((None, 3),)),
])
def cdist(ctx, op, x, y):
    dtype = ctx.out_dtype()
    x, y = operand(ctx, x, dtype), operand(ctx, y, dtype)
    diff = ctx.op("Sub", [unsqueeze(ctx, x, [-2]), unsqueeze(ctx, y, [-3])])
    return ctx.op("Sqrt", [reduce(ctx, "ReduceSum", ctx.op("Mul", [diff, diff]), [-1], False)])


@register(*ops_classes("math", "Logdet"), cases=[
    Case("ops_math_logdet", lambda: (lambda x: keras.ops.logdet(keras.ops.reshape(x, (-1, 3, 3)))), ((9,),),
         backends=("numpy",)),  # TensorFlow: log(det), NaN for a negative determinant
])
def logdet(ctx, op, x):
    """``log|det(x)|``: the Keras numpy backend returns slogdet's log-magnitude."""
    return ctx.op("Log", [ctx.op("Abs", [ctx.op("Det", [_float(ctx, x)])])])


# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), single precision: central
# and tail polynomials in w = -log(1 - x^2). Evaluated in float32 its error is below 7e-7 absolute and
# 3e-7 relative over (-1, 1) (measured against scipy in float64); a Newton step on Erf does not
# improve on that in float32 and ruins the tails, where erf is flat.
_ERFINV_CENTRAL = (1.50140941, 0.246640727, -0.00417768164, -0.00125372503, 0.00021858087,
                   -4.39150654e-06, -3.5233877e-06, 3.43273939e-07, 2.81022636e-08)
_ERFINV_TAIL = (2.83297682, 1.00167406, 0.00943887047, -0.0076224613, 0.00573950773, -0.00367342844,
                0.00134934322, 0.000100950558, -0.000200214257)


@register(*ops_classes("math", "Erfinv"), layout=Layout.ANY, cases=[
    Case("ops_math_erfinv", lambda: (lambda x: keras.ops.erfinv(x / (keras.ops.abs(x) + 1.0))), ((3, 4),),
         atol=1e-6),
    # erfinv is steep near +-1: the inputs come from IEEE-exact ops (an ulp of tanh would show).
    Case("ops_math_erfinv_tails", lambda: (lambda x: keras.ops.erfinv(x / (keras.ops.abs(x) + 1e-3))), ((8,),),
         atol=1e-5),
    Case("ops_math_erfinv_out_of_domain", lambda: (lambda x: keras.ops.erfinv(
        keras.ops.clip(x * 2.0, -1.0, 1.0) * 1.5)), ((8,),)),
])
def erfinv(ctx, op, x):
    dtype = ctx.out_dtype()
    x = _float(ctx, x)
    w = ctx.op("Neg", [ctx.op("Log", [ctx.op("Mul", [ctx.op("Sub", [c(ctx, 1, dtype), x]),
                                                      ctx.op("Add", [c(ctx, 1, dtype), x])])])])
    central = polynomial(ctx, ctx.op("Sub", [w, c(ctx, 2.5, dtype)]), _ERFINV_CENTRAL, dtype)
    tail = polynomial(ctx, ctx.op("Sub", [ctx.op("Sqrt", [w]), c(ctx, 3.0, dtype)]), _ERFINV_TAIL, dtype)
    y = ctx.op("Mul", [ctx.op("Where", [ctx.op("Less", [w, c(ctx, 5.0, dtype)]), central, tail]), x])
    magnitude = ctx.op("Abs", [x])
    edge = ctx.op("Mul", [ctx.op("Sign", [x]), c(ctx, np.inf, dtype)])  # erfinv(+-1) = +-inf
    y = ctx.op("Where", [ctx.op("Equal", [magnitude, c(ctx, 1, dtype)]), edge, y])
    return ctx.op("Where", [ctx.op("Greater", [magnitude, c(ctx, 1, dtype)]), c(ctx, np.nan, dtype), y])


# ---- segment reductions --------------------------------------------------------------------------

# Keras op -> (ScatterND reduction, opset it needs, value of an empty segment)
_SEGMENTS = {"SegmentSum": ("add", 16, 0), "SegmentProd": ("mul", 16, 1), "SegmentMax": ("max", 18, -np.inf),
             "SegmentMin": ("min", 18, np.inf)}


def _empty_segment(value, dtype):
    """The fill of an empty segment in ``dtype`` (numpy's -inf/inf become the integer extremes)."""
    np_dtype = to_numpy_dtype(dtype)
    if np.isinf(value) and np.issubdtype(np_dtype, np.integer):
        return np.iinfo(np_dtype).min if value < 0 else np.iinfo(np_dtype).max
    return value


def _segment_case(name, fn, **kwargs):
    """Negative ids and empty segments follow the numpy backend (TensorFlow's kernels differ)."""
    return Case(f"ops_math_segment_{name}", lambda: fn, ((4,), ()), dtypes=("float32", "int32"),
                int_range=(-1, 4), backends=("numpy",), **kwargs)


def _segment_converter(kind):
    reduction, _, empty = _SEGMENTS[kind]

    def convert(ctx, op, data, segment_ids):
        """ScatterND with ``reduction`` into a tensor of empty-segment values with one extra row,
        which takes the ids < 0 that Keras ignores, and is dropped."""
        dtype = ctx.out_dtype()
        ids = operand(ctx, segment_ids, "int64")
        if op.num_segments is None:
            count = ctx.op("Add", [reduce(ctx, "ReduceMax", ids, None, True), ctx.int64s([1])])
            count = ctx.op("Reshape", [count, ctx.int64s([1])])
        else:
            count = ctx.int64s([int(op.num_segments)])
        ids = ctx.op("Where", [ctx.op("Less", [ids, c(ctx, 0, "int64")]), scalar_of(ctx, count), ids])
        rows = ctx.op("Add", [count, ctx.int64s([1])])
        shape = ctx.op("Concat", [rows, ctx.dims(data, 1)], {"axis": 0})
        base = ctx.op("Expand", [c(ctx, _empty_segment(empty, dtype), dtype), shape])
        scattered = ctx.op("ScatterND", [base, unsqueeze(ctx, ids, [-1]), operand(ctx, data, dtype)],
                           {"reduction": reduction})
        return ctx.op("Slice", [scattered, ctx.int64s([0]), count, ctx.int64s([0])])
    return convert


def _segments(data, ids):
    """Flatten a batch of rows for a segment reduction: data [n * 4], ids [n] repeated per column."""
    return keras.ops.reshape(data, (-1,)), keras.ops.reshape(keras.ops.repeat(ids[:, None], 4, axis=1), (-1,))


def _register_segment(kind):
    name, min_opset = kind[len("Segment"):].lower(), _SEGMENTS[kind][1]
    fn = lazy_op(keras.ops, f"segment_{name}")
    register(*ops_classes("math", kind), min_opset=min_opset, cases=[
        _segment_case(name, lambda d, i: fn(*_segments(d, i), num_segments=5), min_opset=min_opset),
        _segment_case(f"{name}_inferred_count", lambda d, i: fn(d, i), min_opset=min_opset),
    ])(_segment_converter(kind))


for _kind in _SEGMENTS:
    _register_segment(_kind)


# ---- framing --------------------------------------------------------------------------------------

def frame_indices(ctx, length, static_length, frame: int, stride: int):
    """``[frames, frame]`` int64 positions of the windows of ``frame`` samples every ``stride``
    samples that fit in ``length`` samples (a 1-D value; ``static_length`` when known)."""
    offsets = np.arange(frame)[None, :]
    if static_length is not None:
        count = max(0, (static_length - frame) // stride + 1)
        return ctx.int64s(np.arange(count)[:, None] * stride + offsets)
    count = ctx.op("Add", [ctx.op("Div", [ctx.op("Sub", [length, ctx.int64s([frame])]), ctx.int64s([stride])]),
                           ctx.int64s([1])])
    starts = ctx.op("Mul", [arange(ctx, count), ctx.const(np.asarray(stride, np.int64))])
    return ctx.op("Add", [unsqueeze(ctx, starts, [1]), ctx.int64s(offsets)])


def frames(ctx, x, rank: int, frame: int, stride: int, static_length=None):
    """``x[..., L]`` (of ``rank``) -> ``[..., frames, frame]``: windows along the last axis."""
    length = None if static_length is not None else ctx.dims(x, rank - 1, rank)
    indices = frame_indices(ctx, length, static_length, frame, stride)
    return ctx.op("Gather", [x, indices], {"axis": rank - 1})


@register(*ops_classes("math", "ExtractSequences"), layout=Layout.KERAS, cases=[
    Case("ops_math_extract_sequences", lambda: (lambda x: keras.ops.extract_sequences(x, 4, 3)), ((11,),)),
    Case("ops_math_extract_sequences_dynamic", lambda: (lambda x: keras.ops.extract_sequences(x, 3, 2)),
         ((2, None),)),
])
def extract_sequences(ctx, op, x):
    shape = ctx.in_shape()
    return frames(ctx, x, len(shape), int(op.sequence_length), int(op.sequence_stride), shape[-1])


# ---- Fourier transforms (ONNX DFT) ---------------------------------------------------------------

def dft(ctx, signal, axis: int, length, *, inverse=False, onesided=False):
    """ONNX ``DFT`` of ``signal`` (``[..., 1]`` real or ``[..., 2]`` complex) along ``axis``
    (non-negative, a dim before the last), over ``length`` samples (an int or a 0-d int64 value;
    the signal is cropped or zero-padded to it). DFT-20 takes the axis as an input, DFT-17 as an
    attribute: that difference lives here only."""
    length = ctx.const(np.asarray(length, np.int64)) if isinstance(length, (int, np.integer)) else length
    attrs = {"inverse": int(inverse), "onesided": int(onesided)}
    if ctx.opset >= 20:
        return ctx.op("DFT", [signal, length, ctx.const(np.asarray(axis, np.int64))], attrs)
    return ctx.op("DFT", [signal, length], {**attrs, "axis": axis})


def to_complex(ctx, real, imag):
    """(real, imag) ``[...]`` -> ``[..., 2]``."""
    return ctx.op("Concat", [unsqueeze(ctx, real, [-1]), unsqueeze(ctx, imag, [-1])], {"axis": -1})


def from_complex(ctx, z):
    """``[..., 2]`` -> (real, imag)."""
    return tuple(ctx.op("Squeeze", [part, ctx.int64s([-1])]) for part in ctx.split(z, [1, 1], -1))


def _fft_case(name, fn, shapes=((6,), (6,)), min_opset=17, **kwargs):
    return Case(f"ops_math_{name}", lambda: fn, shapes, min_opset=min_opset, **kwargs)


def _complex_transform(inverse: bool, axes_count: int):
    def convert(ctx, op, real, imag):
        rank, shape = len(ctx.in_shape(0)), ctx.in_shape(0)
        z = to_complex(ctx, _float(ctx, real), _float(ctx, imag))
        for axis in range(rank - axes_count, rank):
            z = dft(ctx, z, axis, shape[axis], inverse=inverse)
        return from_complex(ctx, z)
    return convert


register(*ops_classes("math", "FFT"), min_opset=17, cases=[
    _fft_case("fft", lambda r, i: keras.ops.fft((r, i))),
    _fft_case("fft_rank3", lambda r, i: keras.ops.fft((r, i)), ((2, 5), (2, 5))),
    _fft_case("fft_opset20", lambda r, i: keras.ops.fft((r, i)), min_opset=20),  # DFT-20: axis as an input
])(_complex_transform(False, 1))
register(*ops_classes("math", "FFT2"), min_opset=17, cases=[
    _fft_case("fft2", lambda r, i: keras.ops.fft2((r, i)), ((3, 4), (3, 4))),
])(_complex_transform(False, 2))
register(*ops_classes("math", "IFFT2"), min_opset=17, cases=[
    _fft_case("ifft2", lambda r, i: keras.ops.ifft2((r, i)), ((4, 5), (4, 5))),
])(_complex_transform(True, 2))


@register(*ops_classes("math", "RFFT"), min_opset=17, cases=[
    _fft_case("rfft", lambda x: keras.ops.rfft(x), ((8,),)),
    _fft_case("rfft_crop", lambda x: keras.ops.rfft(x, 5), ((2, 8),)),
    _fft_case("rfft_pad_dynamic", lambda x: keras.ops.rfft(x, 12), ((None,),)),
])
def rfft(ctx, op, x):
    rank = len(ctx.in_shape())
    length = op.fft_length if op.fft_length is not None else scalar_of(ctx, dim(ctx, x, rank - 1, ctx.in_shape()[-1]))
    z = dft(ctx, unsqueeze(ctx, _float(ctx, x), [-1]), rank - 1, length, onesided=True)
    return from_complex(ctx, z)


def hermitian_spectrum(ctx, real, imag, bins: int, n: int, rank: int):
    """The full ``n``-point spectrum ``[..., n, 2]`` of a real signal from the first ``bins`` of
    the last axis (the one-sided half, cropped or zero-padded to ``n // 2 + 1``):
    ``X[n - k] = conj(X[k])``."""
    half = n // 2 + 1
    if bins < half:
        pads = ctx.int64s([0] * (2 * rank - 1) + [half - bins])
        real, imag = (ctx.op("Pad", [v, pads]) for v in (real, imag))
    index = ctx.int64s(list(range(half)) + [n - k for k in range(half, n)])
    sign = c(ctx, [1.0] * half + [-1.0] * (n - half), ctx.out_dtype())
    real = ctx.op("Gather", [real, index], {"axis": -1})
    imag = ctx.op("Mul", [ctx.op("Gather", [imag, index], {"axis": -1}), sign])
    return to_complex(ctx, real, imag)


def _irfft_real(ctx, real, imag, bins: int, n: int, rank: int):
    """``irfft`` along the last axis: the real part of the inverse DFT of the Hermitian spectrum."""
    z = dft(ctx, hermitian_spectrum(ctx, real, imag, bins, n, rank), rank - 1, n, inverse=True)
    return from_complex(ctx, z)[0]


@register(*ops_classes("math", "IRFFT"), min_opset=17, cases=[
    _fft_case("irfft", lambda r, i: keras.ops.irfft((r, i)), ((5,), (5,))),
    _fft_case("irfft_odd_length", lambda r, i: keras.ops.irfft((r, i), 7), ((2, 4), (2, 4))),
    _fft_case("irfft_crop", lambda r, i: keras.ops.irfft((r, i), 4), ((6,), (6,))),
    _fft_case("irfft_pad", lambda r, i: keras.ops.irfft((r, i), 12), ((5,), (5,))),
])
def irfft(ctx, op, real, imag):
    shape = ctx.in_shape(0)
    if shape[-1] is None:
        raise ctx.unsupported("irfft of a spectrum with a dynamic number of bins")
    n = op.fft_length if op.fft_length is not None else 2 * (shape[-1] - 1)
    return _irfft_real(ctx, _float(ctx, real), _float(ctx, imag), shape[-1], int(n), len(shape))


def _window(ctx, op, dtype):
    """The window of ``sequence_length`` samples centred in ``fft_length`` zeros (scipy's periodic
    "hann"/"hamming" or a given array), or ``fft_length`` ones for None, as numpy ``dtype``."""
    size, fft_length = int(op.sequence_length), int(op.fft_length)
    if op.window is None:  # Keras: ones over the whole FFT length, not padded
        return np.ones(fft_length, np.dtype(dtype))
    if isinstance(op.window, str):
        a = {"hann": 0.5, "hamming": 0.54}.get(op.window)
        if a is None:
            raise ctx.unsupported(f"window {op.window!r}")
        window = a - (1 - a) * np.cos(2 * np.pi * np.arange(size) / size)
    else:
        window = constant_array(op.window)
        if window is None:
            raise ctx.unsupported("a window computed from the model's inputs")
        window = np.asarray(window, np.float64)
    left = (fft_length - size) // 2
    return np.pad(window, (left, fft_length - size - left)).astype(np.dtype(dtype))


@register(*ops_classes("math", "STFT"), min_opset=17, cases=[
    _fft_case("stft", lambda x: keras.ops.stft(x, 8, 4, 8), ((32,),)),
    _fft_case("stft_hamming_no_center", lambda x: keras.ops.stft(x, 6, 3, 8, window="hamming", center=False),
              ((2, 20),)),
    _fft_case("stft_array_window_dynamic", lambda x: keras.ops.stft(
        x, 4, 2, 4, window=np.linspace(0.1, 1.0, 4).astype("float32")), ((None,),)),
    _fft_case("stft_no_window", lambda x: keras.ops.stft(x, 5, 5, 5, window=None), ((20,),)),
])
def stft(ctx, op, x):
    """Frames of ``fft_length`` samples (after reflect padding when ``center``) times the window,
    then a one-sided DFT: Keras undoes scipy's spectrum scaling, so there is no other factor."""
    dtype, shape = ctx.out_dtype(), ctx.in_shape()
    rank, fft_length, length = len(shape), int(op.fft_length), shape[-1]
    x = _float(ctx, x)
    if op.center:
        half = fft_length // 2
        pads = ctx.int64s([0] * (rank - 1) + [half] + [0] * (rank - 1) + [half])
        x = ctx.op("Pad", [x, pads], {"mode": "reflect"})
        length = None if length is None else length + 2 * half
    framed = ctx.op("Mul", [frames(ctx, x, rank, fft_length, int(op.sequence_stride), length),
                            ctx.const(_window(ctx, op, dtype))])
    z = dft(ctx, unsqueeze(ctx, framed, [-1]), rank, fft_length, onesided=True)
    return from_complex(ctx, z)


def overlap_add(ctx, framed, count: int, frame: int, stride: int):
    """``[N, count, frame]`` frames -> ``[N, frame + stride * (count - 1)]`` summed where they overlap
    (ScatterND with reduction "add", opset 16)."""
    total = frame + stride * (count - 1)
    positions = (np.arange(count)[:, None] * stride + np.arange(frame)[None, :]).reshape(-1, 1)
    updates = ctx.op("Transpose", [ctx.op("Reshape", [framed, ctx.int64s([-1, count * frame])])], {"perm": [1, 0]})
    shape = ctx.op("Concat", [ctx.int64s([total]), ctx.dims(updates, 1, 2)], {"axis": 0})
    zeros = ctx.op("Expand", [c(ctx, 0, ctx.out_dtype()), shape])
    summed = ctx.op("ScatterND", [zeros, ctx.int64s(positions), updates], {"reduction": "add"})
    return ctx.op("Transpose", [summed], {"perm": [1, 0]})


def _istft_scale(op, window, count: int, stride: int) -> np.ndarray:
    """Per output sample: scipy's division by the overlapped squared window (where > 1e-10), its
    spectrum scaling by the window sum and Keras' division by that sum (by the stride without window)."""
    fft_length = len(window)
    norm = np.zeros(fft_length + stride * (count - 1))
    for t in range(count):
        norm[t * stride: t * stride + fft_length] += window ** 2
    factor = 1.0 if op.window is not None else window.sum() / stride
    return factor / np.where(norm > 1e-10, norm, 1.0)


def _istft_case(name, fn, shapes):
    """ISTFT follows scipy's normalisation (the numpy backend); TensorFlow's differs."""
    return _fft_case(name, fn, shapes, backends=("numpy",))


@register(*ops_classes("math", "ISTFT"), min_opset=17, cases=[
    _istft_case("istft", lambda r, i: keras.ops.istft((r, i), 8, 4, 8), ((9, 5), (9, 5))),
    _istft_case("istft_roundtrip_length",
                lambda x: keras.ops.istft(keras.ops.stft(x, 6, 3, 8), 6, 3, 8, length=20), ((20,),)),
    _istft_case("istft_hamming_no_center",
                lambda r, i: keras.ops.istft((r, i), 6, 2, 6, window="hamming", center=False),
                ((2, 7, 4), (2, 7, 4))),
    _istft_case("istft_no_window", lambda r, i: keras.ops.istft((r, i), 4, 4, 4, window=None), ((5, 3), (5, 3))),
])
def istft(ctx, op, real, imag):
    """irfft of every frame, windowed, overlap-added and normalised like scipy's ``istft``, then
    cropped like Keras (``center`` drops ``fft_length // 2`` samples at both ends)."""
    shape = ctx.in_shape(0)
    rank, (count, bins) = len(shape), shape[-2:]
    if count is None or bins is None:
        raise ctx.unsupported("istft of a spectrogram with a dynamic number of frames or bins")
    fft_length, stride = int(op.fft_length), int(op.sequence_stride)
    window = _window(ctx, op, "float64")
    framed = _irfft_real(ctx, _float(ctx, real), _float(ctx, imag), bins, fft_length, rank)
    framed = ctx.op("Mul", [framed, c(ctx, window, ctx.out_dtype())])
    signal = overlap_add(ctx, framed, count, fft_length, stride)
    signal = ctx.op("Mul", [signal, c(ctx, _istft_scale(op, window, count, stride), ctx.out_dtype())])
    start = fft_length // 2 if op.center else 0
    if op.length is not None:
        end = start + int(op.length)
    else:
        end = -(fft_length // 2) if op.center else INT64_MAX
    signal = slice_(ctx, signal, [start], [end], [1])
    target = ctx.op("Concat", [ctx.dims(real, 0, rank - 2), ctx.int64s([-1])], {"axis": 0})
    return ctx.op("Reshape", [signal, target])


refuse_ops("math", "ViewAsComplex", "ViewAsReal", reason="complex tensors: onnxruntime cannot compute with them")
refuse_ops("math", "SegmentReduction", reason="the base class of the segment ops; segment_sum/max/min/prod convert")
