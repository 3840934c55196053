"""Routing policies: decisions from request features only, budgets respected, load-aware."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from arm_jax.config import load_features
from arm_jax.data.random_batch import random_batch
from arm_jax.routing import (FixedPolicy, LearnedPolicy, LoadAwarePolicy, RoutingError,
                             RulesPolicy, TierCost, budget_fraction_to_large, feature_names,
                             load_policy, request_features)

SMALL, MEDIUM, LARGE = TierCost("small", 1e6, 4), TierCost("medium", 4e6, 8), TierCost("large", 1e7, 12)


@pytest.fixture(scope="module")
def features(tiny_overrides):
    return load_features([o for o in tiny_overrides if o.startswith("features.")])


@pytest.fixture(scope="module")
def batch(features):
    return random_batch(features, batch=400, candidates=6, history=16, seed=3)


def test_request_features_shape_and_values(features, batch):
    x = request_features(batch, features.num_action_types)
    assert x.shape == (400, len(feature_names(features.num_action_types)))
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x[:, 0], np.asarray(batch.hist_len))
    counts = x[:, 2:2 + features.num_action_types]
    np.testing.assert_array_equal(counts.sum(1), np.asarray(batch.hist_len))


def test_request_features_ignore_padded_events(features, batch):
    x = request_features(batch, features.num_action_types)
    noisy = batch.replace(hist_action=np.where(
        np.arange(16)[None, :] >= np.asarray(batch.hist_len)[:, None], 3,
        np.asarray(batch.hist_action)))
    np.testing.assert_array_equal(request_features(noisy, features.num_action_types), x)


def test_rules_policy_history_and_context(features, batch):
    pol = RulesPolicy([LARGE, SMALL, MEDIUM])       # any order: sorted by cost
    got = pol.choose(batch)
    h = np.asarray(batch.hist_len)
    want = np.where(h <= 4, "small", np.where(h <= 8, "medium", "large"))
    assert got == list(want)
    one = batch.replace(**{f: np.asarray(getattr(batch, f))[:1] for f in (
        "req_sparse", "req_dense", "hist_item", "hist_action", "hist_gap", "hist_len",
        "cand_sparse", "cand_dense", "cand_mask")})
    one = one.replace(hist_len=np.asarray([0], np.int32))
    assert pol.choose(one) == ["small"]
    assert pol.choose(one, [{"value": 50.0}]) == ["large"]
    assert pol.choose(one, [{"intent": "purchase"}]) == ["large"]
    long = one.replace(hist_len=np.asarray([16], np.int32))
    assert pol.choose(long, [{"intent": "prefetch"}]) == ["small"]


def test_budget_fraction():
    assert budget_fraction_to_large(1.0, 1.0, 10.0) == 1.0
    assert budget_fraction_to_large(0.1, 1.0, 10.0) == 0.0
    assert budget_fraction_to_large(0.5, 1.0, 10.0) == pytest.approx(4 / 9)
    with pytest.raises(RoutingError, match="budget"):
        budget_fraction_to_large(1.5, 1.0, 10.0)


def test_learned_policy_finds_the_signal_and_meets_budgets(features, batch, tmp_path):
    x = request_features(batch, features.num_action_types)
    rng = np.random.default_rng(0)
    gain = 0.02 * x[:, 1] + rng.normal(0, 0.005, len(x))   # long histories gain more
    pol = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types)
    pol.fit(x, gain)
    assert np.corrcoef(pol.predict_gain(x), gain)[0, 1] > 0.8
    for budget in (0.2, 0.5, 0.8):
        p = pol.set_budget(budget)
        choice = np.asarray(pol.choose(batch))
        share = (choice == "large").mean()
        # within budget, and using it: these are the fit set's own predictions, so the
        # share sent large is p to a few requests (the quantile's rounding, ties); sending
        # fewer (all small, say) would also be "within budget"
        assert p - 0.02 <= share <= p + 1e-9, (share, p)
        mean_cost = share * LARGE.flops_per_request + (1 - share) * SMALL.flops_per_request
        assert mean_cost <= budget * LARGE.flops_per_request * (1 + 1e-9)
        # the large share goes to the requests with the biggest true gain
        assert gain[choice == "large"].mean() > gain[choice == "small"].mean()
    pol.set_budget(0.5)
    path = pol.save(tmp_path / "policy.json")
    again = load_policy(f"learned:{path}", [SMALL, MEDIUM, LARGE],
                        num_action_types=features.num_action_types)
    assert again.choose(batch) == pol.choose(batch)


def test_learned_policy_errors(features):
    pol = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types)
    with pytest.raises(RoutingError, match="fit"):
        pol.predict_gain(np.zeros((2, 3)))
    with pytest.raises(RoutingError, match="finite"):
        pol.fit(np.full((4, 3), np.nan), np.zeros(4))


def test_load_aware_steps_down_under_pressure(batch):
    base = FixedPolicy("large")
    order = ["small", "medium", "large"]
    calm = LoadAwarePolicy(base, order, lambda tier, i: 0.1)
    assert set(calm.choose(batch)) == {"large"} and not any(calm.last_degraded)
    busy = {"large": 3.0, "medium": 1.5, "small": 0.5}
    hot = LoadAwarePolicy(base, order, lambda tier, i: busy[tier])
    assert set(hot.choose(batch)) == {"small"} and all(hot.last_degraded)
    # one step down when that tier keeps up: the next cheaper tier, not the floor
    warm = LoadAwarePolicy(base, order, lambda tier, i: {"large": 3.0, "medium": 0.8,
                                                         "small": 0.1}[tier])
    assert set(warm.choose(batch)) == {"medium"} and all(warm.last_degraded)
    everything_hot = LoadAwarePolicy(base, order, lambda tier, i: 9.0)
    assert set(everything_hot.choose(batch)) == {"small"}   # cheapest is the floor


def test_load_aware_names_a_tier_it_does_not_serve(batch):
    policy = LoadAwarePolicy(FixedPolicy("huge"), ["small", "large"], lambda tier, i: 0.0)
    with pytest.raises(RoutingError, match=r"tier 'huge', which is not served; tiers: "
                                           r"\['small', 'large'\]"):
        policy.choose(batch)


def test_a_saved_policy_must_match_the_servers_action_types(features, batch, tmp_path):
    n = features.num_action_types
    feats = request_features(batch, n)
    gain = np.random.default_rng(0).normal(size=len(feats))
    path = LearnedPolicy(SMALL, LARGE, num_action_types=n, ridge=1.0).fit(
        feats, gain, budget=0.5).save(tmp_path / "p.json")
    assert isinstance(load_policy(f"learned:{path}", [SMALL, LARGE], num_action_types=n),
                      LearnedPolicy)
    with pytest.raises(RoutingError, match=rf"fitted with num_action_types={n}, the tiers "
                                           rf"have {n + 2}"):
        load_policy(f"learned:{path}", [SMALL, LARGE], num_action_types=n + 2)
    raw = json.loads(path.read_text())
    raw["num_action_types"] = n + 1         # a hand-edited file: mean/std no longer fit
    path.write_text(json.dumps(raw))
    with pytest.raises(RoutingError, match=rf"mean holds {len(raw['mean'])} values; "
                                           rf"num_action_types={n + 1} makes"):
        LearnedPolicy.load(path)


def test_load_policy_specs(features, tmp_path):
    tiers = [SMALL, LARGE]
    assert isinstance(load_policy("rules", tiers, num_action_types=4), RulesPolicy)
    assert load_policy("fixed:small", tiers, num_action_types=4).tier == "small"
    for bad in ("fixed:huge", "nope", f"learned:{tmp_path / 'missing.json'}"):
        with pytest.raises(RoutingError):
            load_policy(bad, tiers, num_action_types=4)


def test_history_buckets_are_log2_one_hot():
    from arm_jax.routing.policies import HISTORY_BUCKETS, history_buckets

    h = np.array([0, 1, 2, 3, 4, 31, 32, 1023, 1024, 5000])
    b = history_buckets(h)
    assert b.shape == (len(h), HISTORY_BUCKETS) and np.all(b.sum(1) == 1)
    assert b.argmax(1).tolist() == [0, 1, 2, 2, 3, 5, 6, 10, 11, 11]


def test_learned_policy_ridge_by_cross_validation(features, batch, tmp_path):
    x = np.tile(request_features(batch, features.num_action_types), (20, 1))
    rng = np.random.default_rng(1)
    noise = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types)
    noise.fit(x, rng.normal(0, 1, len(x)))                    # nothing to learn
    signal = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types)
    signal.fit(x, x[:, 1] + rng.normal(0, 0.01, len(x)))     # log history length
    assert set(noise.cv_mse) == set(signal.cv_mse)
    assert noise.ridge > signal.ridge                          # noise -> shrink hard
    assert LearnedPolicy(SMALL, LARGE, num_action_types=4, ridge=3.0).fit(x, x[:, 1]).ridge == 3.0
    # a policy file whose weights do not match this build's design is refused
    path = signal.save(tmp_path / "policy.json")
    import json

    raw = json.loads(path.read_text())
    raw["weights"] = raw["weights"][:-3]
    path.write_text(json.dumps(raw))
    with pytest.raises(RoutingError, match="weights"):
        LearnedPolicy.load(path)


def _fitted(features, batch) -> LearnedPolicy:
    x = request_features(batch, features.num_action_types)
    gain = 0.02 * x[:, 1] + np.random.default_rng(0).normal(0, 0.005, len(x))
    return LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types).fit(
        x, gain, budget=0.5)


def _set(raw, field, index, value):
    if index is None:
        raw[field] = value
    else:
        raw[field][index] = value


@pytest.mark.parametrize("field, index, value, rule", [
    ("threshold", None, "nan", "threshold must be a number, 'inf' or '-inf', got nan"),
    ("threshold", None, float("nan"), "threshold must be a number, 'inf' or '-inf', got nan"),
    ("std", 3, 0.0, "std must be > 0, got 0.0 at index 3"),
    ("std", 1, -2.0, "std must be > 0, got -2.0 at index 1"),
    ("std", 2, float("inf"), "std must be finite, got inf at index 2"),
    ("mean", 0, float("inf"), "mean must be finite, got inf at index 0"),
    ("mean", 4, "nan", "mean must be finite, got nan at index 4"),
    ("weights", 2, float("nan"), "weights must be finite, got nan at index 2"),
], ids=["threshold-str-nan", "threshold-nan", "std-0", "std-negative", "std-inf", "mean-inf",
        "mean-str-nan", "weights-nan"])
def test_a_saved_policy_with_non_finite_values_is_refused(features, batch, tmp_path,
                                                          field, index, value, rule):
    """Such a file used to load and then send every request to the small tier."""
    path = _fitted(features, batch).save(tmp_path / "routing-policy.json")
    raw = json.loads(path.read_text())
    _set(raw, field, index, value)
    path.write_text(json.dumps(raw))
    for load in (lambda: LearnedPolicy.load(path),
                 lambda: load_policy(f"learned:{path}", [SMALL, LARGE],
                                     num_action_types=features.num_action_types)):
        with pytest.raises(RoutingError) as e:
            load()
        assert str(e.value) == f"{path}: {rule}"


def test_a_saved_policy_may_route_all_small_or_all_large(features, batch, tmp_path):
    """An infinite threshold is a budget's legitimate extreme, not a corrupt file."""
    pol = _fitted(features, batch)
    for budget, want in ((0.05, {"small"}), (1.0, {"large"})):
        pol.set_budget(budget)
        path = pol.save(tmp_path / f"p{budget}.json")
        assert set(LearnedPolicy.load(path).choose(batch)) == want


