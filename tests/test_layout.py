"""Layout permutations: pure functions, checked against numpy transposes."""

import numpy as np
import pytest

from kerasonnx.core import layout as L


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_channels_first_and_compose_agree_with_numpy(rank):
    x = np.arange(np.prod(range(2, rank + 2))).reshape(range(2, rank + 2))
    cf = L.channels_first(rank)
    stored = x.transpose(cf)
    assert stored.shape[1] == x.shape[-1]
    back = L.compose(cf, L.identity(rank))
    np.testing.assert_array_equal(stored.transpose(back), x)
    assert L.actual_axis(cf, -1) == 1


@pytest.mark.parametrize("shape, expected", [
    ((None, 1, 1, 8), [0, 8, 1, 1]),  # squeeze-excite tensor: only unit dims move
    ((None, 3, 3, 1), [0, 1, 3, 3]),
    ((None, 3, 3, 3), None),  # equal sizes but real data movement
    ((None, 2, 1, 5), None),
    ((None, None, 1, 4), None),  # dynamic dims: the Reshape target is unknown
])
def test_unit_move_shape(shape, expected):
    target = L.unit_move_shape(shape, L.identity(4), L.channels_first(4))
    assert target == expected
    if target is not None:
        concrete = tuple(2 if d is None else d for d in shape)
        x = np.arange(np.prod(concrete)).reshape(concrete)
        np.testing.assert_array_equal(x.reshape([2, *target[1:]]), x.transpose(L.channels_first(4)))
