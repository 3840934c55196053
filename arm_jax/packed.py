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

from typing import Literal, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.batch import UNKNOWN_SIDE, BatchError, RequestBatch

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


def pack(requests: Sequence[dict[str, np.ndarray]], *, event_capacity: int | None = None,
         candidate_capacity: int | None = None, side_fields: int | None = None) -> PackedBatch:
    """Concatenate per-request dicts (keys: req_sparse [f_r], req_dense [e_r], request_ts,
    ev_item/ev_action/ev_ts [n_i] ascending in time, optional ev_side [n_i, side_fields]
    (absent: UNKNOWN_SIDE), cand_sparse [m_i, f_c], cand_dense [m_i, e_c]) into one
    PackedBatch, padded to the given capacities. `side_fields` (s) defaults to the width of
    the first request's ev_side, else 0."""
    if not requests:
        raise BatchError("requests: need at least one request")
    ev_counts = [len(r["ev_item"]) for r in requests]
    cand_counts = [len(r["cand_sparse"]) for r in requests]
    e_cap = event_capacity or max(1, sum(ev_counts))
    m_cap = candidate_capacity or max(1, sum(cand_counts))
    if sum(ev_counts) > e_cap:
        raise BatchError(f"ev_item: {sum(ev_counts)} events exceed the capacity {e_cap}")
    if sum(cand_counts) > m_cap:
        raise BatchError(f"cand_sparse: {sum(cand_counts)} candidates exceed the capacity {m_cap}")

    def flat(key: str, cap: int, dtype, width: int | None = None) -> np.ndarray:
        if width == 0:
            return np.zeros((cap, 0), dtype)
        parts = [np.asarray(r[key], dtype).reshape((-1,) if width is None else (-1, width))
                 for r in requests]
        out = np.concatenate(parts) if parts else np.zeros((0,), dtype)
        pad = ((0, cap - len(out)),) + (((0, 0),) if width is not None else ())
        return np.pad(out, pad)

    def width(key: str) -> int:
        """Row width of `key`, from the first request that has rows of it (a request
        with no candidates may send a bare `[]`, whose width says nothing)."""
        shapes = [np.shape(r[key]) for r in requests]
        for shape in shapes:
            if len(shape) == 2 and shape[0] > 0:
                return shape[1]
        return next((shape[1] for shape in shapes if len(shape) == 2), 0)

    f_c, e_c = width("cand_sparse"), width("cand_dense")
    for i, (r, m) in enumerate(zip(requests, cand_counts)):
        for key, w in (("cand_sparse", f_c), ("cand_dense", e_c)):
            shape = np.shape(r[key])
            if shape != (m, w) and not (m == 0 and shape == (0,)):
                raise BatchError(f"{key}: request {i} expected shape {(m, w)}, got {shape}")
        if len(np.shape(r["ev_ts"])) != 1 or len(r["ev_ts"]) != ev_counts[i]:
            raise BatchError(f"ev_ts: request {i} expected shape {(ev_counts[i],)}, "
                             f"got {np.shape(r['ev_ts'])}")
        if (np.diff(np.asarray(r["ev_ts"], np.int64)) < 0).any():
            # the point-in-time cut counts the events before the request from the front:
            # out of order, it would hand the model events from after the request
            raise BatchError(f"ev_ts: request {i} events are not in ascending time order")
    if side_fields is None:
        given = [np.shape(r["ev_side"]) for r in requests if "ev_side" in r]
        side_fields = given[0][1] if given and len(given[0]) == 2 else 0
    requests = [r if "ev_side" in r else
                {**r, "ev_side": np.full((n, side_fields), UNKNOWN_SIDE, np.int32)}
                for r, n in zip(requests, ev_counts)]
    for i, (r, n) in enumerate(zip(requests, ev_counts)):
        if np.shape(r["ev_side"]) != (n, side_fields):
            raise BatchError(f"ev_side: request {i} expected shape {(n, side_fields)}, "
                             f"got {np.shape(r['ev_side'])}")
    return PackedBatch(
        req_sparse=np.stack([np.asarray(r["req_sparse"], np.int32) for r in requests]),
        req_dense=np.stack([np.asarray(r["req_dense"], np.float32) for r in requests]),
        request_ts=np.asarray([r["request_ts"] for r in requests], np.int32),
        ev_item=flat("ev_item", e_cap, np.int32),
        ev_action=flat("ev_action", e_cap, np.int32),
        ev_ts=flat("ev_ts", e_cap, np.int32),
        ev_side=flat("ev_side", e_cap, np.int32, side_fields),
        ev_offsets=np.concatenate([[0], np.cumsum(ev_counts)]).astype(np.int32),
        cand_sparse=flat("cand_sparse", m_cap, np.int32, f_c),
        cand_dense=flat("cand_dense", m_cap, np.float32, e_c),
        cand_offsets=np.concatenate([[0], np.cumsum(cand_counts)]).astype(np.int32),
    )


def event_relevance(action_bl: jax.Array, age_bl: jax.Array,
                    action_weight: jax.Array | None = None) -> jax.Array:
    """Relevance of a history event: stronger actions and more recent events rank higher."""
    if action_weight is None:
        action_weight = jnp.arange(64, dtype=jnp.float32)  # later action types are stronger
    return action_weight[action_bl] - jnp.log1p(age_bl.astype(jnp.float32))


def unpack(packed: PackedBatch, *, candidates: int, history: int,
           selection: Selection = "recent", scan_events: int | None = None) -> RequestBatch:
    """In-graph: PackedBatch -> RequestBatch [b, candidates], history [b, history].

    Only events strictly before each request's timestamp are used. `scan_events`
    bounds how many of a user's most recent events "topk" selection considers
    (default 4 * history; at least `history`). A request with more than `candidates`
    candidates keeps its first `candidates` (pick the bucket from `cand_offsets`).
    """
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
