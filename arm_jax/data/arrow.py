"""Parquet reading helpers shared by the examples and events files (pyarrow, an extra).

pyarrow is imported only when a `.parquet` file is read or written, so `.npz` users need
not install it; without it the error says which extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

INSTALL_HINT = "pip install 'arm-jax[parquet]' (or pyarrow)"


class PyarrowMissing(ImportError):
    """A Parquet file was asked for and pyarrow is not installed."""


def require_pyarrow() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or PyarrowMissing saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise PyarrowMissing(f"Parquet files need pyarrow: {INSTALL_HINT}") from e
    return pa, pq


class ArrowColumnError(ValueError):
    """A Parquet column that cannot become the array it must be (nulls, ragged widths)."""


def read_table(path: Path, columns: list[str] | None = None) -> Any:
    """The Parquet file as one pyarrow Table (OSError / ArrowInvalid propagate); with
    `columns`, only those of them the file has (the caller names the missing ones): the
    other columns of a wide warehouse export are never read into memory."""
    _, pq = require_pyarrow()
    if columns is not None:
        names = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in names]
    return pq.read_table(path, columns=columns)


def flat_column(table: Any, name: str) -> np.ndarray:
    """A scalar column as a 1-d numpy array; nulls refused."""
    col = table.column(name).combine_chunks()
    if col.null_count:
        first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise ArrowColumnError(f"{name}: {col.null_count} null values (none allowed; the "
                               f"first at row {first})")
    if is_list_type(col.type):
        raise ArrowColumnError(f"{name}: expected one value per row, got a {col.type} column")
    return col.to_numpy(zero_copy_only=False)


def seconds_column(table: Any, name: str) -> np.ndarray:
    """A time column as int64 unix seconds: integers as they are, Arrow timestamps (any
    unit or time zone) converted, sub-second parts dropped; nulls refused."""
    pa, _ = require_pyarrow()
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        if col.null_count:
            return flat_column(table, name)              # raises, naming the first null
        unit = pa.timestamp("s", tz=col.type.tz)
        return col.cast(unit, safe=False).cast(pa.int64()).to_numpy().astype(np.int64)
    if pa.types.is_date(col.type) or pa.types.is_time(col.type):
        raise ArrowColumnError(f"{name}: expected unix seconds or a timestamp, got {col.type}")
    return flat_column(table, name)


def list_column(table: Any, name: str) -> np.ndarray:
    """A list<x> column whose lists all have one length w -> [rows, w] array."""
    col = table.column(name).combine_chunks()
    if not is_list_type(col.type):
        raise ArrowColumnError(f"{name}: expected a list column, got {col.type}")
    values, lengths = _unnest(col, name)
    return _rectangle(values, lengths, name, lambda i: f"row {i}")


def ragged_list_column(table: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list<x> column of varying lengths -> ([rows, max_len] zero-padded, lengths)."""
    col = table.column(name).combine_chunks()
    if not is_list_type(col.type):
        raise ArrowColumnError(f"{name}: expected a list column (one value per candidate), "
                               f"got {col.type}")
    values, lengths = _unnest(col, name)
    return _pad(values, lengths), lengths


def nested_list_column(table: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list<list<x>> column: a varying number of inner lists per row, each of one
    length w -> ([rows, max_inner, w] zero-padded, inner lists per row)."""
    col = table.column(name).combine_chunks()
    if not (is_list_type(col.type) and is_list_type(col.type.value_type)):
        raise ArrowColumnError(f"{name}: expected a list of lists (one list per candidate), "
                               f"got {col.type}")
    inner, outer_len = _unnest(col, name)
    values, inner_len = _unnest(inner, name)
    starts = np.cumsum(outer_len) - outer_len

    def where(i: int) -> str:               # flat candidate index -> its row and position
        row = int(np.searchsorted(starts, i, side="right") - 1)
        return f"row {row}, candidate {i - int(starts[row])}"

    rows = _rectangle(values, inner_len, name, where)       # [total candidates, w]
    return _pad(rows, outer_len), outer_len


def list_lengths(table: Any, name: str) -> np.ndarray | None:
    """The length of each row's list in a list column (a null list counts 0), None when the
    column is no list (the readers above name that)."""
    import pyarrow.compute as pc

    col = table.column(name)
    if not is_list_type(col.type):
        return None
    return pc.list_value_length(col).fill_null(0).to_numpy().astype(np.int64)


def is_list_type(t: Any) -> bool:
    """Is Arrow type `t` a list, large list or fixed-size list?"""
    pa, _ = require_pyarrow()
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t))


def _unnest(col: Any, name: str) -> tuple[Any, np.ndarray]:
    """(child values, length of each list) of a list array; nulls refused at this level."""
    import pyarrow.compute as pc

    if col.null_count:
        first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise ArrowColumnError(f"{name}: {col.null_count} null lists (none allowed; the "
                               f"first at index {first})")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    values = col.flatten()
    if values.null_count and not is_list_type(values.type):
        raise ArrowColumnError(f"{name}: {values.null_count} null values (none allowed)")
    if not is_list_type(values.type):
        values = values.to_numpy(zero_copy_only=False)
    return values, lengths


def _rectangle(values: np.ndarray, lengths: np.ndarray, name: str,
               where: Callable[[int], str]) -> np.ndarray:
    """Flat values of lists that must share one length -> [lists, width]."""
    if lengths.size == 0:
        return np.asarray(values).reshape(0, 0)
    width = int(lengths[0])
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        raise ArrowColumnError(f"{name}: every list must hold {width} values (as the first "
                               f"does); {where(int(bad[0]))} holds {int(lengths[bad[0]])}")
    return np.asarray(values).reshape(lengths.size, width)


def _pad(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Consecutive groups of `counts[i]` rows -> [len(counts), max(counts), ...] zero-padded."""
    n = int(counts.max()) if counts.size else 0
    out = np.zeros((counts.size, n) + rows.shape[1:], rows.dtype)
    group = np.repeat(np.arange(counts.size), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts.size else counts
    out[group, np.arange(group.size) - np.repeat(starts, counts)] = rows
    return out


__all__ = ["INSTALL_HINT", "ArrowColumnError", "PyarrowMissing", "require_pyarrow",
           "read_table", "flat_column", "seconds_column", "list_column", "ragged_list_column",
           "nested_list_column", "list_lengths"]
