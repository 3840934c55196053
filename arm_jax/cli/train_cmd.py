"""`arm-jax train` and `arm-jax eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a tier on the bundled synthetic data",
                       description="Train a tier on bundled synthetic data, evaluate on held-out "
                                   "requests and write an orbax checkpoint.")
    p.add_argument("--tier", default="small", help="tier name in configs/tiers (default: small)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: config)")
    p.add_argument("--out", default=None, help="checkpoint directory (default: runs/<tier>)")
    p.add_argument("--baselines", action="store_true",
                   help="also train logistic regression and the small tier and compare")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="also save the whole training state every N steps under "
                        "OUT/train_state, so an interrupted run can --resume (default: off)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved under OUT/train_state (same tier, steps and "
                        "overrides) from its newest verified state; ends bit-identical to an "
                        "uninterrupted run")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. model.d_model=64 train.batch_size=16")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on held-out synthetic data",
                       description="Evaluate a checkpoint on the held-out synthetic requests "
                                   "defined by its own config.")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory from `train`")
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from arm_jax.config import load_tier

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    tier = load_tier(args.tier, args.overrides)
    from arm_jax.train.loop import make_synthetic_data, train_model
    from arm_jax.train.resume import has_saved_state

    out = Path(args.out or f"runs/{tier.name}")
    data = make_synthetic_data(tier)
    runs = [("ranker", tier, out)]
    if args.baselines:
        runs.append(("logreg", tier, out.parent / f"{out.name}-logreg"))
        if tier.name != "small":
            small = load_tier("small", [o for o in args.overrides if o.startswith(("train.", "features."))])
            runs.append(("ranker", small, out.parent / f"{out.name}-small"))
    rows = []
    for i, (kind, t, d) in enumerate(runs):
        # --resume is for the main run; a baseline the interruption never reached starts
        resume = args.resume and (i == 0 or has_saved_state(d))
        res = train_model(t, data, kind=kind, steps=args.steps, out_dir=d,
                          progress=not args.no_progress,
                          checkpoint_every=args.checkpoint_every, resume=resume)
        rows.append(_row(f"{kind}:{t.name}" if kind == "ranker" else "logistic-regression",
                         res.metrics, d))
    print(_table(rows, data))
    return 0


def _row(name: str, m: dict[str, Any], path: Path) -> dict[str, Any]:
    o, s, lg = m["overall"]["click"], m["short_history"]["click"], m["long_history"]["click"]
    return {"model": name, "auc": o["auc"], "logloss": o["logloss"], "ne": o["ne"],
            "auc_short": s["auc"], "auc_long": lg["auc"], "loss": m["last_loss"],
            "seconds": m["train_seconds"], "checkpoint": str(path)}


def _table(rows: list[dict[str, Any]], data: Any) -> str:
    from arm_jax.data.synthetic import oracle_metrics

    oracle = oracle_metrics(data.test)
    click = oracle["click"] if "click" in oracle else oracle
    lines = [f"{'model (click task, held-out)':<30} {'AUC':>7} {'logloss':>8} {'NE':>7} "
             f"{'AUC short':>10} {'AUC long':>9} {'train s':>8}"]
    for r in rows:
        lines.append(f"{r['model']:<30} {r['auc']:>7.4f} {r['logloss']:>8.4f} {r['ne']:>7.4f} "
                     f"{r['auc_short']:>10.4f} {r['auc_long']:>9.4f} {r['seconds']:>8.1f}")
    lines.append(f"{'oracle (true probability)':<30} {click['auc']:>7.4f} "
                 f"{click['logloss']:>8.4f} {click['ne']:>7.4f}")
    lines.append("checkpoints: " + ", ".join(r["checkpoint"] for r in rows))
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.train.loop import evaluate_model, make_synthetic_data

    kind, tier, graphdef, params = load_checkpoint(args.checkpoint)
    data = make_synthetic_data(tier)
    metrics = evaluate_model(graphdef, params, tier, data, kind=kind)
    print(json.dumps(metrics, indent=2))
    row = _row(f"{kind}:{tier.name}", {**metrics, "last_loss": float("nan"),
                                        "train_seconds": float("nan")}, Path(args.checkpoint))
    print(_table([row], data))
    return 0
