"""Paired request-level AUC bootstrap: weighted AUC is AUC, pairing, intervals, errors."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.bootstrap import (auc_bootstrap, compare_to, interval, redraws,
                               within_request_auc_bootstrap)
from arm_jax.metrics import auc, within_request_auc


def _requests(seed: int, r: int = 120, n: int = 9):
    rng = np.random.default_rng(seed)
    labels = (rng.random((r, n)) < 0.4).astype(np.float32)
    mask = rng.random((r, n)) < 0.8                      # ragged candidate counts
    good = labels + rng.normal(0, 0.8, (r, n))           # informative
    weak = labels + rng.normal(0, 3.0, (r, n))           # barely informative
    tied = np.round(good * 2) / 2                        # many tied scores
    return labels, mask, {"good": good, "weak": weak, "tied": tied}


def test_each_redraw_is_the_auc_of_the_redrawn_requests():
    labels, mask, scores = _requests(0)
    samples = auc_bootstrap(labels, scores, mask, num_samples=5, seed=3)
    counts = redraws(len(labels), 5, 3)
    for i in range(5):
        idx = np.repeat(np.arange(len(labels)), counts[i])      # the redraw, materialised
        for name, s in scores.items():
            assert samples[name][i] == pytest.approx(auc(labels[idx], s[idx], mask[idx]),
                                                     abs=1e-12)


def test_within_request_redraws_are_the_same_redraws():
    labels, mask, scores = _requests(4)
    samples = within_request_auc_bootstrap(labels, scores, mask, num_samples=4, seed=9)
    counts = redraws(len(labels), 4, 9)
    for i in range(4):
        idx = np.repeat(np.arange(len(labels)), counts[i])
        for name, s in scores.items():
            assert samples[name][i] == pytest.approx(
                within_request_auc(labels[idx], s[idx], mask[idx]), abs=1e-12)
    with pytest.raises(ValueError, match=r"scores\['good'\]"):
        within_request_auc_bootstrap(labels, {"good": scores["good"][:, :2]}, mask)


def test_redraws_holding_a_nan_score_are_nan_and_the_others_exact():
    """A redraw that holds a request with a nan score has no AUC (as `auc` of it is nan);
    one without it is the AUC of its requests, as if the nan were never there."""
    labels, mask, scores = _requests(5, r=6, n=5)
    mask[:] = True
    s = scores["good"].copy()
    s[2, 1] = np.nan
    counts = redraws(len(labels), 40, 2)
    with_nan = counts[:, 2] > 0
    assert with_nan.any() and not with_nan.all()
    for samples, metric in ((auc_bootstrap(labels, {"m": s}, mask, num_samples=40, seed=2),
                             auc),
                            (within_request_auc_bootstrap(labels, {"m": s}, mask,
                                                          num_samples=40, seed=2),
                             within_request_auc)):
        assert np.isnan(samples["m"][with_nan]).all()
        for i in np.flatnonzero(~with_nan):
            idx = np.repeat(np.arange(len(labels)), counts[i])
            assert samples["m"][i] == pytest.approx(metric(labels[idx], s[idx], mask[idx]),
                                                    abs=1e-12)


def test_differences_are_paired_and_intervals_cover_the_estimate():
    labels, mask, scores = _requests(1)
    samples = auc_bootstrap(labels, scores, mask, num_samples=400, seed=0)
    point = {k: auc(labels, s, mask) for k, s in scores.items()}
    same = auc_bootstrap(labels, {"a": scores["good"], "b": scores["good"].copy()}, mask,
                         num_samples=50)
    np.testing.assert_array_equal(same["a"], same["b"])       # same redraws for every model
    cmp = compare_to("good", samples, point)
    assert set(cmp) == {"weak", "tied"}
    w = cmp["weak"]
    assert w["ci_low"] > 0 and w["p_better"] == 1.0           # far apart: no overlap
    assert w["ci_low"] <= w["diff"] <= w["ci_high"]
    lo, hi = interval(samples["good"])
    assert lo < point["good"] < hi and hi - lo < 0.1
    # pairing: the difference varies less than either model's AUC does alone
    d = samples["good"] - samples["tied"]
    assert d.std() < samples["good"].std()


def test_seeded_and_deterministic():
    labels, mask, scores = _requests(2)
    a = auc_bootstrap(labels, scores, mask, num_samples=70, seed=5)
    b = auc_bootstrap(labels, scores, mask, num_samples=70, seed=5)
    c = auc_bootstrap(labels, scores, mask, num_samples=70, seed=6)
    np.testing.assert_array_equal(a["good"], b["good"])
    assert not np.array_equal(a["good"], c["good"])


def test_bad_inputs_name_the_field():
    labels, mask, scores = _requests(3)
    with pytest.raises(ValueError, match="num_samples=0"):
        auc_bootstrap(labels, scores, mask, num_samples=0)
    with pytest.raises(ValueError, match=r"scores\['good'\]: shape"):
        auc_bootstrap(labels, {"good": scores["good"][:, :3]}, mask)
    with pytest.raises(ValueError, match="mask: shape"):
        auc_bootstrap(labels, scores, mask[:2])
    with pytest.raises(ValueError, match="labels: expected"):
        auc_bootstrap(labels.ravel(), {"x": scores["good"].ravel()})
    with pytest.raises(ValueError, match="reference='huge'"):
        compare_to("huge", {"good": np.zeros(3)}, {"good": 0.5})
    with pytest.raises(ValueError, match="level=1.5"):
        interval(np.zeros(3), level=1.5)


def test_one_class_redraws_are_nan_not_an_error():
    labels = np.zeros((4, 3), np.float32)
    labels[0, 0] = 1.0                                       # one positive in one request
    s = auc_bootstrap(labels, {"m": np.random.default_rng(0).random((4, 3))}, num_samples=200)
    assert np.isnan(s["m"]).any() and np.isfinite(s["m"]).any()
    lo, hi = interval(s["m"])
    assert np.isfinite(lo) and np.isfinite(hi)


def test_compare_to_names_a_model_missing_from_point():
    """A model in `samples` without a point estimate was a bare KeyError: 'b'."""
    samples = {"a": np.full(5, 0.7), "b": np.full(5, 0.6)}
    for point, missing, has in (({"a": 0.7}, "'b'", "'a'"), ({"b": 0.6}, "'a'", "'b'")):
        with pytest.raises(ValueError, match=rf"^point: no AUC for model\(s\) \[{missing}\]; "
                                             rf"point has \[{has}\], samples have "
                                             r"\['a', 'b'\]$"):
            compare_to("a", samples, point)
    assert compare_to("a", samples, {"a": 0.7, "b": 0.6, "c": 0.5})["b"]["diff"] == \
        pytest.approx(0.1)
