"""Export -> load: identical scores in a fresh process, no compile after load, no model
code imported, padding never changes valid scores, weights swap, manifest costs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from arm_jax.compile import ArtifactError, BucketError, load
from arm_jax.data.random_batch import random_batch

SEEDS = {(1, 4): 11, (1, 8): 12, (2, 4): 13, (2, 8): 14}


def _library(ckpt, batch):
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.train.step import make_predict

    _, _, graphdef, params = load_checkpoint(ckpt)
    return np.asarray(make_predict(graphdef)(params, batch))


def test_fresh_process_scores_identical_to_library_for_every_bucket(exported, tmp_path):
    out = tmp_path / "scores.npz"
    script = textwrap.dedent(f"""
        import sys, numpy as np, jax
        from jax._src.dispatch import BACKEND_COMPILE_EVENT
        from arm_jax.compile import load
        from arm_jax.data.random_batch import random_batch
        compiles = []
        jax.monitoring.register_event_duration_secs_listener(
            lambda e, d, **k: compiles.append(e) if e == BACKEND_COMPILE_EVENT else None)
        tier = load({str(exported['dir'])!r}).tiers["small"]
        res = {{}}
        for (B, N), seed in {SEEDS!r}.items():
            batch = random_batch(tier.config.features, batch=B, candidates=N, history=6,
                                 seed=seed, valid_candidates=N - 1)
            r = tier.score(batch)
            assert r.bucket == (B, N), r.bucket
            res[f"p{{B}}_{{N}}"] = r.probs
            res[f"i{{B}}_{{N}}"] = r.top_indices
            res[f"s{{B}}_{{N}}"] = r.top_scores
        np.savez({str(out)!r}, **res)
        bad = sorted(m for m in sys.modules if m.startswith(("arm_jax.model", "arm_jax.train")))
        assert not bad, bad
        assert not compiles, compiles
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr[-3000:]
    got = np.load(out)
    top_k = json.loads((exported["dir"] / "small" / "manifest.json").read_text())["top_k"]
    for (B, N), seed in SEEDS.items():
        batch = random_batch(exported["tier"].features, batch=B, candidates=N, history=6,
                             seed=seed, valid_candidates=N - 1)
        want = _library(exported["ckpt"], batch)
        np.testing.assert_array_equal(got[f"p{B}_{N}"], want)
        # top-K: first task, K = min(top_k, N), the masked slot last: index -1 at -inf
        key = np.where(np.asarray(batch.cand_mask), want[..., 0], -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")[:, :min(top_k, N)]
        scores = np.take_along_axis(key, order, 1)
        np.testing.assert_array_equal(got[f"i{B}_{N}"], np.where(np.isneginf(scores), -1, order))
        np.testing.assert_array_equal(got[f"s{B}_{N}"], scores)
        assert np.isneginf(got[f"s{B}_{N}"][:, -1]).all() and (got[f"i{B}_{N}"][:, -1] == -1).all()


def test_no_compilation_after_load_in_process(exported):
    from jax._src.dispatch import BACKEND_COMPILE_EVENT

    events = []

    def listener(event, _duration, **_kw):
        if event == BACKEND_COMPILE_EVENT:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        tier = load(exported["dir"]).tiers["small"]
        tier.warmup()
        for b, c in ((1, 1), (1, 5), (2, 3), (2, 8)):
            tier.score(random_batch(tier.config.features, batch=b, candidates=c, history=6))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert events == []


def test_padding_never_changes_valid_scores(exported):
    tier = load(exported["dir"]).tiers["small"]
    f = tier.config.features
    base = random_batch(f, batch=1, candidates=3, history=6, seed=5)
    r = tier.score(base)
    assert r.bucket == (1, 4) and r.probs.shape == (1, 3, len(f.tasks))
    assert set(r.top_indices[0, :3]) == {0, 1, 2} and np.isneginf(r.top_scores[0, 3])
    assert r.top_indices[0, 3] == -1          # the bucket's padded slot is no candidate
    # the same request inside a bigger batch, among masked garbage candidates
    big = random_batch(f, batch=2, candidates=7, history=6, seed=6)
    fields = {k: np.array(getattr(big, k)) for k in
              ("req_sparse", "req_dense", "hist_item", "hist_action", "hist_gap", "hist_len",
               "hist_side", "cand_sparse", "cand_dense", "cand_mask")}
    for k in ("req_sparse", "req_dense", "hist_item", "hist_action", "hist_gap", "hist_len",
              "hist_side"):
        fields[k][1] = np.asarray(getattr(base, k))[0]
    for k in ("cand_sparse", "cand_dense"):
        fields[k][1, :3] = np.asarray(getattr(base, k))[0]
    fields["cand_mask"][1] = [True] * 3 + [False] * 4
    r2 = tier.score(big.replace(**fields))
    assert r2.bucket == (2, 8)
    np.testing.assert_allclose(r2.probs[1, :3], r.probs[0], rtol=1e-6, atol=1e-7)
    # within one bucket, garbage in masked slots changes nothing at all
    same = big.replace(**fields)
    fields["cand_sparse"][1, 3:] += 17
    fields["cand_dense"][1, 3:] *= -3.0
    np.testing.assert_array_equal(tier.score(big.replace(**fields)).probs[1, :3],
                                  tier.score(same).probs[1, :3])
    assert (r2.top_indices[1, :3] < 3).all() and (r2.top_indices[1, 3:] == -1).all()


def test_over_largest_bucket_is_refused(exported):
    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=9, history=6)
    with pytest.raises(BucketError, match="exceeds the largest compiled bucket"):
        tier.score(batch)


