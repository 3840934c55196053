"""Drop table rows that traffic never (or rarely) touches; remap ids in-graph.

Counting: hash the observed ids with the table's own row function and count hits
per row. Rows hit fewer than `min_count` times are dropped. The pruned module keeps
the sorted list of surviving original rows (an int32 index, not trained) and one
fallback row (the mean of the dropped rows) appended at the end:

    row  = layout.rows(ids)                      # as before pruning
    pos  = searchsorted(kept, row)               # O(log kept) per lookup, in-graph
    new  = pos if kept[pos] == row else fallback

so lookups of surviving rows return exactly the vectors they had before, and the
index costs 4 bytes per kept row instead of `dim * itemsize` per dropped row.

The pruned table is padded with zero rows no id maps to, up to a multiple of `pad_to`
(as `TableLayout.build(pad_to=...)`): `kept + 1` rows almost never divide by the mesh's
model axis, and the sharding rules then replicate the whole table on every device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from arm_jax.embeddings.unified import FieldEmbedding, TableLayout
from arm_jax.model.embeddings import HashedEmbedding


class RowIndex(nnx.Variable):
    """Sorted surviving row ids of a pruned table: state, but never a trained parameter."""


@dataclass(frozen=True)
class PruneReport:
    """Rows and bytes of a table before and after `prune` (padding counted as kept)."""

    rows_before: int
    rows_after: int        # kept rows + 1 fallback row + padding rows (the table's rows)
    bytes_before: int
    bytes_after: int       # the padded table + the index
    min_count: int
    pad_rows: int = 0      # zero rows added so rows_after divides by pad_to

    @property
    def rows_saved(self) -> int:
        return self.rows_before - self.rows_after

    @property
    def bytes_saved(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_dict(self) -> dict:
        return {"rows_before": self.rows_before, "rows_after": self.rows_after,
                "rows_saved": self.rows_saved, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "bytes_saved": self.bytes_saved,
                "min_count": self.min_count, "pad_rows": self.pad_rows}


def layout_of(emb: HashedEmbedding | FieldEmbedding) -> TableLayout:
    """The row layout of either embedding kind."""
    if isinstance(emb, FieldEmbedding):
        return emb.layout
    return TableLayout.uniform(emb.num_fields, emb.rows_per_field)


def row_counts(emb: HashedEmbedding | FieldEmbedding, ids_xf: np.ndarray,
               fields: Sequence[int] | None = None) -> np.ndarray:
    """Hits per table row for observed raw ids [..., num_fields] (int64 [rows]).

    With `fields`, ids are [..., len(fields)] of those fields only, as the model looks
    them up (`emb(ids, fields)`: e.g. the Ranker's history-side ids in `cand_sparse`).
    Add the counts of every lookup site before pruning, or rows only one site hits are
    dropped:

        counts = row_counts(cand, cand_ids) + row_counts(cand, hist_side, side_fields)
    """
    ids = np.asarray(ids_xf)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected integer ids, got dtype {ids.dtype}")
    top = np.iinfo(np.int32).max
    if ids.size and (ids.min() < 0 or ids.max() > top):    # as make_batch: no silent wrap
        raise ValueError(f"ids: must be in [0, {top}] (int32, as the model reads them), got "
                         f"{int(ids.min())}..{int(ids.max())}")
    fields = None if fields is None else tuple(int(f) for f in fields)
    rows_fn = jax.jit(lambda x: emb.rows(x) if fields is None else emb.rows(x, fields))
    rows = np.asarray(rows_fn(jnp.asarray(ids, jnp.int32))).ravel()
    return np.bincount(rows, minlength=emb.table.shape[0]).astype(np.int64)


class PrunedEmbedding(nnx.Module):
    """A pruned copy of a HashedEmbedding / FieldEmbedding (same call signature,
    `fields` included, so it can replace the Ranker's `cand_sparse`)."""

    def __init__(self, layout: TableLayout, salt_base: int, kept: np.ndarray,
                 table: jax.Array):
        self.layout = layout
        self.salt_base = salt_base
        self.kept = RowIndex(jnp.asarray(kept, jnp.int32))
        self.table = nnx.Param(table, logical_axes=("vocab", "embed"))

    def rows(self, ids_xf: jax.Array, fields: Sequence[int] | None = None) -> jax.Array:
        """Raw ids [..., num_fields] (or [..., len(fields)]: those fields) -> rows of the
        pruned table (dropped rows -> the fallback row)."""
        orig = self.layout.rows(ids_xf, self.salt_base, fields)
        kept = self.kept[...]
        if kept.shape[0] == 0:   # every row pruned: all ids share the fallback row (row 0)
            return jnp.zeros_like(orig)
        pos = jnp.clip(jnp.searchsorted(kept, orig), 0, kept.shape[0] - 1)
        return jnp.where(kept[pos] == orig, pos, kept.shape[0])

    def __call__(self, ids_xf: jax.Array, fields: Sequence[int] | None = None) -> jax.Array:
        """[..., num_fields] raw ids (or [..., len(fields)]) -> [..., fields, features]."""
        return jnp.take(self.table[...], self.rows(ids_xf, fields), axis=0)


def prune(emb: HashedEmbedding | FieldEmbedding, counts: np.ndarray, min_count: int = 1,
          pad_to: int = 8) -> tuple[PrunedEmbedding, PruneReport]:
    """Keep rows with counts >= min_count; the rest collapse into one fallback row.

    The table is then padded with zero rows (never addressed) to a multiple of `pad_to`,
    so it row-shards over a mesh whose model axis divides `pad_to`; otherwise the rules
    replicate it and every device holds the whole table. The default 8 is the
    `embeddings plan --row-multiple` default: it splits evenly over model axes of 1, 2, 4
    or 8 (the 8-device meshes of the bench and tests) for at most 7 extra rows. For
    another mesh pass its model axis (`mesh_shape(mesh)['model']`); `pad_to=1` pads
    nothing. The report counts the padding in rows_after and bytes_after.
    """
    table = np.asarray(emb.table[...])
    if counts.shape != (table.shape[0],):
        raise ValueError(f"counts has shape {counts.shape}, expected ({table.shape[0]},)")
    if min_count < 1:
        raise ValueError(f"min_count={min_count} must be >= 1")
    if pad_to < 1:
        raise ValueError(f"pad_to={pad_to} must be >= 1")
    keep = counts >= min_count
    kept = np.flatnonzero(keep).astype(np.int32)
    fallback = (table[~keep].mean(axis=0, keepdims=True) if (~keep).any()
                else np.zeros((1, table.shape[1]), table.dtype))
    rows_after = -(-(kept.size + 1) // pad_to) * pad_to
    pad = np.zeros((rows_after - kept.size - 1, table.shape[1]), table.dtype)
    new_table = jnp.asarray(np.concatenate([table[kept], fallback.astype(table.dtype), pad]))
    item = table.dtype.itemsize
    report = PruneReport(
        rows_before=table.shape[0], rows_after=rows_after,
        bytes_before=table.nbytes,
        bytes_after=rows_after * table.shape[1] * item + kept.size * 4,
        min_count=min_count, pad_rows=int(pad.shape[0]))
    return PrunedEmbedding(layout_of(emb), emb.salt_base, kept, new_table), report
