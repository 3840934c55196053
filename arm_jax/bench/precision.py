"""`arm-jax bench precision`: f32 vs selectively quantized vs everything-quantized.

The reference tier (default `large`) is trained briefly on the bundled synthetic data
(or read from --checkpoint), then quantized by the real pipeline (calibration set,
per-layer micro-benchmarks at the N=max bucket, sensitivity, selection on a held-out set).
Variants: `f32`, `selective` (the plan) and `all-<format>` (every dense layer in that
format). Quality: test AUC (first task) and mean log loss on requests neither training
nor selection saw. Latency: the real quantized model (weights stored in their formats),
compiled, one request of N candidates, median of repeats, interleaved across variants.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.timing import machine_info, publish

TARGET_SPEEDUP = 1.5


def run_precision_bench(tier_name: str = "large", checkpoint: str | None = None,
                        steps: int = 60, candidates: Sequence[int] = (256, 1024),
                        calib_requests: int = 128, holdout_requests: int = 256,
                        test_requests: int = 512, budget_auc: float = 0.001,
                        repeats: int = 7, sweep_all: bool = False,
                        out_json: str | Path | None = None, progress: bool = True
                        ) -> dict[str, Any]:
    """f32 vs the selective plan (chosen within `budget_auc` on held-out requests) vs every
    dense layer in one format: test AUC, log loss and latency per candidate count
    (interleaved); prints the table, writes JSON and a PNG (see the module docstring)."""
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.data.random_batch import random_batch
    from arm_jax.quant.data import check_candidates, synthetic_sets
    from arm_jax.quant.formats import LOW_PRECISION
    from arm_jax.quant.microbench import model_latency_ms
    from arm_jax.quant.pipeline import (build_quantized, check_float32_compute,
                                        plan_from_formats, quantize)
    from arm_jax.quant.sweep import auc_drop, mean_logloss
    from arm_jax.train.loop import make_synthetic_data, train_model

    if checkpoint:
        kind, tier, graphdef, params = load_checkpoint(checkpoint)
        if kind != "ranker":
            raise ValueError(f"--checkpoint {checkpoint}: kind {kind!r}, expected a ranker")
        check_float32_compute(tier)
        check_candidates(max(candidates), tier)
        trained = f"checkpoint {checkpoint}"
    else:
        tier = load_tier(tier_name)
        check_candidates(max(candidates), tier)      # before minutes of training
        tier = dataclasses.replace(tier, train=dataclasses.replace(
            tier.train, steps=steps, train_requests=min(tier.train.train_requests, 8000),
            eval_requests=min(tier.train.eval_requests, 256)))  # the bench has its own test set
        res = train_model(tier, make_synthetic_data(tier), steps=steps, progress=progress)
        graphdef, params = res.graphdef, res.params
        trained = f"{steps} steps on synthetic data"
    calib, holdout, test = synthetic_sets(tier, calib_requests=calib_requests,
                                          holdout_requests=holdout_requests,
                                          test_requests=test_requests)
    L, n_max = tier.model.history_len, max(candidates)
    serving = random_batch(tier.features, batch=1, candidates=n_max, history=L,
                           full_history=True, seed=1)
    q = quantize(graphdef, params, tier, calib=calib, holdout=holdout, serving_batch=serving,
                 budget_auc=budget_auc, sweep_all=sweep_all, progress=progress)

    layers = q.sweep.layers
    assignments = {"f32": {}, "selective": {d.layer: d.format for d in q.decisions}}
    for fmt in LOW_PRECISION:
        assignments[f"all-{fmt}"] = {k: fmt for k in layers}
    quality = {name: q.sweep.quality(a, test) for name, a in assignments.items()}
    ref = quality["f32"]
    task0 = tier.features.tasks[0]

    models: dict[str, tuple[nnx.GraphDef, Any]] = {}
    for name, assign in assignments.items():
        _, gd, p = build_quantized(graphdef, params, tier, plan_from_formats(assign, q.amax))
        models[name] = (gd, p)
    variants = []
    for n in candidates:
        batch = random_batch(tier.features, batch=1, candidates=n, history=L,
                             full_history=True, seed=2)
        ms = model_latency_ms(models, batch, repeats)
        for name in assignments:
            variants.append({"name": name, "candidates": n, "ms": ms[name],
                             "auc": quality[name][task0]["auc"],
                             "logloss": mean_logloss(quality[name]),
                             "auc_drop": auc_drop(ref, quality[name])})

    def row(name: str, n: int) -> dict[str, Any]:
        return next(v for v in variants if v["name"] == name and v["candidates"] == n)

    speedup = row("f32", n_max)["ms"] / row("selective", n_max)["ms"]
    over = {f"all-{f}": row(f"all-{f}", n_max)["auc_drop"] > budget_auc for f in LOW_PRECISION}
    result = {
        "benchmark": "precision", "tier": tier.name, "trained": trained,
        "budget_auc": budget_auc, "backend": jax.default_backend(),
        "sets": {"calib_requests": calib_requests, "holdout_requests": holdout_requests,
                 "test_requests": test_requests},
        "variants": variants,
        "plan": q.summary(),
        "layer_timings_ms": q.timings_ms,
        "sensitivity": q.sensitivity,
        "plan_holdout_auc_drop": q.plan_auc_drop,
        "plan_model_speedup": q.tier.quant.model_speedup,  # quantize()'s own confirmation
        "targets": {
            "selective_speedup_at_max_n": speedup,
            "selective_speedup_target": TARGET_SPEEDUP,
            "selective_speedup_met": speedup >= TARGET_SPEEDUP,
            "selective_test_auc_drop": row("selective", n_max)["auc_drop"],
            "selective_within_budget": row("selective", n_max)["auc_drop"] <= budget_auc,
            "all_quantized_over_budget": over,
        },
        "machine": machine_info(),
    }
    return publish(result, out_json, format_table, plot_precision)


def format_table(result: dict[str, Any]) -> str:
    from arm_jax.quant.select import decision_table

    lines = [f"precision: tier {result['tier']} ({result['trained']}), backend "
             f"{result['backend']}, budget AUC drop {result['budget_auc']}",
             decision_table(result["plan"])]
    lines.append(f"{'variant':22s} {'N':>5s} {'ms':>9s} {'auc':>8s} {'drop':>9s} {'logloss':>8s}")
    for v in result["variants"]:
        lines.append(f"{v['name']:22s} {v['candidates']:5d} {v['ms']:9.2f} {v['auc']:8.4f} "
                     f"{v['auc_drop']:9.5f} {v['logloss']:8.4f}")
    t = result["targets"]
    lines.append(f"selective speed-up at max N: {t['selective_speedup_at_max_n']:.2f}x "
                 f"(target >= {t['selective_speedup_target']}: "
                 f"{'met' if t['selective_speedup_met'] else 'MISSED'}); test AUC drop "
                 f"{t['selective_test_auc_drop']:.5f} "
                 f"({'within' if t['selective_within_budget'] else 'OVER'} budget)")
    lines.append("all-quantized over budget: " + ", ".join(
        f"{k}={'yes' if v else 'no'}" for k, v in t["all_quantized_over_budget"].items()))
    return "\n".join(lines)


def plot_precision(result: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ns = sorted({v["candidates"] for v in result["variants"]})
    names = list(dict.fromkeys(v["name"] for v in result["variants"]))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ms = [next(v["ms"] for v in result["variants"]
                   if v["name"] == name and v["candidates"] == n) for n in ns]
        ax1.bar(np.arange(len(ns)) + i * width, ms, width, label=name)
    ax1.set_xticks(np.arange(len(ns)) + 0.4 - width / 2, [f"N={n}" for n in ns])
    ax1.set_ylabel("ms per request (median)")
    ax1.legend(fontsize=8)
    ax1.set_title("latency")
    first = [v for v in result["variants"] if v["candidates"] == ns[-1]]
    ax2.bar([v["name"] for v in first], [v["auc_drop"] for v in first])
    ax2.axhline(result["budget_auc"], color="red", ls="--", label="budget")
    ax2.set_ylabel("test AUC drop vs f32")
    ax2.tick_params(axis="x", rotation=30)
    ax2.legend()
    ax2.set_title("quality")
    fig.tight_layout()
    return save_png(fig, png)
