"""In-graph unpacking of packed requests matches a plain numpy reference."""

import jax
import numpy as np
import pytest

from arm_jax.batch import BatchError
from arm_jax.packed import event_relevance, pack, unpack


def _requests(seed=0, n=3):
    r = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ne, nc = int(r.integers(0, 30)), int(r.integers(1, 6))
        ts = np.sort(r.integers(1_000, 100_000, ne))
        out.append(dict(
            req_sparse=r.integers(1, 99, 2), req_dense=r.normal(size=3),
            request_ts=int(r.integers(50_000, 120_000)),
            ev_item=r.integers(1, 10**5, ne), ev_action=r.integers(0, 4, ne), ev_ts=ts,
            ev_side=r.integers(1, 50, (ne, 2)),
            cand_sparse=r.integers(1, 99, (nc, 2)), cand_dense=r.normal(size=(nc, 1))))
    return out


def _reference(req, history):
    keep = req["ev_ts"] < req["request_ts"]
    item, action, ts, side = (req[k][keep][::-1][:history]
                              for k in ("ev_item", "ev_action", "ev_ts", "ev_side"))
    return item, action, req["request_ts"] - ts, side


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recent_selection_matches_reference(seed):
    reqs = _requests(seed)
    packed = pack(reqs, event_capacity=128, candidate_capacity=32, side_fields=2)
    batch = jax.jit(lambda p: unpack(p, candidates=8, history=10))(packed)
    for i, req in enumerate(reqs):
        item, action, gap, side = _reference(req, 10)
        n = len(item)
        assert int(batch.hist_len[i]) == n
        np.testing.assert_array_equal(batch.hist_item[i, :n], item)
        np.testing.assert_array_equal(batch.hist_action[i, :n], action)
        np.testing.assert_allclose(batch.hist_gap[i, :n], gap)
        np.testing.assert_array_equal(batch.hist_side[i, :n], side)
        assert (np.asarray(batch.hist_item[i, n:]) == 0).all()
        nc = len(req["cand_sparse"])
        np.testing.assert_array_equal(batch.cand_mask[i], np.arange(8) < nc)
        np.testing.assert_array_equal(batch.cand_sparse[i, :nc], req["cand_sparse"])
        np.testing.assert_allclose(batch.cand_dense[i, :nc], req["cand_dense"], rtol=1e-6)


def test_event_relevance_ranks_stronger_actions_and_recent_events_higher():
    """The reference below reads event_relevance itself: pin down what it must mean."""
    rel = lambda a, g: float(np.asarray(event_relevance(np.array([a]), np.array([g])))[0])  # noqa: E731
    assert rel(3, 100.0) > rel(2, 100.0) > rel(0, 100.0)     # same age: stronger action
    assert rel(1, 10.0) > rel(1, 1000.0) > rel(1, 1e5)       # same action: more recent
    assert rel(3, 100.0) > rel(0, 10.0)                      # ... even when somewhat older


def test_topk_selection_keeps_the_most_relevant_events_most_recent_first():
    reqs = _requests(5, n=4)
    packed = pack(reqs, event_capacity=128, candidate_capacity=32, side_fields=2)
    batch = jax.jit(lambda p: unpack(p, candidates=8, history=6, selection="topk",
                                     scan_events=32))(packed)
    recent = jax.jit(lambda p: unpack(p, candidates=8, history=6))(packed)
    # not the recency cut under another name: some request keeps an older, stronger event
    assert not np.array_equal(np.asarray(batch.hist_item), np.asarray(recent.hist_item))
    for i, req in enumerate(reqs):
        item, action, gap, side = _reference(req, 32)
        score = np.asarray(event_relevance(action, gap))
        want = np.sort(np.lexsort((np.arange(len(score)), -score))[:6])  # top by score, then recency
        n = min(6, len(item))
        assert int(batch.hist_len[i]) == n
        np.testing.assert_array_equal(batch.hist_item[i, :n], item[want])
        np.testing.assert_array_equal(batch.hist_side[i, :n], side[want])
        assert (np.diff(np.asarray(batch.hist_gap[i, :n])) >= 0).all()  # most recent first
        # never an event at or after the request time
        assert (np.asarray(batch.hist_gap[i, :n]) > 0).all()


def test_pack_refuses_over_capacity():
    with pytest.raises(BatchError, match="cand_sparse: .* candidates exceed the capacity 2"):
        pack(_requests(0), candidate_capacity=2, event_capacity=500)
    with pytest.raises(BatchError, match="requests: need at least one request"):
        pack([])


