"""kerasonnx: convert Keras models to ONNX directly from the Keras graph, and verify the result."""

__version__ = "0.1.0"

from .loading.environment import choose_backend as _choose_backend

_choose_backend()

from .api import convert, convert_to_ir, save  # noqa: E402
from .core.errors import (  # noqa: E402
    ConversionError,
    InvalidInputError,
    KerasOnnxError,
    ModelLoadError,
    OutputWriteError,
    UnsupportedError,
    VerificationError,
)
from .core.layout import Layout  # noqa: E402
from .core.registry import Case, Registry  # noqa: E402
from .loading.files import load_model  # noqa: E402
from .verify import VerifyReport, verify  # noqa: E402
from .tf2onnx_compat import from_keras  # noqa: E402

__all__ = [
    "convert", "convert_to_ir", "save", "load_model", "verify", "from_keras", "VerifyReport", "Registry",
    "Case", "Layout",
    "KerasOnnxError", "InvalidInputError", "ModelLoadError", "OutputWriteError", "UnsupportedError",
    "ConversionError", "VerificationError", "__version__",
]
