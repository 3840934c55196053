"""`is_int`: what the library takes as a count or a size."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.argcheck import is_int


@pytest.mark.parametrize("value", [0, 3, -2, np.int32(4), np.int64(5), np.uint8(1)])
def test_python_and_numpy_integers_are_ints(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, np.float32(2), "2", None,
                                   np.asarray([2])])
def test_bools_floats_text_and_arrays_are_not(value):
    assert not is_int(value)
