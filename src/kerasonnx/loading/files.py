"""Load Keras model files with one-line errors for missing, corrupt or wrong-type files."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ..core.errors import ModelLoadError

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def sniff(path: Path) -> str:
    """What ``path`` holds: 'keras' (zip), 'h5', 'savedmodel' or 'unknown'."""
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").exists() else "unknown"
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        return "h5"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "keras"
    return "unknown"


def load_model(path, *, custom_objects=None, safe_mode: bool = True):
    """Load a Keras 3 ``.keras`` file (or an ``.h5`` file Keras 3 can read).

    ``safe_mode=True`` (the default) refuses to run code stored in the file (Lambda layers).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelLoadError(f"model file is empty: {path}")
    kind = sniff(path)
    if kind == "savedmodel":
        raise ModelLoadError(f"{path} is a TensorFlow SavedModel directory; only .keras and .h5 files "
                             "are supported for now")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a .keras or .h5 model file")
    if kind == "unknown":
        raise ModelLoadError(f"{path} is not a Keras model: expected a .keras (zip) or .h5 (HDF5) file")
    if kind == "keras" and path.suffix != ".keras":
        # keras.saving.load_model dispatches on the extension
        raise ModelLoadError(f"{path} is a .keras zip archive but is named '{path.suffix}'; rename it to .keras")

    import keras

    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, safe_mode=safe_mode,
                                       compile=False)
    except Exception as exc:  # Keras raises many types (ValueError, TypeError, OSError, KeyError...)
        raise ModelLoadError(f"cannot load {path}: {_explain(exc)}") from exc


def _explain(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    located = re.search(r"Could not (?:locate|deserialize) (?:class|function) '([^']+)'", text)
    if located:
        return (f"unknown class '{located.group(1)}' (a custom layer/object): pass it with "
                "custom_objects={...} (CLI: --custom-objects module.py)")
    if "safe_mode" in text or "Lambda" in text and "unsafe" in text.lower():
        return ("the file contains a Lambda layer whose code would run on loading; "
                "pass safe_mode=False (CLI: --unsafe) only if you trust the file")
    if isinstance(exc, (zipfile.BadZipFile, EOFError)) or "zip" in text.lower():
        return f"the file is corrupt or truncated ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text[:300]}"
