"""Wire format of /v1/rank (JSON or msgpack, same shape) and its validation into a RequestBatch.

Validation happens here, once: pydantic checks types, finiteness and signs (strict:
no "1" for 1, no true for 1, no "NaN"); `to_batch` checks widths, ragged rows and
limits, then `make_batch` checks ranges. Every failure is a `FieldError` that names the
field (with its index path) and the limit, answered as 4xx by the app.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Annotated, Any, TypeVar

import numpy as np
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arm_jax.batch import UNKNOWN_SIDE, BatchError, RequestBatch, expected_widths, make_batch
from arm_jax.config import FeaturesConfig
from arm_jax.data.catalog import ItemCatalog, empty_catalog
from arm_jax.store.base import TS_LIMIT

INT32_MAX = 2**31 - 1
Id = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)]
Real = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Gap = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
T = TypeVar("T")
# A request's lists stop at their first bad value: only the first error is reported, and
# pydantic turning every one of 2 million bad ids (an 8 MB body) into an error took 25 s.
Vec = Annotated[list[T], Field(fail_fast=True)]
# Objects stop at their first unknown key likewise (pydantic has no fail_fast for extras:
# 1M unknown keys in a 14 MB JSON body kept the event loop for ~9 s). A JSON body with more
# ':' than this may hold such an object and is parsed once more to drop them (`_trim_json`).
JSON_SCAN_COLONS = 1024


class FieldError(ValueError):
    """A request field is invalid. `status` is the HTTP code to answer with."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class Context(BaseModel):
    """Declared request context the rules policy may use."""

    model_config = ConfigDict(extra="forbid")
    intent: str | None = Field(None, max_length=64, description="e.g. 'purchase', 'browse'")
    value: Real | None = Field(None, description="declared value of the request (e.g. bid)")


class RankOptions(BaseModel):
    """A request's scalar fields: who and when, and how to serve it. The Arrow IPC wire
    format validates these with pydantic and the feature columns as whole arrays."""

    model_config = ConfigDict(extra="forbid")
    request_id: str | None = Field(None, max_length=128)
    user_id: Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)] | None = Field(
        None, description="fetch this user's history from the server's store when no "
                          "hist_* fields are given")
    ts: Annotated[int, Field(strict=True, ge=0, le=TS_LIMIT)] | None = Field(
        None, description="request time in unix seconds (not milliseconds) for the history "
                          "cut (default: now)")
    deadline_ms: Annotated[float, Field(strict=True, ge=1, le=60000)] | None = None
    top_k: Annotated[int, Field(strict=True, ge=1, le=65536)] | None = None
    tier: str | None = Field(None, max_length=64, description="force a tier (still load-aware)")
    context: Context | None = None


class RankRequest(RankOptions):
    """One ranking request: a person, their history (newest first) and N candidates."""

    req_sparse: Vec[Id] = Field(..., description="request sparse ids [req_sparse_fields]")
    req_dense: Vec[Real] = Field(..., description="request dense features [req_dense_features]")
    hist_item: Vec[Id] = Field(default_factory=list, description="item ids, newest first")
    hist_action: Vec[Id] = Field(default_factory=list, description="action type per event")
    hist_gap: Vec[Gap] = Field(default_factory=list, description="seconds before the request")
    hist_side: Vec[Vec[Id]] | None = Field(
        None, description="[len(hist_item)][len(history_side_fields)] side ids of each event's "
                          f"item (e.g. advertiser, topic), {UNKNOWN_SIDE} if unknown; absent: "
                          "the server's item catalogue fills them (unknown without one)")
    cand_sparse: Vec[Vec[Id]] = Field(..., description="[N][cand_sparse_fields] ids")
    cand_dense: Vec[Vec[Real]] = Field(..., description="[N][cand_dense_features]")


class Timings(BaseModel):
    queue_ms: float
    compute_ms: float
    total_ms: float