def test_manifest_flops_equal_xla_cost_analysis(exported):
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.compile import weights as wt
    from arm_jax.compile.buckets import batch_signature
    from arm_jax.compile.export import _specs, scoring_function

    m = json.loads((exported["dir"] / "small" / "manifest.json").read_text())
    _, tier, graphdef, params = load_checkpoint(exported["ckpt"])
    score, flat = scoring_function(graphdef, params, m["top_k"])
    entry = next(e for e in m["buckets"] if (e["batch"], e["candidates"]) == (2, 8))
    compiled = jax.jit(score).lower(
        _specs(wt.spec_of(flat)), _specs(batch_signature((2, 8), 6, tier.features))).compile()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    assert entry["cost"]["flops"] == float(ca["flops"]) > 0
    assert entry["cost"]["bytes_accessed"] == float(ca["bytes accessed"])
    mem = compiled.memory_analysis()
    assert entry["memory"]["temp"] == mem.temp_size_in_bytes
    assert entry["memory"]["argument"] == mem.argument_size_in_bytes == \
        m["weights"]["bytes"] + sum(int(np.prod(v["shape"])) * np.dtype(v["dtype"]).itemsize
                                    for v in entry["inputs"]["batch"].values())
    # costs grow with the bucket; the loaded tier reports the manifest figure
    tier_l = load(exported["dir"]).tiers["small"]
    assert tier_l.cost_flops((2, 8)) == entry["cost"]["flops"] > tier_l.cost_flops((1, 4))


def test_manifest_records_signatures_versions_and_cuda_export(exported):
    m = json.loads((exported["dir"] / "small" / "manifest.json").read_text())
    assert m["jax"] == jax.__version__ and m["platform"] == "cpu"
    assert m["config"]["serving"]["candidate_buckets"] == [4, 8]
    assert [(e["batch"], e["candidates"]) for e in m["buckets"]] == [(1, 4), (1, 8), (2, 4),
                                                                     (2, 8)]
    for e in m["buckets"]:
        assert set(e["exported"]) == {"cpu", "cuda"}, e["export_errors"]
        assert e["inputs"]["batch"]["cand_mask"] == {"shape": [e["batch"], e["candidates"]],
                                                    "dtype": "bool"}
        assert e["outputs"]["top_indices"]["shape"] == [e["batch"], min(m["top_k"],
                                                                        e["candidates"])]
        for rel in [*e["exported"].values(), *e["executable"].values()]:
            assert rel in m["files"]
    assert any(k.startswith("weights/") for k in m["files"])
    exp = jax.export.deserialize(bytearray(
        (exported["dir"] / "small" / m["buckets"][0]["exported"]["cuda"]).read_bytes()))
    assert exp.platforms == ("cuda",)