def test_a_policy_built_in_python_with_bad_values_is_not_saved(features, batch, tmp_path):
    pol = _fitted(features, batch)
    pol.std = pol.std.copy()
    pol.std[3] = 0.0
    with pytest.raises(RoutingError, match=r"^LearnedPolicy: std must be > 0, got 0.0 at index 3$"):
        pol.save(tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()
    pol = _fitted(features, batch)
    pol.threshold = float("nan")
    with pytest.raises(RoutingError, match="threshold must be a number"):
        pol.save(tmp_path / "p.json")
    with pytest.raises(RoutingError, match="reference predictions must be finite"):
        pol.set_budget(0.5, reference=np.array([0.1, np.nan, 0.3]))
    pol.weights = pol.weights[:-1]
    with pytest.raises(RoutingError, match=r"^LearnedPolicy: \d+ weights, this build's design"):
        pol.validate()


def test_fit_scales_a_constant_feature_by_one_and_saves_a_loadable_file(features, batch,
                                                                          tmp_path):
    """A zero-variance feature must not become std 0 (or rounding noise blown up to O(1)
    values by a std of ~1e-9, as a constant 1e6 + 0.1 used to)."""
    x = request_features(batch, features.num_action_types).copy()
    x[:, 2] = 0.0                    # constant, exactly
    x[:, 3] = 1e6 + 0.1              # constant; its float64 spread is rounding, ~5e-9
    gain = 0.02 * x[:, 1] + np.random.default_rng(0).normal(0, 0.005, len(x))
    pol = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types).fit(
        x, gain, budget=0.5)
    assert pol.std[2] == 1.0 and pol.std[3] == 1.0 and np.all(pol.std > 0)
    again = LearnedPolicy.load(pol.save(tmp_path / "p.json"))
    np.testing.assert_allclose(again.predict_gain(x), pol.predict_gain(x))
    assert np.all(np.isfinite(again.predict_gain(x)))


