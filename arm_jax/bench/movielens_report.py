"""The printed table and the PNG of `arm-jax bench movielens` (one run's results dict):
per-model AUC, log loss, NE, the history buckets and the paired bootstrap differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.strict_json import fixed
from arm_jax.train.loop import LONG_HISTORY, SHORT_HISTORY


def format_table(res: dict[str, Any]) -> str:
    d = res["data"]
    lines = [f"MovieLens: {d['ratings']} ratings, {d['users']} users; requests train "
             f"{d['train_requests']} / test {d['test_requests']} (like rate "
             f"{d['like_rate']:.3f}); store {res['store']}",
             f"{'model':<8} {'L':>5} {'steps':>9} {'auc':>7} {'auc 95% ci':>15} {'logloss':>8} "
             f"{'ne':>7} {'auc<=32':>8} {'auc>=256':>9} {'in-req':>7} {'level':>7} {'train s':>8}"]
    for r in res["models"]:
        steps = f"{r['best_step']}/{r['steps']}"
        ci = ("{:.4f}-{:.4f}".format(*r["auc_ci95"]) if "auc_ci95" in r else "")
        lines.append(f"{r['name']:<8} {r['history_len']:>5} {steps:>9} {r['auc']:>7.4f} "
                     f"{ci:>15} {r['logloss']:>8.4f} {r['ne']:>7.4f} "
                     f"{fixed(r['auc_short_history'], 4):>8} "
                     f"{fixed(r['auc_long_history'], 4):>9} "
                     f"{r['auc_within_request']:>7.4f} "
                     f"{fixed(r.get('auc_request_level'), 4):>7} {r['train_seconds']:>8.1f}")
    if res.get("models"):
        r = res["models"][0]
        lines.append("(steps = best validation step / trained steps; in-req = AUC over "
                     "pairs of candidates of the same request; level = AUC with each "
                     "candidate scored by its request's mean score)")
        lines.append(f"(short: {r['requests_short_history']} test requests with <= "
                     f"{SHORT_HISTORY} past ratings; long: {r['requests_long_history']} with >= "
                     f"{LONG_HISTORY})")
    for r in res.get("models", []):
        if r.get("distilled_from"):
            lines.append(f"({r['name']} trained on {1 - r['distill_weight']:g} x labels + "
                         f"{r['distill_weight']:g} x {r['distilled_from']}'s predictions)")
    lines.extend(format_by_history(res.get("models", [])))
    lines.extend(format_by_seen(res.get("models", [])))
    if res.get("target") is not None:
        lines.append(f"target large > logreg and small on AUC: {res['target']}")
    cmp = res.get("comparison")
    if cmp:
        lines.append(f"paired bootstrap over test requests ({cmp['samples']} redraws): "
                     f"{cmp['reference']} minus")
        for metric, key in (("auc", "versus"), ("in-req", "versus_within_request")):
            for name, c in cmp[key].items():
                lines.append(f"  {metric:<6} {name:<8} {c['diff']:+.4f}  95% ci "
                             f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]  "
                             f"{cmp['reference']} ahead in {100 * c['p_better']:.0f}% of redraws")
    return "\n".join(lines)


def format_by_history(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per model, AUC and mean score against the like rate, by the user's past ratings."""
    rows = [r for r in rows if r.get("by_history")]
    if not rows:
        return []
    buckets = rows[0]["by_history"]
    head = [f"{b['past_min']}-{b['past_max']}" if b["past_max"] is not None
            else f">={b['past_min']}" for b in buckets]
    lines = ["by past ratings  " + "".join(f"{h:>22}" for h in head),
             f"{'requests':<16} " + "".join(f"{b['requests']:>22}" for b in buckets),
             f"{'like rate':<16} " + "".join(f"{fixed(b['like_rate'], 3):>22}"
                                            for b in buckets)]
    for r in rows:
        cells = "".join(f"{fixed(b['auc'], 4):>14} {fixed(b['mean_score'], 3):>7}"
                        for b in r["by_history"])
        lines.append(f"{r['name'] + ' auc, score':<16} {cells}")
    return lines


SEEN_SEGMENTS = (("returning_users", "returning users"), ("new_users", "new users"),
                 ("seen_movies", "seen movies"), ("unseen_movies", "unseen movies"))


def format_by_seen(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per model, AUC and mean score against the like rate for test candidates of users
    and movies the model trained on or never saw (cold start)."""
    rows = [r for r in rows if r.get("by_seen")]
    if not rows:
        return []
    segs = rows[0]["by_seen"]
    lines = ["by what training saw" + "".join(f"{h:>18}" for _, h in SEEN_SEGMENTS),
             f"{'candidates':<20}" + "".join(f"{segs[k]['candidates']:>18}"
                                             for k, _ in SEEN_SEGMENTS),
             f"{'like rate':<20}" + "".join(f"{fixed(segs[k]['like_rate'], 3):>18}"
                                            for k, _ in SEEN_SEGMENTS)]
    for r in rows:
        cells = "".join(f"{fixed(r['by_seen'][k]['auc'], 4):>10} "
                        f"{fixed(r['by_seen'][k]['mean_score'], 3):>7}"
                        for k, _ in SEEN_SEGMENTS)
        lines.append(f"{r['name'] + ' auc, score':<20}{cells}")
    return lines


def plot(res: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    rows = res["models"]
    # all test, then the by-history buckets (0-32 ... >= 256 past ratings), then within request
    buckets = rows[0].get("by_history", []) if rows else []
    labels = ["all test", *(f"{b['past_min']}-{b['past_max']} past" if b["past_max"] is not None
                            else f">= {b['past_min']} past" for b in buckets), "within request"]

    def values(r: dict[str, Any]) -> list[float]:
        per_bucket = [np.nan if b["auc"] is None else b["auc"] for b in r.get("by_history", [])]
        return [r["auc"], *per_bucket, r["auc_within_request"]]

    fig, ax = plt.subplots(figsize=(8.5, 4))
    w = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        vals = values(r)
        x = np.arange(len(vals)) + i * w
        ax.bar(x, vals, w, label=f"{r['name']} (L={r['history_len']})")
        if "auc_ci95" in r:     # 95% bootstrap intervals (overall and within-request AUC)
            for j, key in ((0, "auc"), (len(vals) - 1, "auc_within_request")):
                lo, hi = r[f"{key}_ci95"]
                ax.errorbar(x[j], r[key], yerr=[[r[key] - lo], [hi - r[key]]], color="black",
                            capsize=3)
    ax.set_xticks(np.arange(len(labels)) + w * (len(rows) - 1) / 2)
    ax.set_xticklabels(labels, fontsize=8)
    lo = float(np.nanmin([v for r in rows for v in values(r)])) if rows else 0.5
    ax.set_ylim(max(0.5, lo - 0.03), None)
    ax.set_ylabel("test AUC (like = rating >= 4)")
    ax.set_title("MovieLens, temporal split 80/20")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, png)


__all__ = ["format_table", "format_by_history", "format_by_seen", "plot"]