def test_pack_and_unpack_refuse_what_they_would_silently_get_wrong():
    reqs = _requests(0)
    # topk scanning fewer events than it keeps: history came back [b, scan_events]
    with pytest.raises(BatchError, match="scan_events=4: must be at least history=10"):
        unpack(pack(reqs, side_fields=2), candidates=8, history=10, selection="topk",
               scan_events=4)
    # events out of time order: the cut would hand over events after the request
    late = dict(reqs[0], ev_item=np.array([1, 2, 3]), ev_action=np.zeros(3, int),
                ev_ts=np.array([10, 30, 20]), ev_side=np.ones((3, 2), int), request_ts=25)
    with pytest.raises(BatchError, match="ev_ts: request 0 events are not in ascending"):
        pack([late], side_fields=2)
    # a candidate width that is not the others'
    wide = dict(reqs[1], cand_sparse=np.ones((len(reqs[1]["cand_sparse"]), 3), int))
    with pytest.raises(BatchError, match=r"cand_sparse: request 1 expected shape \(5, 2\)"):
        pack([reqs[0], wide], side_fields=2, candidate_capacity=32)
    # a first request with no candidates, sent as a bare []: the others' rows are kept
    packed = pack([dict(reqs[0], cand_sparse=[], cand_dense=[]), reqs[1]], side_fields=2)
    assert packed.cand_sparse.shape == (5, 2) and packed.cand_dense.shape == (5, 1)
    np.testing.assert_array_equal(packed.cand_sparse, reqs[1]["cand_sparse"])


def test_pack_refuses_ev_action_of_another_length():
    """Request 0 with 2 actions for 3 events beside request 1 with 4 used to shift request
    1's first action onto request 0's third event."""
    reqs = _requests(0)
    short = dict(reqs[0], ev_item=np.arange(3), ev_action=np.zeros(2, int), ev_ts=np.arange(3),
                 ev_side=np.ones((3, 2), int))
    with pytest.raises(BatchError, match=r"^ev_action: request 0 expected shape \(3,\) like "
                                         r"ev_item, got \(2,\)"):
        pack([short, reqs[1]], side_fields=2)


@pytest.mark.parametrize("i, key, value, message", [
    (1, "req_sparse", np.array([1.7, 2.2]), "req_sparse: request 1 expected integer ids, got "
                                            "dtype float64"),
    (0, "req_sparse", np.array([2**40, 1]), "req_sparse: request 0 ids must be <= 2147483647, "
                                            "got 1099511627776"),
    (2, "ev_ts", np.array([1, 2, 2**33]), r"ev_ts: request 2 seconds must be in \[-2147483648, "
                                          r"2147483647\] \(int32; milliseconds\?\), got 8589934592"),
    (1, "cand_sparse", -np.ones((2, 2), int), "cand_sparse: request 1 ids must be >= 0, got -1"),
    (0, "req_dense", np.array([0.0, np.nan, 1.0]), r"req_dense: request 0 values must be finite, "
                                                   r"got nan at \[1\]"),
    (2, "ev_side", np.full((3, 2), 2**31), "ev_side: request 2 ids must be <= 2147483647"),
    (1, "ev_action", np.array([0, 1.5, 1]), "ev_action: request 1 expected integer ids, got "
                                            "dtype float64"),
    (1, "ev_item", np.array([True, False, True]), "ev_item: request 1 expected integer ids, got "
                                                  "dtype bool"),
])
def test_pack_refuses_values_it_would_cast(i, key, value, message):
    """make_batch's checks: float ids were truncated (1.7 -> 1), ids and ev_ts past int32
    wrapped (ev_ts 2**33 -> 0 broke the point-in-time cut), negative ids and NaN passed."""
    reqs = _requests(0)
    n_ev = {"ev_ts", "ev_side", "ev_action", "ev_item"}
    if key in n_ev:                     # three events, the bad key among them
        reqs[i] = dict(reqs[i], ev_item=np.arange(3), ev_action=np.zeros(3, int),
                       ev_ts=np.arange(3), ev_side=np.ones((3, 2), int))
    if key == "cand_sparse":
        reqs[i] = dict(reqs[i], cand_dense=np.zeros((2, 1)))
    reqs[i] = dict(reqs[i], **{key: value})
    with pytest.raises(BatchError, match="^" + message):
        pack(reqs, side_fields=2)


