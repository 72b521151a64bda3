import os

# Tests default to the numpy backend (fast to import, no TensorFlow); CI also runs the
# keras.applications tests with KERAS_BACKEND=tensorflow.
os.environ.setdefault("KERAS_BACKEND", "numpy")
# TensorFlow's oneDNN kernels reorder float32 accumulations: with them, Keras-on-TensorFlow's own
# EfficientNetV2B0 output differs from Keras-on-numpy's by 1.2e-4 (same weights and inputs), more
# than the 1e-4 we hold the ONNX model to. The plain kernels give a reference within 3e-5.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
