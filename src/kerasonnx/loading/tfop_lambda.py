"""Keras 3 stand-ins for Keras 2's TFOpLambda / SlicingOpLambda layers.

Keras 2 records a TensorFlow function called on KerasTensors (``tf.nn.relu(x)``, ``x[:, 1:3]``) as a
TFOpLambda layer whose config names the function (``"nn.relu"``) and whose call arguments sit in the
inbound node. These layers call the equivalent ``keras.ops`` instead, so no TensorFlow is needed and
kerasonnx converts them by tracing. Each entry of ``TF_OPS`` takes TensorFlow's own parameter names
(Keras 2 stores every argument after the first by name).
"""

from __future__ import annotations

import keras
from keras import ops


def _unary(fn):
    def call(x, name=None):
        return fn(x)
    return call


def _binary(fn):
    def call(x, y, name=None):
        return fn(x, y)
    return call


def _reduction(fn):
    def call(input_tensor, axis=None, keepdims=None, name=None, reduction_indices=None, keep_dims=None):
        axis = reduction_indices if axis is None else axis
        keep = bool(keepdims if keepdims is not None else keep_dims)
        return fn(input_tensor, axis=_axis(axis), keepdims=keep)
    return call


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _reshape(tensor, shape, name=None):
    return ops.reshape(tensor, tuple(shape))


def _concat(values, axis, name=None):
    return ops.concatenate(list(values), axis=axis)


def _stack(values, axis=0, name=None):
    return ops.stack(list(values), axis=axis)


def _transpose(a, perm=None, conjugate=False, name=None):
    return ops.transpose(a, axes=None if perm is None else tuple(perm))


def _expand_dims(input, axis, name=None, dim=None):  # noqa: A002 (TensorFlow's parameter name)
    return ops.expand_dims(input, axis if dim is None else dim)


def _squeeze(input, axis=None, name=None, squeeze_dims=None):  # noqa: A002
    axis = squeeze_dims if axis is None else axis
    return ops.squeeze(input, axis=_axis(axis))


def _softmax(logits, axis=None, name=None, dim=None):
    axis = dim if axis is None else axis
    return ops.softmax(logits, axis=-1 if axis is None else axis)


def _silu(features, beta=1.0, name=None):
    return features * ops.sigmoid(features * beta) if beta != 1.0 else ops.silu(features)


def _gelu(features, approximate=False, name=None):
    return ops.gelu(features, approximate=approximate)


def _leaky_relu(features, alpha=0.2, name=None):
    return ops.leaky_relu(features, negative_slope=alpha)


def _matmul(a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False,
            a_is_sparse=False, b_is_sparse=False, output_type=None, grad_a=False, grad_b=False, name=None):
    if transpose_a or adjoint_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b or adjoint_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


def _cast(x, dtype, name=None):
    return ops.cast(x, dtype)


def _clip_by_value(t, clip_value_min, clip_value_max, name=None):
    return ops.clip(t, clip_value_min, clip_value_max)


def _l2_normalize(x, axis=None, epsilon=1e-12, name=None, dim=None):
    axis = _axis(dim if axis is None else axis)
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squares, epsilon))


def _tile(input, multiples, name=None):  # noqa: A002
    return ops.tile(input, tuple(multiples))


def _gather(params, indices, validate_indices=None, axis=None, batch_dims=0, name=None):
    if batch_dims:
        raise ValueError("tf.gather with batch_dims is not supported")
    return ops.take(params, indices, axis=0 if axis is None else axis)


def _pad(tensor, paddings, mode="CONSTANT", constant_values=0, name=None):
    if str(mode).upper() != "CONSTANT":
        return ops.pad(tensor, paddings, mode=str(mode).lower())
    return ops.pad(tensor, paddings, constant_values=constant_values)


def _getitem(tensor, slice_spec, var=None):
    key = tuple(slice_spec) if isinstance(slice_spec, list) else slice_spec
    return tensor[key]


_UNARY = {
    ("nn.relu",): ops.relu,
    ("nn.relu6",): ops.relu6,
    ("math.sigmoid", "nn.sigmoid", "sigmoid"): ops.sigmoid,
    ("math.tanh", "nn.tanh", "tanh"): ops.tanh,
    ("nn.elu",): ops.elu,
    ("nn.selu",): ops.selu,
    ("math.softplus", "nn.softplus"): ops.softplus,
    ("math.exp", "exp"): ops.exp,
    ("math.log", "log"): ops.log,
    ("math.log1p",): ops.log1p,
    ("math.sqrt", "sqrt"): ops.sqrt,
    ("math.rsqrt",): ops.rsqrt,
    ("math.square", "square"): ops.square,
    ("math.abs", "abs"): ops.abs,
    ("math.negative", "__operators__.neg"): ops.negative,
    ("math.erf",): ops.erf,
    ("math.floor", "floor"): ops.floor,
    ("math.round", "round"): ops.round,
    ("identity",): lambda x: x,
    ("stop_gradient",): lambda x: x,
}

