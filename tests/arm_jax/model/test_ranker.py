"""The ranker's two execution modes agree; padding and order behave."""

import jax
import numpy as np
import pytest
from flax import nnx

from arm_jax.config import load_tier
from arm_jax.data.random_batch import random_batch
from arm_jax.model import Ranker

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=[("small", ()), ("large", ()),
                                        ("large", ("model.age_bias_slope=0.5",
                                                   "model.rank_bias_slope=1.0"))],
                ids=["small", "large", "large-age-and-rank-bias"])
def model_and_batch(request, tiny_overrides):
    name, extra = request.param
    tier = load_tier(name, [*tiny_overrides, *extra])
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(7))
    # History longer than the tier's L (the model truncates), ragged lengths, padding.
    batch = random_batch(tier.features, batch=3, candidates=7, history=16, seed=3,
                         valid_candidates=5)
    graphdef, params = nnx.split(model)
    fwd = jax.jit(lambda p, b, mode: nnx.merge(graphdef, p)(b, mode=mode, pair_chunk=4),
                  static_argnums=2)
    return tier, params, batch, fwd


def test_shared_equals_per_pair(model_and_batch):
    _, params, batch, fwd = model_and_batch
    shared = np.asarray(fwd(params, batch, "shared"))
    per_pair = np.asarray(fwd(params, batch, "per_pair"))
    assert shared.shape == (3, 7, 2) and np.isfinite(shared).all()
    assert np.abs(shared).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(shared, per_pair, **TOL)


def test_padded_candidates_never_change_valid_scores(model_and_batch):
    _, params, batch, fwd = model_and_batch
    base = np.asarray(fwd(params, batch, "shared"))
    r = np.random.default_rng(11)
    junk = batch.replace(
        cand_sparse=np.where(batch.cand_mask[..., None], batch.cand_sparse,
                             r.integers(0, 10**6, batch.cand_sparse.shape)).astype(np.int32),
        cand_dense=np.where(batch.cand_mask[..., None], batch.cand_dense,
                            r.normal(size=batch.cand_dense.shape) * 50).astype(np.float32))
    other = np.asarray(fwd(params, junk, "shared"))
    np.testing.assert_allclose(other[:, :5], base[:, :5], **TOL)
    assert not np.allclose(other[:, 5:], base[:, 5:])


def test_permuting_candidates_permutes_scores(model_and_batch):
    _, params, batch, fwd = model_and_batch
    perm = np.random.default_rng(5).permutation(batch.num_candidates)
    permuted = batch.replace(cand_sparse=batch.cand_sparse[:, perm],
                             cand_dense=batch.cand_dense[:, perm],
                             cand_mask=batch.cand_mask[:, perm])
    a = np.asarray(fwd(params, batch, "shared"))
    b = np.asarray(fwd(params, permuted, "shared"))
    np.testing.assert_allclose(b, a[:, perm], **TOL)


def test_history_beyond_length_is_ignored(model_and_batch):
    tier, params, batch, fwd = model_and_batch
    L = tier.model.history_len
    changed = batch.replace(hist_item=np.concatenate(
        [batch.hist_item[:, :L], batch.hist_item[:, L:] + 1], axis=1))
    np.testing.assert_allclose(fwd(params, changed, "shared"), fwd(params, batch, "shared"), **TOL)


def test_history_changes_scores(model_and_batch):
    _, params, batch, fwd = model_and_batch
    changed = batch.replace(hist_item=batch.hist_item + 1,
                            hist_len=np.maximum(batch.hist_len, 3).astype(np.int32))
    assert not np.allclose(fwd(params, changed, "shared"), fwd(params, batch, "shared"))


def test_unknown_mode_is_refused(model_and_batch):
    tier, params, batch, _ = model_and_batch
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mode must be 'shared' or 'per_pair', got 'pairs'"):
        model(batch, mode="pairs")


@pytest.mark.parametrize("field, width_key", [("req_dense", "req_dense_features"),
                                              ("cand_sparse", "cand_sparse_fields"),
                                              ("hist_side", "history_side_fields")])
def test_a_batch_of_another_schema_is_a_named_batch_error(model_and_batch, field, width_key):
    from arm_jax.batch import BatchError

    tier, params, batch, fwd = model_and_batch
    arr = np.asarray(getattr(batch, field))
    wrong = batch.replace(**{field: np.concatenate([arr, arr[..., :1]], axis=-1)})
    for mode in ("shared", "per_pair"):
        with pytest.raises(BatchError, match=f"{field}: shape .* {width_key}="):
            fwd(params, wrong, mode)