class RankResponse(BaseModel):
    request_id: str | None
    tier: str
    preferred_tier: str
    degraded: bool
    degraded_reason: str | None = Field(
        None, description="'load' (stepped down under load) or a store failure: "
                          "'store_unavailable', 'store_corrupt', 'store_not_configured'")
    history_source: str = Field("inline", description="'inline', 'store' or 'none'")
    tasks: list[str]
    scores: list[list[float]] = Field(..., description="[N][tasks] probabilities")
    ranking: list[int] = Field(..., description="top-K candidate indices, best first")
    top_scores: list[float]
    bucket: list[int]
    batch_size: int
    timings: Timings


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str = Field(..., max_length=64)
    path: str = Field(..., max_length=4096, description="directory of the new weights")


@functools.cache
def _submodels(cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """cls's fields that hold a model (`context: Context | None`), by name."""
    out = {}
    for name, field in cls.model_fields.items():
        for t in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out[name] = t
    return out


def _trim_extras(cls: type[BaseModel], obj: Any) -> Any:
    """`obj` (itself when nothing is dropped) with every object that has more keys than its
    model has fields cut to its known fields and its first unknown key (models forbid
    extras): pydantic reports the same first error without making one per unknown key."""
    if not isinstance(obj, dict):
        return obj
    fields = cls.model_fields
    subs = {k: _trim_extras(m, obj[k]) for k, m in _submodels(cls).items() if k in obj}
    if len(obj) <= len(fields) and all(v is obj[k] for k, v in subs.items()):
        return obj
    out = {k: obj[k] for k in fields if k in obj} | subs
    first = next((k for k in obj if k not in fields), None)
    if first is not None:           # its error names the key, never the value
        out[first] = None
    return out


def _trim_json(cls: type[BaseModel], body: bytes) -> bytes:
    """`body`, or (when it has more than JSON_SCAN_COLONS ':', so may hold many keys) the same
    JSON through `_trim_extras`. Numbers and strings are re-encoded to the same values.
    The count costs ~10 us for a 150 KB body (bytes.count: ~45 us)."""
    if np.count_nonzero(np.frombuffer(body, np.uint8) == ord(":")) <= JSON_SCAN_COLONS:
        return body
    try:
        obj = pydantic_core.from_json(body)
    except ValueError:              # malformed: pydantic names it, as before
        return body
    trimmed = _trim_extras(cls, obj)
    return body if trimmed is obj else json.dumps(trimmed).encode()


def parse_model(cls: type[BaseModel], obj: Any) -> BaseModel:
    """pydantic validation -> FieldError naming the first bad field (with index path)."""
    if not isinstance(obj, dict):
        raise FieldError("body", f"expected an object, got {type(obj).__name__}")
    try:
        return cls.model_validate(_trim_extras(cls, obj))
    except ValidationError as e:
        raise _field_error(e) from None


def parse_json_model(cls: type[BaseModel], body: bytes) -> BaseModel:
    """`parse_model` straight from JSON bytes (one pass, no intermediate dicts and lists).

    The same status and field as `json.loads` then `parse_model` (pydantic's wording may
    differ: "array" for "list"): undecodable JSON is a 400 on "body",
    anything but an object a 422 on "body", a bad field a 422 naming it. About twice as
    fast for a request of a few hundred candidates, which the server pays on every request.
    """
    try:
        return cls.model_validate_json(_trim_json(cls, body))
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "json_invalid":
            raise FieldError("body", f"malformed JSON: {err['msg'][:120]}", 400) from None
        if err["type"] == "model_type" and not err["loc"]:
            got = type(err.get("input")).__name__
            raise FieldError("body", f"expected an object, got {got}") from None
        raise _field_error(e) from None


def _first_error(errors: list[dict]) -> dict:
    """The error a depth-first walk meets first: at every level a model's declared fields
    (their own errors and their sub-fields') before its unknown keys.

    pydantic's own order depends on its version and on the input's form: 2.13 validating
    JSON lists a level's unknown keys before its fields, validating a dict after them, as
    2.14 does for both. Re-sorting makes a JSON body and the same body as a dict (msgpack,
    tests) report the same field, whichever pydantic is installed.
    """
    first_seen: dict[tuple, int] = {}
    for i, err in enumerate(errors):
        for depth in range(1, len(err["loc"]) + 1):
            first_seen.setdefault(tuple(err["loc"][:depth]), i)

    def walk_order(err: dict) -> tuple:
        loc = tuple(err["loc"])
        unknown = err["type"] == "extra_forbidden"
        return tuple((int(unknown and depth == len(loc)), first_seen[loc[:depth]])
                     for depth in range(1, len(loc) + 1))

    return min(errors, key=walk_order)


def _field_error(e: ValidationError) -> FieldError:
    """The first error (`_first_error`) of a pydantic validation as a FieldError with its
    index path."""
    err = _first_error(e.errors())
    loc = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                  for i, p in enumerate(err["loc"])) or "body"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "field required"
    elif err["type"] != "extra_forbidden":
        msg = f"{msg}, got {got}"
    return FieldError(loc, msg)


