"""Make ``import keras`` work whatever is installed.

Keras defaults to the TensorFlow backend. When ``KERAS_BACKEND`` is unset and the configured backend
is not importable, pick an installed lighter one (numpy, then jax, then torch) before Keras loads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

# Backend -> modules it needs (the numpy backend imports jax and scipy).
_NEEDS = {
    "tensorflow": ("tensorflow",),
    "numpy": ("numpy", "jax", "scipy"),
    "jax": ("jax",),
    "torch": ("torch",),
    "openvino": ("openvino",),
}
_PREFERENCE = ("numpy", "jax", "torch")


def _importable(backend: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in _NEEDS.get(backend, (backend,)))


def _configured_backend() -> str:
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or Path(os.path.expanduser("~")) / ".keras"
    try:
        return json.loads((Path(home) / "keras.json").read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def choose_backend() -> str | None:
    """Set ``KERAS_BACKEND`` if Keras would otherwise fail to import; returns the backend chosen."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return None
    if _importable(_configured_backend()):
        return None
    for backend in _PREFERENCE:
        if _importable(backend):
            os.environ["KERAS_BACKEND"] = backend
            return backend
    return None
