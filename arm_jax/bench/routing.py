"""`arm-jax bench routing`: quality vs compute of routing policies on held-out data.

For trained small and large checkpoints (medium optional), every held-out request is
scored by every tier once; a policy then only chooses, per request, whose scores count.
For each policy: mean FLOPs per request (XLA cost analysis: from the artifacts' manifests
when given, else from compiling the tier's predict at batch 1), AUC, log loss and
normalized entropy of the mixed predictions.

The learned policy is fitted on one half of the held-out requests (target: per-request
log-loss reduction of large over small) and evaluated on the other half, at several
budgets (fractions of the always-large FLOPs). An oracle that routes by the true gain
at the same budget is reported beside it as the ceiling.

Target from the issue: a learned policy keeping >= 95% of large's AUC gain over small at
<= 50% of large's FLOPs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from arm_jax.batch import RequestBatch
from arm_jax.bench.figures import pyplot
from arm_jax.bench.timing import machine_info, write_json
from arm_jax.metrics import evaluate
from arm_jax.routing.features import request_features
from arm_jax.routing.policies import (FixedPolicy, LearnedPolicy, RulesPolicy, TierCost,
                                      budget_fraction_to_large)

TIERS = ("small", "medium", "large")


def tier_flops(name: str, graphdef: Any, params: Any, tier: Any, candidates: int,
                artifacts: Any | None) -> float:
    """FLOPs of one request with `candidates` candidates on this tier."""
    if artifacts is not None and name in artifacts.tiers:
        t = artifacts.tiers[name]
        fits = sorted((b for b in t.buckets if b[1] >= candidates), key=lambda b: (b[0], b[1]))
        if fits and hasattr(t, "cost_flops"):
            b = fits[0]
            return float(t.cost_flops(tuple(b))) / b[0]
    from arm_jax.batch import batch_spec_for
    from arm_jax.bench.timing import compiled_flops
    from arm_jax.train.step import make_predict

    spec = batch_spec_for(tier.features, batch=1, candidates=candidates,
                          history=tier.model.history_len)
    return compiled_flops(make_predict(graphdef).lower(params, spec).compile())


def per_request_logloss(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[R] mean log loss over each request's real candidates and all tasks."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    ll = -(labels * np.log(p) + (1 - labels) * np.log1p(-p)).mean(-1)
    m = mask.astype(np.float64)
    return (ll * m).sum(1) / np.maximum(m.sum(1), 1)


def compare_policies(probs: dict[str, np.ndarray], labels: np.ndarray, cand_mask: np.ndarray,
                     tasks: Sequence[str], flops: dict[str, float],
                     history_lens: dict[str, int], batch: RequestBatch, *,
                     num_action_types: int, budgets: Sequence[float] = (0.2, 0.3, 0.5, 0.7),
                     seed: int = 0, policy_out: str | Path | None = None,
                     policy_budget: float = 0.5) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                          dict[str, Any]]:
    """Every policy's quality and cost on requests already scored by every tier.

    probs: {tier: [R, N, T]} (needs "small" and "large"); batch: the R requests as the router
    sees them (full history). The learned policy is fitted on a random half (target: the
    per-request log-loss reduction of large over small) and every policy is reported on the
    other half, beside an oracle that routes by the true gain at the same budget.
    Returns (rows, target, learned_info); data-agnostic, so synthetic and MovieLens share it.
    `policy_out`: also save the fitted learned policy at `policy_budget` there (for
    `arm-jax serve --policy learned:PATH`).
    """
    names = list(probs)
    if "small" not in probs or "large" not in probs:
        raise ValueError(f"probs: need at least small and large, got {sorted(probs)}")
    n_req = len(labels)
    costs = {n: TierCost(n, flops[n], history_lens[n]) for n in names}
    perm = np.random.default_rng(seed).permutation(n_req)
    fit_idx, ev_idx = np.sort(perm[: n_req // 2]), np.sort(perm[n_req // 2:])
    feats_r = request_features(batch, num_action_types)
    ll = {n: per_request_logloss(labels, probs[n], cand_mask) for n in names}
    gain = ll["small"] - ll["large"]
    ev_labels, ev_mask = labels[ev_idx], cand_mask[ev_idx]
    ev_probs = {n: probs[n][ev_idx] for n in names}
    ev_batch = take_requests(batch, ev_idx)

    def score(name: str, choice: list[str]) -> dict[str, Any]:
        choice_arr = np.asarray(choice)
        mixed = np.zeros_like(ev_probs["large"])
        for n in names:
            sel = choice_arr == n
            mixed[sel] = ev_probs[n][sel]
        m = evaluate(ev_labels, mixed, ev_mask, tasks)
        mix = {n: float((choice_arr == n).mean()) for n in names}
        return {"name": name, "flops_per_request": float(sum(mix[n] * flops[n] for n in names)),
                "auc": m[tasks[0]]["auc"], "ne": m[tasks[0]]["ne"],
                "logloss": m[tasks[0]]["logloss"], "tier_mix": mix, "metrics": m}

    rows = [score(f"always-{n}", FixedPolicy(n).choose(ev_batch)) for n in names]
    rows.append(score("rules", RulesPolicy(list(costs.values())).choose(ev_batch)))
    learned = LearnedPolicy(costs["small"], costs["large"], num_action_types=num_action_types)
    learned.fit(feats_r[fit_idx], gain[fit_idx])
    corr = float(np.corrcoef(learned.predict_gain(feats_r[ev_idx]), gain[ev_idx])[0, 1])
    for b in budgets:
        learned.set_budget(b)
        row = score(f"learned@{b:g}", learned.choose(ev_batch))
        row["budget"] = b
        rows.append(row)
        # Oracle: the true per-request gain, same share of requests sent large.
        p = budget_fraction_to_large(b, flops["small"], flops["large"])
        k = int(np.floor(p * len(ev_idx)))
        top = np.argsort(-gain[ev_idx], kind="stable")[:k]
        choice = np.full(len(ev_idx), "small", dtype=object)
        choice[top] = "large"
        orow = score(f"oracle@{b:g}", list(choice))
        orow["budget"] = b
        rows.append(orow)

    by = {r["name"]: r for r in rows}
    s_auc, l_auc, l_flops = by["always-small"]["auc"], by["always-large"]["auc"], flops["large"]
    gap = l_auc - s_auc
    defined = abs(gap) > 1e-12     # a share of no gain is undefined (None), not a crash
    for r in rows:
        r["flops_vs_large"] = r["flops_per_request"] / l_flops
        r["auc_gain_kept"] = float((r["auc"] - s_auc) / gap) if defined else None
    ok = [r for r in rows if defined and gap > 0 and r["name"].startswith("learned@")
          and r["flops_vs_large"] <= 0.5 and r["auc_gain_kept"] >= 0.95]
    target = {"rule": ">= 95% of large's AUC gain over small at <= 50% of large FLOPs",
              "met": bool(ok), "by": [r["name"] for r in ok],
              "large_auc_gain_over_small": gap}
    policy_file = None
    if policy_out is not None:
        learned.set_budget(policy_budget)
        policy_file = str(learned.save(policy_out))
    learned_info = {"model": "ridge on request features, their squares and log2 "
                             "history-length buckets",
                    "ridge": learned.ridge,
                    "cv_mse": {str(k): v for k, v in (learned.cv_mse or {}).items()},
                    "target": "per-request log-loss reduction, large over small",
                    "eval_corr_with_true_gain": corr, "fit_requests": len(fit_idx),
                    "eval_requests": len(ev_idx), "policy_file": policy_file,
                    "policy_budget": policy_budget if policy_file else None}
    return rows, target, learned_info


def take_requests(batch: RequestBatch, idx: np.ndarray) -> RequestBatch:
    """The requests at `idx` of a RequestBatch (numpy gather on every field)."""
    return jax.tree.map(lambda x: np.asarray(x)[idx], batch)


def routing_batch(world: Any, examples: Any) -> RequestBatch:
    """What the router sees: the request, its full history (max_history), its candidates."""
    hist = world.join_history(examples.user_id, examples.ts, world.features.max_history)
    return RequestBatch(req_sparse=examples.req_sparse, req_dense=examples.req_dense,
                        cand_sparse=examples.cand_sparse, cand_dense=examples.cand_dense,
                        cand_mask=examples.cand_mask, **hist)


def run_routing_bench(checkpoints: str | Path | dict[str, str | Path], *,
                      artifacts: str | Path | None = None,
                      budgets: Sequence[float] = (0.2, 0.3, 0.5, 0.7),
                      candidates: int | None = None, max_requests: int | None = None,
                      seed: int = 0, out_json: str | Path | None = None,
                      out_png: str | Path | None = None) -> dict[str, Any]:
    """Score held-out requests on every tier, then compare routing policies.

    `checkpoints`: a directory holding `small/` and `large/` (and optionally `medium/`)
    checkpoint directories, a tier whose directory is absent being left out; or a
    {tier: directory} dict, every entry loaded. Either way small and large are required,
    and a directory that exists but is not a valid checkpoint is an error."""
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.train.loop import make_synthetic_data, predict_examples

    t0 = time.perf_counter()
    if isinstance(checkpoints, dict):
        dirs = {n: Path(d) for n, d in checkpoints.items()}
        where = "checkpoints"
    else:
        dirs = {n: Path(checkpoints) / n for n in TIERS if (Path(checkpoints) / n).exists()}
        where = f"checkpoints {checkpoints}"
    if "small" not in dirs or "large" not in dirs:
        raise ValueError(f"{where}: need at least small and large, got {sorted(dirs)}")
    loaded = {n: load_checkpoint(d) for n, d in dirs.items()}
    names = [n for n in TIERS if n in loaded] + [n for n in loaded if n not in TIERS]
    tiers = {n: loaded[n][1] for n in names}
    feats = tiers["large"].features
    for n, t in tiers.items():
        if t.features != feats:
            raise ValueError(f"checkpoint {dirs[n]}: request schema differs from the large tier")
    data = make_synthetic_data(tiers["large"])
    test = data.test
    if max_requests is not None and max_requests < len(test):
        test = test.take(np.arange(max_requests))
    n_req = len(test)
    if n_req < 20:
        raise ValueError(f"need at least 20 held-out requests, got {n_req}")

    probs = {}
    for n in names:
        kind, tier, graphdef, params = loaded[n]
        probs[n] = predict_examples(graphdef, params, data, test, tier.model.history_len)
    art = None
    if artifacts is not None:
        from arm_jax.compile.artifacts import load

        art = load(artifacts)
    n_cand = candidates or test.cand_mask.shape[1]
    flops = {n: tier_flops(n, loaded[n][2], loaded[n][3], tiers[n], n_cand, art)
             for n in names}

    batch_all = routing_batch(data.world, test)
    rows, target, learned_info = compare_policies(
        probs, test.labels, test.cand_mask, feats.tasks, flops,
        {n: tiers[n].model.history_len for n in names}, batch_all,
        num_action_types=feats.num_action_types, budgets=budgets, seed=seed,
        policy_out=(Path(out_json).with_name(Path(out_json).stem + "-policy.json")
                    if out_json else None))
    out_png = out_png or (Path(out_json).with_suffix(".png") if out_json else None)
    result = {
        "bench": "routing", "machine": machine_info(), "seconds": time.perf_counter() - t0,
        "data": {"source": "synthetic", "held_out_requests": n_req,
                 "fit_requests": learned_info["fit_requests"],
                 "eval_requests": learned_info["eval_requests"], "candidates_for_flops": n_cand},
        "tiers": {n: {"flops_per_request": flops[n], "history_len": tiers[n].model.history_len,
                      "checkpoint": str(dirs[n])} for n in names},
        "flops_source": "artifacts" if art is not None else "xla cost analysis of predict",
        "learned": learned_info,
        "policies": [{k: v for k, v in r.items() if k != "metrics"} | {"metrics": r["metrics"]}
                     for r in rows],
        "target": target, "png": str(out_png) if out_png else None,
    }
    print(format_table(rows))
    if out_png:
        plot_curve(rows, out_png)
    write_json(out_json, result)
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'policy':<16}{'MFLOPs/req':>12}{'vs large':>10}{'AUC':>9}{'NE':>9}{'gain kept':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        kept = r.get("auc_gain_kept")
        lines.append(f"{r['name']:<16}{r['flops_per_request'] / 1e6:>12.2f}"
                     f"{r.get('flops_vs_large', float('nan')):>10.2f}{r['auc']:>9.4f}"
                     f"{r['ne']:>9.4f}{'' if kept is None else f'{kept:>11.2f}'}")
    return "\n".join(lines)


def plot_curve(rows: list[dict[str, Any]], path: str | Path,
               title: str = "Routing: quality vs cost") -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for prefix, style, label in (("learned@", "o-", "learned"), ("oracle@", "s--", "oracle")):
        pts = sorted((r["flops_vs_large"], r["auc"]) for r in rows if r["name"].startswith(prefix))
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    for r in rows:
        if r["name"].startswith("always-") or r["name"] == "rules":
            ax.plot(r["flops_vs_large"], r["auc"], "k^" if r["name"] == "rules" else "kD")
            ax.annotate(r["name"], (r["flops_vs_large"], r["auc"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("FLOPs per request / always-large")
    ax.set_ylabel("AUC (first task, held-out)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