def test_dropout_only_with_a_key(tiny_overrides):
    """model.dropout changes training forwards (per key) but never a keyless forward."""
    tier = load_tier("small", [*tiny_overrides, "model.dropout=0.3"])
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(7))
    plain = Ranker(load_tier("small", tiny_overrides).model, tier.features, rngs=nnx.Rngs(7))
    batch = random_batch(tier.features, batch=3, candidates=5, history=8, seed=4)
    base = np.asarray(model(batch))
    np.testing.assert_array_equal(base, np.asarray(plain(batch)))  # same params, no key
    k1, k2 = jax.random.key(1), jax.random.key(2)
    d1, d1_again, d2 = (np.asarray(model(batch, dropout_key=k)) for k in (k1, k1, k2))
    np.testing.assert_array_equal(d1, d1_again)                     # a key is reproducible
    assert not np.allclose(d1, base) and not np.allclose(d1, d2)
    np.testing.assert_array_equal(np.asarray(plain(batch, dropout_key=k1)), base)  # rate 0
    with pytest.raises(ValueError, match="dropout_key"):
        model(batch, mode="per_pair", dropout_key=k1)


def _kill_head(params):
    """Every head unit's pre-activation at -1 +- 1e-3 for these inputs: all ReLU units off."""
    params["head_in"]["kernel"][...] = params["head_in"]["kernel"][...] * 1e-4
    params["head_in"]["bias"][...] = params["head_in"]["bias"][...] - 1.0
    return params


@pytest.mark.parametrize("activation, learns", [("relu", False), ("gelu", True)])
def test_activation_decides_whether_a_dead_head_still_learns(tiny_overrides, activation,
                                                              learns):
    """The failure `model.activation` exists for: once every ReLU head unit is off, no
    gradient reaches anything below the head and the model is constant for good; gelu and
    silu have no dead zone. Same parameter tree for every activation (checkpoints load)."""
    from arm_jax.train.loss import masked_bce

    tier = load_tier("small", [*tiny_overrides, f"model.activation={activation}"])
    graphdef, params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(7)))
    relu_params = nnx.split(Ranker(load_tier("small", tiny_overrides).model, tier.features,
                                   rngs=nnx.Rngs(7)))[1]
    assert jax.tree.structure(params) == jax.tree.structure(relu_params)
    batch = random_batch(tier.features, batch=3, candidates=5, history=8, seed=4)
    labels = np.ones(batch.cand_mask.shape + (2,), np.float32)
    params = _kill_head(params)
    grads = jax.jit(jax.grad(lambda p: masked_bce(nnx.merge(graphdef, p)(batch), labels,
                                          batch.cand_mask)))(params)
    below_head = max(float(np.abs(np.asarray(g)).max()) for path, g in
                     jax.tree_util.tree_leaves_with_path(grads)
                     if "head_in" not in str(path) and "head_out" not in str(path))
    assert (below_head > 0) == learns, below_head


def test_summary_history_pools_only_the_most_recent_events(tiny_overrides):
    # Only the summary tokens read the history here (no encoder mixing, no target
    # attention, no history match), so events past summary_history cannot move a score.
    tier = load_tier("small", [*tiny_overrides, "model.summary_history=3",
                               "model.encoder_layers=0", "model.history_match=false"])
    assert tier.model.history_len > 3 and not tier.model.target_attention
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(2))
    batch = random_batch(tier.features, batch=3, candidates=4, history=tier.model.history_len,
                         seed=8, full_history=True)
    fwd = nnx.jit(lambda m, b: m(b))
    base = np.asarray(fwd(model, batch))
    older = batch.replace(hist_item=np.concatenate(
        [batch.hist_item[:, :3], batch.hist_item[:, 3:] + 1], axis=1))
    np.testing.assert_allclose(fwd(model, older), base, **TOL)
    recent = batch.replace(hist_item=np.concatenate(
        [batch.hist_item[:, :3] + 1, batch.hist_item[:, 3:]], axis=1))
    assert not np.allclose(fwd(model, recent), base, **TOL)


