"""`bench precision` on a tiny checkpoint: every variant, the plan, JSON and PNG."""

import json


def test_precision_bench_reports_every_variant(tiny_overrides, tmp_path):
    from flax import nnx

    from arm_jax.bench.precision import run_precision_bench
    from arm_jax.checkpoint import save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", [*tiny_overrides, "train.num_users=200", "train.candidates=8",
                               "model.history_len=8"])
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    ckpt = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    out = tmp_path / "precision.json"
    res = run_precision_bench(checkpoint=str(ckpt), candidates=(4, 8), calib_requests=32,
                              holdout_requests=32, test_requests=32, repeats=1,
                              out_json=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["targets"] == res["targets"]
    names = {"f32", "selective", "all-bfloat16", "all-int8", "all-float8_e4m3fn"}
    assert {(v["name"], v["candidates"]) for v in saved["variants"]} == {
        (n, c) for n in names for c in (4, 8)}
    assert all(v["ms"] > 0 and 0 <= v["auc"] <= 1 for v in saved["variants"])
    f32 = [v for v in saved["variants"] if v["name"] == "f32"]
    assert all(v["auc_drop"] == 0 for v in f32)
    assert {p["layer"] for p in saved["plan"]} >= {"head_in", "wukong/0/mlp_in"}
    assert all(set(p) >= {"layer", "format", "sensitivity", "speedup"} for p in saved["plan"])
    assert out.with_suffix(".png").stat().st_size > 0