@dataclasses.dataclass(frozen=True)
class RankArrays:
    """A request's feature fields as arrays (ids int64, reals float64), every nested list
    already rectangular and every value in range; `pack_batch` checks them against the
    schema. hist_side None: the server's item catalogue fills it."""

    req_sparse: np.ndarray     # [req_sparse_fields]
    req_dense: np.ndarray      # [req_dense_features]
    hist_item: np.ndarray      # [L], newest first
    hist_action: np.ndarray    # [L]
    hist_gap: np.ndarray       # [L] seconds before the request
    hist_side: np.ndarray | None   # [L, history_side_fields]
    cand_sparse: np.ndarray    # [N, cand_sparse_fields]
    cand_dense: np.ndarray     # [N, cand_dense_features]

    @property
    def has_inline_history(self) -> bool:
        """Did the request send any hist_* field (then the store is not read)?"""
        return bool(self.hist_item.size or self.hist_action.size or self.hist_gap.size
                    or (self.hist_side is not None and self.hist_side.size))

    def with_history(self, hist: dict[str, np.ndarray]) -> "RankArrays":
        """These arrays with the history `fetch_request_history` read from a store."""
        return dataclasses.replace(self, **{k: hist[k] for k in (
            "hist_item", "hist_action", "hist_gap", "hist_side")})


def _rows(name: str, rows: list[list[Any]], want: int, key: str, dtype: Any) -> np.ndarray:
    """A JSON list of rows -> [len(rows), want] array; the first row of another width is
    named with its index. numpy checks the shape; the row lengths are only read (in C)
    when it is not [len(rows), want]."""
    try:
        arr = np.asarray(rows, dtype)
    except ValueError:              # ragged: "inhomogeneous shape"
        arr = None
    if arr is not None and arr.shape == (len(rows), want):
        return arr
    if not rows:
        return np.zeros((0, want), dtype)
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    i = int(np.flatnonzero(lengths != want)[0])
    raise FieldError(f"{name}[{i}]", f"expected {want} values ({key}), got {lengths[i]}")


def request_arrays(req: RankRequest, features: FeaturesConfig,
                   max_candidates: int) -> RankArrays:
    """The feature lists of a validated JSON / msgpack request as RankArrays (its nested
    lists checked row by row against the schema's widths)."""
    f = features
    n = len(req.cand_sparse)
    if n > max_candidates:      # before walking the rows of an oversized request
        raise FieldError("cand_sparse", f"{n} candidates exceed the limit {max_candidates}", 413)
    hist_side = None
    if req.hist_side is not None:
        s = len(f.history_side_fields)
        hist_side = _rows("hist_side", req.hist_side, s,
                          f"history_side_fields={list(f.history_side_fields)}", np.int64)
    return RankArrays(
        req_sparse=np.asarray(req.req_sparse, np.int64),
        req_dense=np.asarray(req.req_dense, np.float64),
        hist_item=np.asarray(req.hist_item, np.int64),
        hist_action=np.asarray(req.hist_action, np.int64),
        hist_gap=np.asarray(req.hist_gap, np.float64),
        hist_side=hist_side,
        cand_sparse=_rows("cand_sparse", req.cand_sparse, f.cand_sparse_fields,
                          "cand_sparse_fields", np.int64),
        cand_dense=_rows("cand_dense", req.cand_dense, f.cand_dense_features,
                         "cand_dense_features", np.float64))


BODY_BYTES_PER_VALUE = 64      # a float's longest JSON form is 24 characters; indentation too
BODY_BYTES_BASE = 64 * 1024    # the scalar fields, the context, brackets


