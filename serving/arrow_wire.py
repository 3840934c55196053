"""Arrow IPC bodies for /v1/rank (`application/vnd.apache.arrow.stream`).

A request is an Arrow IPC stream holding one row whose columns are the JSON body's fields,
with the same names and nesting (`cand_sparse` a list of lists, or of fixed-size lists;
`context` a struct; `ts` unix seconds or an Arrow timestamp), the layout of a row of an
examples Parquet file. Columns may be absent or null where the JSON field is optional.
Feature columns reach the batch as whole arrays: their types, widths and values are
checked vectorized and refused with the same status and field path (`cand_dense[3][1]`)
as JSON, never element by element in Python, so a request of thousands of candidates
costs little to decode. The scalar columns go through the same pydantic model as JSON
(`RankOptions`). Compressed (lz4 / zstd) buffers are refused: they could inflate far past
the body size limit.

The response is a one-row stream with the JSON response's fields (`scores` as float32).
pyarrow is an optional dependency (`arm-jax[arrow]`); a server without it answers 415.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from arm_jax.config import FeaturesConfig
from arm_jax.data.arrow import PyarrowMissing, is_list_type
from serving.schema import (INT32_MAX, FieldError, RankArrays, RankOptions, RankRequest,
                            parse_model)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
INSTALL_HINT = "pip install 'arm-jax[arrow]' (or pyarrow)"

ID_COLUMNS = ("req_sparse", "hist_item", "hist_action")        # flat lists of ids
REAL_COLUMNS = ("req_dense", "hist_gap")                       # flat lists of reals
OPTION_COLUMNS = tuple(RankOptions.model_fields)
REQUIRED_COLUMNS = ("req_sparse", "req_dense", "cand_sparse", "cand_dense")


class ArrowUnavailable(PyarrowMissing):
    """pyarrow is not installed: Arrow bodies cannot be read or written here."""


def _pa() -> Any:
    """pyarrow (with pyarrow.ipc), or ArrowUnavailable saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401 - registers pa.ipc
    except ImportError as e:
        raise ArrowUnavailable(f"Arrow IPC bodies need pyarrow: {INSTALL_HINT}") from e
    return pa


def require_arrow() -> None:
    """Raise ArrowUnavailable (naming the extra to install) unless pyarrow is importable."""
    _pa()


def arrow_available() -> bool:
    """Whether pyarrow can be imported (Arrow IPC bodies are optional: `arm-jax[arrow]`)."""
    try:
        require_arrow()
    except ArrowUnavailable:
        return False
    return True


# ---------------------------------------------------------------------------- client side

def _typed(values: Any, dtype: Any) -> np.ndarray:
    """Ids as int32 when they fit (every valid id does), else int64, so the server, not
    the client, names an id out of range; reals as float64 (JSON's precision)."""
    arr = np.asarray(values, dtype)
    if dtype is np.int64 and arr.size and arr.min() >= 0 and arr.max() <= INT32_MAX:
        arr = arr.astype(np.int32)
    return arr


def _list_array(pa: Any, values: Any, dtype: Any) -> Any:
    arr = _typed(values, dtype)
    return pa.array([arr], type=pa.list_(pa.from_numpy_dtype(arr.dtype)))


def _rows_array(pa: Any, rows: Any, dtype: Any) -> Any:
    """[n, w] values -> one row of list<fixed_size_list<w>> (list<list<>> when there are no
    values: no rows, as an empty history's hist_side, or rows of width 0; pyarrow has no
    fixed_size_list<0>)."""
    arr = _typed(rows, dtype)
    arr = arr.reshape(len(arr), -1) if arr.size else arr.reshape(len(arr), 0)
    values = pa.array(arr.reshape(-1), pa.from_numpy_dtype(arr.dtype))
    if arr.shape[1]:
        inner = pa.FixedSizeListArray.from_arrays(values, arr.shape[1])
    else:
        inner = pa.ListArray.from_arrays(pa.array(np.zeros(len(arr) + 1, np.int32)), values)
    return pa.ListArray.from_arrays(pa.array([0, len(arr)], pa.int32()), inner)


def encode_request(payload: Mapping[str, Any]) -> bytes:
    """A /v1/rank payload (the JSON body's dict; lists or numpy arrays) as an Arrow IPC
    stream of one row. Ids are sent as int32 (int64 if any is out of range), reals as
    float64; None fields are left out. ValueError naming a field no Arrow column can hold
    (mixed types); other bad values are sent, for the server to name."""
    pa = _pa()
    cols: dict[str, Any] = {}
    for name, value in payload.items():
        if value is None:
            continue
        try:
            cols[name] = _column(pa, name, value)
        except (ValueError, TypeError, OverflowError):
            # not numbers of one shape (ragged rows, strings...): sent as pyarrow infers
            # them, so the server names the field, as it does for the same JSON
            try:
                cols[name] = pa.array([value])
            except pa.ArrowException as e:       # mixed types: no Arrow column holds them
                raise ValueError(f"{name}: cannot be sent as an Arrow column: {e}") from None
    return _stream(pa, pa.table(cols))


