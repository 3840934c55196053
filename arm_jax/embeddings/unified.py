"""One table, many fields: per-field sizes (from the sizing plan) and unified groups.

A `TableLayout` gives every sparse field an (offset, size, salt) triple inside one
table, so the lookup is always a single gather and the whole table shards row-wise
under one rule:

- separate fields: their own slices (offset = running sum of sizes), as in
  `HashedEmbedding` but with a size per field (what `plan_sizes` chooses);
- a unified group: several fields share one slice (same offset and size) and keep
  distinct salts, so equal raw ids of different fields land in unrelated rows
  (collisions between them are random, never systematic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.argcheck import is_int
from arm_jax.model.preprocess import check_field_count, field_salts, hash_ids


class LayoutError(ValueError):
    """Field sizes or groups are inconsistent."""


# Rows are addressed by int32 ids (`hash_ids` + int32 offsets, `jnp.take` indices).
MAX_ROWS = 2**31 - 1


@dataclass(frozen=True)
class TableLayout:
    """Per-field (offset, size) into one table of `total_rows` rows (padding included)."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    total_rows: int

    @property
    def num_fields(self) -> int:
        return len(self.sizes)

    @property
    def used_rows(self) -> int:
        """Rows some field can address (the rest is padding for even sharding)."""
        return sum(size for _, size in set(zip(self.offsets, self.sizes)))

    @classmethod
    def build(cls, field_rows: Sequence[int], groups: Sequence[Sequence[int]] = (),
              pad_to: int = 1) -> "TableLayout":
        """Fields in a group share one slice of sum(their rows); others get their own.

        `pad_to` rounds the table up to a multiple (e.g. the mesh's model axis) so it
        row-shards evenly; padded rows are never addressed. Raises LayoutError when the
        padded table has more rows than int32 row ids address (2**31 - 1).
        """
        n = len(field_rows)
        # (a float size was kept as is: float offsets, a float total_rows)
        bad = next((f for f, r in enumerate(field_rows) if not is_int(r) or r < 1), None)
        if n == 0 or bad is not None:
            got = "" if bad is None else f"; field {bad} has {field_rows[bad]!r}"
            raise LayoutError(f"field_rows={list(field_rows)}: need >= 1 field, each an "
                              f"integer >= 1 row{got}")
        if not is_int(pad_to) or pad_to < 1:  # 0 divided by zero; < 0 built a table too small
            raise LayoutError(f"pad_to={pad_to!r}: must be >= 1, an integer")
        seen: set[int] = set()
        for g in groups:
            for f in g:
                if not 0 <= f < n:
                    raise LayoutError(f"group {list(g)}: field {f} out of range 0..{n - 1}")
                if f in seen:
                    raise LayoutError(f"field {f} appears in more than one group")
                seen.add(f)
        slices = [list(g) for g in groups if g] + [[f] for f in range(n) if f not in seen]
        slices.sort(key=min)
        offsets, sizes = [0] * n, [0] * n
        cursor = 0
        for members in slices:
            size = sum(field_rows[f] for f in members)
            for f in members:
                offsets[f], sizes[f] = cursor, size
            cursor += size
        total = -(-cursor // pad_to) * pad_to
        if total > MAX_ROWS:    # was an OverflowError at the first lookup
            raise LayoutError(f"total_rows={total} ({cursor} rows padded to a multiple of "
                              f"pad_to={pad_to}) exceeds 2**31 - 1 = {MAX_ROWS}, the most rows "
                              "int32 row ids address")
        return cls(tuple(offsets), tuple(sizes), total)

    @classmethod
    def from_plan(cls, rows: Mapping[str, int | Mapping[str, Any]], fields: Sequence[str],
                  groups: Sequence[Sequence[str]] = (), pad_to: int = 1) -> "TableLayout":
        """Layout for named `fields` (table order) from planned rows per feature name and
        groups of names sharing one table, e.g. from the YAML that
        `arm-jax embeddings plan --group a,b --out plan.yaml` writes:

            doc = yaml.safe_load(open("plan.yaml"))["embeddings"]
            TableLayout.from_plan(doc["features"], fields, doc["groups"], pad_to=8)

        `rows` maps a name to its rows (an int) or to that section's entry (a mapping
        with a 'rows' key)."""
        missing = [f for f in fields if f not in rows]
        if missing:
            raise LayoutError(f"no planned rows for field(s) {missing}; planned: {sorted(rows)}")
        index = {f: i for i, f in enumerate(fields)}
        for g in groups:
            unknown = [f for f in g if f not in index]
            if unknown:
                raise LayoutError(f"group {list(g)}: unknown field(s) {unknown}; "
                                  f"fields: {list(fields)}")
        return cls.build([_planned_rows(f, rows[f]) for f in fields],
                         [[index[f] for f in g] for g in groups], pad_to)

    @classmethod
    def uniform(cls, num_fields: int, rows_per_field: int) -> "TableLayout":
        """The `HashedEmbedding` layout: equal, separate slices."""
        return cls.build([rows_per_field] * num_fields)

    def rows(self, ids_xf: jax.Array, salt_base: int = 0,
             fields: Sequence[int] | None = None) -> jax.Array:
        """Raw ids [..., num_fields] -> table rows [..., num_fields] (in-graph).

        With `fields`, ids are [..., len(fields)]: those fields' ids (in that order), as
        `HashedEmbedding.rows(ids, fields)`. Raises LayoutError when the last dim of the
        ids is not the field count (it broadcast silently before).
        """
        picked = tuple(range(self.num_fields)) if fields is None else tuple(fields)
        bad = [f for f in picked if not 0 <= f < self.num_fields]
        if bad:
            raise LayoutError(f"fields {list(picked)}: {bad} out of range "
                              f"0..{self.num_fields - 1}")
        check_field_count(ids_xf, self.num_fields, fields, LayoutError)
        idx = jnp.asarray(picked, jnp.int32)
        salts = field_salts(self.num_fields, salt_base)[idx]
        sizes = jnp.asarray([self.sizes[f] for f in picked], jnp.uint32)
        offsets = jnp.asarray([self.offsets[f] for f in picked], jnp.int32)
        return hash_ids(ids_xf, salts, sizes) + offsets


def _planned_rows(name: str, entry: Any) -> int:
    """Rows of one plan entry: an int, or a mapping with 'rows' (the YAML section)."""
    if isinstance(entry, Mapping):
        if "rows" not in entry:
            raise LayoutError(f"planned feature '{name}': entry {dict(entry)} has no 'rows'")
        entry = entry["rows"]
    if not is_int(entry):
        raise LayoutError(f"planned feature '{name}': rows {entry!r} is not an int")
    return int(entry)


class FieldEmbedding(nnx.Module):
    """Sparse fields looked up in one table laid out by a `TableLayout`.

    Table [layout.total_rows, features], logical axes ('vocab', 'embed'). With
    `TableLayout.uniform(f, r)` and the same `salt_base` it computes exactly what
    `HashedEmbedding(f, r, ...)` computes.
    """

    def __init__(self, layout: TableLayout, features: int, *, salt_base: int = 0,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.layout = layout
        self.salt_base = salt_base
        init = nnx.initializers.normal(stddev=0.05)
        self.table = nnx.Param(init(rngs.params(), (layout.total_rows, features), param_dtype),
                               logical_axes=("vocab", "embed"))

    def rows(self, ids_xf: jax.Array, fields: Sequence[int] | None = None) -> jax.Array:
        """Table rows for raw ids [..., num_fields] (or [..., len(fields)]: those fields)."""
        return self.layout.rows(ids_xf, self.salt_base, fields)

    def __call__(self, ids_xf: jax.Array, fields: Sequence[int] | None = None) -> jax.Array:
        """[..., num_fields] raw ids -> [..., num_fields, features]; with `fields`,
        [..., len(fields)] ids of those fields (as `HashedEmbedding`). Ids whose last dim
        is not the field count raise LayoutError."""
        rows = self.rows(ids_xf) if fields is None else self.rows(ids_xf, fields)
        return jnp.take(self.table[...], rows, axis=0)