def test_masked_action_forward_hides_only_what_it_scores(tiny_overrides):
    tier = load_tier("large", tiny_overrides)
    graphdef, params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(3)))
    num_actions, tier_len = tier.features.num_action_types, tier.model.history_len
    # ragged histories longer than the tier's L: the task sees the truncated view
    batch = random_batch(tier.features, batch=4, candidates=5, history=tier_len + 4, seed=8)
    maf = jax.jit(lambda p, b, key, rate:
                  nnx.merge(graphdef, p).masked_action_forward(b, key, rate))
    key = jax.random.key(0)
    logits, aux = maf(params, batch, key, 0.5)
    hidden = np.asarray(aux.hidden_bl)
    l = hidden.shape[1]
    valid = np.arange(l)[None, :] < np.minimum(np.asarray(batch.hist_len), l)[:, None]
    assert l == tier_len and aux.logits_bla.shape == (4, l, num_actions)
    assert hidden.sum() >= 3 and not (hidden & ~valid).any()   # only real events are hidden
    np.testing.assert_array_equal(aux.actions_bl, np.asarray(batch.hist_action)[:, :l])

    # The hidden events' actions reach no output: changing all of them changes nothing...
    act = np.asarray(batch.hist_action).copy()
    act[:, :l] = np.where(hidden, (act[:, :l] + 1) % num_actions, act[:, :l])
    logits_h, aux_h = maf(params, batch.replace(hist_action=act), key, 0.5)
    np.testing.assert_array_equal(aux_h.hidden_bl, hidden)
    np.testing.assert_allclose(logits_h, logits, **TOL)
    np.testing.assert_allclose(aux_h.logits_bla, aux.logits_bla, **TOL)
    # ... while changing one visible action changes that request's predictions
    b0, i0 = np.argwhere(valid & ~hidden)[0]
    act = np.asarray(batch.hist_action).copy()
    act[b0, i0] = (act[b0, i0] + 1) % num_actions
    _, aux_v = maf(params, batch.replace(hist_action=act), key, 0.5)
    assert not np.allclose(aux_v.logits_bla[b0], aux.logits_bla[b0], **TOL)

    # Nothing hidden: the ranking logits are the model's own
    logits_0, aux_0 = maf(params, batch, key, 0.0)
    assert not np.asarray(aux_0.hidden_bl).any()
    np.testing.assert_allclose(logits_0, nnx.merge(graphdef, params)(batch), **TOL)


def test_out_of_range_action_on_a_padded_event_changes_nothing(model_and_batch):
    """A padded event (index >= hist_len) is never read: an action id past the table there
    used to read NaN from the embedding and turn every score of the request NaN (0 * NaN)."""
    tier, params, batch, fwd = model_and_batch
    L = tier.model.history_len
    padded = np.arange(batch.history_len)[None, :] >= np.asarray(batch.hist_len)[:, None]
    assert padded[:, :L].any()
    bad = batch.replace(hist_action=np.where(
        padded, tier.features.num_action_types + 5, batch.hist_action).astype(np.int32))
    for mode in ("shared", "per_pair"):
        got = np.asarray(fwd(params, bad, mode))
        assert np.isfinite(got).all(), mode
        np.testing.assert_array_equal(got, np.asarray(fwd(params, batch, mode)))


def test_an_empty_history_axis_scores_like_hist_len_zero(model_and_batch):
    """make_batch pads a (b, 0) history (cold-start users) to one masked event."""
    from arm_jax.batch import BatchError, make_batch

    tier, params, batch, fwd = model_and_batch
    b = batch.num_requests
    cold = batch.replace(hist_len=np.zeros(b, np.int32))
    fields = {k: np.asarray(getattr(cold, k)) for k in
              ("req_sparse", "req_dense", "cand_sparse", "cand_dense", "cand_mask", "hist_len")}
    empty = make_batch(**fields, hist_item=np.zeros((b, 0), np.int64),
                       hist_action=np.zeros((b, 0), np.int64), hist_gap=np.zeros((b, 0)),
                       hist_side=np.zeros((b, 0, len(tier.features.history_side_fields)),
                                          np.int64))
    assert empty.hist_item.shape == (b, 1) and (empty.hist_len == 0).all()
    for mode in ("shared", "per_pair"):
        np.testing.assert_allclose(fwd(params, empty, mode), fwd(params, cold, mode), **TOL)
    raw = cold.replace(hist_item=cold.hist_item[:, :0], hist_action=cold.hist_action[:, :0],
                       hist_gap=cold.hist_gap[:, :0], hist_side=cold.hist_side[:, :0])
    with pytest.raises(BatchError, match="hist_item: history axis of length 0"):
        fwd(params, raw, "shared")


