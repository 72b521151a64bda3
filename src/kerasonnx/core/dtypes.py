"""Mapping between Keras dtype names, numpy dtypes and ONNX data types."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir

_SPECIAL = {"bfloat16": np.dtype(ml_dtypes.bfloat16)}


def to_numpy_dtype(dtype) -> np.dtype:
    """Keras dtype name (``"float32"``), numpy dtype or ir.DataType -> numpy dtype."""
    if isinstance(dtype, ir.DataType):
        return dtype.numpy()
    name = getattr(dtype, "name", dtype)
    if isinstance(name, str) and name in _SPECIAL:
        return _SPECIAL[name]
    return np.dtype(name)


def to_onnx_dtype(dtype) -> ir.DataType:
    return ir.DataType.from_numpy(to_numpy_dtype(dtype))


def is_float(dtype) -> bool:
    return to_onnx_dtype(dtype).is_floating_point()
