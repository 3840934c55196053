"""Examples files as Parquet: one row per request, candidates as nested lists.

The layout (column: Arrow type), what a warehouse export naturally produces:

    user_id: int64            ts: int64 (unix seconds) or a timestamp (any unit, zone)
    req_sparse: list<int>     req_dense: list<float>           (one value per feature)
    cand_sparse: list<list<int>>   cand_dense: list<list<float>>   (one list per candidate)
    labels: list<list<float>>      (per candidate, one value per task, in [0, 1])
    cand_mask: list<bool>          optional: which listed candidates are real
    true_prob: list<list<float>>   optional (synthetic data's oracle)

Requests may list different numbers of candidates; they are padded to the longest and
the padding is masked. Without `cand_mask` every listed candidate is real. The task names
and format version travel in the file's schema metadata (`arm_jax.tasks`,
`arm_jax.format_version`). `read_examples_parquet` returns the arrays `.npz` files hold,
so both formats go through the same checks (`arm_jax.data.examples_file`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from arm_jax.data.arrow import (flat_column, list_column, list_lengths, nested_list_column,
                                ragged_list_column, read_table, require_pyarrow,
                                seconds_column)

_META_TASKS = b"arm_jax.tasks"
_META_VERSION = b"arm_jax.format_version"
_PER_CANDIDATE = ("cand_sparse", "cand_dense", "labels")


def write_examples_parquet(arrays: dict[str, np.ndarray], tasks: tuple[str, ...],
                           format_version: int, path: Path) -> None:
    """Write examples arrays (the names above, [R, N, ...] padded) as one Parquet file.

    Every candidate slot is written, with `cand_mask`, so reading gives the arrays back
    bit for bit.
    """
    _, pq = require_pyarrow()
    pq.write_table(examples_table(arrays, tasks, format_version), path)


def examples_table(arrays: dict[str, np.ndarray], tasks: tuple[str, ...],
                   format_version: int) -> Any:
    """The pyarrow Table `write_examples_parquet` writes (callers may add columns)."""
    pa, _ = require_pyarrow()
    columns = {"user_id": pa.array(arrays["user_id"]), "ts": pa.array(arrays["ts"])}
    for name in ("req_sparse", "req_dense"):
        a = arrays[name]
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
    r, n = arrays["cand_mask"].shape
    outer = pa.array(np.arange(0, r * n + 1, n, dtype=np.int32))
    columns["cand_mask"] = pa.ListArray.from_arrays(outer,
                                                    pa.array(arrays["cand_mask"].reshape(-1)))
    for name in _PER_CANDIDATE + ("true_prob",):
        if name not in arrays:
            continue
        a = arrays[name]
        inner = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[2])
        columns[name] = pa.ListArray.from_arrays(outer, inner)
    return pa.table(columns).replace_schema_metadata({
        _META_TASKS: json.dumps(list(tasks)).encode(),
        _META_VERSION: str(format_version).encode()})


def read_examples_parquet(path: Path, max_candidates: int | None = None
                          ) -> dict[str, np.ndarray]:
    """The arrays of a Parquet examples file, padded to [R, N, ...] with `cand_mask`.

    Structural problems (missing columns, nulls, a candidate with the wrong number of
    features, per-candidate columns that disagree on a request's candidate count) raise
    ValueError naming the column; value checks are the caller's (`load_examples`).
    `max_candidates` refuses a request listing more candidates before anything is padded
    to its length (one such row would otherwise pad every request to it: [R, N, ...]).
    """
    table = read_table(path, ["user_id", "ts", "req_sparse", "req_dense", "cand_mask",
                              *_PER_CANDIDATE, "true_prob"])
    names = set(table.column_names)
    missing = [c for c in ("user_id", "ts", "req_sparse", "req_dense") + _PER_CANDIDATE
               if c not in names]
    if missing:                 # name all the file's columns (a misspelt one is among them)
        _, pq = require_pyarrow()
        raise ValueError(f"missing columns {missing} (has {sorted(pq.read_schema(path).names)})")
    out: dict[str, np.ndarray] = {"user_id": flat_column(table, "user_id"),
                                  "ts": seconds_column(table, "ts"),
                                  "req_sparse": list_column(table, "req_sparse"),
                                  "req_dense": list_column(table, "req_dense")}
    if max_candidates is not None:
        for name in _PER_CANDIDATE + ("true_prob", "cand_mask"):
            per_row = list_lengths(table, name) if name in names else None
            if per_row is not None and per_row.size and int(per_row.max()) > max_candidates:
                row = int(np.argmax(per_row > max_candidates))
                raise ValueError(f"{name}: {int(per_row[row])} candidates exceed the limit "
                                 f"{max_candidates} (request {row})")
    counts = None
    for name in _PER_CANDIDATE + (("true_prob",) if "true_prob" in names else ()):
        out[name], per_row = nested_list_column(table, name)
        if counts is None:
            counts = per_row
        elif not np.array_equal(per_row, counts):
            row = int(np.flatnonzero(per_row != counts)[0])
            raise ValueError(f"{name}: request {row} lists {int(per_row[row])} candidates, "
                             f"cand_sparse lists {int(counts[row])}")
    assert counts is not None
    listed = np.arange(out["cand_sparse"].shape[1])[None, :] < counts[:, None]
    if "cand_mask" in names:
        mask, per_row = ragged_list_column(table, "cand_mask")
        if not np.array_equal(per_row, counts):
            row = int(np.flatnonzero(per_row != counts)[0])
            raise ValueError(f"cand_mask: request {row} has {int(per_row[row])} entries for "
                             f"{int(counts[row])} candidates")
        out["cand_mask"] = np.where(listed, mask, np.zeros((), mask.dtype))
    else:
        out["cand_mask"] = listed
    meta = table.schema.metadata or {}
    if _META_TASKS in meta:
        out["tasks"] = _meta_tasks(meta[_META_TASKS])
    if _META_VERSION in meta:
        try:
            out["format_version"] = np.int64(int(meta[_META_VERSION].decode()))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"schema metadata {_META_VERSION.decode()}: expected an integer, "
                             f"got {meta[_META_VERSION][:80]!r}") from None
    return out


def _meta_tasks(raw: bytes) -> np.ndarray:
    """The task names of the schema metadata (a JSON list of strings)."""
    try:
        tasks = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        tasks = None
    if not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise ValueError(f"schema metadata {_META_TASKS.decode()}: expected a JSON list of "
                         f"task names, got {raw[:80]!r}")
    return np.asarray(tasks, dtype=str)


__all__ = ["write_examples_parquet", "read_examples_parquet", "examples_table"]
