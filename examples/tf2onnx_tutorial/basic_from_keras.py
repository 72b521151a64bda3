"""tf2onnx tutorial, step 1: convert a Keras model with from_keras and run it in onnxruntime.

Written for tf2onnx; with kerasonnx only the import changes:
    from kerasonnx import tf2onnx_compat as tf2onnx
"""
import keras
import numpy as np
import onnxruntime as ort
import tf2onnx

model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.MaxPooling2D(),
    keras.layers.Flatten(),
    keras.layers.Dense(10, activation="softmax"),
])

onnx_model, _ = tf2onnx.convert.from_keras(model, opset=13, output_path="mnist.onnx")

x = np.random.rand(4, 28, 28, 1).astype(np.float32)
session = ort.InferenceSession("mnist.onnx", providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
onnx_pred = session.run(None, {input_name: x})[0]

np.testing.assert_allclose(model.predict(x, verbose=0), onnx_pred, rtol=1e-4, atol=1e-5)
print("ONNX and Keras predictions match:", onnx_pred.shape)