def test_weights_are_arguments_and_swap(exported, checkpoint_like):
    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=9)
    before = tier.score(batch).probs
    new = checkpoint_like(99, "v2")
    tier.swap_weights(new)
    after = tier.score(batch).probs
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, _library(new, batch))
    wide = checkpoint_like(1, "wide", d_model=32)
    with pytest.raises(ArtifactError, match="model.d_model: artifact compiled with 16, "
                                            "checkpoint trained with 32"):
        tier.swap_weights(wide)
    bare = shutil.copytree(wide / "params", exported["root"] / "more" / "wide-bare")
    with pytest.raises(ArtifactError, match="compiled for"):   # no config.json: shapes
        tier.swap_weights(bare)
    np.testing.assert_array_equal(tier.score(batch).probs, after)  # old weights keep serving
    with pytest.raises(ArtifactError, match="not a weights checkpoint"):
        tier.swap_weights(exported["root"])


def test_reexport_hits_executable_cache_and_still_runs(exported, tmp_path):
    from arm_jax.compile.export import export_tiers

    out = export_tiers({"small": exported["ckpt"]}, tmp_path / "again", platforms=("cpu",),
                       cache_dir=exported["cache"], progress=False)
    m = json.loads((out / "small" / "manifest.json").read_text())
    assert {e["compile_cache"] for e in m["buckets"]} == {"hit"}
    tier = load(out).tiers["small"]
    batch = random_batch(tier.config.features, batch=2, candidates=8, history=6, seed=3)
    np.testing.assert_array_equal(tier.score(batch).probs, _library(exported["ckpt"], batch))


@pytest.mark.slow
def test_portable_load_compiles_jax_export_modules(exported):
    tier = load(exported["dir"], portable=True).tiers["small"]
    batch = random_batch(tier.config.features, batch=2, candidates=5, history=6, seed=4)
    ref = load(exported["dir"]).tiers["small"].score(batch).probs
    np.testing.assert_allclose(tier.score(batch).probs, ref, rtol=1e-6, atol=1e-7)


def test_wrong_feature_width_is_named(exported):
    import dataclasses

    tier = load(exported["dir"]).tiers["small"]
    other = dataclasses.replace(tier.config.features, req_dense_features=5)
    batch = random_batch(other, batch=1, candidates=4, history=6)
    with pytest.raises(ArtifactError, match=r"req_dense: shape \[1, 5\] does not match"):
        tier.score(batch)


