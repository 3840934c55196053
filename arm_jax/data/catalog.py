"""Item catalogue: an item id's side ids, the values history events carry for their item.

A user-log store keeps only (item, action, time) per event; the item's advertiser, topic
or genre live once in the catalogue and are joined in when a history is read (training
joins, serving fetch), as feature stores do. The side ids are the item's values of the
candidate sparse fields `features.history_side_fields`, so a history event's topic and a
candidate's topic are the same id in the same embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arm_jax.batch import UNKNOWN_SIDE
from arm_jax.data.outputs import check_input_file, check_output_file, replaced_when_written


class CatalogError(ValueError):
    """A catalogue file or table is malformed, or does not fit the features config."""


@dataclass(frozen=True)
class ItemCatalog:
    """side int32 [num_items, s]: row i holds item i's values of candidate fields `fields`."""

    side: np.ndarray
    fields: tuple[int, ...]

    def __post_init__(self) -> None:
        check_fields(self.fields)
        side = np.asarray(self.side)
        if side.ndim != 2 or side.shape[1] != len(self.fields):
            raise CatalogError(f"side: expected shape (num_items, {len(self.fields)}) for "
                               f"fields {list(self.fields)}, got {side.shape}")
        if side.size and side.dtype.kind not in "iu":   # 1.7 would be id 1, NaN -2^31
            raise CatalogError(f"side: expected integer ids, got dtype {side.dtype}")
        if side.size and (side.min() < 0 or side.max() > UNKNOWN_SIDE):
            raise CatalogError(f"side: ids must be in [0, {UNKNOWN_SIDE}], got "
                               f"{int(side.min())}..{int(side.max())}")
        object.__setattr__(self, "side", side.astype(np.int32))
        object.__setattr__(self, "fields", tuple(int(f) for f in self.fields))

    @property
    def num_items(self) -> int:
        return int(self.side.shape[0])

    def lookup(self, items: np.ndarray) -> np.ndarray:
        """Side ids int32 [..., s] of item ids [...]; unknown items get UNKNOWN_SIDE."""
        items = np.asarray(items)
        if not self.num_items:
            return np.full(items.shape + (len(self.fields),), UNKNOWN_SIDE, np.int32)
        # One clipped gather, then patch the (rare) unknown ids: the join calls this per
        # batch on [B, L] items, so it avoids full-size where/astype passes.
        rows = self.side.take(np.clip(items, 0, self.num_items - 1), axis=0)
        unknown = (items < 0) | (items >= self.num_items)
        if unknown.any():
            rows[unknown] = UNKNOWN_SIDE
        return rows

    def check_fields(self, fields: tuple[int, ...]) -> None:
        """Raise CatalogError unless this catalogue holds exactly `fields` (in order)."""
        if tuple(fields) != self.fields:
            raise CatalogError(f"catalogue holds candidate fields {list(self.fields)}, but "
                               f"features.history_side_fields is {list(fields)}")

    def save(self, path: str | Path) -> Path:
        """Write the catalogue as .npz (parent directories created); returns the file written."""
        path = self.save_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_when_written(path) as tmp, tmp.open("wb") as f:   # whole or not at all
            np.savez(f, side=self.side, fields=np.asarray(self.fields, np.int32))
        return path

    @staticmethod
    def save_path(path: str | Path) -> Path:
        """The file `save(path)` writes (".npz" appended unless there), or CatalogError if
        none can be written there (a directory, a path under a file): check it before
        building a catalogue."""
        if not Path(path).name:        # "", ".", "/": with_name would fail in pathlib
            raise CatalogError(f"catalogue file {str(path)!r}: names no file")
        path = Path(path)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        return check_output_file(path, "catalogue file", CatalogError)

    @classmethod
    def load(cls, path: str | Path) -> "ItemCatalog":
        path = check_input_file(path, "catalogue file", CatalogError)
        try:
            with np.load(path) as z:
                return cls(z["side"], tuple(z["fields"].tolist()))
        except CatalogError:
            raise
        except Exception as e:  # zip/npz errors come in many types
            raise CatalogError(f"{path}: not a catalogue .npz ({type(e).__name__}: {e})") from None