def default_body_limit(features: FeaturesConfig, max_candidates: int) -> int:
    """Bytes a request body may take when the operator sets no limit: 64 bytes for each
    number of a request at every limit (all candidates, the longest history) plus 64 KiB.
    Any JSON form of a valid request fits, indented ones included; a body beyond it can only
    be invalid, and parsing one used to hold the event loop for seconds."""
    f = features
    values = (f.req_sparse_fields + f.req_dense_features
              + max_candidates * (f.cand_sparse_fields + f.cand_dense_features)
              + f.max_history * (3 + len(f.history_side_fields)))
    return BODY_BYTES_BASE + BODY_BYTES_PER_VALUE * values


def pack_batch(a: RankArrays, features: FeaturesConfig, max_candidates: int,
               catalog: ItemCatalog | None = None) -> RequestBatch:
    """Check the arrays' sizes against the schema and limits, then pack a one-request
    RequestBatch. Events without hist_side get their side ids from `catalog`
    (UNKNOWN_SIDE for every event when there is none)."""
    f = features
    for name, arr, want, key in (
            ("req_sparse", a.req_sparse, f.req_sparse_fields, "req_sparse_fields"),
            ("req_dense", a.req_dense, f.req_dense_features, "req_dense_features")):
        if arr.size != want:
            raise FieldError(name, f"expected {want} values ({key}), got {arr.size}")
    n = len(a.cand_sparse)
    if n == 0:
        raise FieldError("cand_sparse", "need at least 1 candidate")
    if n > max_candidates:
        raise FieldError("cand_sparse", f"{n} candidates exceed the limit {max_candidates}", 413)
    if len(a.cand_dense) != n:
        raise FieldError("cand_dense", f"expected {n} rows (one per candidate), "
                                       f"got {len(a.cand_dense)}")
    L = len(a.hist_item)
    if L > f.max_history:
        raise FieldError("hist_item", f"{L} events exceed the limit max_history={f.max_history}",
                         413)
    for name in ("hist_action", "hist_gap"):
        if len(getattr(a, name)) != L:
            raise FieldError(name, f"expected {L} values (one per hist_item event), "
                                   f"got {len(getattr(a, name))}")
    if a.hist_side is None:
        hist_side = (catalog or empty_catalog(f.history_side_fields)).lookup(
            a.hist_item.reshape(1, L))
    elif len(a.hist_side) != L:
        raise FieldError("hist_side", f"expected {L} rows (one per hist_item event), "
                                      f"got {len(a.hist_side)}")
    else:
        hist_side = a.hist_side[None]
    f32 = float(np.finfo(np.float32).max)
    for name, vals in (("req_dense", a.req_dense), ("hist_gap", a.hist_gap),
                       ("cand_dense", a.cand_dense)):
        arr = np.abs(vals)
        if arr.size and arr.max() > f32:
            where = np.unravel_index(int(arr.argmax()), arr.shape)
            raise FieldError(name, f"value at {list(map(int, where))} overflows float32 "
                                   f"(limit {f32:.4g})")
    try:
        return make_batch(
            req_sparse=a.req_sparse.reshape(1, -1), req_dense=a.req_dense.reshape(1, -1),
            hist_item=a.hist_item.reshape(1, L), hist_action=a.hist_action.reshape(1, L),
            hist_gap=a.hist_gap.reshape(1, L), hist_len=np.asarray([L], np.int64),
            hist_side=hist_side, cand_sparse=a.cand_sparse[None], cand_dense=a.cand_dense[None],
            num_action_types=f.num_action_types,
            expected={**expected_widths(f), "candidates": max_candidates},
        )
    except BatchError as e:
        text = str(e)
        field, _, msg = text.partition(": ")
        raise FieldError(field or "body", msg or text) from None


def to_batch(req: RankRequest, features: FeaturesConfig, max_candidates: int,
             catalog: ItemCatalog | None = None) -> RequestBatch:
    """A validated JSON / msgpack request as a one-request RequestBatch (`request_arrays`
    then `pack_batch`)."""
    return pack_batch(request_arrays(req, features, max_candidates), features,
                      max_candidates, catalog)
