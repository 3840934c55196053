"""`arm-jax bench sharing`: request-oriented (`shared`) vs per-pair scoring of one request.

For each candidate count N: median latency of one request in both modes (compiled,
warmed, blocked, the two modes timed in the same interleaved rounds), FLOPs from XLA's
cost analysis of each executable, and MFU of the shared mode against an f32 matmul peak
measured in the same process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.peak import matmul_peak_gflops
from arm_jax.bench.timing import (compiled_flops, interleaved_median_ms, machine_info,
                                  median_ms, publish)
from arm_jax.config import TierConfig
from arm_jax.data.random_batch import random_batch
from arm_jax.model import Ranker


def run_sharing_bench(tier: TierConfig, candidates: tuple[int, ...] = (16, 64, 256, 1024), *,
                      repeats: int = 7, pair_chunk: int = 32, per_pair_budget_s: float = 60.0,
                      out_json: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure both modes at every N; per-pair repeats shrink so it stays within budget."""
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)

    def forward(p, batch, mode):
        return nnx.merge(graphdef, p)(batch, mode=mode, pair_chunk=pair_chunk)

    peak = matmul_peak_gflops()
    L = tier.model.history_len
    rows = []
    for n in tqdm(candidates, desc=f"sharing[{tier.name}]", unit="N"):
        batch = random_batch(tier.features, batch=1, candidates=n, history=L, seed=seed + n,
                             full_history=True)
        row: dict[str, Any] = {"candidates": n}
        thunks = {}
        for mode in ("shared", "per_pair"):
            compiled = jax.jit(forward, static_argnums=2).lower(params, batch, mode).compile()
            flops = compiled_flops(compiled)
            if mode == "per_pair" and n > pair_chunk:
                # Chunked per-pair runs as a lax.map (a while loop): XLA's cost analysis
                # counts the loop body once, so scale by the number of chunks.
                flops *= -(-n // pair_chunk)
            row[f"{mode}_gflop"] = flops / 1e9
            jax.block_until_ready(compiled(params, batch))     # warm: the first run allocates
            thunks[mode] = lambda c=compiled, b=batch: c(params, b)
        # One timed call tells how many per-pair repeats fit in the budget; then both modes
        # are timed in the same interleaved rounds (the per-pair samples spread over them),
        # so the speedup divides times from the same stretch of the run, not two phases.
        first_ms = median_ms(thunks["per_pair"], repeats=1, warmup=0)
        reps = {"shared": repeats, "per_pair": int(
            np.clip(per_pair_budget_s * 1e3 / max(first_ms, 1e-3), 1, repeats))}
        # one untimed shared call before each timed one: right after a per-pair call it
        # runs on cold memory (1.75x slower at N=64), a cost of the interleaving, not its own
        ms = interleaved_median_ms(thunks, repeats, repeats_of=reps, settle_of={"shared": 1})
        for mode in thunks:
            row[f"{mode}_ms"] = ms[mode]
            row[f"{mode}_repeats"] = reps[mode]
        row["speedup"] = row["per_pair_ms"] / row["shared_ms"]
        row["shared_mfu"] = row["shared_gflop"] / (row["shared_ms"] * 1e-3) / peak
        row["per_pair_mfu"] = row["per_pair_gflop"] / (row["per_pair_ms"] * 1e-3) / peak
        rows.append(row)

    result = {
        "benchmark": "sharing",
        "tier": tier.name,
        "config": tier.to_dict(),
        "machine": machine_info(),
        "matmul_peak_gflops": peak,
        "pair_chunk": pair_chunk,
        "per_pair_flops_note": "XLA counts a loop body once; chunked per-pair FLOPs are the "
                               "body's count times the number of chunks",
        "results": rows,
    }
    return publish(result, out_json, format_table, plot_sharing)


def format_table(result: dict[str, Any]) -> str:
    head = (f"tier={result['tier']}  f32 matmul peak={result['matmul_peak_gflops']:.1f} GFLOP/s\n"
            f"{'N':>6} {'shared ms':>10} {'per-pair ms':>12} {'speedup':>8} "
            f"{'shared GFLOP':>13} {'per-pair GFLOP':>15} {'shared MFU':>11}")
    lines = [head]
    for r in result["results"]:
        lines.append(f"{r['candidates']:>6} {r['shared_ms']:>10.2f} {r['per_pair_ms']:>12.1f} "
                     f"{r['speedup']:>8.1f} {r['shared_gflop']:>13.2f} "
                     f"{r['per_pair_gflop']:>15.1f} {r['shared_mfu']:>11.2f}")
    return "\n".join(lines)


def plot_sharing(result: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    n = [r["candidates"] for r in result["results"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, [r["shared_ms"] for r in result["results"]], "o-", label="shared (request-oriented)")
    ax.loglog(n, [r["per_pair_ms"] for r in result["results"]], "s--", label="per-pair")
    ax.set_xlabel("candidates per request (N)")
    ax.set_ylabel("latency of one request (ms)")
    ax.set_title(f"tier {result['tier']}: shared vs per-pair")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, png)
