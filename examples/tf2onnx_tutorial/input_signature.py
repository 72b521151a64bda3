"""tf2onnx tutorial, step 3: an explicit input signature (named, dynamic batch) and the output names
read back from the ONNX model to run it in onnxruntime.

Written for tf2onnx; with kerasonnx only the import changes:
    from kerasonnx import tf2onnx_compat as tf2onnx
"""
import numpy as np
import onnxruntime as rt
import tensorflow as tf
import tf2onnx

inputs = tf.keras.Input(shape=(32, 32, 3))
x = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
x = tf.keras.layers.BatchNormalization()(x)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
outputs = tf.keras.layers.Dense(5, activation="softmax", name="predictions")(x)
model = tf.keras.Model(inputs, outputs, name="tiny_classifier")

spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),)
output_path = model.name + ".onnx"

model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=output_path)
output_names = [n.name for n in model_proto.graph.output]

x = np.random.rand(3, 32, 32, 3).astype(np.float32)
providers = ["CPUExecutionProvider"]
m = rt.InferenceSession(output_path, providers=providers)
onnx_pred = m.run(output_names, {"input": x})

preds = model.predict(x, verbose=0)
np.testing.assert_allclose(preds, onnx_pred[0], rtol=1e-5, atol=1e-5)
print("output names:", output_names, "- ONNX Runtime and Keras predictions match")
