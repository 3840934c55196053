"""Mesh construction (arm_jax.parallel.mesh): sizes that are not integers >= 1 are named."""

import numpy as np
import pytest

from arm_jax.parallel.mesh import MeshError, make_mesh


@pytest.mark.parametrize("data, model, message", [
    (2.0, None, "mesh data=2.0: must be an integer >= 1 (devices along the 'data' axis)"),
    (2, 4.0, "mesh model=4.0: must be an integer >= 1 (devices along the 'model' axis)"),
    (True, None, "mesh data=True: must be an integer >= 1"),
    (0, None, "mesh data=0: must be an integer >= 1"),
])
def test_a_mesh_size_that_is_not_an_integer_is_a_mesh_error(data, model, message):
    """2.0 was numpy's bare TypeError "'float' object cannot be interpreted as an integer"."""
    with pytest.raises(MeshError) as e:
        make_mesh(data, model)
    assert str(e.value).startswith(message)
    assert make_mesh(np.int64(2), np.int64(4)).devices.shape == (2, 4)     # numpy ints
