"""``kerasonnx doctor``: what this environment can convert, what a model file is, and what to fix.

Never imports TensorFlow: versions come from package metadata, and ``tf.keras`` is predicted from
``TF_USE_LEGACY_KERAS`` and the installed packages, exactly as TensorFlow's lazy loader resolves it.
When TensorFlow is already imported in this process (the Python API, :func:`report`), what it really
resolved to is read from the imported module, so a variable set too late is caught.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

LEGACY_VARIABLE = "TF_USE_LEGACY_KERAS"
_LEGACY_ON = ("true", "True", "1")  # the values TensorFlow accepts
_DISTRIBUTIONS = {  # package -> distributions that provide it
    "keras": ("keras",), "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"),
    "tf_keras": ("tf-keras", "tf_keras"), "tf2onnx": ("tf2onnx",), "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "onnx_ir": ("onnx-ir",), "h5py": ("h5py",),
}
TF_EXTRA = 'pip install "kerasonnx[tf]"'
KERAS_3 = "Keras 3"
TF_KERAS = "tf_keras (Keras 2)"


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (without importing it), or None."""
    if importlib.util.find_spec(package) is None:
        return None
    for distribution in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown version"


@dataclass
class ModelInfo:
    path: str
    kind: str  # e.g. "Keras 3 .keras", "Keras 2 .h5", "TensorFlow SavedModel", "not a model"
    written_by: str  # e.g. "Keras 3.15.1", "tf_keras 2.21.0", "unknown"
    engine: str | None  # the engine that converts it, None when nothing can
    problem: str = ""  # why it cannot be converted here (and the fix)


@dataclass
class Report:
    python: str
    versions: dict[str, str | None]
    backend: str
    legacy_variable: str | None  # the value of TF_USE_LEGACY_KERAS, None when unset
    tf_keras_resolves_to: str
    opsets: tuple[int, int]
    tf2onnx_opsets: tuple[int, int] | None
    input_kinds: dict[str, str]  # input kind -> "yes" or "no: <why>"
    advice: list[str] = field(default_factory=list)
    model: ModelInfo | None = None

    def text(self) -> str:
        lines = [f"Python       {self.python}"]
        for package, version in self.versions.items():
            suffix = f" (backend: {self.backend})" if package == "keras" else ""
            lines.append(f"{package:<12} {version or 'not installed'}{suffix}")
        variable = "not set" if self.legacy_variable is None else f"set to {self.legacy_variable!r}"
        lines.append(f"{LEGACY_VARIABLE} {variable}; tf.keras here is {self.tf_keras_resolves_to}")
        opsets = f"ONNX opsets   {self.opsets[0]}-{self.opsets[1]} (kerasonnx engine)"
        if self.tf2onnx_opsets:
            opsets += f", {self.tf2onnx_opsets[0]}-{self.tf2onnx_opsets[1]} (tf2onnx engine)"
        lines += [opsets, "Can convert:"]
        lines += [f"  {kind:<44} {verdict}" for kind, verdict in self.input_kinds.items()]
        if self.model is not None:
            m = self.model
            lines += [f"Model {m.path}:", f"  is            {m.kind}", f"  written by    {m.written_by}",
                      f"  converted by  {m.engine or 'nothing in this environment'}"]
            if m.problem:
                lines.append(f"  problem       {m.problem}")
        lines.append("Advice:")
        lines += [f"  - {item}" for item in self.advice] or ["  - nothing to fix"]
        return "\n".join(lines)


def report(model_path=None) -> Report:
    """Inspect this environment (and ``model_path`` when given)."""
    from .core.opsets import MIN_OPSET, max_supported_opset

    versions = {name: installed_version(name) for name in
                ("keras", "tensorflow", "tf_keras", "tf2onnx", "onnx", "onnxruntime", "onnx_ir")}
    legacy = os.environ.get(LEGACY_VARIABLE)
    newest = max_supported_opset()
    tf2onnx_ok = bool(versions["tensorflow"] and versions["tf2onnx"])
    result = Report(
        python=f"{platform.python_version()} ({sys.executable})",
        versions=versions, backend=_keras_backend(), legacy_variable=legacy,
        tf_keras_resolves_to=tf_keras_resolution(versions, legacy),
        opsets=(MIN_OPSET, newest),
        tf2onnx_opsets=(MIN_OPSET, min(18, newest)) if tf2onnx_ok else None,
        input_kinds=input_kinds(versions),
    )
    result.advice = advice(versions, legacy)
    if model_path is not None:
        result.model = describe(Path(model_path), result.input_kinds)
        if result.model.problem:
            result.advice.insert(0, f"{model_path}: {result.model.problem}")
    return result


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def legacy_requested(value: str | None) -> bool:
    return value in _LEGACY_ON


