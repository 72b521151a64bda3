"""Worked example: converting custom layers three ways.

1. ``Swish2`` has no converter: kerasonnx traces its ``call()`` (written with ``keras.ops``).
2. ``ClippedScale`` gets a user converter that emits a tighter graph than tracing would.
3. ``FastGelu`` becomes one node of a custom ONNX domain (``com.example``), for users who implement
   that op in onnxruntime; the model records the domain in its opset imports.

Run: ``python examples/custom_converter.py`` (CI runs it through tests/test_examples.py).
"""

import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
import onnx  # noqa: E402
from keras import layers  # noqa: E402

import kerasonnx  # noqa: E402
from kerasonnx import Case, Layout, Registry  # noqa: E402
from kerasonnx.testing import run_case  # noqa: E402


class Swish2(layers.Layer):
    def call(self, x):
        return x * keras.ops.sigmoid(2.0 * x)


class ClippedScale(layers.Layer):
    def __init__(self, scale=2.0, limit=3.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.limit = scale, limit

    def call(self, x):
        return keras.ops.clip(x * self.scale, -self.limit, self.limit)


class FastGelu(layers.Layer):
    def call(self, x):
        return keras.ops.gelu(x, approximate=True)


registry = Registry()


@registry.register(ClippedScale, layout=Layout.ANY, cases=[
    Case("clipped_scale", lambda: ClippedScale(1.5, 2.0), input_shapes=((6,),)),
])
def convert_clipped_scale(ctx, op, x):
    scaled = ctx.op("Mul", [x, ctx.scalar(op.scale)])
    return ctx.op("Clip", [scaled, ctx.scalar(-op.limit), ctx.scalar(op.limit)])


@registry.register(FastGelu, layout=Layout.ANY)
def convert_fast_gelu(ctx, op, x):
    return ctx.op("FastGelu", [x], domain="com.example", domain_version=1)


def build_model():
    x = keras.Input((8,), name="features")
    h = Swish2(name="swish2")(layers.Dense(16, name="dense")(x))
    h = ClippedScale(name="clipped_scale")(h)
    return keras.Model(x, layers.Dense(4, name="logits")(h), name="custom_layers")


def main() -> int:
    # The user converter's own test cases, checked the way kerasonnx checks its built-ins.
    for case in registry.cases():
        _, report = run_case(case, converters=registry)
        print(f"case {case.name}: {report.summary()}")
        if not report.passed:
            return 1

    model = build_model()
    onnx_model = kerasonnx.convert(model, converters=registry)
    report = kerasonnx.verify(model, onnx_model)
    print(f"{len(onnx_model.graph.node)} nodes: {[n.op_type for n in onnx_model.graph.node]}")
    print(report.summary())
    with tempfile.TemporaryDirectory() as tmp:
        kerasonnx.save(onnx_model, os.path.join(tmp, "custom_layers.onnx"))

    # A custom-domain op: the file is valid ONNX; running it needs your onnxruntime custom op.
    x = keras.Input((8,), name="features")
    custom = keras.Model(x, FastGelu(name="fast_gelu")(x))
    custom_onnx = kerasonnx.convert(custom, converters=registry)
    onnx.checker.check_model(custom_onnx)
    domains = {o.domain: o.version for o in custom_onnx.opset_import}
    print(f"custom-domain model: nodes {[(n.domain, n.op_type) for n in custom_onnx.graph.node]}, "
          f"opset imports {domains}")
    return 0 if report.passed and domains.get("com.example") == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
