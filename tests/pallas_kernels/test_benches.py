"""The kernels' benchmarks run end to end at toy sizes and write the promised JSON + PNG."""

import json

import pytest

from arm_jax.bench.broadcast import run_broadcast_bench
from arm_jax.bench.topk import loglog_slope, run_topk_bench


def test_topk_bench_writes_results_slopes_and_png(tmp_path):
    out = tmp_path / "topk.json"
    with pytest.raises(ValueError, match="--k=80: must be <= the smallest --n \\(64\\)"):
        run_topk_bench((64, 512), (4, 80), repeats=1)
    run_topk_bench((96, 512), (80,), repeats=1, out_json=out)
    res = json.loads(out.read_text())
    assert {(r["n"], r["k"]) for r in res["results"]} == {(96, 80), (512, 80)}
    for r in res["results"]:
        assert r["agree"]  # every method returns the same indices
        assert {"ours_ms", "radix_jnp_ms", "lax_top_k_ms", "argsort_ms"} <= set(r)
    assert set(res["slopes"]) >= {"ours", "radix_jnp", "lax_top_k", "argsort"}
    assert out.with_suffix(".png").stat().st_size > 0
    assert abs(loglog_slope([10, 100, 1000], [1.0, 10.0, 100.0]) - 1.0) < 1e-9


def test_broadcast_bench_reports_bytes_and_agreement(tmp_path):
    out = tmp_path / "broadcast.json"
    run_broadcast_bench((8, 32), d_model=16, history=64, heads=2, repeats=1, out_json=out)
    res = json.loads(out.read_text())
    for r in res["results"]:
        assert r["max_abs_diff"] < 1e-4  # materialized and fused compute the same thing
        assert r["materialized_bytes"] > r["fused_xla_bytes"] > 0 and r["kernel_bytes"] > 0
    assert out.with_suffix(".png").stat().st_size > 0
