"""Device meshes with named axes ('data', 'model').

'data' splits the batch (requests); 'model' splits big parameters (embedding rows).
Axes are `Auto` so XLA's SPMD partitioner places collectives: the model code stays
free of sharding annotations and the rules table alone decides the layout.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from arm_jax.argcheck import is_int

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)


class MeshError(ValueError):
    """The requested mesh shape does not match the available devices."""


def make_mesh(data: int = 1, model: int | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all). `model=None` takes the rest.

    Raises MeshError naming the sizes when data * model != number of devices, or when
    a size is not an integer (numpy's reshape refused 2.0 with a bare TypeError).
    """
    for name, size in (("data", data), ("model", model)):
        if size is not None:
            check_axis_size(name, size)
    devs = list(devices if devices is not None else jax.devices())
    n = len(devs)
    if n % data:
        raise MeshError(f"mesh data={data} must divide the {n} devices")
    model = n // data if model is None else model
    if data * model != n:
        raise MeshError(f"mesh data={data} x model={model} = {data * model} "
                        f"!= {n} devices available")
    grid = np.asarray(devs, dtype=object).reshape(data, model)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def check_axis_size(axis: str, size: object) -> None:
    """MeshError unless `size` (devices along mesh axis `axis`) is a Python or numpy
    integer >= 1: a float or a 0 fails later, far from its cause."""
    if not is_int(size) or size < 1:
        raise MeshError(f"mesh {axis}={size!r}: must be an integer >= 1 (devices along the "
                        f"'{axis}' axis)")


def mesh_shape(mesh: Mesh) -> dict[str, int]:
    """{'data': d, 'model': m} for a mesh built by `make_mesh`."""
    return dict(zip(mesh.axis_names, mesh.devices.shape))
