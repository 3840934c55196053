"""`arm-jax bench broadcast`: target attention without vs with materializing the request N times.

Op: N candidate queries attend over one request's encoded history (large tier: d=128,
4 heads of 32, L=1024). Paths:
  materialized  `jnp.broadcast_to` of K, V and the mask to [b, N, L, h, dk], then
                per-pair attention (what a per-pair ranker does)
  fused_xla     `pallas_kernels.target_attention(impl="xla")`: the dispatcher's CPU path,
                K/V used per request inside the einsums (XLA still writes the [h, N, L]
                scores to memory)
  kernel        the Pallas kernel. Without a GPU it cannot be timed meaningfully
                (interpret mode runs the grid in Python-like loops), so only its bytes
                are reported, from its own cost estimate (K/V read once per block of
                candidates; scores never leave the chip). On a GPU it is also timed.
Bytes for the XLA paths come from XLA's cost analysis of the compiled executable. The
timed paths run in interleaved rounds (median per path), so their time ratio is measured
over the same stretch of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.memory import check_fits_in_memory
from arm_jax.bench.timing import cost_analysis, interleaved_median_ms, machine_info, publish


def materialized_attention(q_bnhk: jax.Array, k_blhk: jax.Array, v_blhk: jax.Array,
                           mask_bl: jax.Array) -> jax.Array:
    """Per-pair target attention after broadcasting the request's K/V/mask to every candidate."""
    b, n = q_bnhk.shape[:2]
    k_bnlhk = jnp.broadcast_to(k_blhk[:, None], (b, n) + k_blhk.shape[1:])
    v_bnlhk = jnp.broadcast_to(v_blhk[:, None], (b, n) + v_blhk.shape[1:])
    m_bnl = jnp.broadcast_to(mask_bl[:, None], (b, n) + mask_bl.shape[1:])
    s_bnhl = jnp.einsum("bnhk,bnlhk->bnhl", q_bnhk * q_bnhk.shape[-1] ** -0.5, k_bnlhk)
    s_bnhl = jnp.where(m_bnl[:, :, None, :], s_bnhl, -1e30)
    e_bnhl = jnp.exp(s_bnhl - s_bnhl.max(axis=-1, keepdims=True))
    o_bnhk = jnp.einsum("bnhl,bnlhk->bnhk", e_bnhl, v_bnlhk) / e_bnhl.sum(-1)[..., None]
    return o_bnhk * m_bnl.any(axis=-1)[:, :, None, None].astype(o_bnhk.dtype)