def test_fit_refuses_features_whose_spread_overflows(features, batch):
    """Rather than write a policy file whose std is infinite (which load refuses)."""
    x = request_features(batch, features.num_action_types).copy()
    x[:, 5] = np.where(np.arange(len(x)) % 2, 1e200, -1e200)
    pol = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types)
    with pytest.raises(RoutingError, match=r"^fit: std must be finite, got inf at index 5$"):
        pol.fit(x, np.zeros(len(x)))


def test_a_failed_refit_leaves_the_policy_unchanged(features, batch):
    """Not new weights with the threshold calibrated on the old model's predictions."""
    x = request_features(batch, features.num_action_types)
    gain = 0.02 * x[:, 1] + np.random.default_rng(0).normal(0, 0.005, len(x))
    pol = LearnedPolicy(SMALL, LARGE, num_action_types=features.num_action_types).fit(
        x, gain, budget=0.5)
    before = {k: np.copy(v) if isinstance(v, np.ndarray) else v
              for k, v in vars(pol).items()}
    with pytest.raises(RoutingError, match=r"budget=2\.0: must be in \(0, 1\]"):
        pol.fit(x * 2 + 5, -gain, budget=2.0)
    bad = x.copy()
    bad[:, 5] = np.where(np.arange(len(x)) % 2, 1e200, -1e200)   # its spread overflows
    with pytest.raises(RoutingError, match="std must be finite"):
        pol.fit(bad, -gain, budget=0.8)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(pol, k), v, err_msg=k)
    assert pol.fit(x * 2 + 5, -gain, budget=0.8) is pol and pol.budget == 0.8