def _column(pa: Any, name: str, value: Any) -> Any:
    """One payload field as a one-row Arrow column of the type the server reads fastest."""
    if name in ID_COLUMNS:
        return _list_array(pa, value, np.int64)
    if name in REAL_COLUMNS:
        return _list_array(pa, value, np.float64)
    if name in ("cand_sparse", "hist_side"):
        return _rows_array(pa, value, np.int64)
    if name == "cand_dense":
        return _rows_array(pa, value, np.float64)
    return pa.array([value])   # scalars and the context struct, typed as JSON would be


def _stream(pa: Any, table: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_response(data: bytes) -> dict[str, Any]:
    """An Arrow /v1/rank response -> the same dict the JSON response decodes to."""
    pa = _pa()
    rows = pa.ipc.open_stream(data).read_all().to_pylist()
    if len(rows) != 1:
        raise ValueError(f"expected a one-row Arrow response, got {len(rows)} rows")
    return rows[0]


# ---------------------------------------------------------------------------- server side

def encode_response(body: Mapping[str, Any], probs: np.ndarray) -> bytes:
    """The response fields of `body` (JSON's) as a one-row Arrow stream; `scores` are the
    float32 probabilities [N, tasks] themselves, not JSON's rounded float64."""
    pa = _pa()
    probs = np.asarray(probs, np.float32)
    scores = pa.ListArray.from_arrays(
        pa.array([0, len(probs)], pa.int32()),
        pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), probs.shape[1]))
    timings = pa.StructArray.from_arrays(
        [pa.array([float(body["timings"][k])]) for k in ("queue_ms", "compute_ms", "total_ms")],
        ["queue_ms", "compute_ms", "total_ms"])
    s, i32, f32 = pa.string(), pa.int32(), pa.float32()
    table = pa.table({
        "request_id": pa.array([body["request_id"]], s),
        "tier": pa.array([body["tier"]], s),
        "preferred_tier": pa.array([body["preferred_tier"]], s),
        "degraded": pa.array([body["degraded"]], pa.bool_()),
        "degraded_reason": pa.array([body["degraded_reason"]], s),
        "history_source": pa.array([body["history_source"]], s),
        "tasks": pa.array([body["tasks"]], pa.list_(s)),
        "scores": scores,
        "ranking": pa.array([body["ranking"]], pa.list_(i32)),
        "top_scores": pa.array([body["top_scores"]], pa.list_(f32)),
        "bucket": pa.array([body["bucket"]], pa.list_(i32)),
        "batch_size": pa.array([body["batch_size"]], i32),
        "timings": timings,
    })
    return _stream(pa, table)


def _list_values(pa: Any, col: Any, name: str) -> Any:
    """Every value of the lists in list array `col`, in order (its `flatten()`, without
    the compute-kernel call: this runs for every column of every request)."""
    if not is_list_type(col.type):
        raise FieldError(name, f"expected a list column, got {col.type}")
    if pa.types.is_fixed_size_list(col.type):
        size = col.type.list_size
        return col.values.slice(col.offset * size, len(col) * size)
    offsets = col.offsets.to_numpy()
    return col.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _numbers(pa: Any, values: Any, loc: Any, *, ids: bool, nonneg: bool = False) -> np.ndarray:
    """Arrow values -> int64 ids in [0, INT32_MAX] or finite float64 reals (>= 0 when
    `nonneg`); `loc(k)` names the k-th flat value in an error."""
    t = values.type
    if not len(values):           # an empty list of any type (pyarrow infers list<null>)
        return np.zeros(0, np.int64 if ids else np.float64)
    if pa.types.is_null(t):       # no buffers: any length costs the sender nothing
        raise FieldError(loc(0), "null values are not allowed")
    if values.null_count:
        k = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
        raise FieldError(loc(k), "null values are not allowed")
    if ids and not pa.types.is_integer(t):
        raise FieldError(loc(None), f"expected integer ids, got {t} values")
    if not ids and not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise FieldError(loc(None), f"expected numbers, got {t} values")
    arr = values.to_numpy(zero_copy_only=False)
    if ids:
        bad = (arr < 0) | (arr > INT32_MAX)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise FieldError(loc(k), f"must be in [0, {INT32_MAX}], got {arr[k]}")
        return arr.astype(np.int64)
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) | ((arr < 0) if nonneg else False)
    if np.any(bad):
        k = int(np.flatnonzero(bad)[0])
        want = "a finite number >= 0" if nonneg else "a finite number"
        raise FieldError(loc(k), f"must be {want}, got {arr[k]}")
    return arr


