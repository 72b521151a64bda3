"""Generate model inputs with the right dtypes, shapes and value ranges."""

from __future__ import annotations

import numpy as np

from ..core.dtypes import to_numpy_dtype

SEQUENCE_DIM = 16  # dynamic dims of rank-2/3 inputs (sequence length, features)
IMAGE_DIM = 128  # dynamic spatial dims of rank-4/5 inputs: deep CNNs downsample by 32


def make_inputs(specs, batch_size: int, seed: int = 0, int_range=(0, 10), dim: int | None = None):
    """One array per ``(shape, dtype)`` spec (``None`` or a name = dynamic dim): floats ~ N(0, 1),
    ints uniform in ``int_range``, bools 50/50."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec_shape, spec_dtype in specs:
        fill = dim or (IMAGE_DIM if len(spec_shape) >= 4 else SEQUENCE_DIM)
        shape = [batch_size if i == 0 else (d if isinstance(d, int) else fill) for i, d in enumerate(spec_shape)]
        dtype = to_numpy_dtype(spec_dtype)
        if dtype == np.bool_:
            arr = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(int_range[0], int_range[1], size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(shape).astype(np.float32).astype(dtype)
        arrays.append(arr)
    return arrays


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(bfloat16)": "bfloat16", "tensor(bool)": "bool"}


def onnx_input_specs(session) -> list[tuple]:
    """``(shape, dtype)`` of each onnxruntime session input (symbolic dims as names)."""
    specs = []
    for i in session.get_inputs():
        dtype = _ORT_TYPES.get(i.type) or i.type[len("tensor("):-1]
        specs.append((tuple(d if isinstance(d, int) else None for d in i.shape), dtype))
    return specs