@pytest.mark.parametrize("case, message", [
    ("missing", r"ev_action: request 1 has no 'ev_action' \(a request has req_sparse, "),
    ("width", r"req_sparse: request 1 expected shape \(2,\) \(a 1-D row as wide as request "
              r"0's\), got \(3,\)"),
    ("ms", r"request_ts: request 0 seconds must be in \[-2147483648, 2147483647\] \(int32; "
           r"milliseconds\?\), got 1700000000000"),
    ("float ts", "request_ts: request 0 expected integer seconds, got dtype float64"),
    ("old event", r"ev_ts: request 0 has an event 2147483649 seconds before request_ts, more "
                  r"than int32 ages hold \(2147483647\)"),
    ("not a dict", "requests: request 2 is a list, expected a dict with keys req_sparse"),
])
def test_pack_names_malformed_requests(case, message):
    """A missing key was a bare KeyError, request widths that differ a numpy shape error, a
    millisecond request_ts an OverflowError."""
    reqs = _requests(0)
    if case == "missing":
        reqs[1] = {k: v for k, v in reqs[1].items() if k != "ev_action"}
    elif case == "width":
        reqs[1] = dict(reqs[1], req_sparse=np.arange(3))
    elif case == "ms":
        reqs[0] = dict(reqs[0], request_ts=1_700_000_000_000)
    elif case == "float ts":
        reqs[0] = dict(reqs[0], request_ts=1000.0)
    elif case == "old event":      # unpack computes ages in int32
        reqs[0] = dict(reqs[0], request_ts=2**31 - 1, ev_item=np.arange(2),
                       ev_action=np.zeros(2, int), ev_ts=np.array([-2, 5]),
                       ev_side=np.ones((2, 2), int))
    else:
        reqs[2] = list(reqs[2].values())
    with pytest.raises(BatchError, match="^" + message):
        pack(reqs, side_fields=2)


def test_pack_checks_time_order_within_requests_only():
    """Events ascend within a request; from one request to the next they may go back."""
    reqs = _requests(0)
    ev = lambda ts: dict(ev_item=np.arange(len(ts)), ev_action=np.zeros(len(ts), int),  # noqa: E731
                         ev_ts=np.array(ts, np.int64), ev_side=np.ones((len(ts), 2), int))
    empty = dict(reqs[1], **ev([]))
    packed = pack([dict(reqs[0], **ev([50, 60])), empty, dict(reqs[2], **ev([10, 20]))],
                  side_fields=2)
    np.testing.assert_array_equal(packed.ev_ts[:4], [50, 60, 10, 20])
    np.testing.assert_array_equal(packed.ev_offsets, [0, 2, 2, 4])
    with pytest.raises(BatchError, match="^ev_ts: request 2 events are not in ascending"):
        pack([dict(reqs[0], **ev([50, 60])), empty, dict(reqs[2], **ev([20, 10]))],
             side_fields=2)


def test_unpack_refuses_an_unknown_selection():
    """A typo ('top_k') was silently the 'recent' selection."""
    packed = pack(_requests(0), side_fields=2)
    with pytest.raises(BatchError, match=r"^selection: must be one of 'recent', 'topk', got "
                                         r"'top_k'"):
        unpack(packed, candidates=8, history=4, selection="top_k")


def test_default_action_weight_is_the_action_itself_with_no_upper_limit():
    """The default weight table had 64 entries: action types >= 64 all weighed 63."""
    actions = np.array([3, 63, 64, 100, 1000])
    np.testing.assert_array_equal(event_relevance(actions, np.zeros(5)), actions)
    below = np.random.default_rng(0).integers(0, 64, 50)      # the old table's range: same
    gaps = np.random.default_rng(1).integers(0, 10**5, 50)
    np.testing.assert_array_equal(event_relevance(below, gaps),
                                  event_relevance(below, gaps, np.arange(64, dtype=np.float32)))
    weights = np.array([5.0, 1.0, 0.0], np.float32)            # an explicit table still rules
    np.testing.assert_array_equal(event_relevance(np.array([0, 1, 2]), np.zeros(3), weights),
                                  weights)
    # topk keeps the event of the strongest action (200), not the most recent of equals
    req = dict(_requests(0, n=1)[0], ev_item=np.array([11, 12, 13, 14]),
               ev_action=np.array([200, 64, 65, 70]), ev_ts=np.array([100, 101, 102, 103]),
               ev_side=np.ones((4, 2), np.int64), request_ts=200)
    batch = unpack(pack([req], side_fields=2), candidates=8, history=1, selection="topk",
                   scan_events=4)
    assert int(batch.hist_item[0, 0]) == 11 and int(batch.hist_action[0, 0]) == 200