def tf_keras_resolution(versions: dict, legacy: str | None) -> str:
    """What ``tf.keras`` is (or will be) in this process."""
    if not versions["tensorflow"]:
        return "unavailable (TensorFlow not installed)"
    imported = _resolved_in_process()
    if imported:
        return f"{imported} (TensorFlow already imported)"
    if legacy_requested(legacy):
        return TF_KERAS if versions["tf_keras"] else "unavailable (tf_keras not installed: `tf.keras` fails)"
    return KERAS_3


def _resolved_in_process() -> str | None:
    """What the imported TensorFlow's ``tf.keras`` resolved to, None if not imported or not resolved yet."""
    tf = sys.modules.get("tensorflow")
    keras_attr = vars(tf).get("keras") if tf is not None else None
    if keras_attr is None:
        return None
    state = vars(keras_attr)
    if "_tfll_initialized" in state:  # still TensorFlow's lazy loader
        if not state["_tfll_initialized"]:
            return None
        return {"tf_keras": TF_KERAS, "keras_3": KERAS_3}.get(state.get("_tfll_keras_version"), "unavailable")
    return TF_KERAS if state.get("__name__", "").startswith("tf_keras") else KERAS_3


def _tf_imported_with_legacy() -> bool | None:
    """Whether TensorFlow saw TF_USE_LEGACY_KERAS when it was imported here (None: not imported)."""
    tf = sys.modules.get("tensorflow")
    return None if tf is None else vars(tf).get("_tf_uses_legacy_keras")


def _legacy_loader_available() -> bool:
    return importlib.util.find_spec("kerasonnx.loading.legacy") is not None


def input_kinds(versions: dict) -> dict[str, str]:
    legacy = "yes" if _legacy_loader_available() else "no: this kerasonnx version has no legacy loader"
    tf2onnx_missing = [name for name in ("tensorflow", "tf2onnx") if not versions[name]]
    tf2onnx = "yes (tf2onnx engine)" if not tf2onnx_missing else (
        f"no: needs {' and '.join(tf2onnx_missing)} ({TF_EXTRA})")
    in_memory = legacy if versions["tf_keras"] else "no: tf_keras is not installed (no such models here)"
    return {
        "Keras 3 .keras / .h5 files": "yes",
        "Keras 2 .h5 files (tf.keras 2.x, tf_keras)": legacy,
        "tf_keras .keras files": legacy,
        "TensorFlow SavedModel directories": tf2onnx,
        "tf.function (Python API)": tf2onnx,
        "in-memory tf_keras models": in_memory,
    }


def advice(versions: dict, legacy: str | None) -> list[str]:
    """Concrete fixes for what is missing or conflicting."""
    items = []
    if not versions["tensorflow"]:
        items.append(f"TensorFlow is not installed: .keras and .h5 files convert without it; for SavedModel "
                     f"directories and tf.functions run: {TF_EXTRA}")
    elif not versions["tf2onnx"]:
        items.append(f"tf2onnx is not installed: SavedModel directories cannot convert; run: {TF_EXTRA}")
    if legacy is not None and not legacy_requested(legacy):
        items.append(f"{LEGACY_VARIABLE}={legacy!r} is ignored by TensorFlow (only 1, true or True count)")
    if legacy_requested(legacy) and not versions["tf_keras"]:
        pin = _matching_tf_keras(versions["tensorflow"])
        items.append(f"{LEGACY_VARIABLE}={legacy} is set but tf_keras is not installed, so `tf.keras` fails in "
                     f"your own code: run `pip install {pin}`, or `unset {LEGACY_VARIABLE}`. kerasonnx itself "
                     "does not need the variable")
    items += _late_variable_advice(legacy)
    tf_version, tf_keras_version = versions["tensorflow"], versions["tf_keras"]
    if tf_version and tf_keras_version and _minor(tf_version) != _minor(tf_keras_version):
        items.append(f"tf_keras {versions['tf_keras']} does not match TensorFlow {versions['tensorflow']}: "
                     f"run `pip install {_matching_tf_keras(versions['tensorflow'])}`")
    if versions["keras"] and not versions["keras"].startswith("3.15"):
        items.append(f"Keras {versions['keras']} is outside the tested range (>=3.15,<3.16): "
                     'run `pip install "keras>=3.15,<3.16"`')
    return items


