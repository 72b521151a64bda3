"""A stand-in for the ``tf2onnx`` package: ``from kerasonnx import tf2onnx_compat as tf2onnx`` keeps
code written for ``tf2onnx.convert.from_keras(...)`` working. See docs/from_keras.md."""

from . import convert
from .convert import from_keras

__all__ = ["convert", "from_keras"]