@pytest.mark.slow
def test_export_ignores_a_warm_jax_persistent_cache(exported, tmp_path):
    """With jax's own persistent cache on and already holding the program, export still
    compiles afresh: an executable from jax's CPU cache re-serializes into an artifact
    that fails at run time (`Function ... not found`), see arm_jax/compile/cache.py."""
    script = textwrap.dedent(f"""
        import jax, numpy as np
        jax.config.update("jax_compilation_cache_dir", {str(tmp_path / 'jaxcache')!r})
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        from arm_jax.checkpoint import load_checkpoint
        from arm_jax.compile import load, weights as wt
        from arm_jax.compile.buckets import batch_signature
        from arm_jax.compile.export import _specs, export_tiers, scoring_function
        from arm_jax.data.random_batch import random_batch
        from arm_jax.train.step import make_predict
        ckpt = {str(exported['ckpt'])!r}
        _, tier, graphdef, params = load_checkpoint(ckpt)
        score, flat = scoring_function(graphdef, params, 16)
        jax.jit(score).lower(_specs(wt.spec_of(flat)),
                             _specs(batch_signature((1, 4), 6, tier.features))).compile()
        out = export_tiers({{"small": ckpt}}, {str(tmp_path / 'art')!r}, platforms=("cpu",),
                           buckets=[(1, 4)], cache_dir=None, progress=False)
        batch = random_batch(tier.features, batch=1, candidates=4, history=6, seed=1)
        got = load(out).tiers["small"].score(batch).probs
        np.testing.assert_array_equal(got, np.asarray(make_predict(graphdef)(params, batch)))
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.mark.parametrize("name, model, message", [
    ("gelu", {"activation": "gelu"},
     "model.activation: artifact compiled with 'relu', checkpoint trained with 'gelu'"),
    ("heads4", {"target_heads": 4},
     "model.target_heads: artifact compiled with 2, checkpoint trained with 4"),
], ids=["activation", "target_heads"])
def test_swap_refuses_a_checkpoint_trained_with_another_config(exported, checkpoint_like,
                                                                name, model, message):
    """Same weight shapes, another function: the executables keep their compiled activation
    and head split, so such weights would serve wrong scores silently."""
    import re

    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=9)
    before = tier.score(batch).probs
    other = checkpoint_like(5, name, **model)
    for path in (other, other / "params"):       # the checkpoint, or its params/ beside it
        with pytest.raises(ArtifactError, match=re.escape(message)):
            tier.swap_weights(path)
    np.testing.assert_array_equal(tier.score(batch).probs, before)


def test_swap_accepts_a_checkpoint_differing_only_in_training_fields(exported, checkpoint_like):
    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=9)
    new = checkpoint_like(8, "dropout", dropout=0.2, kernel_impl="xla")
    tier.swap_weights(new)
    np.testing.assert_array_equal(tier.score(batch).probs, _library(new, batch))


def test_unfilled_top_k_slots_hold_minus_one(exported):
    """The package's top-K rule: a slot no real candidate fills is index -1, score -inf."""
    from arm_jax.compile.artifacts import unfilled_slots

    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=3, history=6, seed=2,
                         valid_candidates=2)
    r = tier.score(batch)
    assert r.bucket == (1, 4)
    assert sorted(r.top_indices[0, :2]) == [0, 1] and (r.top_indices[0, 2:] == -1).all()
    assert np.isneginf(r.top_scores[0, 2:]).all() and np.isfinite(r.top_scores[0, :2]).all()
    # executables exported before the rule return the padded candidates' indices
    i, s = unfilled_slots(np.array([[2, 0, 3, 1]], np.int32),
                          np.array([[0.9, 0.5, np.nan, -np.inf]], np.float32), 3)
    assert i.tolist() == [[2, 0, -1, -1]] and np.isneginf(s[0, 2:]).all()


def test_out_of_range_action_on_a_padded_event_is_ignored(exported):
    tier = load(exported["dir"]).tiers["small"]
    f = tier.config.features
    batch = random_batch(f, batch=2, candidates=3, history=6, seed=3)
    padded = np.arange(6)[None, :] >= np.asarray(batch.hist_len)[:, None]
    assert padded.any()
    bad = batch.replace(hist_action=np.where(padded, f.num_action_types, batch.hist_action)
                        .astype(np.int32))
    got = tier.score(bad)
    assert np.isfinite(got.probs).all()
    np.testing.assert_array_equal(got.probs, tier.score(batch).probs)


def test_a_failed_reexport_leaves_the_previous_tier_serving(exported, artifact_copy,
                                                            checkpoint_like, monkeypatch):
    """A re-export that dies part way (a compile error, Ctrl-C, a full disk) once deleted
    the tier first: the index still pinned the old manifest, so every tier of the
    directory stopped loading, and the next export refused the half-written tier."""
    from arm_jax.compile import export as ex
    from arm_jax.compile import manifest as mf

    batch = random_batch(exported["tier"].features, batch=1, candidates=4, history=6, seed=5)
    before = load(artifact_copy).tiers["small"].score(batch).probs
    new = checkpoint_like(5, "v5")

    def disk_full(*a, **k):
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(ex, "_compile", disk_full)
        with pytest.raises(OSError, match="No space left"):
            ex.export_tiers({"small": new}, artifact_copy, platforms=("cpu",),
                            cache_dir=exported["cache"], progress=False)
    assert mf.verify(artifact_copy) == []
    np.testing.assert_array_equal(load(artifact_copy).tiers["small"].score(batch).probs, before)
    ex.export_tiers({"small": new}, artifact_copy, platforms=("cpu",),
                    cache_dir=exported["cache"], progress=False)
    np.testing.assert_array_equal(load(artifact_copy).tiers["small"].score(batch).probs,
                                  _library(new, batch))


