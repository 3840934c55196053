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


class CatalogError(ValueError):
    """A catalogue file or table is malformed, or does not fit the features config."""


@dataclass(frozen=True)
class ItemCatalog:
    """side int32 [num_items, s]: row i holds item i's values of candidate fields `fields`."""

    side: np.ndarray
    fields: tuple[int, ...]

    def __post_init__(self) -> None:
        side = np.asarray(self.side)
        if side.ndim != 2 or side.shape[1] != len(self.fields):
            raise CatalogError(f"side: expected shape (num_items, {len(self.fields)}) for "
                               f"fields {list(self.fields)}, got {side.shape}")
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
        path = Path(path)
        np.savez(path, side=self.side, fields=np.asarray(self.fields, np.int32))
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> "ItemCatalog":
        path = Path(path)
        if not path.is_file():
            raise CatalogError(f"{path}: no such catalogue file")
        try:
            with np.load(path) as z:
                return cls(z["side"], tuple(z["fields"].tolist()))
        except CatalogError:
            raise
        except Exception as e:  # zip/npz errors come in many types
            raise CatalogError(f"{path}: not a catalogue .npz ({type(e).__name__}: {e})") from None


def empty_catalog(fields: tuple[int, ...]) -> ItemCatalog:
    """A catalogue that knows no item: every event's side ids are UNKNOWN_SIDE."""
    return ItemCatalog(np.zeros((0, len(fields)), np.int32), tuple(fields))


__all__ = ["ItemCatalog", "CatalogError", "empty_catalog"]
