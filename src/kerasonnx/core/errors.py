"""Typed exceptions raised by kerasonnx. Every message is one line a user can act on."""

from __future__ import annotations

from dataclasses import dataclass


class KerasOnnxError(Exception):
    """Base class of every error kerasonnx raises on purpose."""

    exit_code = 1


class InvalidInputError(KerasOnnxError):
    """A file, shape spec, name or option given by the user is not usable."""

    exit_code = 2


class ModelLoadError(InvalidInputError):
    """A model file is missing, corrupt or not a Keras model."""

    exit_code = 3


@dataclass(frozen=True)
class UnsupportedItem:
    layer_name: str
    class_name: str
    reason: str = "no converter registered"


class UnsupportedError(KerasOnnxError):
    """The model holds layers or ops that kerasonnx cannot convert. Lists all of them at once."""

    exit_code = 4

    def __init__(self, items: list[UnsupportedItem]):
        self.items = list(items)
        parts = [f"'{i.layer_name}' ({i.class_name}: {i.reason})" for i in self.items]
        super().__init__(
            f"{len(self.items)} unsupported layer(s)/op(s): " + "; ".join(parts)
            + ". Fix: register a converter with kerasonnx.Registry().register(<class>) and pass "
            "converters=<registry> to kerasonnx.convert (see README, 'Custom converters')."
        )


class ConversionError(KerasOnnxError):
    """A converter failed on a layer it claims to support (a bug in kerasonnx or a user converter)."""

    exit_code = 5


class VerificationError(KerasOnnxError):
    """The ONNX model's outputs do not match Keras within tolerance."""

    exit_code = 6


class OutputWriteError(InvalidInputError):
    """The output path cannot be written."""

    exit_code = 7