def run_broadcast_bench(candidates: tuple[int, ...] = (64, 256, 1024), *, batch: int = 1,
                        d_model: int = 128, history: int = 1024, heads: int = 4,
                        repeats: int = 7, out_json: str | Path | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """Bytes and time of the materialized vs fused paths at every N; JSON + PNG."""
    from pallas_kernels.target_attention import (TargetAttentionBlocks, kernel_cost,
                                                 target_attention)

    check_fits_in_memory(   # the float64 draws of k and v, and of q at the largest N
        8.0 * batch * d_model * (2 * history + max(candidates)),
        f"batch={batch}, history={history}, d_model={d_model}, candidates={max(candidates)}")
    dk = d_model // heads
    blocks = TargetAttentionBlocks.default()
    on_gpu = jax.default_backend() == "gpu"
    r = np.random.default_rng(seed)
    k = jnp.asarray(r.normal(size=(batch, history, heads, dk)), jnp.float32)
    v = jnp.asarray(r.normal(size=(batch, history, heads, dk)), jnp.float32)
    mask = jnp.asarray(np.arange(history)[None, :] < r.integers(history // 2, history + 1,
                                                                 (batch, 1)))
    paths = {"materialized": materialized_attention,
             "fused_xla": lambda *a: target_attention(*a, impl="xla")}
    if on_gpu:
        paths["kernel"] = lambda *a: target_attention(*a, impl="pallas", interpret=False)
    rows = []
    for n in tqdm(candidates, desc="bench broadcast", unit="N"):
        q = jnp.asarray(r.normal(size=(batch, n, heads, dk)), jnp.float32)
        row: dict[str, Any] = {"n": n}
        outs, thunks = {}, {}
        for name, fn in paths.items():
            compiled = jax.jit(fn).lower(q, k, v, mask).compile()
            ca = cost_analysis(compiled)
            row[f"{name}_bytes"] = float(ca.get("bytes accessed", float("nan")))
            row[f"{name}_gflop"] = float(ca.get("flops", float("nan"))) / 1e9
            outs[name] = np.asarray(compiled(q, k, v, mask))    # warm, kept for the check
            thunks[name] = lambda c=compiled, q=q: c(q, k, v, mask)
        # Every path in the same rounds: the time ratio is not two phases of the run.
        # settled: each path's timed call follows an untimed one of its own, not the
        # other path's gigabytes (cold memory is a cost of the interleaving, not the path's)
        settle = {name: 1 for name in thunks}
        for name, ms in interleaved_median_ms(thunks, repeats, settle_of=settle).items():
            row[f"{name}_ms"] = ms
        est = kernel_cost(batch, n, history, heads, dk, 4, blocks)
        row["kernel_bytes"] = float(est.bytes_accessed)  # the kernel's own cost estimate
        row["max_abs_diff"] = float(np.abs(outs["materialized"] - outs["fused_xla"]).max())
        row["bytes_ratio_materialized_over_fused_xla"] = (row["materialized_bytes"]
                                                          / row["fused_xla_bytes"])
        row["bytes_ratio_materialized_over_kernel"] = (row["materialized_bytes"]
                                                       / row["kernel_bytes"])
        row["time_ratio_materialized_over_fused_xla"] = row["materialized_ms"] / row["fused_xla_ms"]
        rows.append(row)
    result = {
        "benchmark": "broadcast",
        "op": "target attention",
        "shapes": {"batch": batch, "d_model": d_model, "history": history, "heads": heads,
                   "dk": dk, "block_c": blocks.block_c, "block_l": blocks.block_l},
        "measured": ("materialized and fused_xla timed; kernel timed" if on_gpu else
                     "materialized and fused_xla timed on CPU; kernel bytes are its cost "
                     "estimate (not timed: no GPU, interpret mode is not a performance path)"),
        "machine": machine_info(),
        "repeats": repeats,
        "results": rows,
    }
    return publish(result, out_json, format_table, plot_broadcast)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"measured: {result['measured']}",
             f"{'N':>6} {'mat MB':>9} {'fused MB':>9} {'kernel MB':>10} {'mat ms':>9} "
             f"{'fused ms':>9} {'bytes mat/fused':>15} {'bytes mat/kernel':>16} "
             f"{'time mat/fused':>14}"]
    for r in result["results"]:
        lines.append(
            f"{r['n']:>6} {r['materialized_bytes'] / 1e6:>9.1f} {r['fused_xla_bytes'] / 1e6:>9.1f} "
            f"{r['kernel_bytes'] / 1e6:>10.1f} {r['materialized_ms']:>9.2f} "
            f"{r['fused_xla_ms']:>9.2f} {r['bytes_ratio_materialized_over_fused_xla']:>15.1f} "
            f"{r['bytes_ratio_materialized_over_kernel']:>16.1f} "
            f"{r['time_ratio_materialized_over_fused_xla']:>14.1f}")
    return "\n".join(lines)


def plot_broadcast(result: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    rs = result["results"]
    n = [r["n"] for r in rs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.loglog(n, [r["materialized_bytes"] / 1e6 for r in rs], "s--", label="materialized (XLA)")
    a1.loglog(n, [r["fused_xla_bytes"] / 1e6 for r in rs], "o-", label="fused, XLA path")
    a1.loglog(n, [r["kernel_bytes"] / 1e6 for r in rs], "d-", label="Pallas kernel (estimate)")
    a1.set_ylabel("MB accessed")
    a2.loglog(n, [r["materialized_ms"] for r in rs], "s--", label="materialized")
    a2.loglog(n, [r["fused_xla_ms"] for r in rs], "o-", label="fused, XLA path")
    if "kernel_ms" in rs[0]:
        a2.loglog(n, [r["kernel_ms"] for r in rs], "d-", label="Pallas kernel")
    a2.set_ylabel("median ms")
    for ax in (a1, a2):
        ax.set_xlabel("candidates N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    s = result["shapes"]
    fig.suptitle(f"target attention, d={s['d_model']}, L={s['history']}, {s['heads']} heads")
    fig.tight_layout()
    return save_png(fig, png)
