"""`arm-jax bench topk`: the dispatched top-K against radix select, lax.top_k and argsort.

One row of N fresh normal floats per (N, k); methods are timed round-robin (so machine
noise hits all alike), each jitted once per (N, k):
  ours       `pallas_kernels.topk.topk(x, k)` as dispatched on this machine (on CPU:
             lax.top_k plus the NaN-safety check; on a GPU: the Pallas radix select)
  ours_no_nan_check   the same with check_nan=False (on CPU: exactly lax.top_k)
  radix_jnp  the plain-jnp radix select (4 passes of 8-bit histograms), O(N)
  lax_top_k  `jax.lax.top_k`
  argsort    a full stable descending argsort, then the first k
`slopes` are least-squares fits of log(ms) against log(N) per method and k: 1.0 is linear.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.timing import interleaved_median_ms, machine_info, publish

METHODS = ("ours", "ours_no_nan_check", "radix_jnp", "lax_top_k", "argsort")


def _method_fns(k: int) -> dict[str, Callable[[jax.Array], tuple[jax.Array, jax.Array]]]:
    from pallas_kernels.radix_select import radix_topk
    from pallas_kernels.topk import topk

    def argsort(x):
        idx = jnp.argsort(x, axis=-1, descending=True, stable=True)[..., :k]
        return jnp.take_along_axis(x, idx, axis=-1), idx

    return {"ours": jax.jit(lambda x: topk(x, k)),
            "ours_no_nan_check": jax.jit(lambda x: topk(x, k, check_nan=False)),
            "radix_jnp": jax.jit(lambda x: radix_topk(x, k)),
            "lax_top_k": jax.jit(lambda x: jax.lax.top_k(x, k)),
            "argsort": jax.jit(argsort)}


def loglog_slope(ns: list[int], ms: list[float]) -> float:
    """Slope of log(ms) against log(N): the empirical exponent of the cost in N."""
    if len(ns) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(ms), 1)[0])


def run_topk_bench(ns: tuple[int, ...] = (4096, 65536, 1048576), ks: tuple[int, ...] = (16, 256),
                   *, repeats: int = 15, out_json: str | Path | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Time every method at every (N, k); check the methods agree; fit slopes; write JSON + PNG."""
    if max(ks) > min(ns):
        raise ValueError(f"--k={max(ks)}: must be <= the smallest --n ({min(ns)}); "
                         "lax.top_k and argsort need k <= N")
    rows: list[dict[str, Any]] = []
    pairs = [(n, k) for n in ns for k in ks]
    for n, k in tqdm(pairs, desc="bench topk", unit="case"):
        x = jnp.asarray(np.random.default_rng(seed + n + k).normal(size=(1, n)), jnp.float32)
        fns = _method_fns(k)
        row: dict[str, Any] = {"n": n, "k": k}
        indices = {}
        for name, fn in fns.items():
            indices[name] = np.asarray(fn(x)[1])  # compile + warm up, keep for the check
        for name, ms in interleaved_median_ms(
                {n: (lambda f=f: f(x)) for n, f in fns.items()}, repeats).items():
            row[f"{name}_ms"] = ms
        row["agree"] = all(np.array_equal(indices[m], indices["lax_top_k"]) for m in METHODS)
        row["argsort_over_ours"] = row["argsort_ms"] / row["ours_ms"]
        row["ours_over_lax_top_k"] = row["ours_ms"] / row["lax_top_k_ms"]
        row["ours_no_nan_check_over_lax_top_k"] = row["ours_no_nan_check_ms"] / row["lax_top_k_ms"]
        rows.append(row)

    slopes = {m: {str(k): loglog_slope([r["n"] for r in rows if r["k"] == k],
                                       [r[f"{m}_ms"] for r in rows if r["k"] == k])
                  for k in ks} for m in METHODS}
    big = [r for r in rows if r["n"] == max(ns)]
    result = {
        "benchmark": "topk",
        "dispatched_impl": "pallas (GPU)" if jax.default_backend() == "gpu" else
                           "xla: jax.lax.top_k + NaN check (no GPU here)",
        "machine": machine_info(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "repeats": repeats,
        "results": rows,
        "slopes": slopes,
        "targets": {
            "n": max(ns),
            "ours_no_slower_than_lax_top_k": all(r["ours_ms"] <= r["lax_top_k_ms"] for r in big),
            "ours_no_nan_check_within_5pct_of_lax_top_k": all(
                r["ours_no_nan_check_ms"] <= 1.05 * r["lax_top_k_ms"] for r in big),
            "argsort_over_ours_at_least_3x": all(r["argsort_over_ours"] >= 3 for r in big),
        },
    }
    return publish(result, out_json, format_table, plot_topk)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"dispatched path: {result['dispatched_impl']}; XLA_FLAGS={result['xla_flags']!r}",
             f"{'N':>8} {'k':>4} {'ours ms':>9} {'no-check':>9} {'radix ms':>9} "
             f"{'top_k ms':>9} {'argsort ms':>10} {'argsort/ours':>12} {'ours/top_k':>10} "
             f"{'agree':>6}"]
    for r in result["results"]:
        lines.append(f"{r['n']:>8} {r['k']:>4} {r['ours_ms']:>9.3f} "
                     f"{r['ours_no_nan_check_ms']:>9.3f} {r['radix_jnp_ms']:>9.3f} "
                     f"{r['lax_top_k_ms']:>9.3f} {r['argsort_ms']:>10.3f} "
                     f"{r['argsort_over_ours']:>12.1f} {r['ours_over_lax_top_k']:>10.2f} "
                     f"{str(r['agree']):>6}")
    lines.append("log-log slope of ms vs N: " + "; ".join(
        f"{m} " + ",".join(f"k={k}:{s:.2f}" for k, s in ks.items())
        for m, ks in result["slopes"].items()))
    return "\n".join(lines)


def plot_topk(result: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = sorted({r["k"] for r in result["results"]})
    for m, marker in zip(METHODS, "oxsd^"):
        for k, style in zip(ks, ("-", "--", ":")):
            rs = [r for r in result["results"] if r["k"] == k]
            ax.loglog([r["n"] for r in rs], [r[f"{m}_ms"] for r in rs], marker + style,
                      label=f"{m} k={k} (slope {result['slopes'][m][str(k)]:.2f})")
    ax.set_xlabel("N (row length)")
    ax.set_ylabel("median ms")
    ax.set_title("top-K: dispatched vs radix select vs lax.top_k vs argsort")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, png)