_BINARY = {
    ("math.add", "__operators__.add", "add"): ops.add,
    ("math.subtract", "subtract"): ops.subtract,
    ("math.multiply", "multiply"): ops.multiply,
    ("math.truediv", "math.divide", "divide", "realdiv"): ops.divide,
    ("math.maximum", "maximum"): ops.maximum,
    ("math.minimum", "minimum"): ops.minimum,
    ("math.pow", "pow"): ops.power,
    ("math.squared_difference",): lambda x, y: ops.square(ops.subtract(x, y)),
}

_REDUCTIONS = {
    "reduce_mean": ops.mean, "reduce_sum": ops.sum, "reduce_max": ops.max, "reduce_min": ops.min,
    "reduce_prod": ops.prod,
}

_OTHERS = {
    ("reshape", "compat.v1.reshape"): _reshape,
    ("concat", "compat.v1.concat"): _concat,
    ("stack",): _stack,
    ("transpose", "compat.v1.transpose", "linalg.matrix_transpose"): _transpose,
    ("expand_dims", "compat.v1.expand_dims"): _expand_dims,
    ("squeeze", "compat.v1.squeeze"): _squeeze,
    ("nn.softmax", "math.softmax", "compat.v1.nn.softmax"): _softmax,
    ("nn.silu", "nn.swish"): _silu,
    ("nn.gelu",): _gelu,
    ("nn.leaky_relu",): _leaky_relu,
    ("linalg.matmul", "matmul", "compat.v1.matmul"): _matmul,
    ("cast", "dtypes.cast"): _cast,
    ("clip_by_value",): _clip_by_value,
    ("math.l2_normalize", "nn.l2_normalize", "linalg.l2_normalize"): _l2_normalize,
    ("tile",): _tile,
    ("gather", "compat.v1.gather"): _gather,
    ("pad", "compat.v1.pad"): _pad,
    ("__operators__.getitem",): _getitem,
}


def _table() -> dict:
    table = {}
    for names, fn in _UNARY.items():
        table.update(dict.fromkeys(names, _unary(fn)))
    for names, fn in _BINARY.items():
        table.update(dict.fromkeys(names, _binary(fn)))
    for short, fn in _REDUCTIONS.items():
        table.update(dict.fromkeys([f"math.{short}", short, f"compat.v1.{short}",
                                    f"compat.v1.math.{short}"], _reduction(fn)))
    for names, fn in _OTHERS.items():
        table.update(dict.fromkeys(names, fn))
    return table


# TensorFlow function name as Keras 2 records it (without the "tf." prefix) -> keras.ops implementation
TF_OPS: dict = _table()


def supported_tf_ops() -> list[str]:
    """The TensorFlow functions (``tf.<name>``) a Keras 2 TFOpLambda layer may call."""
    return sorted(f"tf.{name}" for name in TF_OPS)


@keras.saving.register_keras_serializable(package="kerasonnx")
class TFOpLambda(keras.layers.Layer):
    """A TensorFlow function called on KerasTensors in a Keras 2 model, as ``keras.ops`` calls."""

    def __init__(self, function: str, **kwargs):
        super().__init__(**kwargs)
        if function not in TF_OPS:
            raise ValueError(f"tf.{function} has no keras.ops equivalent in kerasonnx")
        self.function = function
        # Keras 2 may pass a constant first argument (``_CONSTANT_VALUE``, e.g. ``tf.add(1.5, x)``)
        self._allow_non_tensor_positional_args = True

    def call(self, *args, training=None, **kwargs):
        return TF_OPS[self.function](*args, **kwargs)

    def compute_output_spec(self, *args, training=None, **kwargs):
        # keras.ops on KerasTensors are symbolic on every backend (the default runs call() on
        # placeholder arrays on the numpy backend)
        return self.call(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "function": self.function}


@keras.saving.register_keras_serializable(package="kerasonnx")
class SlicingOpLambda(TFOpLambda):
    """Keras 2's indexing of KerasTensors (``x[:, 1:3]``, ``x[..., None]``) as Keras 3 indexing."""


_LAYERS = {cls.__name__: cls for cls in (TFOpLambda, SlicingOpLambda)}
# class names a translated Keras 2 config uses -> the classes (for custom_objects)
CUSTOM_OBJECTS = {keras.saving.get_registered_name(cls): cls for cls in _LAYERS.values()}


def registered_name(keras2_class_name: str) -> str:
    """The class name to put in a translated config for Keras 2's ``TFOpLambda``/``SlicingOpLambda``."""
    return keras.saving.get_registered_name(_LAYERS[keras2_class_name])


def is_tf_op_layer(class_name: str) -> bool:
    """Keras 2's TFOpLambda/SlicingOpLambda, before or after translation (they keep their first
    argument's structure in inbound nodes)."""
    return class_name in _LAYERS or class_name in CUSTOM_OBJECTS
