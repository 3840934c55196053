import itertools
import math
import re
import warnings

import numpy as np
import pytest

from arm_jax.metrics import (auc, evaluate, logloss, normalized_entropy, request_level_auc,
                             within_request_auc)


def _auc_pairs(y, s):
    """Slow reference: fraction of (positive, negative) pairs ordered right, ties half."""
    pos, neg = s[y > 0.5], s[y <= 0.5]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("labels, scores, want", [
    ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
    ([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1], 0.0),
    ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),                    # all tied
    ([1, 0, 1, 0, 0], [0.8, 0.8, 0.3, 0.1, 0.3], 4.0 / 6.0),      # two tie groups across classes
    ([1, 1, 0], [3.0, 3.0, 1.0], 1.0),                            # ties within one class only
])
def test_auc_hand_computed_cases(labels, scores, want):
    assert auc(np.array(labels), np.array(scores)) == pytest.approx(want)


def test_auc_matches_pairwise_reference_with_many_ties():
    r = np.random.default_rng(0)
    y = r.random(300) < 0.3
    s = r.integers(0, 12, 300).astype(float)   # heavy ties
    assert auc(y, s) == pytest.approx(_auc_pairs(y, s))


def test_auc_mask_drops_entries_and_broadcasts_over_shape():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 5.0]])
    m = np.array([[True, True, False], [True, True, False]])
    assert auc(y, s, m) == 1.0
    assert auc(y, s) < 1.0


def test_degenerate_inputs_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
        assert math.isnan(auc([], []))
        assert math.isnan(auc([0, 1], [0.1, 0.2], mask=[False, False]))
        assert math.isnan(logloss([], []))
        assert math.isnan(normalized_entropy([0, 0, 0], [0.1, 0.2, 0.3]))
        assert math.isnan(normalized_entropy([], []))
        res = evaluate(np.zeros((2, 3, 1)), np.full((2, 3, 1), 0.5), None, ("click",))
        assert math.isnan(res["click"]["auc"]) and math.isnan(res["click"]["ne"])


