"""`arm-jax quantize` and `arm-jax bench precision`."""

from __future__ import annotations

import argparse
from pathlib import Path

from arm_jax import strict_json
from arm_jax.cli.argtypes import positive_ints


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "quantize", help="selective post-training quantization of a trained tier",
        description="Calibrate, time every dense layer in every format at serving shapes, "
                    "measure each layer's sensitivity, choose per layer the fastest format "
                    "within the AUC budget; write the quantized checkpoint (plan in its "
                    "config) and export it as its own artifact set.")
    q.add_argument("--checkpoint", required=True,
                   help="a ranker checkpoint, or a directory of per-tier checkpoints")
    q.add_argument("--tier", required=True, help="the tier to quantize (its config name)")
    q.add_argument("--budget-auc", type=float, default=0.001,
                   help="largest allowed held-out AUC drop (default 0.001)")
    q.add_argument("--out", required=True, help="output directory (checkpoint/, artifacts/)")
    _add_request_sets(q)
    q.add_argument("--candidates", type=int, default=None,
                   help="serving candidates the layers are timed at (default: largest bucket)")
    q.add_argument("--sweep-all", action="store_true",
                   help="measure sensitivity of formats that do not gain speed too")
    q.add_argument("--no-export", action="store_true", help="write the checkpoint only")
    q.add_argument("--platforms", default="cpu", help="export platforms, e.g. cpu,cuda")
    q.set_defaults(func=_quantize)


def _add_request_sets(p: argparse.ArgumentParser) -> None:
    """The synthetic request sets quantization calibrates and selects on."""
    p.add_argument("--calib-requests", type=int, default=128,
                   help="synthetic requests for calibration and layer sensitivity (>= 32; "
                        "whole batches of 32)")
    p.add_argument("--holdout-requests", type=int, default=256,
                   help="synthetic requests the plan's AUC drop is checked on (>= 32; whole "
                        "batches of 32)")


def register_bench(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser(
        "precision", help="f32 vs selective vs all-quantized: latency and test AUC",
        description="Trains the tier briefly (or reads --checkpoint), quantizes it "
                    "selectively, and compares latency and quality of every variant.")
    b.add_argument("--tier", default=None,
                   help="the tier to train (default large), or to pick from --checkpoint")
    b.add_argument("--checkpoint", default=None,
                   help="use a trained checkpoint instead (or a directory of per-tier ones)")
    b.add_argument("--steps", type=int, default=60,
                   help="training steps when no checkpoint (large: ~5-6 s each here)")
    b.add_argument("--candidates", type=positive_ints, default=(256, 1024),
                   help="candidates per request to time, comma-separated (layers are timed "
                        "for the plan at the largest)")
    _add_request_sets(b)
    b.add_argument("--test-requests", type=int, default=512,
                   help="synthetic requests each variant's test AUC is measured on (>= 32; "
                        "whole batches of 32)")
    b.add_argument("--budget-auc", type=float, default=0.001,
                   help="largest allowed held-out AUC drop of the selective plan")
    b.add_argument("--repeats", type=int, default=7,
                   help="timed rounds per N, median (variants interleaved)")
    b.add_argument("--sweep-all", action="store_true",
                   help="also measure sensitivity of formats that do not gain speed here")
    b.add_argument("--out", default="bench-results/precision.json",
                   help="JSON results path; a PNG is written beside it")
    b.set_defaults(func=_bench)


def _check(**values: float) -> None:
    for name, v in values.items():
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')}={v}: must be >= 1")


def _check_sets(**requests: int) -> None:
    """Each set is whole batches of 32 requests: checked here, before any training,
    calibration or checkpoint read (it failed only when the sets were drawn)."""
    from arm_jax.quant.data import check_set_sizes

    try:
        check_set_sizes(**requests)
    except ValueError as e:
        raise ValueError(f"--{str(e).replace('_', '-')}") from None


def _check_budget(budget: float) -> None:
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"--budget-auc={budget}: must be between 0 and 1")


def _check_outputs(args: argparse.Namespace) -> None:
    """What the end of `quantize` writes, checked before minutes of calibration, timing
    and selection: --out and its checkpoint/ (a file on the way failed only at the save)
    and, when exporting, the platform names and the executable cache."""
    from arm_jax.checkpoint import check_save_target
    from arm_jax.data.outputs import check_output_dir

    check_output_dir(args.out, "--out")
    check_save_target(Path(args.out) / "checkpoint", "--out checkpoint directory")
    if not args.no_export:
        from arm_jax.compile.cache import check_cache_dir, default_cache_dir
        from arm_jax.compile.export import check_platforms

        check_output_dir(Path(args.out) / "artifacts", "--out artifacts directory")
        check_platforms(_platforms(args.platforms), f"--platforms {args.platforms}")
        check_cache_dir(default_cache_dir())


