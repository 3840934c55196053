"""`arm-jax bench movielens --seeds 0,1,2`: the bench at several training seeds, summarised.

One run's paired bootstrap redraws the test requests, not the training: across training
seeds the large-minus-small difference moves by more than that interval. This runs the
whole bench once per seed (`train.seed=N`, which also redraws the validation split) and
summarises, per model, the mean and spread of its test AUC (and its validation AUC per seed,
what settings are chosen on) and, per other model, the paired
difference of the reference model (large when trained) over seeds: mean, standard deviation,
a 95% t interval and at how many seeds the reference is ahead. Each seed's own JSON and PNG
are written beside the summary (`<out>-seed<N>.json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.movielens import large_beats_others, run_movielens_bench
from arm_jax.bench.timing import machine_info, write_json
from arm_jax.data.movielens import find_movielens
from arm_jax.data.outputs import check_output_file

LEVEL = 0.95


def check_seeds(seeds: Sequence[int], overrides: Sequence[str]) -> list[int]:
    """The seeds as a list; ValueError naming the field when they cannot make a sweep."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}: need at least two distinct seeds, each once")
    if min(seeds) < 0:
        raise ValueError(f"seeds={seeds}: seeds must be >= 0")
    clash = [o for o in overrides if o.split("=", 1)[0].strip() == "train.seed"]
    if clash:
        raise ValueError(f"overrides: {clash[0]} conflicts with seeds={seeds}; give the "
                         f"training seeds with --seeds only")
    return seeds


def paired_difference(diffs: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean, standard deviation (n-1), standard error, t statistic and `level` t interval of
    per-seed paired differences (n >= 2), and at how many seeds the difference is > 0."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return {"diffs": d.tolist(), "mean": mean, "sd": sd, "se": float(se),
            "t": float(mean / se) if se > 0 else float("nan"), "df": n - 1,
            "ci_low": mean - half, "ci_high": mean + half, "ahead": int((d > 0).sum()),
            "seeds": n}


