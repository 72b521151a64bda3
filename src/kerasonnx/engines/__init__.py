"""Conversion engines: kerasonnx's own (Keras graphs) and tf2onnx (SavedModels, ``tf.function``).

Everything that touches TensorFlow or tf2onnx lives in :mod:`kerasonnx.engines.tf2onnx_engine`, which
is imported only when such a model is given.
"""

from __future__ import annotations

import sys

KERASONNX = "kerasonnx"


def uses_tf2onnx(model) -> bool:
    """True for a loaded SavedModel or a ``tf.function``: objects only the tf2onnx engine converts.

    Cheap and TensorFlow-free: without TensorFlow imported, no such object can exist.
    """
    if "tensorflow" not in sys.modules:
        return False
    from . import tf2onnx_engine

    return tf2onnx_engine.handles(model)


def engine_name(model) -> str:
    """The engine that converts ``model``, with its version, e.g. ``tf2onnx 1.17.0`` or ``kerasonnx 0.1.0``."""
    if uses_tf2onnx(model):
        from . import tf2onnx_engine

        return tf2onnx_engine.engine_name()
    from .. import __version__

    return f"{KERASONNX} {__version__}"
