"""`arm-jax train` and `arm-jax eval`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from arm_jax import strict_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a tier on the bundled synthetic data or your own",
                       description="Train a tier on the bundled synthetic data (or on examples "
                                   "files joined with a user-log store), evaluate on held-out "
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
    _add_data_options(p, eval_only=False)
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on held-out data",
                       description="Evaluate a checkpoint on the held-out synthetic requests "
                                   "defined by its own config, or on an examples file joined "
                                   "with a user-log store.")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory from `train`")
    _add_data_options(e, eval_only=True)
    e.set_defaults(func=_eval)


def _add_data_options(p: argparse.ArgumentParser, *, eval_only: bool) -> None:
    g = p.add_argument_group(
        "your own data", "examples files (.npz or .parquet, see `arm-jax data check`) hold no "
        "histories: each request is joined with its user's events before its timestamp from "
        "the store")
    g.add_argument("--examples", default=None, metavar="FILE",
                   help="requests to evaluate" if eval_only else
                   "training requests (without --eval-examples the latest 10%% by time are "
                   "held out)")
    if not eval_only:
        g.add_argument("--eval-examples", default=None, metavar="FILE",
                       help="held-out requests to evaluate on")
    g.add_argument("--history-store", default=None, metavar="URL",
                   help="user-log store with the users' events: lmdb:///path or "
                        "redis://host:port/db (fill it with `arm-jax store load`)")
    g.add_argument("--catalog", default=None, metavar="FILE.npz",
                   help="item catalogue giving history events their side ids "
                        "(`arm-jax store catalog`); without it they are unknown")


def _check_data_options(args: argparse.Namespace, *, eval_only: bool) -> None:
    """Options of the own-data group go together: before any checkpoint or file is read."""
    given = [f"--{k.replace('_', '-')}" for k in ("eval_examples", "history_store", "catalog")
             if getattr(args, k, None) is not None]
    if args.examples is None and given:
        raise ValueError(f"{', '.join(given)}: only with --examples (the requests to "
                         f"{'evaluate' if eval_only else 'train on'})")
    if args.examples is not None and args.history_store is None:
        raise ValueError("--examples: needs --history-store (examples files hold no "
                         "histories; the store has them)")


def _data(args: argparse.Namespace, tier: Any, *, eval_only: bool) -> Any:
    """The synthetic data of the tier, or the files the options name (checked first)."""
    if args.examples is None:
        from arm_jax.train.loop import make_synthetic_data

        return make_synthetic_data(tier)
    from arm_jax.train import file_data

    progress = not getattr(args, "no_progress", False)     # eval has no --no-progress
    if eval_only:
        return file_data.make_eval_data(tier.features, args.examples, args.history_store,
                                        catalog=args.catalog, progress=progress)
    return file_data.make_file_data(tier.features, args.examples, args.history_store,
                                    eval_examples=args.eval_examples, catalog=args.catalog,
                                    progress=progress)


def _train(args: argparse.Namespace) -> int:
    from arm_jax.config import load_tier

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    _check_data_options(args, eval_only=False)
    tier = load_tier(args.tier, args.overrides)
    runs = _runs(args, tier, Path(args.out or f"runs/{tier.name}"))
    _check_outputs(runs)
    from arm_jax.train.file_data import close_file_data

    data = _data(args, tier, eval_only=False)
    try:
        rows = _train_runs(args, runs, data)
    finally:
        close_file_data(data)
    print(_table(rows, data, tier.features.tasks[0]))
    return 0


Run = tuple[str, Any, Path]     # (model kind, tier, output directory)


def _runs(args: argparse.Namespace, tier: Any, out: Path) -> list[Run]:
    """The tier, and with --baselines logistic regression and small, each with its own
    output directory beside `out`."""
    from arm_jax.config import load_tier

    runs = [("ranker", tier, out)]
    if args.baselines:
        runs.append(("logreg", tier, out.parent / f"{out.name}-logreg"))
        if tier.name != "small":
            small = load_tier("small", [o for o in args.overrides if o.startswith("train.")])
            # the data was drawn with the tier's features (a tier file may set its own)
            small = dataclasses.replace(small, features=tier.features)
            runs.append(("ranker", small, out.parent / f"{out.name}-small"))
    return runs


def _check_outputs(runs: list[Run]) -> None:
    """Every run's output directory can take its checkpoint, checked before the data is
    made and the first run starts: a baseline's was refused only after the main model
    had trained. The same check `train_model` makes, so a baseline directory holding an
    interrupted run's saved state (train_state/, which --resume continues) passes."""
    from arm_jax.checkpoint import check_save_target

    for i, (_, _, d) in enumerate(runs):    # the first is --out's own run
        check_save_target(d, "--out" if i == 0 else "--baselines output")