def seed_summary(seeds: Sequence[int], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-model test AUC over the runs (one per seed, `run_movielens_bench` results) and the
    reference model's paired differences to every other model."""
    names = [r["name"] for r in runs[0]["models"]]
    per_model: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [next(r for r in run["models"] if r["name"] == name) for run in runs]
        aucs = np.array([r["auc"] for r in rows])
        within = np.array([r["auc_within_request"] for r in rows])
        per_model[name] = {"auc": aucs.tolist(), "mean": float(aucs.mean()),
                           "sd": float(aucs.std(ddof=1)),
                           "auc_within_request": within.tolist(),
                           "mean_within_request": float(within.mean()),
                           # each seed draws its own validation split: compare per seed
                           "val_auc": ([float(r["val_auc"]) for r in rows]
                                       if all("val_auc" in r for r in rows) else None)}
    ref = "large" if "large" in per_model else names[-1]
    versus = {n: paired_difference(np.array(per_model[ref]["auc"]) - np.array(m["auc"]))
              for n, m in per_model.items() if n != ref}
    targets = [run.get("target") for run in runs]
    target = None
    if all(t is not None for t in targets):
        met = [bool(t["large_beats_logreg_and_small"]) for t in targets]
        target = {"met_at_seeds": [s for s, m in zip(seeds, met) if m],
                  "met_on_mean": large_beats_others(
                      {n: m["mean"] for n, m in per_model.items()})}
    return {"seeds": list(seeds), "reference": ref, "level": LEVEL, "models": per_model,
            "versus": versus, "target": target}


def format_seed_summary(summary: Mapping[str, Any]) -> str:
    seeds, ref = summary["seeds"], summary["reference"]
    lines = [f"MovieLens over {len(seeds)} training seeds (test AUC)",
             f"{'model':<8} " + "".join(f"{'seed ' + str(s):>9}" for s in seeds)
             + f"{'mean':>9}{'sd':>8}"]
    for name, m in summary["models"].items():
        lines.append(f"{name:<8} " + "".join(f"{a:>9.4f}" for a in m["auc"])
                     + f"{m['mean']:>9.4f}{m['sd']:>8.4f}")
    vals = {n: m["val_auc"] for n, m in summary["models"].items() if m.get("val_auc")}
    if vals:        # what settings are chosen on (never test): per seed, each its own split
        lines.append("validation AUC (best checkpoint; each seed draws its own split)")
        lines.extend(f"{name:<8} " + "".join(f"{a:>9.5f}" for a in v)
                     for name, v in vals.items())
    pct = round(100 * summary["level"])
    if summary["versus"]:                   # one model alone has nothing to be paired with
        lines.append(f"{ref} minus   {'mean':>8} {'sd':>7} {'t':>6}  {pct}% t interval"
                     f"{'ahead':>20}")
    for name, v in summary["versus"].items():
        lines.append(f"  {name:<10} {v['mean']:>+8.4f} {v['sd']:>7.4f} {v['t']:>6.2f}  "
                     f"[{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"
                     f"{str(v['ahead']) + ' of ' + str(v['seeds']):>14}")
    t = summary.get("target")
    if t is not None:
        lines.append(f"target large > logreg and small on AUC: met at seeds "
                     f"{t['met_at_seeds'] or 'none'}; on the mean: {t['met_on_mean']}")
    return "\n".join(lines)


def run_movielens_seeds(seeds: Sequence[int], data_dir: str | Path | None = None, *,
                        overrides: Sequence[str] = (), out_json: str | Path | None = None,
                        progress: bool = True, **bench_kwargs: Any) -> dict[str, Any]:
    """`run_movielens_bench` at each seed (its other arguments as given), then the summary:
    printed, written to `out_json` with a PNG, each seed's own results beside it."""
    seeds = check_seeds(seeds, overrides)
    find_movielens(data_dir)      # absent data: its one-line message before any seed starts
    if out_json is not None:      # the summary is written after the last seed
        check_output_file(out_json, "out_json")
    out = None if out_json is None else Path(out_json)
    per_seed = [None if out is None else out.with_name(f"{out.stem}-seed{s}.json")
                for s in seeds]
    runs = []
    for i, (seed, path) in enumerate(zip(seeds, per_seed)):
        print(f"== seed {seed} ({i + 1} of {len(seeds)}) ==", flush=True)
        runs.append(run_movielens_bench(data_dir, overrides=[*overrides, f"train.seed={seed}"],
                                        out_json=path, progress=progress, **bench_kwargs))
    summary = seed_summary(seeds, runs)
    print(format_seed_summary(summary))
    shared = [o for o in runs[0]["ranker_overrides"] if not o.startswith("train.seed=")]
    res = {"bench": "movielens-seeds", **summary, "ranker_overrides": shared,
           "distill": runs[0].get("distill", 0.0),
           "runs": [str(p) for p in per_seed if p is not None],
           "machine": machine_info()}
    if out is not None:
        res["png"] = str(plot_seeds(summary, out.with_suffix(".png")))
        write_json(out, res)
    return res


def plot_seeds(summary: Mapping[str, Any], png: Path) -> Path:
    """Left: each model's test AUC per seed and its mean; right: the reference model's paired
    differences per seed with their mean and t interval."""
    plt = pyplot()

    seeds = summary["seeds"]
    x = np.arange(len(seeds))
    paired = bool(summary["versus"])        # one model alone: the left panel only
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(10 if paired else 5.5, 4),
                             squeeze=False)
    left = axes[0, 0]
    for name, m in summary["models"].items():
        line, = left.plot(x, m["auc"], "o-", label=f"{name} (mean {m['mean']:.4f})")
        left.axhline(m["mean"], color=line.get_color(), linestyle=":", linewidth=1)
    left.set_xticks(x, [str(s) for s in seeds])
    left.set_xlabel("train.seed")
    left.set_ylabel("test AUC")
    left.set_title("Test AUC per training seed")
    left.legend(fontsize=8)
    if paired:
        _plot_differences(axes[0, 1], summary)
    fig.tight_layout()
    return save_png(fig, png)


def _plot_differences(right: Any, summary: Mapping[str, Any]) -> None:
    """The reference model's paired differences per seed, their mean and t interval."""
    seeds, ref = summary["seeds"], summary["reference"]
    x = np.arange(len(seeds))
    for i, (name, v) in enumerate(summary["versus"].items()):
        jitter = (i - (len(summary["versus"]) - 1) / 2) * 0.08
        right.plot(x + jitter, v["diffs"], "o", label=f"{ref} - {name}")
        right.errorbar([len(seeds) + 0.5 + jitter], [v["mean"]],
                       yerr=[[v["mean"] - v["ci_low"]], [v["ci_high"] - v["mean"]]],
                       fmt="s", capsize=4, color=right.lines[-1].get_color())
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_xticks([*x, len(seeds) + 0.5], [*map(str, seeds),
                                              f"mean, {round(100 * summary['level'])}% t"])
    right.set_ylabel("paired test AUC difference")
    right.set_title(f"{ref} minus each model, per seed")
    right.legend(fontsize=8)


__all__ = ["run_movielens_seeds", "seed_summary", "paired_difference", "check_seeds",
           "format_seed_summary"]