def test_a_failing_tier_keeps_the_tiers_exported_before_it_loadable(exported, artifact_copy,
                                                                     checkpoint_like):
    """export_tiers wrote the index once at the end: when a later tier failed (here a
    mistyped checkpoint), the tiers already replaced no longer matched the hashes the
    index pinned, and the whole directory was refused."""
    from arm_jax.checkpoint import CheckpointError
    from arm_jax.compile.export import export_tiers

    new = checkpoint_like(6, "v6")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        export_tiers({"small": new, "large": exported["root"] / "no-such-run"}, artifact_copy,
                     platforms=("cpu",), cache_dir=exported["cache"], progress=False)
    batch = random_batch(exported["tier"].features, batch=2, candidates=8, history=6, seed=6)
    np.testing.assert_array_equal(load(artifact_copy).tiers["small"].score(batch).probs,
                                  _library(new, batch))


def test_swap_refuses_a_checkpoint_without_its_config(exported, checkpoint_like):
    """A training checkpoint whose config.json is missing (what a save that failed part way
    leaves) was taken for a bare orbax tree: only shapes were checked, so weights trained
    with another activation swapped in silently."""
    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=7)
    before = tier.score(batch).probs
    gelu = checkpoint_like(7, "gelu-unfinished", activation="gelu")
    (gelu / "config.json").unlink()
    with pytest.raises(ArtifactError, match="config.json missing"):
        tier.swap_weights(gelu)
    np.testing.assert_array_equal(tier.score(batch).probs, before)


def test_non_finite_weights_are_neither_swapped_in_nor_exported(exported, checkpoint_like):
    """A diverged training's NaN weights swapped in fine and every response then held NaN
    scores, which JSON cannot carry: the server answered 500 until the next swap."""
    from arm_jax.checkpoint import load_checkpoint, save_checkpoint

    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=5)
    before = tier.score(batch).probs
    kind, cfg, graphdef, params = load_checkpoint(checkpoint_like(5, "to-diverge"))
    state = nnx.to_flat_state(params)
    path, leaf = next((p, v) for p, v in state if p[-1] == "kernel")
    poisoned = leaf[...].at[0, 0].set(jnp.nan)
    params = nnx.from_flat_state([(p, v.replace(poisoned) if p == path else v)
                                  for p, v in state])
    bad = save_checkpoint(exported["root"] / "more" / "diverged", kind=kind, tier=cfg,
                          params=params, allow_nonfinite=True)   # refused by default
    name = "/".join(map(str, path))
    with pytest.raises(ArtifactError, match=f"weight {name} holds 1 non-finite values"):
        tier.swap_weights(bad)
    np.testing.assert_array_equal(tier.score(batch).probs, before)
    from arm_jax.compile.export import export_tiers

    never = exported["root"] / "never-exported"        # nor exported, before any compile
    with pytest.raises(ArtifactError, match=f"weight {name} holds 1 non-finite values"):
        export_tiers({"small": bad}, never, platforms=("cpu",), progress=False)
    assert not (never / "small").exists()


