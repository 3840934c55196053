"""Ranking quality: AUC, log loss and normalized entropy, in numpy, over valid candidates.

These are the figures every quality table reports (DESIGN: "AUC, log loss and normalized
entropy on held-out data"). Labels and scores (or probabilities) of any one shape are
flattened; `mask` selects the real (unpadded) candidates, and only those are checked.
Degenerate inputs (empty, or a single class) give nan, never raise, so a slice of an
evaluation set with no positives still prints; bad ones (shapes that differ, a nan label,
for log loss and NE a label or probability outside [0, 1]) raise ValueError.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_EPS = 1e-7  # probability clip for log loss: a confident miss costs ~16 nats, not inf


def _refuse_where(bad: np.ndarray, values: np.ndarray, name: str, rule: str) -> None:
    """ValueError naming `name`, the first offending value and its index, and `rule`,
    when any element of `bad` (the shape of `values`) is set."""
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
        raise ValueError(f"{name}: {values[at]} at {list(at)}: {rule}")


_LABEL_NAN = "labels must be numbers (0 or 1), not nan"
_IN_0_1 = "must be in [0, 1]"


def _check_labels(y: np.ndarray, m: np.ndarray, *, in_0_1: bool) -> None:
    """Refuse a nan label on a selected candidate (it counted as a negative), and with
    `in_0_1` one outside [0, 1] (a label of 2 gave a negative log loss)."""
    if in_0_1:
        _refuse_where(m & ~((y >= 0.0) & (y <= 1.0)), y, "labels",
                      f"labels {_IN_0_1} (0 or 1, or a soft label)")
    else:
        _refuse_where(m & np.isnan(y), y, "labels", _LABEL_NAN)


def _mask(mask: Any | None, shape: tuple[int, ...]) -> np.ndarray:
    """`mask` as bool broadcast to the labels' `shape` (all True when None); ValueError
    naming both shapes when it does not broadcast (numpy's message named neither)."""
    if mask is None:
        return np.ones(shape, bool)
    m = np.asarray(mask, bool)
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"mask: expected the labels' shape {shape} (or one that broadcasts "
                         f"to it), got {m.shape}") from None