def _flat(pa: Any, record: Any, name: str, *, ids: bool, nonneg: bool = False) -> np.ndarray:
    values = _list_values(pa, record.column(name), name)
    return _numbers(pa, values, lambda k: name if k is None else f"{name}[{k}]",
                    ids=ids, nonneg=nonneg)


def _nested(pa: Any, record: Any, name: str, width: int, key: str, *, ids: bool,
            max_rows: int | None = None) -> np.ndarray:
    """A list<list<x>> column's one row -> [rows, width]; a row of another width is named."""
    rows = _list_values(pa, record.column(name), name)
    if max_rows is not None and len(rows) > max_rows:
        raise FieldError(name, f"{len(rows)} candidates exceed the limit {max_rows}", 413)
    if not len(rows):           # no rows, of any type (pyarrow infers list<null> for [[]])
        return np.zeros((0, width), np.int64 if ids else np.float64)
    if not is_list_type(rows.type):
        raise FieldError(name, f"expected a list of lists, got a list of {rows.type}")
    if rows.null_count:
        i = int(np.flatnonzero(rows.is_null().to_numpy(zero_copy_only=False))[0])
        raise FieldError(f"{name}[{i}]", "null rows are not allowed")
    if pa.types.is_fixed_size_list(rows.type):
        lengths = np.full(len(rows), rows.type.list_size)
    else:
        lengths = np.diff(rows.offsets.to_numpy(zero_copy_only=False))
    wrong = np.flatnonzero(lengths != width)
    if wrong.size:
        i = int(wrong[0])
        raise FieldError(f"{name}[{i}]", f"expected {width} values ({key}), got {lengths[i]}")
    values = _numbers(pa, _list_values(pa, rows, name),
                      lambda k: name if k is None else f"{name}[{k // width}][{k % width}]",
                      ids=ids)
    return values.reshape(len(rows), width)


def _compressed(metadata: bytes) -> bool:
    """Does this IPC message (its flatbuffer metadata) carry lz4/zstd-compressed buffers?

    Arrow's Message.fbs: Message {version, header_type, header, bodyLength, ...} with
    header a RecordBatch {length, nodes, buffers, compression, ...} or a DictionaryBatch
    {id, data: RecordBatch, ...}; a compressed batch has its `compression` field set.
    pyarrow exposes no such query and decompresses whatever it reads.
    """
    from flatbuffers import encode, packer
    from flatbuffers import number_types as fbn
    from flatbuffers.table import Table

    def field(t: Table, slot: int) -> int:
        return t.Offset(4 + 2 * slot)

    buf = bytearray(metadata)
    msg = Table(buf, encode.Get(packer.uoffset, buf, 0))
    o = field(msg, 1)
    kind = msg.Get(fbn.Uint8Flags, o + msg.Pos) if o else 0
    o = field(msg, 2)
    if kind not in (2, 3) or not o:                 # not a (dictionary) record batch
        return False
    header = Table(buf, msg.Indirect(o + msg.Pos))
    if kind == 2:                                   # DictionaryBatch.data
        o = field(header, 1)
        if not o:
            return False
        header = Table(buf, header.Indirect(o + header.Pos))
    return bool(field(header, 3))


def _read_stream(pa: Any, body: bytes) -> list[Any]:
    """The stream's record batches, validated; 400 if unreadable or inconsistent, 415 if its
    buffers are compressed (a few KB of zstd can inflate to GBs: bodies are bounded by
    their size as sent)."""
    try:
        for message in pa.ipc.MessageReader.open_stream(body):
            if _compressed(message.metadata.to_pybytes()):
                raise FieldError("body", "compressed Arrow IPC buffers (lz4 / zstd) are not "
                                         "accepted: send an uncompressed stream", 415)
        batches = list(pa.ipc.open_stream(body))
        for batch in batches:
            # pyarrow's reader trusts the lengths a stream declares: unchecked, a list whose
            # offsets or a column whose length outrun its buffers is read past them (a
            # segfault on a 2 KB body), a dictionary index past its dictionary raises
            # ArrowIndexError. One linear pass over the (size-limited) body.
            batch.validate(full=True)
        return batches
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, FieldError):
            raise
        raise FieldError("body", f"malformed Arrow IPC stream: {type(e).__name__}: "
                                 f"{str(e)[:120]}", 400) from None


