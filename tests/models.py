"""Small Keras models built in code for the API and CLI tests."""

import keras
from keras import layers


def mlp(name="mlp"):
    x = keras.Input((8,), name="features")
    h = layers.Dense(64, activation="relu", name="hidden")(x)
    y = layers.Dense(3, activation="softmax", name="probs")(h)
    return keras.Model(x, y, name=name)


def two_io():
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    s = layers.Dense(5, name="sum_branch")(a + b)
    d = layers.Dense(2, name="diff_branch")(a - b)
    return keras.Model([a, b], [s, d], name="two_io")


class Doubler(layers.Layer):
    """A custom layer no built-in converter knows."""

    def call(self, x):
        return x * 2.0


class Halver(layers.Layer):
    def call(self, x):
        return x * 0.5


def with_custom_layers():
    x = keras.Input((6,), name="x")
    h = Doubler(name="doubler")(x)
    h = layers.Dense(4, name="dense")(h)
    y = Halver(name="halver")(h)
    return keras.Model(x, y)


class PythonBranch(layers.Layer):
    """Branches in Python on a tensor value: cannot be traced into a graph."""

    def call(self, x):
        if keras.ops.sum(x) > 0:
            return x
        return -x


class NumpyInside(layers.Layer):
    """Calls numpy on its input: only works eagerly, not on symbolic tensors."""

    def call(self, x):
        import numpy as np

        return x * float(np.asarray(x).mean())


def with_untraceable_layers():
    x = keras.Input((6,), name="x")
    h = PythonBranch(name="branchy")(x)
    h = layers.Dense(4, name="dense")(h)
    y = NumpyInside(name="numpy_inside")(h)
    return keras.Model(x, y)


# Converters a user ships beside their layers: `--custom-objects models.py` picks this registry up.
import kerasonnx  # noqa: E402

registry = kerasonnx.Registry()


@registry.register(PythonBranch)
def _branch(ctx, op, x):
    keep = ctx.op("Greater", [ctx.reduce("ReduceSum", x, None, keepdims=False), ctx.scalar(0.0)])
    return ctx.op("Where", [keep, x, ctx.op("Neg", [x])])


def with_python_branch():
    x = keras.Input((6,), name="x")
    return keras.Model(x, PythonBranch(name="branchy")(layers.Dense(6, name="dense")(x)))