def _late_variable_advice(legacy: str | None) -> list[str]:
    imported_with = _tf_imported_with_legacy()
    if imported_with is None or imported_with == legacy_requested(legacy):
        return []
    resolved = _resolved_in_process() or "not resolved yet"
    change = "set" if legacy_requested(legacy) else "unset"
    return [f"{LEGACY_VARIABLE} was {change} after TensorFlow was imported in this process (tf.keras: "
            f"{resolved}), so TensorFlow and tf.keras disagree: set it before the first `import tensorflow` "
            "(in the shell, or at the very top of your script). kerasonnx converts both kinds of model "
            "whatever its value"]


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _matching_tf_keras(tf_version: str | None) -> str:
    return f'"tf_keras~={_minor(tf_version)}.0"' if tf_version else "tf_keras"


def describe(path: Path, kinds: dict[str, str] | None = None) -> ModelInfo:
    """What the file or directory at ``path`` is, which Keras wrote it, and which engine converts it."""
    from .loading.files import sniff

    kinds = kinds if kinds is not None else input_kinds(
        {name: installed_version(name) for name in ("tensorflow", "tf2onnx", "tf_keras")})
    if not path.exists():
        return ModelInfo(str(path), "not found", "-", None, "the path does not exist")
    if path.is_file() and path.stat().st_size == 0:
        return ModelInfo(str(path), "empty file", "-", None, "the file is empty: save the model again")
    kind = sniff(path)
    if kind == "savedmodel":
        writer = "tf_keras / Keras 2 (keras_metadata.pb)" if (path / "keras_metadata.pb").exists() else "TensorFlow"
        return _with_engine(ModelInfo(str(path), "TensorFlow SavedModel", writer, "tf2onnx"),
                            kinds["TensorFlow SavedModel directories"])
    if kind == "keras":
        return _describe_zip(path, kinds)
    if kind == "h5":
        return _describe_h5(path, kinds)
    what = "a directory without saved_model.pb" if path.is_dir() else "neither a zip (.keras) nor HDF5 (.h5) file"
    return ModelInfo(str(path), "not a model", "-", None, f"{what}: give a .keras/.h5 file or a SavedModel")


def _with_engine(info: ModelInfo, verdict: str) -> ModelInfo:
    if verdict.startswith("no"):
        info.problem, info.engine = f"cannot convert it here ({verdict[4:]})", None
    return info


def _describe_zip(path: Path, kinds: dict[str, str]) -> ModelInfo:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return ModelInfo(str(path), "corrupt zip", "-", None, f"cannot read the archive ({type(exc).__name__})")
    if "config.json" not in names:
        return ModelInfo(str(path), "zip without config.json (not a .keras model)", "-", None,
                         "not a Keras model: save it with model.save('model.keras')")
    version = str(metadata.get("keras_version", "unknown"))
    if version.startswith("3."):
        return ModelInfo(str(path), "Keras 3 .keras", f"Keras {version}", "kerasonnx")
    return _with_engine(ModelInfo(str(path), "tf_keras .keras", f"tf_keras {version}", "kerasonnx (legacy loader)"),
                        kinds["tf_keras .keras files"])


def _describe_h5(path: Path, kinds: dict[str, str]) -> ModelInfo:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {key: f.attrs[key] for key in ("keras_version", "backend", "model_config") if key in f.attrs}
    except OSError as exc:
        reason = " ".join(str(exc).split())[:120]
        return ModelInfo(str(path), "corrupt HDF5", "-", None, f"cannot read the file ({reason})")
    version = attrs.get("keras_version", b"unknown")
    version = version.decode() if isinstance(version, bytes) else str(version)
    if "model_config" not in attrs:
        return ModelInfo(str(path), "HDF5 without a model (weights only)", f"Keras {version}", None,
                         "no model_config: save the whole model (model.save), not only its weights")
    if version.startswith("3."):
        return ModelInfo(str(path), "Keras 3 .h5", f"Keras {version}", "kerasonnx")
    return _with_engine(ModelInfo(str(path), "Keras 2 .h5", f"Keras/tf_keras {version}", "kerasonnx (legacy loader)"),
                        kinds["Keras 2 .h5 files (tf.keras 2.x, tf_keras)"])