@pytest.mark.parametrize("context, message", [
    ([{}], r"^context: 1 entries for 2 requests \(need one per request\)$"),
    ([{}] * 3, r"^context: 3 entries for 2 requests"),
    ({"value": 50.0}, r"^context: expected a list of 2 mappings \(one per request\), got dict$"),
    (["purchase"] * 2, r"^context\[0\]: expected a mapping \(keys 'intent', 'value'\) or None, "
                       r"got str$"),
    ([{}, {"value": "12"}], r"^context\[1\]\.value: expected a real number or None, got '12'$"),
    ([{}, {"value": float("nan")}], r"^context\[1\]\.value: expected a real number or None, "
                                    r"got nan$"),
    ([{"intent": ["purchase"]}, {}], r"^context\[0\]\.intent: expected a string or None, "
                                     r"got list$"),
])
def test_rules_policy_refuses_bad_context(features, context, message):
    two = random_batch(features, batch=2, candidates=2, history=16, seed=0)
    with pytest.raises(RoutingError, match=message):
        RulesPolicy([SMALL, LARGE]).choose(two, context)


def test_rules_policy_accepts_none_and_numpy_values_in_context(features):
    two = random_batch(features, batch=2, candidates=2, history=16, seed=0).replace(
        hist_len=np.asarray([0, 0], np.int32))
    pol = RulesPolicy([SMALL, LARGE])
    assert pol.choose(two, [None, {}]) == ["small", "small"]
    assert pol.choose(two, [{"value": np.float32(50)}, {"value": 12, "intent": None}]
                      ) == ["large", "large"]