def _train_runs(args: argparse.Namespace, runs: list[Run], data: Any) -> list[dict[str, Any]]:
    """Train every run on the same data; one table row each."""
    from arm_jax.train.loop import train_model
    from arm_jax.train.resume import has_saved_state

    task = runs[0][1].features.tasks[0]
    rows = []
    for i, (kind, t, d) in enumerate(runs):
        # --resume is for the main run; a baseline the interruption never reached starts
        resume = args.resume and (i == 0 or has_saved_state(d))
        res = train_model(t, data, kind=kind, steps=args.steps, out_dir=d,
                          progress=not args.no_progress,
                          checkpoint_every=args.checkpoint_every, resume=resume)
        rows.append(_row(f"{kind}:{t.name}" if kind == "ranker" else "logistic-regression",
                         res.metrics, d, task))
    return rows


def _row(name: str, m: dict[str, Any], path: Path, task: str) -> dict[str, Any]:
    o, s, lg = m["overall"][task], m["short_history"][task], m["long_history"][task]
    return {"model": name, "auc": o["auc"], "logloss": o["logloss"], "ne": o["ne"],
            "auc_short": s["auc"], "auc_long": lg["auc"], "loss": m["last_loss"],
            "seconds": m["train_seconds"], "checkpoint": str(path)}


def _table(rows: list[dict[str, Any]], data: Any, task: str) -> str:
    """One row per model on the first task; the oracle row when the data knows its truth."""
    from arm_jax.data.synthetic import oracle_metrics

    head = f"model ({task} task, held-out)"
    lines = [f"{head:<30} {'AUC':>7} {'logloss':>8} {'NE':>7} "
             f"{'AUC short':>10} {'AUC long':>9} {'train s':>8}"]
    for r in rows:
        f = strict_json.fixed
        lines.append(f"{r['model']:<30} {f(r['auc']):>7} {f(r['logloss']):>8} {f(r['ne']):>7} "
                     f"{f(r['auc_short']):>10} {f(r['auc_long']):>9} {f(r['seconds'], 1):>8}")
    if not np.isnan(data.test.true_prob).all():     # synthetic data: the ceiling
        o = oracle_metrics(data.test)[task]
        lines.append(f"{'oracle (true probability)':<30} {o['auc']:>7.4f} "
                     f"{o['logloss']:>8.4f} {o['ne']:>7.4f}")
    lines.append("checkpoints: " + ", ".join(r["checkpoint"] for r in rows))
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.train.file_data import close_file_data
    from arm_jax.train.loop import evaluate_model

    _check_data_options(args, eval_only=True)
    kind, tier, graphdef, params = load_checkpoint(args.checkpoint)
    data = _data(args, tier, eval_only=True)
    if not args.examples:   # whatever the checkpoint was trained on: say which data this is
        print(f"arm-jax: evaluating on tier {tier.name}'s bundled synthetic held-out requests "
              "(--examples FILE --history-store URL evaluates on files)", file=sys.stderr)
    try:
        metrics = evaluate_model(graphdef, params, tier, data, kind=kind)
    finally:
        close_file_data(data)
    print(strict_json.dumps(metrics, indent=2))
    task = tier.features.tasks[0]
    row = _row(f"{kind}:{tier.name}", {**metrics, "last_loss": float("nan"),
                                        "train_seconds": float("nan")}, Path(args.checkpoint),
               task)
    print(_table([row], data, task))
    return 0
