"""`arm-jax bench coldstart`: process start -> first scored request, load vs compile.

For each tier, a random-init checkpoint (nothing is trained: timing does not depend on
the weights' values) is exported once; then fresh Python subprocesses are timed from
just before they are spawned to the moment their first request has been scored
(interpreter start and imports included):
  (a) load:    verify hashes + deserialize every bucket's executable, score one request;
  (b) compile: build the model from the checkpoint, compile the same buckets from
               scratch (jax's persistent cache off), score the same request.
ratio = compile_s / load_s. The load child also counts XLA compilations (must be 0).

This module's top level imports only the standard library: it is also the child
entry point (`python -m arm_jax.bench.coldstart load|compile ...`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from arm_jax.bench.figures import pyplot, save_png

TARGET_RATIO = 10.0


# ---------------------------------------------------------------- children

def _request(config: Any, max_candidates: int) -> Any:
    from arm_jax.data.random_batch import random_batch

    return random_batch(config.features, batch=1, candidates=min(64, max_candidates),
                        history=config.model.history_len, full_history=True, seed=0)


def _child_load(artifacts: str, tier: str, t0: float) -> dict[str, Any]:
    import jax
    from jax._src.dispatch import BACKEND_COMPILE_EVENT

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _d, **_k: compiles.append(event) if event == BACKEND_COMPILE_EVENT else None)
    from arm_jax.compile import load

    t_import = time.time()
    lt = load(artifacts, tiers=[tier]).tiers[tier]
    t_loaded = time.time()
    res = lt.score(_request(lt.config, max(n for _, n in lt.buckets)))
    res.probs.sum()
    t1 = time.time()
    bad = sorted(m for m in sys.modules if m.startswith(("arm_jax.model", "arm_jax.train")))
    return {"total_s": t1 - t0, "imports_s": t_import - t0, "load_s": t_loaded - t_import,
            "first_score_s": t1 - t_loaded, "buckets": len(lt.buckets), "compiles": len(compiles),
            "model_modules_imported": bad}


def _child_compile(checkpoint: str, buckets_json: str, top_k: int, t0: float) -> dict[str, Any]:
    import jax
    import numpy as np

    jax.config.update("jax_enable_compilation_cache", False)
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.compile import weights as wt
    from arm_jax.compile.buckets import batch_signature, pad_batch, select_bucket
    from arm_jax.compile.export import _specs, scoring_function

    t_import = time.time()
    _, tier, graphdef, params = load_checkpoint(checkpoint)
    score, flat = scoring_function(graphdef, params, top_k)
    jitted = jax.jit(score)
    wspec = _specs(wt.spec_of(flat))
    buckets = [tuple(b) for b in json.loads(buckets_json)]
    t_built = time.time()
    exes = {b: jitted.lower(wspec, _specs(batch_signature(b, tier.model.history_len,
                                                          tier.features))).compile()
            for b in buckets}
    t_compiled = time.time()
    batch = _request(tier, max(n for _, n in buckets))
    b = select_bucket(buckets, batch.num_requests, batch.num_candidates)
    probs, _, _ = exes[b](flat, pad_batch(batch, b, tier.model.history_len))
    np.asarray(probs).sum()
    t1 = time.time()
    return {"total_s": t1 - t0, "imports_s": t_import - t0, "build_s": t_built - t_import,
            "compile_s": t_compiled - t_built, "first_score_s": t1 - t_compiled,
            "buckets": len(buckets)}


def _child_main(argv: list[str]) -> None:
    mode, t0 = argv[0], float(argv[-1])
    out = (_child_load(argv[1], argv[2], t0) if mode == "load"
           else _child_compile(argv[1], argv[2], int(argv[3]), t0))
    print("COLDSTART " + json.dumps(out), flush=True)


def _spawn(args: list[str]) -> dict[str, Any]:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "arm_jax.bench.coldstart", *args, repr(t0)],
                       capture_output=True, text=True, env=dict(os.environ), timeout=1800)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("COLDSTART "):
            return json.loads(line[len("COLDSTART "):])
    raise RuntimeError(f"coldstart child {args[0]} failed (exit {r.returncode}):\n"
                       f"{r.stderr[-3000:]}")


# ---------------------------------------------------------------- parent

def run_coldstart(tiers: Sequence[str], *, overrides: Sequence[str] = (),
                  buckets: Sequence[tuple[int, int]] | None = None, repeats: int = 1,
                  workdir: str | Path = "bench-results/coldstart-work",
                  out_json: str | Path | None = "bench-results/coldstart.json",
                  top_k: int = 16) -> dict[str, Any]:
    """Export random-init tiers, time load vs compile children; print, write JSON + PNG."""
    import dataclasses

    import numpy as np
    from flax import nnx
    from tqdm.auto import tqdm

    from arm_jax.bench.timing import machine_info, publish
    from arm_jax.checkpoint import save_checkpoint
    from arm_jax.compile.buckets import bucket_grid
    from arm_jax.compile.export import export_tiers
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    if repeats < 1:
        raise ValueError(f"--repeats={repeats}: must be >= 1")
    work = Path(workdir)
    ckpts, grids, configs = {}, {}, {}
    for name in tiers:
        cfg = load_tier(name, list(overrides))
        if buckets is not None:
            bb = tuple(sorted({b for b, _ in buckets}))
            nb = tuple(sorted({n for _, n in buckets}))
            cfg = dataclasses.replace(cfg, serving=dataclasses.replace(
                cfg.serving, batch_buckets=bb, candidate_buckets=nb))
        params = nnx.split(Ranker(cfg.model, cfg.features, rngs=nnx.Rngs(0)))[1]
        ckpts[name] = save_checkpoint(work / "ckpt" / name, kind="ranker", tier=cfg,
                                      params=params)
        grids[name] = bucket_grid(cfg.serving.batch_buckets, cfg.serving.candidate_buckets)
        configs[name] = cfg.to_dict()
        del params
    art = work / "artifacts"
    t = time.perf_counter()
    export_tiers(ckpts, art, platforms=("cpu",), top_k=top_k)
    export_s = time.perf_counter() - t

    rows = []
    runs = [(n, side, i) for n in tiers for i in range(repeats) for side in ("load", "compile")]
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, side, _ in tqdm(runs, desc="coldstart children", unit="proc"):
        args = (["load", str(art), name] if side == "load"
                else ["compile", str(ckpts[name]), json.dumps(grids[name]), str(top_k)])
        raw.setdefault((name, side), []).append(_spawn(args))
    for name in tiers:
        loads, comps = raw[(name, "load")], raw[(name, "compile")]
        load_s = float(np.median([r["total_s"] for r in loads]))
        compile_s = float(np.median([r["total_s"] for r in comps]))
        rows.append({"tier": name, "buckets": [list(b) for b in grids[name]],
                     "load_s": round(load_s, 3), "compile_s": round(compile_s, 3),
                     "ratio": round(compile_s / load_s, 2),
                     "load_runs": loads, "compile_runs": comps})
    large = next((r for r in rows if r["tier"] == "large"), None)
    result = {
        "benchmark": "coldstart", "machine": machine_info(), "repeats": repeats,
        "export_s": round(export_s, 2), "artifacts": str(art), "top_k": top_k,
        "target": {"tier": "large", "ratio_at_least": TARGET_RATIO,
                   "met": None if large is None else large["ratio"] >= TARGET_RATIO},
        "configs": configs, "tiers": rows,
    }
    return publish(result, out_json, format_table, plot_coldstart)


def load_breakdown(load_runs: list[dict[str, Any]]) -> dict[str, float]:
    """Where a load's time goes, as medians over the runs like `load_s` (the first run
    alone is the noisiest), and the most compiles any run needed after loading."""
    import numpy as np

    out = {k: float(np.median([run[k] for run in load_runs]))
           for k in ("imports_s", "load_s", "first_score_s")}
    out["compiles"] = max(run["compiles"] for run in load_runs)
    return out


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'tier':<8} {'buckets':>7} {'load s':>8} {'compile s':>10} {'ratio':>7} "
             f"{'(load: imports/deser/score s)':>30} {'compiles after load':>20}"]
    for r in result["tiers"]:
        a = load_breakdown(r["load_runs"])
        lines.append(f"{r['tier']:<8} {len(r['buckets']):>7} {r['load_s']:>8.2f} "
                     f"{r['compile_s']:>10.2f} {r['ratio']:>7.1f} "
                     f"{a['imports_s']:>12.2f}/{a['load_s']:.2f}/{a['first_score_s']:.2f}"
                     f"{'':>6} {a['compiles']:>20}")
    t = result["target"]
    if t["met"] is not None:
        lines.append(f"target: large ratio >= {t['ratio_at_least']:.0f}: "
                     f"{'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def plot_coldstart(result: dict[str, Any], png: Path) -> Path:
    plt = pyplot()
    import numpy as np

    rows = result["tiers"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(x - 0.2, [r["load_s"] for r in rows], 0.4, label="load artifacts")
    ax.bar(x + 0.2, [r["compile_s"] for r in rows], 0.4, label="build + compile")
    for i, r in enumerate(rows):
        ax.text(i + 0.2, r["compile_s"], f"{r['ratio']:.1f}x", ha="center", va="bottom")
    ax.set_ylim(0, 1.15 * max(r["compile_s"] for r in rows))
    ax.set_xticks(x, [f"{r['tier']}\n({len(r['buckets'])} buckets)" for r in rows])
    ax.set_ylabel("process start -> first scored request (s)")
    ax.set_title("cold start: AOT artifacts vs compiling from scratch")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, png)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
