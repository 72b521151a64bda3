"""Turn the user's ``input_signature`` (or the model's own input shapes) into ONNX input shapes."""

from __future__ import annotations

from .errors import InvalidInputError

BATCH = "batch"


def input_shapes(keras_inputs, names: list[str], signature, dynamic_batch: bool, keras_shape=None) -> list[list]:
    """One list of dims (int or symbolic name) per model input. ``keras_shape(tensor)`` reads a Keras
    tensor's shape (default: ``tensor.shape``; a traced model's sentinel dims must read as None)."""
    given = _align(signature, names)
    shapes = []
    for kt, name, spec in zip(keras_inputs, names, given):
        model_shape = tuple(keras_shape(kt) if keras_shape else kt.shape)
        shape = model_shape if spec is None else _check(spec, model_shape, name)
        shapes.append([_dim(d, i, name, dynamic_batch) for i, d in enumerate(shape)])
    return shapes


def _align(signature, names):
    if signature is None:
        return [None] * len(names)
    if isinstance(signature, dict):
        unknown = set(signature) - set(names)
        if unknown:
            raise InvalidInputError(f"input_signature names {sorted(unknown)} are not model inputs {names}")
        return [signature.get(n) for n in names]
    signature = list(signature)
    if len(signature) != len(names):
        raise InvalidInputError(f"input_signature has {len(signature)} shape(s) for {len(names)} model input(s)")
    return signature


def _check(spec, model_shape, name):
    shape = tuple(getattr(spec, "shape", spec))
    if len(shape) != len(model_shape):
        raise InvalidInputError(
            f"input '{name}': shape {shape} has rank {len(shape)}, the model expects {model_shape}")
    for given, expected in zip(shape, model_shape):
        if given is not None and not isinstance(given, (int, str)):
            raise InvalidInputError(f"input '{name}': dim {given!r} must be an int, None or a name")
        if isinstance(given, int) and (given < 1 or (expected is not None and given != expected)):
            raise InvalidInputError(f"input '{name}': shape {shape} does not fit the model's {model_shape}")
    return shape


def _dim(d, i, name, dynamic_batch):
    if isinstance(d, (int, str)):
        return d
    if i == 0:
        return BATCH if dynamic_batch else 1
    return f"{name}_dim{i}"


def parse_shape_spec(text: str) -> tuple:
    """``"1,224,224,3"`` / ``"?,224,224,3"`` / ``"batch,224,224,3"`` -> a shape tuple."""
    dims = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise InvalidInputError(f"bad shape {text!r}: empty dimension")
        if part in ("?", "None", "-1"):
            dims.append(None)
        elif part.isdigit():
            dims.append(int(part))
        elif part.isidentifier():
            dims.append(part)
        else:
            raise InvalidInputError(f"bad shape {text!r}: dimension {part!r} is not a number, '?' or a name")
    return tuple(dims)
