"""kerasonnx: convert Keras models to ONNX directly from the Keras graph, and verify the result.

The public names are imported on first use, so that ``import kerasonnx.cli`` (the command line) does
not import Keras, and with it TensorFlow, before the command has set up its output.
"""

import importlib

__version__ = "0.1.0"

from .loading.environment import choose_backend as _choose_backend

_choose_backend()

_EXPORTS = {
    "convert": "api", "convert_to_ir": "api", "save": "api",
    "ConversionError": "core.errors", "InvalidInputError": "core.errors", "KerasOnnxError": "core.errors",
    "ModelLoadError": "core.errors", "OutputWriteError": "core.errors", "UnsupportedError": "core.errors",
    "VerificationError": "core.errors",
    "Layout": "core.layout", "Case": "core.registry", "Registry": "core.registry",
    "load_model": "loading.files", "verify": "verification", "VerifyReport": "verification", "from_keras": "tf2onnx_compat",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:  # a submodule (kerasonnx.api, kerasonnx.engines, ...)
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'kerasonnx' has no attribute '{name}'") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