def test_nan_scores_give_nan_auc_not_a_number_from_their_sort_position():
    """A diverged model scores nan; its AUC must say so (as its log loss does), not rank
    the nans above everything (0.333 here, with every score nan) or count their pairs as
    misordered. A nan on a masked-out candidate is not scored."""
    y = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], float)
    all_nan = np.full(y.shape, np.nan)
    one_nan = np.array([[0.9, 0.1, 0.2, np.nan], [0.1, 0.8, 0.3, 0.2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in (all_nan, one_nan):
            assert math.isnan(auc(y, s)) and math.isnan(within_request_auc(y, s))
            assert math.isnan(logloss(y, s))
            assert math.isnan(evaluate(y[..., None], s[..., None], None, ("click",))
                              ["click"]["auc"])
    masked = np.array([[True, True, True, False], [True, True, True, True]])
    assert auc(y, one_nan, masked) == auc(y, np.nan_to_num(one_nan), masked)
    assert within_request_auc(y, one_nan, masked) == within_request_auc(
        y, np.nan_to_num(one_nan), masked)


def test_logloss_hand_computed_and_clipped():
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    worst = logloss([1, 0], [0.0, 1.0])
    assert math.isfinite(worst) and worst == pytest.approx(-math.log(1e-7), rel=1e-3)


def test_ne_of_predicting_the_base_rate_is_one_and_better_predictions_are_lower():
    r = np.random.default_rng(1)
    p_true = r.uniform(0.02, 0.6, 5000)
    y = (r.random(5000) < p_true).astype(float)
    assert normalized_entropy(y, np.full_like(y, y.mean())) == pytest.approx(1.0)
    assert normalized_entropy(y, p_true) < 0.95


def test_evaluate_per_task_with_mask():
    r = np.random.default_rng(2)
    y = (r.random((20, 5, 2)) < 0.3).astype(np.float32)
    p = r.random((20, 5, 2))
    m = r.random((20, 5)) < 0.7
    res = evaluate(y, p, m, ("click", "conversion"))
    assert set(res) == {"click", "conversion"}
    for t, name in enumerate(("click", "conversion")):
        assert set(res[name]) == {"auc", "logloss", "ne"}
        assert res[name]["auc"] == pytest.approx(auc(y[..., t][m], p[..., t][m]))
        assert res[name]["logloss"] == pytest.approx(logloss(y[..., t][m], p[..., t][m]))
        # NE over the same masked candidates: their log loss over their own base rate
        rate = y[..., t][m].mean()
        base = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
        assert res[name]["ne"] == pytest.approx(res[name]["logloss"] / base)
    with pytest.raises(ValueError, match="tasks"):
        evaluate(y, p, m, ("click",))


def test_within_request_auc_ignores_each_requests_score_level():
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 7)) < 0.5).astype(np.float32)
    mask = rng.random((40, 7)) < 0.85
    scores = np.round(labels + rng.normal(0, 1.0, labels.shape), 1)     # with ties
    # reference: pooled pairwise count inside each request
    right = pairs = 0.0
    for r in range(40):
        for i, j in itertools.product(range(7), range(7)):
            if mask[r, i] and mask[r, j] and labels[r, i] > 0.5 and labels[r, j] <= 0.5:
                pairs += 1
                right += 1.0 if scores[r, i] > scores[r, j] else 0.5 * (scores[r, i] ==
                                                                         scores[r, j])
    got = within_request_auc(labels, scores, mask)
    assert got == pytest.approx(right / pairs, abs=1e-12)
    # shifting whole requests changes the pooled AUC, never the within-request one
    shifted = scores + rng.normal(0, 5.0, (40, 1))
    assert within_request_auc(labels, shifted, mask) == pytest.approx(got, abs=1e-12)
    assert abs(auc(labels, shifted, mask) - auc(labels, scores, mask)) > 0.01
    one_class = np.ones((3, 4), np.float32)
    assert math.isnan(within_request_auc(one_class, rng.random((3, 4))))
    with pytest.raises(ValueError, match="same \\[requests, candidates\\] shape"):
        within_request_auc(labels, scores[:, :3])


def test_request_level_auc_scores_each_candidate_by_its_requests_mean():
    rng = np.random.default_rng(1)
    labels = (rng.random((30, 6)) < 0.5).astype(np.float32)
    mask = rng.random((30, 6)) < 0.8
    mask[:, 0] = True
    scores = rng.random((30, 6))
    scores[~mask] = np.nan                  # padding is never read
    # reference: the mean over each request's real candidates, spelled out
    level = np.array([[np.mean(scores[r][mask[r]])] * 6 for r in range(30)])
    got = request_level_auc(labels, scores, mask)
    assert got == pytest.approx(_auc_pairs(labels[mask], level[mask]), abs=1e-12)
    # reordering candidates inside a request changes nothing; changing a level does
    shuffled = scores[:, ::-1].copy()
    assert request_level_auc(labels[:, ::-1], shuffled, mask[:, ::-1]) == pytest.approx(
        got, abs=1e-12)
    first = np.flatnonzero(labels[:, 0] > 0.5)[0]
    raised = scores.copy()
    raised[first][mask[first]] += 10.0
    assert request_level_auc(labels, raised, mask) != pytest.approx(got, abs=1e-6)
    # a nan on a real candidate: no ranking (as auc); one class: nan
    broken = scores.copy()
    broken[0, 0] = np.nan
    assert math.isnan(request_level_auc(labels, broken, mask))
    assert math.isnan(request_level_auc(np.ones((3, 4)), rng.random((3, 4))))
    with pytest.raises(ValueError, match="same \\[requests, candidates\\] shape"):
        request_level_auc(labels, scores[:, :3])


