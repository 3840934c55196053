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

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)


class MeshError(ValueError):
    """The requested mesh shape does not match the available devices."""


def make_mesh(data: int = 1, model: int | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all). `model=None` takes the rest.

    Raises MeshError naming the sizes when data * model != number of devices.
    """
    devs = list(devices if devices is not None else jax.devices())
    n = len(devs)
    if data < 1 or n % data:
        raise MeshError(f"mesh data={data} must be >= 1 and divide the {n} devices")
    model = n // data if model is None else model
    if model < 1 or data * model != n:
        raise MeshError(f"mesh data={data} x model={model} = {data * model} "
                        f"!= {n} devices available")
    grid = np.asarray(devs, dtype=object).reshape(data, model)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def mesh_shape(mesh: Mesh) -> dict[str, int]:
    """{'data': d, 'model': m} for a mesh built by `make_mesh`."""
    return dict(zip(mesh.axis_names, mesh.devices.shape))