def _select(labels: Any, values: Any, mask: Any | None, name: str = "scores", *,
            probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The selected labels and values, flattened; ValueError unless both have one shape,
    for a nan label, and with `probabilities` for a label or a (non-nan) value outside
    [0, 1] -- a nan value is a diverged model, which the metric reports as nan."""
    y = np.asarray(labels, np.float64)
    v = np.asarray(values, np.float64)
    if y.shape != v.shape:
        raise ValueError(f"labels and {name}: expected the same shape, got {y.shape} and "
                         f"{v.shape} (values would be paired element by element)")
    m = _mask(mask, y.shape)
    _check_labels(y, m, in_0_1=probabilities)
    if probabilities:
        _refuse_where(m & ((v < 0.0) | (v > 1.0)), v, name,
                      f"{name} {_IN_0_1}: probabilities are expected (sigmoid(logits), not "
                      "logits)")
    if mask is None:
        return y.ravel(), v.ravel()
    return y[m], v[m]


def auc(labels: Any, scores: Any, mask: Any | None = None) -> float:
    """Area under the ROC curve from average ranks (Mann-Whitney U), ties counted half.

    O(n log n): one stable sort, tied scores share the mean of their ranks.
    Labels are treated as positive when > 0.5. nan if either class is absent, or if any
    score is nan (a diverged model has no ranking; sorted, its nans would rank highest).
    ValueError for labels and scores of different shapes, or a nan label.
    """
    y, s = _select(labels, scores, mask)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # tie groups: [start, end) runs of equal scores; each gets rank (start + end + 1) / 2
    new_group = np.empty(s_sorted.size, bool)
    new_group[0] = True
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], s_sorted.size)
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s_sorted.size, np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _per_request(labels: Any, scores: Any, mask: Any | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, scores [R, N] as float64 and the mask [R, N] (all True when None); ValueError
    unless labels and scores share one 2-d shape, or for a nan label on a real candidate."""
    y = np.asarray(labels, np.float64)
    s = np.asarray(scores, np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"labels and scores: expected the same [requests, candidates] shape, "
                         f"got {y.shape} and {s.shape}")
    m = _mask(mask, y.shape)
    _check_labels(y, m, in_0_1=False)
    return y, s, m


def within_request_pairs(labels: Any, scores: Any, mask: Any | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per request: (correctly ordered (positive, negative) candidate pairs, ties counted half;
    all such pairs). labels/scores [R, N], mask [R, N]. Both float64 [R]; the first is nan
    for a request with a nan score on a real candidate (unordered, not misordered)."""
    y, s, m = _per_request(labels, scores, mask)
    pos, neg = m & (y > 0.5), m & (y <= 0.5)
    pairs_rij = pos[:, :, None] & neg[:, None, :]
    diff_rij = s[:, :, None] - s[:, None, :]
    right = ((diff_rij > 0) + 0.5 * (diff_rij == 0)) * pairs_rij
    unscored = (m & np.isnan(s)).any(axis=1)
    return (np.where(unscored, np.nan, right.sum(axis=(1, 2))),
            pairs_rij.sum(axis=(1, 2)).astype(np.float64))


def within_request_auc(labels: Any, scores: Any, mask: Any | None = None) -> float:
    """AUC over (positive, negative) pairs of the *same* request: how well each request's
    candidates are ordered, whatever the level of its scores (GAUC weighted by pairs);
    nan if any real candidate's score is nan.

    The overall `auc` also compares candidates of different requests, so it rewards getting
    each request's base rate right; this one does not. nan without any such pair."""
    right, pairs = within_request_pairs(labels, scores, mask)
    total = pairs.sum()
    return float(right.sum() / total) if total > 0 else float("nan")


def request_level_auc(labels: Any, scores: Any, mask: Any | None = None) -> float:
    """AUC with every real candidate scored by its request's mean score: how well the
    scores order requests by how much their user likes what they see (each request's
    level), whatever the order within it. labels/scores [R, N], mask [R, N].

    The overall `auc` mixes this with `within_request_auc`: a model can order every
    request's candidates better than another and still lose overall AUC on the levels.
    nan as `auc` (one class, or a nan score on a real candidate)."""
    y, s, m = _per_request(labels, scores, mask)
    count = m.sum(axis=1, keepdims=True)
    level = np.where(m, s, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    return auc(y, np.broadcast_to(level, y.shape), m)


def logloss(labels: Any, probs: Any, mask: Any | None = None) -> float:
    """Mean binary cross-entropy in nats, probabilities clipped to [1e-7, 1 - 1e-7].

    ValueError for labels and probs of different shapes, or a label or a probability
    outside [0, 1] (logits passed for probabilities would look like a perfect model);
    nan when empty or when a probability is nan."""
    y, p = _select(labels, probs, mask, "probs", probabilities=True)
    if y.size == 0:
        return float("nan")
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def normalized_entropy(labels: Any, probs: Any, mask: Any | None = None) -> float:
    """Log loss divided by the entropy of the base rate of these `labels` (the evaluated set's
    own rate, not the training set's): 1.0 = no better than predicting that constant.

    He et al. (2014) normalise by the training set's average CTR instead; the two differ by
    the shift in base rate between the sets (MovieLens test 0.462 vs train 0.487: NE 0.3%
    apart). Comparable across data sets with different base rates (lower is better).
    nan when empty or when the base rate is 0 or 1 (zero entropy); ValueError as `logloss`.
    """
    y, p = _select(labels, probs, mask, "probs", probabilities=True)
    if y.size == 0:
        return float("nan")
    rate = float(y.mean())
    if rate <= 0.0 or rate >= 1.0:
        return float("nan")
    base = -(rate * np.log(rate) + (1.0 - rate) * np.log(1.0 - rate))
    return float(logloss(y, p) / base)


def evaluate(labels: Any, probs: Any, mask: Any | None,
             tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-task {auc, logloss, ne}. labels/probs [..., T]; mask [...] (broadcast over tasks)."""
    y = np.asarray(labels)
    p = np.asarray(probs)
    if y.shape != p.shape:
        raise ValueError(f"labels shape {y.shape} != probs shape {p.shape}")
    if y.shape[-1] != len(tasks):
        raise ValueError(f"last axis has {y.shape[-1]} tasks, names given for {len(tasks)}: "
                         f"{list(tasks)}")
    out: dict[str, dict[str, float]] = {}
    for t, name in enumerate(tasks):
        yt, pt = y[..., t], p[..., t]
        out[name] = {"auc": auc(yt, pt, mask), "logloss": logloss(yt, pt, mask),
                     "ne": normalized_entropy(yt, pt, mask)}
    return out


__all__ = ["auc", "within_request_auc", "within_request_pairs", "request_level_auc", "logloss",
           "normalized_entropy", "evaluate"]
