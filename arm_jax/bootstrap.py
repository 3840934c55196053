"""Paired request-level bootstrap of AUC: is model A really better than model B here?

A test AUC from a few thousand requests moves by several thousandths when the requests are
redrawn, so "large beats small by 0.002" needs an interval. The bootstrap redraws whole
requests with replacement (the candidates of one request share a user and a moment, so they
are not independent draws) and scores every model on the *same* redraw: the spread of the
difference A - B is then the spread that comes from which requests happened to be in the
test set, with the models' shared difficulty cancelled out (paired).

Each redraw is a multiset of requests, i.e. a weight per request (how often it was drawn);
AUC with weights is the Mann-Whitney statistic with weighted counts, so every model's scored
candidates are sorted once and each redraw costs O(candidates), vectorised over redraws.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from arm_jax.metrics import within_request_pairs

_CHUNK = 64  # redraws per vectorised block: [chunk, pairs] float64 weights


def _tail(level: float) -> float:
    """Percent of the distribution outside a central `level` interval, on each side."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: must be in (0, 1)")
    return 100.0 * (1.0 - level) / 2.0


def _weighted_auc(y_sorted: np.ndarray, starts: np.ndarray, w_sorted: np.ndarray) -> np.ndarray:
    """AUC per row of w_sorted [k, n] over pairs sorted by score; tie groups begin at `starts`.

    A positive beats every lighter-scored negative and half of the negatives tied with it."""
    pos = np.add.reduceat(w_sorted * y_sorted, starts, axis=1)        # [k, groups]
    neg = np.add.reduceat(w_sorted * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    u = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    denom = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, u / denom, np.nan)


def redraws(num_requests: int, num_samples: int, seed: int) -> np.ndarray:
    """[num_samples, num_requests] int: how often each request is in each redraw (the same
    for the same seed, so different statistics can share redraws)."""
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples}: must be >= 1")
    if num_requests < 1:
        raise ValueError(f"labels: no requests to redraw (got {num_requests})")
    return np.random.default_rng(seed).multinomial(
        num_requests, np.full(num_requests, 1.0 / num_requests), size=num_samples)


def auc_bootstrap(labels: Any, scores: Mapping[str, Any], mask: Any | None = None, *,
                  num_samples: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """AUC of every model on the same `num_samples` redraws of the requests.

    labels [R, N] (> 0.5 is positive), scores {model: [R, N]}, mask [R, N] of real
    candidates (None: all). Returns {model: [num_samples] AUCs}; index i of every model
    is the same redraw, so differences between models are paired.
    """
    if not scores:
        raise ValueError("scores: need at least one model")
    y = np.asarray(labels, np.float64)
    if y.ndim != 2:
        raise ValueError(f"labels: expected [requests, candidates], got shape {y.shape}")
    m = np.ones(y.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != y.shape:
        raise ValueError(f"mask: shape {m.shape} != labels shape {y.shape}")
    for name, s in scores.items():
        if np.shape(s) != y.shape:
            raise ValueError(f"scores[{name!r}]: shape {np.shape(s)} != labels shape {y.shape}")
    r = y.shape[0]
    request_of_pair = np.broadcast_to(np.arange(r)[:, None], y.shape)[m]
    y_pairs = (y[m] > 0.5).astype(np.float64)
    counts = redraws(r, num_samples, seed)
    out: dict[str, np.ndarray] = {}
    for name, s in scores.items():
        s_pairs = np.asarray(s, np.float64)[m]
        order = np.argsort(s_pairs, kind="mergesort")
        s_sorted = s_pairs[order]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) if s_sorted.size \
            else np.zeros(0, np.int64)
        req_sorted, y_sorted = request_of_pair[order], y_pairs[order]
        aucs = np.empty(num_samples)
        for lo in range(0, num_samples, _CHUNK):
            w = counts[lo:lo + _CHUNK][:, req_sorted].astype(np.float64)
            aucs[lo:lo + _CHUNK] = (_weighted_auc(y_sorted, starts, w) if starts.size
                                    else np.nan)
        # a redraw holding a nan score has no AUC (`metrics.auc`); nan pairs sort last, in
        # groups of their own, and weigh nothing in the redraws without them
        unscored = np.unique(request_of_pair[np.isnan(s_pairs)])
        aucs[counts[:, unscored].sum(axis=1) > 0] = np.nan
        out[name] = aucs
    return out


def within_request_auc_bootstrap(labels: Any, scores: Mapping[str, Any],
                                 mask: Any | None = None, *, num_samples: int = 1000,
                                 seed: int = 0) -> dict[str, np.ndarray]:
    """`metrics.within_request_auc` of every model on the same redraws as `auc_bootstrap`
    with the same seed: a redraw weights each request's pair counts by how often it is in."""
    y = np.asarray(labels)
    counts = redraws(y.shape[0] if y.ndim else 0, num_samples, seed).astype(np.float64)
    out = {}
    for name, s in scores.items():
        try:
            right, pairs = within_request_pairs(labels, s, mask)
        except ValueError as e:
            raise ValueError(f"scores[{name!r}]: {e}") from None
        den = counts @ pairs
        unscored = np.isnan(right)      # requests with a nan score: nan in every redraw of them
        num = counts @ np.where(unscored, 0.0, right)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where((den > 0) & (counts[:, unscored].sum(axis=1) == 0),
                                 num / den, np.nan)
    return out


def compare_to(reference: str, samples: Mapping[str, np.ndarray], point: Mapping[str, float],
               level: float = 0.95) -> dict[str, dict[str, float]]:
    """{other model: {diff, ci_low, ci_high, p_better}} for reference - other.

    `diff` is the point estimate (from `point`, the AUCs on the test set as drawn), the
    interval is the bootstrap's central `level` percentile interval of the paired
    differences, and `p_better` the share of redraws where the reference is ahead."""
    if reference not in samples:
        raise ValueError(f"reference={reference!r}: not among the models {sorted(samples)}")
    missing = [name for name in samples if name not in point]
    if missing:     # was a bare KeyError naming the model only
        raise ValueError(f"point: no AUC for model(s) {missing}; point has {sorted(point)}, "
                         f"samples have {sorted(samples)}")
    _tail(level)    # refuse a bad level even when there is no other model to compare
    out = {}
    for name, s in samples.items():
        if name == reference:
            continue
        d = samples[reference] - s
        d = d[np.isfinite(d)]
        lo, hi = interval(d, level)
        out[name] = {"diff": float(point[reference] - point[name]), "ci_low": lo, "ci_high": hi,
                     "p_better": float((d > 0).mean()) if d.size else float("nan")}
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap draws (nan ones left out; (nan, nan) if
    none are finite): one model's AUCs, or paired differences."""
    tail = _tail(level)
    s = np.asarray(samples)[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return float(lo), float(hi)


__all__ = ["auc_bootstrap", "within_request_auc_bootstrap", "redraws", "compare_to", "interval"]
