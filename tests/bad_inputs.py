"""The bad-input corpus: malformed model files and arguments, built from one tiny model.

``build_corpus(directory)`` writes every file the cases need (a few bytes to a few KB each) and
returns the directory. ``CASES`` lists each case: its CLI arguments (``{d}`` is the corpus directory),
the exit code and the words its one-line error must contain (the problem and the fix).
Everything is generated, so no binary file is committed.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    exit_code: int
    says: tuple[str, ...]  # lower-case fragments the error line must contain


CASES = [
    Case("empty-file", ("{d}/empty.keras",), 3, ("empty",)),
    Case("truncated-zip", ("{d}/truncated.keras",), 3, ("not a keras model",)),
    Case("corrupt-zip", ("{d}/corrupt.keras",), 3, ("corrupt",)),
    Case("zip-without-config", ("{d}/no_config.keras",), 3, ("config.json", "model.save")),
    Case("config-not-json", ("{d}/config_not_json.keras",), 3, ("config.json", "not valid json")),
    Case("config-not-a-model", ("{d}/config_not_a_model.keras",), 3, ("does not describe a keras model",)),
    Case("hdf5-named-keras", ("{d}/hdf5_named.keras",), 3, ("hdf5", "rename it to .h5")),
    Case("zip-named-h5", ("{d}/zip_named.h5",), 3, ("zip", "rename it to .keras")),
    Case("truncated-hdf5", ("{d}/truncated.h5",), 3, ("corrupt or truncated",)),
    Case("weights-only-hdf5", ("{d}/weights_only.weights.h5",), 3, ("weights", "model.save")),
    Case("png-named-keras", ("{d}/image.keras",), 3, ("not a keras model",)),
    Case("text-named-h5", ("{d}/notes.h5",), 3, ("not a keras model",)),
    Case("directory-without-models", ("{d}/plain_dir",), 2, ("no .keras/.h5 model files",)),
    Case("unknown-layer-in-h5", ("{d}/unknown_layer.h5",), 3, ("nosuchlayer", "--custom-objects")),
    Case("unknown-custom-class", ("{d}/custom.keras",), 3, ("doubler", "--custom-objects")),
    Case("missing-model", ("{d}/no_such_model.keras",), 3, ("not found",)),
    Case("output-dir-missing", ("{d}/mlp.keras", "-o", "{d}/no_such_dir/out.onnx"), 7, ("does not exist",)),
    Case("output-under-a-file", ("{d}/mlp.keras", "-o", "{d}/notes.h5/out.onnx"), 7, ("not a directory",)),
    Case("output-is-a-directory", ("{d}/mlp.keras", "-o", "{d}/plain_dir"), 7, ("it is a directory",)),
    Case("output-read-only", ("{d}/mlp.keras", "-o", "/sys/kerasonnx-test.onnx"), 7, ("cannot write",)),
    Case("bad-input-shape", ("{d}/mlp.keras", "--input-shape", "1,a b"), 2, ("bad shape",)),
    Case("wrong-input-names", ("{d}/mlp.keras", "--input-names", "a,b"), 2, ("2 input name(s)", "1 input")),
    Case("opset-out-of-range", ("{d}/mlp.keras", "--opset", "99"), 2, ("opset 99", "choose")),
    Case("custom-objects-raises", ("{d}/custom.keras", "--custom-objects", "{d}/raising.py"), 2,
         ("failed to import", "zerodivisionerror")),
    Case("custom-objects-missing", ("{d}/custom.keras", "--custom-objects", "{d}/no_such.py"), 2,
         ("does not exist",)),
    Case("unsupported-layer", ("{d}/untraceable.keras", "--custom-objects", "{d}/layers_only.py"), 4,
         ("unsupported", "branchy")),
]


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _keras_members(keras_file: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(keras_file) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _corrupted(data: bytes) -> bytes:
    """The zip with its compressed payload overwritten: the central directory still reads."""
    middle = bytearray(data)
    for i in range(len(middle) // 4, len(middle) // 2):
        middle[i] ^= 0x5A
    return bytes(middle)


def _with_unknown_layer(h5_file: Path) -> None:
    import h5py

    with h5py.File(h5_file, "r+") as f:
        config = f.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        f.attrs["model_config"] = config.replace('"Dense"', '"NoSuchLayer"')


def build_corpus(directory: Path) -> Path:
    """Write every corpus file into ``directory`` (from one tiny model) and return it."""
    from models import mlp, with_custom_layers, with_untraceable_layers

    model = mlp()
    model.save(directory / "mlp.keras")
    model.save(directory / "mlp.h5")
    model.save_weights(directory / "weights_only.weights.h5")
    keras_bytes = (directory / "mlp.keras").read_bytes()
    members = _keras_members(directory / "mlp.keras")

    (directory / "empty.keras").write_bytes(b"")
    (directory / "truncated.keras").write_bytes(keras_bytes[: len(keras_bytes) // 2])
    (directory / "corrupt.keras").write_bytes(_corrupted(keras_bytes))
    _zip(directory / "no_config.keras", {"metadata.json": members["metadata.json"]})
    _zip(directory / "config_not_json.keras", {**members, "config.json": b"{this is not json"})
    _zip(directory / "config_not_a_model.keras", {**members, "config.json": json.dumps([1, 2]).encode()})
    shutil.copy(directory / "mlp.h5", directory / "hdf5_named.keras")
    shutil.copy(directory / "mlp.keras", directory / "zip_named.h5")
    h5_bytes = (directory / "mlp.h5").read_bytes()
    (directory / "truncated.h5").write_bytes(h5_bytes[: len(h5_bytes) // 3])
    (directory / "image.keras").write_bytes(png_bytes())
    (directory / "notes.h5").write_text("these are notes, not a model\n")
    (directory / "plain_dir").mkdir()
    (directory / "plain_dir" / "readme.txt").write_text("not a SavedModel")
    shutil.copy(directory / "mlp.h5", directory / "unknown_layer.h5")
    _with_unknown_layer(directory / "unknown_layer.h5")
    with_custom_layers().save(directory / "custom.keras")
    with_untraceable_layers().save(directory / "untraceable.keras")
    (directory / "raising.py").write_text("raise ZeroDivisionError('custom objects module is broken')\n")
    (directory / "layers_only.py").write_text(f"import sys\nsys.path.insert(0, {str(MODELS_DIR)!r})\n"
                                              "from models import NumpyInside, PythonBranch\n")
    return directory


def snapshot(directory: Path) -> dict[str, int]:
    """Every file under ``directory`` with its size: equal snapshots mean nothing was written."""
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file()}


def png_bytes() -> bytes:
    """A valid 2x2 PNG image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

