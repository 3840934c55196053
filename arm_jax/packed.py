"""Compact packed requests and their in-graph unpacking into a RequestBatch.

A packed batch stores what a request really has, without per-request padding:
candidate rows and history events of all requests concatenated in flat arrays
with offsets (as they come out of the user-log store: events ascending in time).
`unpack` runs inside the compiled function and produces the padded, masked
RequestBatch of a static bucket shape; per-request Python work is only the
concatenation.

History selection when a user has more events than the tier reads (L):
  * "recent": the L most recent events before the request;
  * "topk":   the L most relevant events by an in-graph relevance score
              (action weight minus log-age), chosen with the O(N) top-K dispatcher,
              then ordered most recent first.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.batch import (UNKNOWN_SIDE, BatchError, RequestBatch, checked_ids, checked_reals,
                           dtype_problem)

Selection = Literal["recent", "topk"]


@flax.struct.dataclass
class PackedBatch:
    """Flat request data. Shapes (E, M are capacities; unused tail rows are ignored):

    req_sparse   int32   [b, f_r]       req_dense   float32 [b, e_r]
    request_ts   int32   [b]            seconds (relative to any epoch; only differences matter)
    ev_item      int32   [E]            ev_action   int32 [E]     ev_ts  int32 [E]
    ev_side      int32   [E, s]         the event item's side ids (catalogue)
    ev_offsets   int32   [b + 1]        events of request i: ev_offsets[i] .. ev_offsets[i+1]
    cand_sparse  int32   [M, f_c]       cand_dense  float32 [M, e_c]
    cand_offsets int32   [b + 1]        candidates of request i
    """

    req_sparse: jax.Array
    req_dense: jax.Array
    request_ts: jax.Array
    ev_item: jax.Array
    ev_action: jax.Array
    ev_ts: jax.Array
    ev_side: jax.Array
    ev_offsets: jax.Array
    cand_sparse: jax.Array
    cand_dense: jax.Array
    cand_offsets: jax.Array


# Keys every request dict has (ev_side is optional).
REQUEST_KEYS = ("req_sparse", "req_dense", "request_ts", "ev_item", "ev_action", "ev_ts",
                "cand_sparse", "cand_dense")
SELECTIONS = ("recent", "topk")
_INT32 = np.iinfo(np.int32)


def pack(requests: Sequence[dict[str, np.ndarray]], *, event_capacity: int | None = None,
         candidate_capacity: int | None = None, side_fields: int | None = None) -> PackedBatch:
    """Concatenate per-request dicts (keys: req_sparse [f_r], req_dense [e_r], request_ts,
    ev_item/ev_action/ev_ts [n_i] ascending in time, optional ev_side [n_i, side_fields]
    (absent: UNKNOWN_SIDE), cand_sparse [m_i, f_c], cand_dense [m_i, e_c]) into one
    PackedBatch, padded to the given capacities. `side_fields` (s) defaults to the width of
    the first request's ev_side, else 0.

    Values are checked as make_batch checks them: ids (ev_action and ev_side too) integers
    in [0, 2^31 - 1], dense values finite; request_ts and ev_ts are integer seconds that
    int32 holds (a millisecond timestamp would wrap). Raises BatchError naming the key and
    the request."""
    if not requests:
        raise BatchError("requests: need at least one request")
    reqs = [_request_arrays(i, r) for i, r in enumerate(requests)]
    ev_counts, cand_counts = _check_shapes(reqs)
    e_cap = event_capacity or max(1, sum(ev_counts))
    m_cap = candidate_capacity or max(1, sum(cand_counts))
    if sum(ev_counts) > e_cap:
        raise BatchError(f"ev_item: {sum(ev_counts)} events exceed the capacity {e_cap}")
    if sum(cand_counts) > m_cap:
        raise BatchError(f"cand_sparse: {sum(cand_counts)} candidates exceed the capacity {m_cap}")

    def width(key: str) -> int:
        """Row width of `key`, from the first request that has rows of it (a request
        with no candidates may send a bare `[]`, whose width says nothing)."""
        shapes = [r[key].shape for r in reqs]
        for shape in shapes:
            if len(shape) == 2 and shape[0] > 0:
                return shape[1]
        return next((shape[1] for shape in shapes if len(shape) == 2), 0)

    f_c, e_c = width("cand_sparse"), width("cand_dense")
    for i, (r, m) in enumerate(zip(reqs, cand_counts)):
        for key, w in (("cand_sparse", f_c), ("cand_dense", e_c)):
            shape = r[key].shape
            if shape != (m, w) and not (m == 0 and shape == (0,)):
                raise BatchError(f"{key}: request {i} expected shape {(m, w)}, got {shape}")
    if side_fields is None:
        given = [r["ev_side"].shape for r in reqs if "ev_side" in r]
        side_fields = given[0][1] if given and len(given[0]) == 2 else 0
    for i, (r, n) in enumerate(zip(reqs, ev_counts)):
        if "ev_side" not in r:
            r["ev_side"] = np.full((n, side_fields), UNKNOWN_SIDE, np.int32)
        elif r["ev_side"].shape != (n, side_fields):
            raise BatchError(f"ev_side: request {i} expected shape {(n, side_fields)}, "
                             f"got {r['ev_side'].shape}")

    ev_offsets = np.concatenate([[0], np.cumsum(ev_counts)]).astype(np.int32)
    ev_ts = _flat(reqs, "ev_ts", _checked_ts, ())
    _check_time_order(ev_ts, ev_offsets)
    rows = lambda key, check, *what: _joined(reqs, key, check, np.stack, *what)  # noqa: E731
    request_ts = rows("request_ts", _checked_ts)
    _check_ages(request_ts, ev_ts, ev_offsets)
    return PackedBatch(
        req_sparse=rows("req_sparse", checked_ids),
        req_dense=rows("req_dense", checked_reals),
        request_ts=request_ts,
        ev_item=_pad_rows(_flat(reqs, "ev_item", checked_ids, ()), e_cap),
        ev_action=_pad_rows(_flat(reqs, "ev_action", checked_ids, ()), e_cap),
        ev_ts=_pad_rows(ev_ts, e_cap),
        ev_side=_pad_rows(_flat(reqs, "ev_side", checked_ids, (side_fields,)), e_cap),
        ev_offsets=ev_offsets,
        cand_sparse=_pad_rows(_flat(reqs, "cand_sparse", checked_ids, (f_c,)), m_cap),
        cand_dense=_pad_rows(_flat(reqs, "cand_dense", checked_reals, (e_c,)), m_cap),
        cand_offsets=np.concatenate([[0], np.cumsum(cand_counts)]).astype(np.int32),
    )


def _request_arrays(i: int, r: Any) -> dict[str, np.ndarray]:
    """Request `i`'s values as numpy arrays (not cast), or BatchError naming the key that
    is missing or ragged."""
    if not isinstance(r, Mapping):
        raise BatchError(f"requests: request {i} is a {type(r).__name__}, expected a dict "
                         f"with keys {', '.join(REQUEST_KEYS)} (and optional ev_side)")
    missing = [k for k in REQUEST_KEYS if k not in r]
    if missing:
        raise BatchError(f"{missing[0]}: request {i} has no {missing[0]!r} (a request has "
                         f"{', '.join(REQUEST_KEYS)}, and optional ev_side)")
    out = {}
    for k in REQUEST_KEYS + (("ev_side",) if "ev_side" in r else ()):
        try:
            out[k] = np.asarray(r[k])
        except ValueError as e:
            raise BatchError(f"{k}: request {i} is not a rectangular array ({e})") from None
    return out


def _check_shapes(reqs: list[dict[str, np.ndarray]]) -> tuple[list[int], list[int]]:
    """Ranks, the request widths every request shares, event arrays of one length ->
    (events, candidates) per request."""
    f_r, e_r = reqs[0]["req_sparse"].shape, reqs[0]["req_dense"].shape
    ev_counts, cand_counts = [], []
    for i, r in enumerate(reqs):
        for key, want in (("req_sparse", f_r), ("req_dense", e_r)):
            if r[key].ndim != 1 or r[key].shape != want:
                raise BatchError(f"{key}: request {i} expected shape {want} (a 1-D row as "
                                 f"wide as request 0's), got {r[key].shape}")
        if r["request_ts"].ndim != 0:
            raise BatchError(f"request_ts: request {i} expected one timestamp, got shape "
                             f"{r['request_ts'].shape}")
        if r["ev_item"].ndim != 1:
            raise BatchError(f"ev_item: request {i} expected shape (events,), got "
                             f"{r['ev_item'].shape}")
        n = len(r["ev_item"])
        for key in ("ev_action", "ev_ts"):
            if r[key].shape != (n,):     # one action and one time per event
                raise BatchError(f"{key}: request {i} expected shape {(n,)} like ev_item, "
                                 f"got {r[key].shape}")
        if r["cand_sparse"].ndim not in (1, 2):
            raise BatchError(f"cand_sparse: request {i} expected shape (candidates, fields), "
                             f"got {r['cand_sparse'].shape}")
        ev_counts.append(n)
        cand_counts.append(len(r["cand_sparse"]))
    return ev_counts, cand_counts


def _joined(reqs: list[dict[str, np.ndarray]], key: str, check, join, *what: str
            ) -> np.ndarray:
    """check(key, join(every request's non-empty `key`)): make_batch's checks once over
    the batch; on a failure, the message names the first request at fault."""
    parts = [r[key] for r in reqs]
    if join is np.concatenate:
        parts = [p for p in parts if p.size]
    kinds = {p.dtype.kind for p in parts}
    if len(kinds) > 1 and not kinds <= {"i", "u", "f"}:
        _name_request(reqs, key, check, *what)     # e.g. bools beside ints: joined as ints
    if kinds == {"i", "u"}:        # numpy joins int64 and uint64 into float64
        parts = [p.astype(np.int64) for p in parts]
    try:
        return check(key, parts[0] if len(parts) == 1 and join is np.concatenate
                     else join(parts), *what)
    except BatchError:
        _name_request(reqs, key, check, *what)
        raise


def _name_request(reqs: list[dict[str, np.ndarray]], key: str, check, *what: str) -> None:
    """BatchError naming the first request whose `key` fails `check` on its own."""
    for i, r in enumerate(reqs):
        try:
            check(key, r[key], *what)
        except BatchError as e:
            raise BatchError(f"{key}: request {i} {str(e).partition(': ')[2]}") from None


def _flat(reqs: list[dict[str, np.ndarray]], key: str, check, tail: tuple[int, ...],
          *what: str) -> np.ndarray:
    """Every request's rows of `key` concatenated and checked ([sum n_i, *tail])."""
    if not any(r[key].size for r in reqs):
        return np.zeros((0, *tail), np.float32 if check is checked_reals else np.int32)
    return _joined(reqs, key, check, np.concatenate, *what).reshape((-1, *tail))


def _pad_rows(a: np.ndarray, cap: int) -> np.ndarray:
    """`a` with zero rows up to `cap` (np.pad, at a fraction of its overhead)."""
    out = np.zeros((cap, *a.shape[1:]), a.dtype)
    out[:len(a)] = a
    return out


def _checked_ts(name: str, arr: np.ndarray) -> np.ndarray:
    """`arr` as int32 seconds, or BatchError: integers that int32 holds (a millisecond
    timestamp, or one past 2038, would wrap)."""
    if arr.size:
        problem = dtype_problem(name, arr.dtype, integer=True, what="seconds")
        if problem:
            raise BatchError(problem)
        for bad in (arr.min(), arr.max()):
            if bad < _INT32.min or bad > _INT32.max:
                raise BatchError(f"{name}: seconds must be in [{_INT32.min}, {_INT32.max}] "
                                 f"(int32; milliseconds?), got {int(bad)}")
    return arr.astype(np.int32)


def _check_ages(request_ts: np.ndarray, ev_ts: np.ndarray, ev_offsets: np.ndarray) -> None:
    """BatchError unless every request's oldest event is at most 2^31 - 1 seconds before it:
    unpack computes ages (request_ts - ev_ts) in int32."""
    has = ev_offsets[1:] > ev_offsets[:-1]
    if has.any():
        oldest = ev_ts[ev_offsets[:-1][has]].astype(np.int64)    # events ascend in time
        age = request_ts[has].astype(np.int64) - oldest
        if age.max() > _INT32.max:
            i = int(np.flatnonzero(has)[int(np.argmax(age))])
            raise BatchError(f"ev_ts: request {i} has an event {int(age.max())} seconds "
                             f"before request_ts, more than int32 ages hold ({_INT32.max})")


def _check_time_order(ev_ts: np.ndarray, ev_offsets: np.ndarray) -> None:
    """BatchError naming the first request whose events are not ascending in time: the
    point-in-time cut counts the events before the request from the front; out of order,
    it would hand the model events from after the request."""
    if len(ev_ts) < 2:
        return
    down = np.diff(ev_ts) < 0
    starts = ev_offsets[1:-1]
    starts = starts[(starts > 0) & (starts < len(ev_ts))]
    down[starts - 1] = False          # the step from one request's events to the next's
    if down.any():
        i = int(np.searchsorted(ev_offsets, int(np.argmax(down)), side="right")) - 1
        raise BatchError(f"ev_ts: request {i} events are not in ascending time order")


def event_relevance(action_bl: jax.Array, age_bl: jax.Array,
                    action_weight: jax.Array | None = None) -> jax.Array:
    """Relevance of a history event: stronger actions and more recent events rank higher.

    Action a weighs `action_weight[a]`, by default a itself (later action types are
    stronger), computed from the action rather than read from a table, so no action
    type is clamped to a table's last weight."""
    weight_bl = (action_bl.astype(jnp.float32) if action_weight is None
                 else action_weight[action_bl])
    return weight_bl - jnp.log1p(age_bl.astype(jnp.float32))


def unpack(packed: PackedBatch, *, candidates: int, history: int,
           selection: Selection = "recent", scan_events: int | None = None) -> RequestBatch:
    """In-graph: PackedBatch -> RequestBatch [b, candidates], history [b, history].

    Only events strictly before each request's timestamp are used. `scan_events`
    bounds how many of a user's most recent events "topk" selection considers
    (default 4 * history; at least `history`). A request with more than `candidates`
    candidates keeps its first `candidates` (pick the bucket from `cand_offsets`).
    """
    if selection not in SELECTIONS:
        raise BatchError(f"selection: must be one of {', '.join(map(repr, SELECTIONS))}, "
                         f"got {selection!r}")
    if scan_events is not None and scan_events < history:
        raise BatchError(f"scan_events={scan_events}: must be at least history={history} "
                         "(topk keeps `history` of the events it scans)")
    e_cap = packed.ev_item.shape[0]
    start_b, end_b = packed.ev_offsets[:-1], packed.ev_offsets[1:]
    # Point-in-time cut: the last event strictly before request_ts, per request.
    in_range = (jnp.arange(e_cap)[None, :] >= start_b[:, None]) & (
        jnp.arange(e_cap)[None, :] < end_b[:, None])
    before = in_range & (packed.ev_ts[None, :] < packed.request_ts[:, None])
    stop_b = start_b + before.sum(axis=1).astype(jnp.int32)
    window = history if selection == "recent" else (scan_events or 4 * history)
    idx_bw = stop_b[:, None] - 1 - jnp.arange(window)[None, :]
    valid_bw = idx_bw >= start_b[:, None]
    safe_bw = jnp.clip(idx_bw, 0, e_cap - 1)
    item_bw = jnp.where(valid_bw, packed.ev_item[safe_bw], 0)
    action_bw = jnp.where(valid_bw, packed.ev_action[safe_bw], 0)
    age_bw = jnp.where(valid_bw, packed.request_ts[:, None] - packed.ev_ts[safe_bw], 0)
    side_bws = jnp.where(valid_bw[..., None], packed.ev_side[safe_bw], 0)
    if selection == "topk" and window > history:
        from pallas_kernels.topk import topk

        score_bw = jnp.where(valid_bw, event_relevance(action_bw, age_bw), -jnp.inf)
        _, pick_bl = topk(score_bw, history)
        pick_bl = jnp.where(pick_bl < 0, window, pick_bl)
        pick_bl = jnp.sort(pick_bl, axis=-1)  # window position order = most recent first
        ok_bl = pick_bl < window
        pick_bl = jnp.minimum(pick_bl, window - 1)
        take = lambda x: jnp.take_along_axis(x, pick_bl, axis=1)  # noqa: E731
        item_bw, action_bw, age_bw = take(item_bw), take(action_bw), take(age_bw)
        side_bws = jnp.take_along_axis(side_bws, pick_bl[..., None], axis=1)
        valid_bw = ok_bl & take(valid_bw)
    hist_len_b = valid_bw.sum(axis=1).astype(jnp.int32)
    # Valid events come first in window order, so valid_bw is a prefix mask.
    cstart_b, cend_b = packed.cand_offsets[:-1], packed.cand_offsets[1:]
    cidx_bc = cstart_b[:, None] + jnp.arange(candidates)[None, :]
    cmask_bc = cidx_bc < cend_b[:, None]
    csafe_bc = jnp.clip(cidx_bc, 0, packed.cand_sparse.shape[0] - 1)
    zero = lambda x, m: jnp.where(m[..., None], x, 0)  # noqa: E731
    return RequestBatch(
        req_sparse=packed.req_sparse, req_dense=packed.req_dense,
        hist_item=item_bw[:, :history].astype(jnp.int32),
        hist_action=action_bw[:, :history].astype(jnp.int32),
        hist_gap=age_bw[:, :history].astype(jnp.float32),
        hist_len=jnp.minimum(hist_len_b, history),
        hist_side=side_bws[:, :history].astype(jnp.int32),
        cand_sparse=zero(packed.cand_sparse[csafe_bc], cmask_bc).astype(jnp.int32),
        cand_dense=zero(packed.cand_dense[csafe_bc], cmask_bc).astype(jnp.float32),
        cand_mask=cmask_bc,
    )
