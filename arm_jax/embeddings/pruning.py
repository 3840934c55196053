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
"""

from __future__ import annotations

from dataclasses import dataclass

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
    rows_before: int
    rows_after: int        # kept rows + 1 fallback row
    bytes_before: int
    bytes_after: int       # table + index
    min_count: int

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
                "min_count": self.min_count}


def layout_of(emb: HashedEmbedding | FieldEmbedding) -> TableLayout:
    """The row layout of either embedding kind."""
    if isinstance(emb, FieldEmbedding):
        return emb.layout
    return TableLayout.uniform(emb.num_fields, emb.rows_per_field)


def row_counts(emb: HashedEmbedding | FieldEmbedding, ids_xf: np.ndarray) -> np.ndarray:
    """Hits per table row for observed raw ids [..., num_fields] (int64 [rows])."""
    rows = np.asarray(jax.jit(emb.rows)(jnp.asarray(ids_xf, jnp.int32))).ravel()
    return np.bincount(rows, minlength=emb.table.shape[0]).astype(np.int64)


class PrunedEmbedding(nnx.Module):
    """A pruned copy of a HashedEmbedding / FieldEmbedding (same call signature)."""

    def __init__(self, layout: TableLayout, salt_base: int, kept: np.ndarray,
                 table: jax.Array):
        self.layout = layout
        self.salt_base = salt_base
        self.kept = RowIndex(jnp.asarray(kept, jnp.int32))
        self.table = nnx.Param(table, logical_axes=("vocab", "embed"))

    def rows(self, ids_xf: jax.Array) -> jax.Array:
        """Raw ids -> rows of the pruned table (dropped rows -> the fallback row)."""
        orig = self.layout.rows(ids_xf, self.salt_base)
        kept = self.kept[...]
        if kept.shape[0] == 0:   # every row pruned: all ids share the fallback row (row 0)
            return jnp.zeros_like(orig)
        pos = jnp.clip(jnp.searchsorted(kept, orig), 0, kept.shape[0] - 1)
        return jnp.where(kept[pos] == orig, pos, kept.shape[0])

    def __call__(self, ids_xf: jax.Array) -> jax.Array:
        return jnp.take(self.table[...], self.rows(ids_xf), axis=0)


def prune(emb: HashedEmbedding | FieldEmbedding, counts: np.ndarray, min_count: int = 1
          ) -> tuple[PrunedEmbedding, PruneReport]:
    """Keep rows with counts >= min_count; the rest collapse into one fallback row."""
    table = np.asarray(emb.table[...])
    if counts.shape != (table.shape[0],):
        raise ValueError(f"counts has shape {counts.shape}, expected ({table.shape[0]},)")
    if min_count < 1:
        raise ValueError(f"min_count={min_count} must be >= 1")
    keep = counts >= min_count
    kept = np.flatnonzero(keep).astype(np.int32)
    fallback = (table[~keep].mean(axis=0, keepdims=True) if (~keep).any()
                else np.zeros((1, table.shape[1]), table.dtype))
    new_table = jnp.asarray(np.concatenate([table[kept], fallback.astype(table.dtype)]))
    item = table.dtype.itemsize
    report = PruneReport(
        rows_before=table.shape[0], rows_after=kept.size + 1,
        bytes_before=table.nbytes,
        bytes_after=(kept.size + 1) * table.shape[1] * item + kept.size * 4,
        min_count=min_count)
    return PrunedEmbedding(layout_of(emb), emb.salt_base, kept, new_table), report