FIELD_LIMIT = 2**31 - 1      # fields are stored as int32


def check_fields(fields: object, name: str = "fields") -> tuple[int, ...]:
    """`fields` as a tuple of ints, or CatalogError naming `name`, the value and the limit
    unless they are distinct and in [0, 2^31 - 1]: what a config's
    features.history_side_fields can be (and what the .npz stores as int32)."""
    try:
        out = tuple(int(f) for f in fields)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        out = None
    if out is None or len(set(out)) != len(out) or any(not 0 <= f <= FIELD_LIMIT for f in out):
        shown = list(out) if out is not None else fields
        raise CatalogError(f"{name}: {shown} must be distinct field indices in "
                           f"[0, {FIELD_LIMIT}] (the candidate sparse fields of "
                           "features.history_side_fields)")
    return out


MAX_CATALOG_ITEMS = 1 << 27   # rows are dense by item id: 134M rows of int32 ids


def catalog_from_csv(path: str | Path, fields: tuple[int, ...] | list[int],
                     columns: tuple[str, ...] | list[str] | None = None, *,
                     max_items: int = MAX_CATALOG_ITEMS) -> ItemCatalog:
    """An item catalogue from a CSV with a header: `item`, then the side ids.

    `columns` names the CSV columns holding the side ids of candidate fields `fields`, in
    the same order (default: every column but `item`, in file order). Items the file does
    not list get UNKNOWN_SIDE. Rows are dense by item id, so ids over `max_items` are
    refused. CatalogError names a missing column, a non-integer value by line and column, a
    repeated or negative item id, or a side id out of range.
    """
    from arm_jax.data.int_csv import CsvError, csv_header, read_int_csv

    path = check_input_file(path, "item table", CatalogError)
    fields = check_fields(fields)
    try:
        if columns is None:
            columns = [c for c in csv_header(path) if c != "item"]
        columns = list(columns)
        if len(columns) != len(fields):
            raise CsvError(f"{len(columns)} side columns {columns} for {len(fields)} fields "
                           f"{list(fields)}: give one column per field (--columns)")
        table = read_int_csv(path, ["item", *columns])
    except CsvError as e:
        raise CatalogError(f"item table {path}: {e}") from None
    item = table["item"]
    if item.size and item.min() < 0:
        raise CatalogError(f"item table {path}: item ids must be >= 0, got {int(item.min())}")
    uniq, counts = np.unique(item, return_counts=True)
    if (counts > 1).any():
        raise CatalogError(f"item table {path}: item {int(uniq[counts > 1][0])} is listed "
                           f"{int(counts[counts > 1][0])} times")
    num_items = int(item.max()) + 1 if item.size else 0
    if num_items > max_items:
        raise CatalogError(f"item table {path}: item id {num_items - 1} needs {num_items} rows, "
                           f"over the limit of {max_items} (the catalogue is dense by item id: "
                           "remap the ids first)")
    side = np.full((num_items, len(fields)), UNKNOWN_SIDE, np.int64)
    for j, c in enumerate(columns):
        values = table[c]
        if values.size and (values.min() < 0 or values.max() > UNKNOWN_SIDE):
            raise CatalogError(f"item table {path}: {c} ids must be in [0, {UNKNOWN_SIDE}], "
                               f"got {int(values.min())}..{int(values.max())}")
        side[item, j] = values
    return ItemCatalog(side, fields)


def empty_catalog(fields: tuple[int, ...]) -> ItemCatalog:
    """A catalogue that knows no item: every event's side ids are UNKNOWN_SIDE."""
    return ItemCatalog(np.zeros((0, len(fields)), np.int32), tuple(fields))


__all__ = ["ItemCatalog", "CatalogError", "check_fields", "catalog_from_csv", "empty_catalog"]