@pytest.mark.parametrize("fn", [logloss, normalized_entropy])
def test_logloss_and_ne_refuse_values_outside_0_1(fn):
    """Logits passed for probabilities were clipped into [1e-7, 1 - 1e-7]: log loss 1e-7 and
    NE 1.4e-7, a perfect-looking model; a label of 2 gave a negative log loss."""
    y = np.array([[1, 0, 1], [0, 0, 1]], float)
    p = np.array([[0.9, 0.2, 0.6], [0.3, 0.1, 0.8]])
    with pytest.raises(ValueError, match=r"^probs: 4\.0 at \[0, 0\]: probs must be in \[0, 1\]: "
                                         r"probabilities are expected"):
        fn(y, p * 10 - 5)
    for bad in (2.0, -1.0, np.nan):
        y_bad = y.copy()
        y_bad[1, 2] = bad
        with pytest.raises(ValueError, match=rf"^labels: {bad} at \[1, 2\]: labels must be in "
                                             r"\[0, 1\]"):
            fn(y_bad, p)
    with pytest.raises(ValueError, match=r"^probs: -inf at \[1, 1\]"):
        fn(y, np.where(p == 0.1, -np.inf, p))
    masked = np.array([[True, True, True], [True, True, False]])
    y_pad, p_pad = y.copy(), p.copy()
    y_pad[1, 2], p_pad[1, 2] = -1.0, 7.0         # padding is never checked
    assert fn(y_pad, p_pad, masked) == fn(y[masked], p[masked])
    assert math.isfinite(fn(y, np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32)))


def test_nan_label_is_refused_not_counted_as_a_negative():
    """auc([1, nan, 0, 1], ...) used to be 0.5: the nan label counted as a negative (the
    within-request AUCs dropped it); a nan score gives nan, a nan label is a data bug."""
    y = np.array([[1, np.nan, 0, 1], [0, 1, 0, 1]])
    s = np.array([[0.9, 0.95, 0.1, 0.8], [0.1, 0.7, 0.2, 0.6]])
    for fn in (auc, within_request_auc, request_level_auc):
        with pytest.raises(ValueError, match=r"^labels: nan at \[0, 1\]: labels must be "
                                             r"numbers \(0 or 1\), not nan$"):
            fn(y, s)
    masked = np.ones(y.shape, bool)
    masked[0, 1] = False                           # a nan label on padding is never read
    assert auc(y, s, masked) == auc(np.nan_to_num(y), s, masked)
    assert within_request_auc(y, s, masked) == within_request_auc(np.nan_to_num(y), s, masked)


def test_labels_and_scores_must_have_one_shape_not_only_one_size():
    """[2, 3] labels with [3, 2] scores were flattened and paired element by element."""
    y = np.array([[1, 0, 1], [0, 0, 1]], float)
    s = np.array([[0.9, 0.2, 0.6], [0.3, 0.1, 0.8]])
    with pytest.raises(ValueError, match=r"^labels and scores: expected the same shape, got "
                                         r"\(2, 3\) and \(3, 2\)"):
        auc(y, s.T)
    for fn in (logloss, normalized_entropy):
        with pytest.raises(ValueError, match=r"^labels and probs: expected the same shape, "
                                             r"got \(6,\) and \(2, 3\)"):
            fn(y.ravel(), s)


def test_a_mask_of_the_wrong_shape_names_mask_and_both_shapes():
    """A [3, 2] mask on [2, 3] labels was numpy's "operands could not be broadcast together
    with remapped shapes", naming no argument."""
    y = np.array([[1, 0, 1], [0, 1, 0]], float)
    p = np.array([[0.9, 0.2, 0.6], [0.3, 0.7, 0.1]])
    msg = r"^mask: expected the labels' shape \(2, 3\) \(or one that broadcasts to it\), got "
    for fn in (auc, logloss, normalized_entropy, within_request_auc, request_level_auc):
        for bad in (np.ones((3, 2), bool), np.ones(2, bool)):
            with pytest.raises(ValueError, match=msg + re.escape(str(bad.shape)) + "$"):
                fn(y, p, bad)
    with pytest.raises(ValueError, match=msg + r"\(3, 2\)$"):
        evaluate(y[..., None], p[..., None], np.ones((3, 2), bool), ["click"])
    # masks that broadcast are still taken as before
    assert auc(y, p, np.ones((2, 1), bool)) == auc(y, p) == auc(y, p, np.ones(3, bool))
