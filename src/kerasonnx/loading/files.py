"""Load Keras model files with one-line errors for missing, corrupt or wrong-type files."""

from __future__ import annotations

import json
import re
import zipfile
import zlib
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
    """Load a Keras 3 ``.keras`` file (or an ``.h5`` file Keras 3 can read), or a TensorFlow SavedModel
    directory (for the tf2onnx engine, with ``pip install "kerasonnx[tf]"``).

    ``safe_mode=True`` (the default) refuses to run code stored in the file (Lambda layers).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelLoadError(f"model file is empty: {path}")
    kind = sniff(path)
    if kind == "savedmodel":  # converted by tf2onnx: needs the optional TensorFlow extra
        from ..engines.tf2onnx_engine import load_savedmodel

        return load_savedmodel(path)
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory but not a TensorFlow SavedModel (no saved_model.pb): "
                             "give a .keras or .h5 model file, or a SavedModel directory")
    if kind == "unknown":
        raise ModelLoadError(f"{path} is not a Keras model: expected a .keras (zip) or .h5 (HDF5) file")
    if kind == "keras" and path.suffix != ".keras":
        # keras.saving.load_model dispatches on the extension
        raise ModelLoadError(f"{path} is a .keras zip archive but is named '{path.suffix}'; rename it to .keras")
    if kind == "h5" and path.suffix == ".keras":
        raise ModelLoadError(f"{path} is an HDF5 file but is named '.keras'; rename it to .h5")
    if kind == "keras":
        _check_keras_archive(path)

    import keras

    from . import legacy

    try:
        if legacy.keras2_version(path, kind):  # Keras 2 / tf_keras file: config translated to Keras 3
            return legacy.load_keras2_file(path, kind, custom_objects=custom_objects, safe_mode=safe_mode)
        return keras.saving.load_model(path, custom_objects=custom_objects, safe_mode=safe_mode,
                                       compile=False)
    except ModelLoadError:
        raise
    except Exception as exc:  # Keras raises many types (ValueError, TypeError, OSError, KeyError...)
        raise ModelLoadError(f"cannot load {path}: {_explain(exc)}") from exc


def _check_keras_archive(path: Path) -> None:
    """A .keras archive holds a readable config.json with valid JSON."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ModelLoadError(f"{path} is a zip archive without config.json, not a Keras model: "
                                     "save the model with model.save('model.keras')")
            config = archive.read("config.json")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ModelLoadError(f"cannot load {path}: the file is corrupt or truncated ({type(exc).__name__}); "
                             "save or download it again") from exc
    try:
        config = json.loads(config)
    except ValueError as exc:
        raise ModelLoadError(f"cannot load {path}: its config.json is not valid JSON (the file is corrupt); "
                             "save the model again") from exc
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelLoadError(f"cannot load {path}: its config.json does not describe a Keras model "
                             "(no class_name); save the model with model.save('model.keras')")


def _explain(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    located = re.search(r"Could not (?:locate|deserialize) (?:class|function) '([^']+)'"
                        r"|Unknown (?:layer|object|class)[^:]*: '([^']+)'", text)
    if located:
        return (f"unknown class '{located.group(1) or located.group(2)}' (a custom layer/object): pass it with "
                "custom_objects={...} (CLI: --custom-objects module.py)")
    if "No model config found" in text:
        return ("the HDF5 file holds only weights, no model config: save the whole model with "
                "model.save('model.keras'), or build the model in code and call load_weights")
    if "truncated file" in text or "Unable to synchronously open file" in text or "file signature not found" in text:
        return "the HDF5 file is corrupt or truncated: save or download it again"
    if "safe_mode" in text or "Lambda" in text and "unsafe" in text.lower():
        return ("the file contains a Lambda layer whose code would run on loading; "
                "pass safe_mode=False (CLI: --unsafe) only if you trust the file")
    if isinstance(exc, (zipfile.BadZipFile, EOFError)) or "zip" in text.lower():
        return f"the file is corrupt or truncated ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text[:300]}"
