"""Shape buckets: the (B, N) grid a tier is compiled for, bucket selection and padding.

A request batch of b requests x c candidates runs in the smallest compiled bucket
(B >= b, N >= c); padded request rows and candidate slots are masked (`cand_mask`
False, `hist_len` 0), so they never change a valid score. A batch over the largest
bucket is refused with `BucketError`: nothing is ever compiled on the request path.

Pure numpy: this module is imported by the serving process.
"""

from __future__ import annotations

import bisect
from typing import Any, Sequence

import numpy as np

from arm_jax.compile.errors import ArtifactError, BucketError

Bucket = tuple[int, int]

# RequestBatch fields in their declared order: the executable's input signature.
BATCH_FIELDS = ("req_sparse", "req_dense", "hist_item", "hist_action", "hist_gap", "hist_len",
                "hist_side", "cand_sparse", "cand_dense", "cand_mask")

# Each field's axes: b requests, c candidates, l history events, f a feature width.
_LAYOUT = {"req_sparse": "bf", "req_dense": "bf", "hist_item": "bl", "hist_action": "bl",
           "hist_gap": "bl", "hist_len": "b", "hist_side": "blf", "cand_sparse": "bcf",
           "cand_dense": "bcf", "cand_mask": "bc"}
_AXIS_SOURCE = {"b": ("req_sparse", 0, "requests"), "c": ("cand_sparse", 1, "candidates"),
                "l": ("hist_item", 1, "history events")}


def bucket_grid(batch_buckets: Sequence[int], candidate_buckets: Sequence[int]) -> list[Bucket]:
    """Every (B, N) of the two axes, sorted."""
    return sorted((int(b), int(n)) for b in batch_buckets for n in candidate_buckets)


def select_bucket(buckets: Sequence[Bucket], b: int, n: int) -> Bucket:
    """The smallest bucket holding b requests x n candidates (bisect per axis on a grid).

    Raises BucketError naming the request size and the largest bucket when none fits.
    """
    if b < 1 or n < 1:
        raise BucketError(f"a batch needs >= 1 request and >= 1 candidate, got {b} x {n}")
    have = set(buckets)
    bs = sorted({bb for bb, _ in have})
    ns = sorted({nn for _, nn in have})
    i, j = bisect.bisect_left(bs, b), bisect.bisect_left(ns, n)
    if i < len(bs) and j < len(ns) and (bs[i], ns[j]) in have:
        return bs[i], ns[j]          # the usual case: a full B x N grid
    fits = [(bb, nn) for bb, nn in have if bb >= b and nn >= n]  # a ragged bucket list
    if not fits:
        if len(have) == len(bs) * len(ns):     # a full grid: the per-axis maxima say it
            limits = f"batch <= {bs[-1] if bs else 0}, candidates <= {ns[-1] if ns else 0}"
        else:                                   # ragged: each axis fits, but no one bucket
            limits = "buckets " + ", ".join(f"{bb}x{nn}" for bb, nn in sorted(have))
        raise BucketError(f"batch of {b} requests x {n} candidates exceeds the largest "
                          f"compiled bucket ({limits}); split the request")
    return min(fits, key=lambda x: (x[0] * x[1], x[1]))


def pad_batch(batch: Any, bucket: Bucket, history_len: int) -> dict[str, np.ndarray]:
    """RequestBatch (numpy or jax leaves) -> dict of numpy arrays at the bucket's shape.

    Requests pad to B with empty rows, candidates to N with masked slots, history is
    cut to (or padded up to) the tier's L; padding is zeros, masked out in-graph.

    Raises ArtifactError naming the first field whose rank, or whose b, c or l axis, is not
    the other fields' (each field is padded on its own: a short one would be padded with
    zeros and scored, e.g. a real candidate with zero dense features).
    """
    B, N = bucket
    L = history_len
    arrays = {name: np.asarray(getattr(batch, name)) for name in BATCH_FIELDS}
    check_layout(arrays)
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if name.startswith("hist_") and name != "hist_len":
            a = a[:, :L]
            a = _pad_axis(a, 1, L)
        elif name == "hist_len" and a.dtype.kind in "iuf":   # keeps the dtype: the cast to
            a = np.minimum(a, min(L, np.iinfo(a.dtype).max)     # the compiled one is checked
                           if a.dtype.kind in "iu" else L)
        if name.startswith("cand_"):
            a = _pad_axis(a, 1, N)
        out[name] = _pad_axis(a, 0, B)
    out["cand_mask"] = out["cand_mask"].astype(bool)
    return out


def check_layout(arrays: dict[str, np.ndarray]) -> None:
    """ArtifactError unless every field has its rank and the b, c and l of req_sparse,
    cand_sparse and hist_item."""
    for name, axes in _LAYOUT.items():
        if arrays[name].ndim != len(axes):
            raise ArtifactError(f"{name}: expected rank {len(axes)} ([{', '.join(axes)}]), "
                                f"got shape {list(arrays[name].shape)}")
    for name, axes in _LAYOUT.items():
        for i, ax in enumerate(axes):
            if ax not in _AXIS_SOURCE:
                continue
            src, j, what = _AXIS_SOURCE[ax]
            want = arrays[src].shape[j]
            if arrays[name].shape[i] != want:
                raise ArtifactError(f"{name}: shape {list(arrays[name].shape)}, expected "
                                    f"{want} {what} on axis {i} ({ax}, as {src} has)")


def _pad_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    extra = size - a.shape[axis]
    if extra <= 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths)


def batch_signature(bucket: Bucket, history_len: int, features: Any) -> dict[str, dict]:
    """Input signature of one bucket: field -> {shape, dtype} (what the manifest records)."""
    B, N = bucket
    f = features
    shapes = {
        "req_sparse": ((B, f.req_sparse_fields), "int32"),
        "req_dense": ((B, f.req_dense_features), "float32"),
        "hist_item": ((B, history_len), "int32"),
        "hist_action": ((B, history_len), "int32"),
        "hist_gap": ((B, history_len), "float32"),
        "hist_len": ((B,), "int32"),
        "hist_side": ((B, history_len, len(f.history_side_fields)), "int32"),
        "cand_sparse": ((B, N, f.cand_sparse_fields), "int32"),
        "cand_dense": ((B, N, f.cand_dense_features), "float32"),
        "cand_mask": ((B, N), "bool"),
    }
    return {k: {"shape": list(s), "dtype": d} for k, (s, d) in shapes.items()}
