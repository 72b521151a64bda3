"""tf2onnx tutorial, step 2: a model with a custom layer, exported as a custom-domain op.

The runtime that executes the model (onnxruntime with a custom-op library, say) implements the op;
`custom_ops` maps the op name to its domain so that the graph records it.
Written for tf2onnx; with kerasonnx only the import changes (custom_ops keys are then Keras layer
class names):
    from kerasonnx import tf2onnx_compat as tf2onnx
"""
import keras
import onnx
import tf2onnx
from onnx import helper


class FastGelu(keras.layers.Layer):
    """A layer our deployment runtime implements natively."""

    def __init__(self, approximate=True, **kwargs):
        super().__init__(**kwargs)
        self.approximate = approximate

    def call(self, x):
        return keras.activations.gelu(x, approximate=self.approximate)

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


inputs = keras.Input(shape=(16,), name="features")
hidden = FastGelu(name="fast_gelu")(keras.layers.Dense(32)(inputs))
outputs = keras.layers.Dense(4)(hidden)
model = keras.Model(inputs, outputs)

model_proto, _ = tf2onnx.convert.from_keras(
    model,
    opset=17,
    custom_ops={"FastGelu": "com.example"},
    extra_opset=[helper.make_opsetid("com.example", 1)],
    output_path="custom_ops.onnx",
)

custom_nodes = [n for n in model_proto.graph.node if n.domain == "com.example"]
print("custom nodes:", [(n.op_type, n.domain) for n in custom_nodes])
assert [n.op_type for n in custom_nodes] == ["FastGelu"]
assert {o.domain: o.version for o in model_proto.opset_import}["com.example"] == 1
onnx.checker.check_model(onnx.load("custom_ops.onnx"))
