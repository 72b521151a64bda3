import os

# Tests default to the numpy backend (fast to import, no TensorFlow); CI also runs the
# applications tests with KERAS_BACKEND=tensorflow.
os.environ.setdefault("KERAS_BACKEND", "numpy")