def test_weights_changed_since_their_save_are_not_swapped_in(exported, checkpoint_like):
    """A bit flipped in a checkpoint's params/ was restored by orbax as it was, and served."""
    tier = load(exported["dir"]).tiers["small"]
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=6)
    before = tier.score(batch).probs
    ck = checkpoint_like(6, "flipped")
    victim = max((p for p in (ck / "params").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="params: file .* is corrupted .*refusing these"):
        tier.swap_weights(ck)
    np.testing.assert_array_equal(tier.score(batch).probs, before)


def _stub_tier(tiny_overrides, seen):
    """A LoadedTier over one (2, 4) bucket whose executable records its inputs (no export)."""
    from arm_jax.compile.artifacts import LoadedTier
    from arm_jax.compile.buckets import batch_signature
    from arm_jax.config import load_tier

    tier = load_tier("small", [*tiny_overrides, "model.history_len=6"])

    def exe(weights, inputs):
        seen.update(inputs)
        b, n = inputs["cand_mask"].shape
        return (np.zeros((b, n, len(tier.features.tasks)), np.float32),
                np.zeros((b, 2), np.int32), np.zeros((b, 2), np.float32))

    manifest = {"buckets": [{"batch": 2, "candidates": 4, "inputs": {
        "batch": batch_signature((2, 4), 6, tier.features)}}]}
    return LoadedTier("small", tier, manifest, {(2, 4): exe}, {}, jax.devices()[0])


@pytest.mark.parametrize("field, bad, message", [
    ("cand_sparse", lambda a: a + 0.7, "cand_sparse: dtype float64 cannot be cast to the "
                                       r"compiled int32 without changing values"),
    ("cand_sparse", lambda a: a.astype(np.int64) + 2**32, r"cand_sparse: values must be in "
                                                          r"\[-2147483648, 2147483647\] \(the "
                                                          r"compiled int32\), got 4\d{9}$"),
    ("hist_len", lambda a: a > 0, "hist_len: dtype bool cannot be cast to the compiled int32"),
    ("req_dense", lambda a: np.full(a.shape, 1e300), r"req_dense: value 1e\+300 at \[0, 0\] "
                                                     "overflows the compiled float32"),
])
def test_score_refuses_a_cast_that_changes_values(tiny_overrides, field, bad, message):
    """numpy's unsafe astype truncated float ids (89287.7 -> 89287) and wrapped int64 ids
    past int32 (x + 2^32 -> x): scored without a word."""
    seen: dict = {}
    lt = _stub_tier(tiny_overrides, seen)
    batch = random_batch(lt.config.features, batch=2, candidates=3, history=6, seed=1)
    with pytest.raises(ArtifactError, match="^" + message):
        lt.score(batch.replace(**{field: bad(np.asarray(getattr(batch, field)))}))
    assert not seen                              # refused before the executable ran
    fine = batch.replace(cand_sparse=np.asarray(batch.cand_sparse).astype(np.int64),
                         cand_dense=np.asarray(batch.cand_dense).astype(np.float64))
    lt.score(fine)                               # casts that keep every value still run
    assert seen["cand_sparse"].dtype == np.int32 and seen["cand_dense"].dtype == np.float32
    np.testing.assert_array_equal(seen["cand_sparse"][:2, :3], batch.cand_sparse)


@pytest.mark.parametrize("field, cut, message", [
    ("cand_dense", (slice(None), slice(0, 2)),
     r"cand_dense: shape \[2, 2, 2\], expected 3 candidates on axis 1 \(c, as cand_sparse has\)"),
    ("hist_len", (slice(0, 1),), r"hist_len: shape \[1\], expected 2 requests on axis 0"),
    ("hist_gap", (slice(None), slice(0, 4)), r"hist_gap: shape \[2, 4\], expected 6 history "
                                             r"events on axis 1 \(l, as hist_item has\)"),
    ("cand_mask", (0,), r"cand_mask: expected rank 2 \(\[b, c\]\), got shape \[3\]"),
])
def test_score_refuses_fields_that_disagree_on_b_c_or_l(tiny_overrides, field, cut, message):
    """Each field is padded to the bucket on its own: cand_dense for 2 candidates beside
    cand_sparse for 3 scored the third with zero dense features."""
    seen: dict = {}
    lt = _stub_tier(tiny_overrides, seen)
    batch = random_batch(lt.config.features, batch=2, candidates=3, history=6, seed=1)
    with pytest.raises(ArtifactError, match="^" + message):
        lt.score(batch.replace(**{field: np.asarray(getattr(batch, field))[cut]}))
    assert not seen
