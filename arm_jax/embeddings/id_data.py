"""Observed raw ids per feature, the input of the sizing plan and of pruning.

Sources: `synthetic` (the bundled synthetic world: request fields, candidate fields
of real candidates, and the history item log) or a `.npz` file whose arrays are the
ids of one feature each (any shape; flattened; ids must be non-negative integers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arm_jax.config import FeaturesConfig
from arm_jax.embeddings.sizing import SizingError


def synthetic_columns(features: FeaturesConfig, *, requests: int = 4000, candidates: int = 16,
                      num_users: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Ids per feature from the synthetic world: req_<j>, cand_<j>, item."""
    from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld

    world = SyntheticWorld.generate(SyntheticSpec(num_users=num_users, seed=seed), features)
    ex = world.sample_examples(requests, candidates, seed=seed + 1)
    cols = {f"req_{j}": ex.req_sparse[:, j] for j in range(ex.req_sparse.shape[1])}
    for j in range(ex.cand_sparse.shape[2]):
        cols[f"cand_{j}"] = ex.cand_sparse[..., j][ex.cand_mask]
    cols["item"] = world.log_item
    return cols


def npz_columns(path: str | Path) -> dict[str, np.ndarray]:
    """Ids per feature from an .npz (one array per feature)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--data {p}: no such file")
    cols = _read_npz(p)
    if not cols:
        raise SizingError(f"--data {p}: holds no arrays")
    for k, v in cols.items():
        if v.dtype.kind not in "iu":
            raise SizingError(f"--data {p}: feature '{k}' has dtype {v.dtype}; ids must be ints")
        if v.size and v.min() < 0:
            raise SizingError(f"--data {p}: feature '{k}' has negative id {int(v.min())}")
    return cols


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz `p`, flattened, or SizingError naming it and what it should
    hold: a truncated or empty file (BadZipFile, EOFError, zlib.error), pickled data, or a
    lone .npy (np.load returns one array, not an archive) otherwise escaped as a traceback."""
    what = "an .npz with one int array of ids per feature"
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zip, pickle and format errors alike
        raise SizingError(f"--data {p}: not a readable .npz ({type(e).__name__}: {e}); "
                          f"expected {what}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise SizingError(f"--data {p}: holds one bare array (.npy), not an archive; "
                          f"expected {what}")
    try:
        with z:
            return {k: np.asarray(z[k]).ravel() for k in z.files}
    except Exception as e:  # noqa: BLE001 - a member cut short, corrupt or pickled
        raise SizingError(f"--data {p}: not a readable .npz ({type(e).__name__}: {e}); "
                          f"expected {what}") from None


def load_columns(source: str, features: FeaturesConfig, **kw) -> dict[str, np.ndarray]:
    """`synthetic` or a path to an .npz file."""
    if source == "synthetic":
        return synthetic_columns(features, **kw)
    return npz_columns(source)