def test_load_aware_counts_a_nan_pressure_as_over_the_limit_and_refuses_a_nan_limit(batch):
    """NaN > limit is False: an unknown load kept the tier as if it were idle."""
    order = ["small", "medium", "large"]
    unknown = LoadAwarePolicy(FixedPolicy("large"), order, lambda tier, i: {
        "large": float("nan"), "medium": 0.5, "small": 0.1}[tier])
    assert set(unknown.choose(batch)) == {"medium"} and all(unknown.last_degraded)
    for bad in (float("nan"), "1.0", None):
        with pytest.raises(RoutingError, match=rf"^limit={bad!r}: must be a real number .*"
                                               "not NaN"):
            LoadAwarePolicy(FixedPolicy("large"), order, lambda tier, i: 0.0, limit=bad)


@pytest.mark.parametrize("edit, rule", [
    (lambda r: r.update(budget=-0.5),
     r"budget=-0.5: must be in \(0, 1\] \(a fraction of large FLOPs\)"),
    (lambda r: r.update(budget=float("nan")), r"budget=nan: must be in \(0, 1\] .*FLOPs\)"),
    (lambda r: r.update(budget="half"),
     r"budget must be a number in \(0, 1\] or null, got 'half'"),
    (lambda r: r["small"].update(flops_per_request=float("inf")),
     "small.flops_per_request must be a finite number >= 0, got inf"),
    (lambda r: r["large"].update(flops_per_request=-1.0),
     "large.flops_per_request must be a finite number >= 0, got -1.0"),
    (lambda r: r["large"].update(history_len=0),
     "large.history_len must be an integer >= 1, got 0"),
    (lambda r: r["small"].update(history_len=2.5),
     "small.history_len must be an integer >= 1, got 2.5"),
    (lambda r: r.update(ridge=-1.0), "ridge must be a finite number >= 0 or null, got -1.0"),
    (lambda r: r.update(ridge=float("nan")), "ridge must be a finite number >= 0 or null, got nan"),
], ids=["budget-negative", "budget-nan", "budget-str", "flops-inf", "flops-negative",
        "history-len-0", "history-len-float", "ridge-negative", "ridge-nan"])
def test_a_saved_policy_with_a_bad_budget_cost_or_ridge_is_refused(features, batch, tmp_path,
                                                                   edit, rule):
    """Such files loaded: a NaN budget, a negative cost or ridge were taken as given."""
    path = _fitted(features, batch).save(tmp_path / "routing-policy.json")
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(RoutingError, match=f"^{re.escape(str(path))}: {rule}$"):
        LearnedPolicy.load(path)


def test_a_saved_policy_with_no_budget_and_ridge_zero_loads(features, batch, tmp_path):
    pol = _fitted(features, batch)
    pol.budget, pol.ridge = None, 0.0
    again = LearnedPolicy.load(pol.save(tmp_path / "p.json"))
    assert again.budget is None and again.ridge == 0.0
    pol.ridge = -1.0                     # and what load refuses is never saved
    with pytest.raises(RoutingError, match="^LearnedPolicy: ridge must be a finite number >= 0"):
        pol.save(tmp_path / "q.json")
