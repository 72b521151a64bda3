"""Generate model inputs with the right dtypes, shapes and value ranges."""

from __future__ import annotations

import numpy as np

from ..core.dtypes import to_numpy_dtype

SEQUENCE_DIM = 16  # dynamic dims of rank-2/3 inputs (sequence length, features)
IMAGE_DIM = 128  # dynamic spatial dims of rank-4/5 inputs: deep CNNs downsample by 32


def make_inputs(keras_inputs, batch_size: int, seed: int = 0, int_range=(0, 10), dim: int | None = None):
    """One array per model input: floats ~ N(0, 1), ints uniform in ``int_range``, bools 50/50."""
    rng = np.random.default_rng(seed)
    arrays = []
    for kt in keras_inputs:
        fill = dim or (IMAGE_DIM if len(kt.shape) >= 4 else SEQUENCE_DIM)
        shape = [batch_size if i == 0 else (d if d is not None else fill) for i, d in enumerate(kt.shape)]
        dtype = to_numpy_dtype(kt.dtype)
        if dtype == np.bool_:
            arr = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(int_range[0], int_range[1], size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(shape).astype(np.float32).astype(dtype)
        arrays.append(arr)
    return arrays