def _platforms(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.split(",") if p)


def _tier_checkpoint(checkpoint: str, tier: str | None) -> Path:
    """The checkpoint of `tier` in `checkpoint` (a checkpoint, or a directory of per-tier
    ones); with no tier, the only one there. ValueError naming --tier and what was found."""
    from arm_jax.compile.export import resolve_checkpoints

    found = resolve_checkpoints([checkpoint], None)
    if tier is None:
        if len(found) > 1:
            raise ValueError(f"--checkpoint {checkpoint} holds tiers {', '.join(found)}: "
                             "name one with --tier")
        return next(iter(found.values()))
    if tier not in found:
        raise ValueError(f"--tier {tier}: no such tier in {checkpoint} "
                         f"(found: {', '.join(found)})")
    return found[tier]


def _quantize(args: argparse.Namespace) -> int:
    _check(calib_requests=args.calib_requests, holdout_requests=args.holdout_requests,
           candidates=args.candidates)
    _check_sets(calib_requests=args.calib_requests, holdout_requests=args.holdout_requests)
    _check_budget(args.budget_auc)
    _check_outputs(args)
    from arm_jax.checkpoint import load_checkpoint, save_checkpoint
    from arm_jax.data.random_batch import random_batch
    from arm_jax.quant.data import check_candidates, synthetic_sets
    from arm_jax.quant.pipeline import check_float32_compute, quantize
    from arm_jax.quant.select import decision_table

    path = _tier_checkpoint(args.checkpoint, args.tier)
    kind, tier, graphdef, params = load_checkpoint(path)
    if kind != "ranker":
        raise ValueError(f"--checkpoint {path}: kind {kind!r} cannot be quantized")
    check_float32_compute(tier)
    if args.candidates is not None:
        check_candidates(args.candidates, tier)
    n = args.candidates or max(tier.serving.candidate_buckets)
    calib, holdout, _ = synthetic_sets(tier, calib_requests=args.calib_requests,
                                       holdout_requests=args.holdout_requests)
    serving = random_batch(tier.features, batch=1, candidates=n,
                           history=tier.model.history_len, full_history=True, seed=1)
    res = quantize(graphdef, params, tier, calib=calib, holdout=holdout, serving_batch=serving,
                   budget_auc=args.budget_auc, sweep_all=args.sweep_all)
    out = Path(args.out)
    ckpt = save_checkpoint(out / "checkpoint", kind="ranker", tier=res.tier, params=res.params,
                           metrics={"quantization": {"plan_holdout_auc_drop": res.plan_auc_drop,
                                                     "decisions": res.summary()}})
    (out / "plan.json").write_text(strict_json.dumps(
        {"tier": tier.name, "budget_auc": args.budget_auc, "timed_candidates": n,
         "plan_holdout_auc_drop": res.plan_auc_drop, "layers": res.summary(),
         "timings_ms": res.timings_ms, "sensitivity": res.sensitivity}, indent=2))
    print(decision_table(res.summary()))
    print(f"whole model: held-out AUC drop {res.plan_auc_drop:.5f} (budget {args.budget_auc}), "
          f"{res.tier.quant.model_speedup:.2f}x faster than float32 at N={n}; "
          f"checkpoint {ckpt}")
    if not args.no_export:
        from arm_jax.compile.export import export_tiers

        export_tiers({tier.name: ckpt}, out / "artifacts", platforms=_platforms(args.platforms))
        print(f"artifacts: {out / 'artifacts'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    _check(steps=args.steps, calib_requests=args.calib_requests,
           holdout_requests=args.holdout_requests, test_requests=args.test_requests,
           repeats=args.repeats)
    _check_sets(calib_requests=args.calib_requests, holdout_requests=args.holdout_requests,
                test_requests=args.test_requests)
    _check_budget(args.budget_auc)
    from arm_jax.bench.precision import run_precision_bench

    # the tier in --checkpoint (it used to bench whatever the checkpoint held, --tier unread)
    checkpoint = (None if args.checkpoint is None
                  else str(_tier_checkpoint(args.checkpoint, args.tier)))
    run_precision_bench(args.tier or "large", checkpoint, args.steps, args.candidates,
                        args.calib_requests, args.holdout_requests, args.test_requests,
                        args.budget_auc, args.repeats, args.sweep_all, args.out)
    return 0