def _options(pa: Any, record: Any) -> RankOptions:
    """The scalar columns through pydantic, as JSON's fields are (a null is an absent field;
    `ts` may also be an Arrow timestamp, as in an examples file: whole seconds)."""
    fields = {}
    for name in OPTION_COLUMNS:
        if name in record.schema.names:
            col = record.column(name)
            if name == "ts" and pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("s", tz=col.type.tz), safe=False).cast(pa.int64())
            try:     # to_pylist: a struct scalar's as_py is quadratic in its fields
                value = col.to_pylist()[0]
            except (ValueError, OverflowError) as e:    # a date / time past Python's range
                raise FieldError(name, f"{col.type} value outside Python's range "
                                       f"({e})") from None
            if value is not None:
                fields[name] = value
    return parse_model(RankOptions, fields)


def decode_request(body: bytes, features: FeaturesConfig,
                   max_candidates: int) -> tuple[RankOptions, RankArrays]:
    """An Arrow /v1/rank body -> (scalar fields, feature arrays) for `pack_batch`.

    FieldError: 400 on an unreadable stream, 422 naming the column (and index) on a wrong
    type, width, null or value, 413 past `max_candidates`; 415 on compressed buffers or
    without pyarrow.
    """
    try:
        pa = _pa()
    except ArrowUnavailable as e:
        raise FieldError("content-type", f"{ARROW_STREAM} is not supported by this server: "
                                         f"{e}", 415) from None
    batches = _read_stream(pa, body)
    rows = sum(b.num_rows for b in batches)
    if rows != 1:
        raise FieldError("body", f"expected one row (one request), got {rows}")
    record = next(b for b in batches if b.num_rows)    # a RecordBatch: plain arrays
    names = record.schema.names
    known = set(RankRequest.model_fields)
    for name in names:
        if name not in known:
            raise FieldError(name, "Extra inputs are not permitted")
        if names.count(name) > 1:
            raise FieldError(name, f"the column appears {names.count(name)} times")
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise FieldError(name, "field required")
        if record.column(name).null_count:
            raise FieldError(name, "must not be null")
    options = _options(pa, record)
    f = features

    def optional_flat(name: str, **kw: Any) -> np.ndarray:
        if name not in names or record.column(name).null_count:
            return np.zeros(0, np.float64 if name == "hist_gap" else np.int64)
        return _flat(pa, record, name, **kw)

    def rows(name: str) -> int:     # declared, not read: a fixed-size list of nulls costs
        return len(_list_values(pa, record.column(name), name))     # nothing per row

    # the row counts of cand_dense and hist_side are checked (as pack_batch would) before
    # their rows are read, so the candidate and history limits bound what they cost
    cand_sparse = _nested(pa, record, "cand_sparse", f.cand_sparse_fields, "cand_sparse_fields",
                          ids=True, max_rows=max_candidates)
    n = len(cand_sparse)
    if n == 0:
        raise FieldError("cand_sparse", "need at least 1 candidate")
    if rows("cand_dense") != n:
        raise FieldError("cand_dense", f"expected {n} rows (one per candidate), "
                                       f"got {rows('cand_dense')}")
    hist_item = optional_flat("hist_item", ids=True)
    L = len(hist_item)
    if L > f.max_history:
        raise FieldError("hist_item", f"{L} events exceed the limit max_history={f.max_history}",
                         413)
    hist_side = None
    if "hist_side" in names and not record.column("hist_side").null_count:
        if rows("hist_side") != L:
            raise FieldError("hist_side", f"expected {L} rows (one per hist_item event), "
                                          f"got {rows('hist_side')}")
        hist_side = _nested(pa, record, "hist_side", len(f.history_side_fields),
                            f"history_side_fields={list(f.history_side_fields)}", ids=True)
    arrays = RankArrays(
        req_sparse=_flat(pa, record, "req_sparse", ids=True),
        req_dense=_flat(pa, record, "req_dense", ids=False),
        hist_item=hist_item,
        hist_action=optional_flat("hist_action", ids=True),
        hist_gap=optional_flat("hist_gap", ids=False, nonneg=True),
        hist_side=hist_side,
        cand_sparse=cand_sparse,
        cand_dense=_nested(pa, record, "cand_dense", f.cand_dense_features,
                           "cand_dense_features", ids=False))
    return options, arrays


__all__ = ["ARROW_STREAM", "ArrowUnavailable", "arrow_available", "require_arrow",
           "decode_request",
           "decode_response", "encode_request", "encode_response"]