def test_zero_candidates_and_bad_pair_chunk_are_named(model_and_batch):
    from arm_jax.batch import BatchError

    tier, params, batch, _ = model_and_batch
    model = nnx.merge(nnx.graphdef(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))),
                      params)
    none = batch.replace(cand_sparse=batch.cand_sparse[:, :0], cand_dense=batch.cand_dense[:, :0],
                         cand_mask=batch.cand_mask[:, :0])
    for mode in ("shared", "per_pair"):
        with pytest.raises(BatchError, match="cand_sparse: a request needs at least 1 candidate"):
            model(none, mode=mode)
    for chunk in (0, -1):
        with pytest.raises(ValueError, match=f"pair_chunk: must be >= 1 .*got {chunk}"):
            model(batch, mode="per_pair", pair_chunk=chunk)


@pytest.mark.parametrize("field, bad, message", [
    ("req_sparse", lambda a: a.astype(np.float32) + 0.5,
     "req_sparse: expected integer ids, got dtype float32"),
    ("hist_len", lambda a: a.astype(np.float32), "hist_len: expected integer ids, got dtype float32"),
    ("cand_dense", lambda a: a[:, :2], r"cand_dense: expected shape \(3, 7, \*\), got \(3, 2, "),
    ("hist_action", lambda a: a[:, :3], r"hist_action: expected shape \(3, 16\), got \(3, 3\)"),
    ("hist_len", lambda a: a[:1], r"hist_len: expected shape \(3,\), got \(1,\)"),
])
def test_float_ids_and_axes_that_disagree_are_named(model_and_batch, field, bad, message):
    """Float ids were scored (truncated by the hash); paired arrays of other lengths failed
    deep in jax naming no field. Static checks: named under jit too, in both modes."""
    from arm_jax.batch import BatchError

    tier, params, batch, fwd = model_and_batch
    wrong = batch.replace(**{field: bad(np.asarray(getattr(batch, field)))})
    for mode in ("shared", "per_pair"):
        with pytest.raises(BatchError, match="^" + message):
            fwd(params, wrong, mode)


def test_zero_requests_and_a_fractional_pair_chunk_are_named(model_and_batch):
    """0 requests was a ZeroDivisionError in attention's reshape; pair_chunk=2.5 a raw jax
    TypeError."""
    from arm_jax.batch import BatchError

    tier, params, batch, _ = model_and_batch
    model = nnx.merge(nnx.graphdef(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))),
                      params)
    empty = jax.tree.map(lambda a: np.asarray(a)[:0], batch)
    for mode in ("shared", "per_pair"):
        with pytest.raises(BatchError, match="^req_sparse: a batch needs at least 1 request, "
                                             "got 0"):
            model(empty, mode=mode)
    for chunk in (2.5, True, "4"):
        with pytest.raises(ValueError, match=r"^pair_chunk: must be >= 1 pairs per step, an "
                                             rf"integer .*got {chunk!r}"):
            model(batch, mode="per_pair", pair_chunk=chunk)
    assert model(batch, mode="per_pair", pair_chunk=np.int64(4)).shape[:2] == (3, 7)


def test_masked_action_rate_outside_0_1_and_encode_request_of_another_schema_are_named(
        model_and_batch):
    """rate=2.0 hid every event and -0.5 or NaN none, silently; encode_request skipped the
    feature-width check __call__ runs, so a batch of another schema failed deep in a layer
    ("dot_general requires contracting dimensions to have the same shape")."""
    from arm_jax.batch import BatchError

    tier, params, batch, _ = model_and_batch
    model = nnx.merge(nnx.graphdef(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))),
                      params)
    key = jax.random.key(0)
    for rate in (2.0, -0.5, float("nan"), np.float32(1.5)):
        with pytest.raises(ValueError, match=r"^rate: must be in \[0, 1\] \(the share of ") as e:
            model.masked_action_forward(batch, key, rate)
        assert str(e.value).endswith(f"got {rate!r}")
    arr = np.asarray(batch.req_dense)
    wrong = batch.replace(req_dense=np.concatenate([arr, arr[:, :1]], axis=-1))
    with pytest.raises(BatchError, match=r"^req_dense: shape .* req_dense_features="):
        model.encode_request(wrong)
    floats = batch.replace(req_sparse=np.asarray(batch.req_sparse).astype(np.float32))
    with pytest.raises(BatchError, match="^req_sparse: expected integer ids, got dtype float32"):
        jax.eval_shape(model.encode_request, floats)     # static: refused while tracing too
    state = jax.eval_shape(model.encode_request, batch)     # a valid batch still encodes
    assert state.req_tokens_btd.shape[0] == 3
