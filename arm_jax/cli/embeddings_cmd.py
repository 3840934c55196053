"""`arm-jax embeddings plan`, `arm-jax plan` (memory planner) and `arm-jax bench embeddings`.

Argument parsing only: the work is in arm_jax.embeddings, arm_jax.parallel and
arm_jax.bench.embeddings.
"""

from __future__ import annotations

import argparse
import json
import sys

from arm_jax.cli.argtypes import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("embeddings", help="embedding-table tools (hash sizing by sparsity)")
    esub = e.add_subparsers(dest="embeddings_command", metavar="COMMAND", required=True)
    p = esub.add_parser(
        "plan", help="choose per-feature hash sizes from observed ids under a parameter budget",
        description="Read observed ids per feature (`synthetic` or an .npz with one int array "
                    "per feature), then choose each table's rows to minimise the summed "
                    "collision rate of its frequent ids within --budget-params.")
    p.add_argument("--data", required=True, help="'synthetic' or path/to/ids.npz")
    p.add_argument("--budget-params", type=positive_int, required=True,
                   help="total embedding parameters (rows x dim) to spend")
    p.add_argument("--tier", default="small", help="tier giving features and dim (default small)")
    p.add_argument("--dim", type=positive_int, default=None, help="width (default: tier d_model)")
    p.add_argument("--min-count", type=positive_int, default=2,
                   help="ids seen fewer times are tail: they may share rows (default 2)")
    p.add_argument("--row-multiple", type=positive_int, default=8,
                   help="round rows to a multiple (the mesh's model axis; default 8)")
    p.add_argument("--group", action="append", default=[], metavar="F1,F2,...",
                   help="features sharing one unified table (repeatable; needs --out: "
                        "written to the YAML, the sizes do not change)")
    p.add_argument("--out", default=None,
                   help="write the plan as YAML (rows, groups, tier overrides)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="features.* overrides, and model.d_model")
    p.set_defaults(func=_embeddings_plan)

    m = sub.add_parser(
        "plan", help="per-device memory plan of a tier on K devices (exit 1 if it does not fit)",
        description="Predict per-device bytes (parameters, AdamW state and temporaries for "
                    "training; parameters and activations for a serving bucket) on a "
                    "data x model mesh, on paper. Exit 0 if everything fits, 1 otherwise.")
    m.add_argument("--tier", required=True, help="tier to plan (name in configs/tiers)")
    m.add_argument("--devices", type=positive_int, required=True,
                   help="devices of the data x model mesh (divisible by --data-parallel)")
    m.add_argument("--device-memory", required=True, help="bytes per device, e.g. 80GiB")
    m.add_argument("--data-parallel", type=positive_int, default=1,
                   help="size of the 'data' mesh axis (model axis = devices / this)")
    m.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="parameter and compute dtype (default: the tier's)")
    m.add_argument("--batch", type=positive_int, default=None,
                   help="serving bucket requests (default: largest batch bucket; not with "
                        "--mode train)")
    m.add_argument("--candidates", type=positive_int, default=None,
                   help="serving bucket candidates (default: largest candidate bucket; not "
                        "with --mode train)")
    m.add_argument("--mode", choices=("both", "serve", "train"), default="both",
                   help="plan serving, training or both")
    m.add_argument("--min-shard-bytes", type=non_negative_int, default=None,
                   help="parameters smaller than this stay replicated (default 1 MiB)")
    m.add_argument("--json", action="store_true", help="print the plan as JSON instead of tables")
    m.add_argument("overrides", nargs="*", metavar="key=value",
                   help="tier config overrides, e.g. model.d_model=64")
    m.set_defaults(func=_plan)


def register_bench(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser("embeddings", help="sharded vs single-device lookups, planner vs XLA, "
                                           "pruning savings (runs on 8 host devices)")
    b.add_argument("--devices", type=positive_int, default=8,
                   help="host CPU devices to run on (even; --rows and --lookups multiples of it)")
    b.add_argument("--rows", type=positive_int, default=1 << 18, help="table rows")
    b.add_argument("--dim", type=positive_int, default=64, help="table width (floats per row)")
    b.add_argument("--lookups", type=positive_int, default=1 << 16, help="ids per call")
    b.add_argument("--repeats", type=positive_int, default=20,
                   help="timed lookup rounds, median (layouts interleaved)")
    b.add_argument("--out", default="bench-results/embeddings.json",
                   help="JSON results path; a PNG is written beside it")
    b.set_defaults(func=_bench)


def _embeddings_plan(args: argparse.Namespace) -> int:
    from arm_jax.config import load_tier
    from arm_jax.embeddings.id_data import load_columns
    from arm_jax.embeddings.sizing import (check_groups, overrides_params, plan_sizes,
                                           stats_from_columns, tier_overrides, write_plan_yaml)

    if args.group and not args.out:    # groups do not change the sizes: they go in the YAML
        raise ValueError("embeddings plan: --group is written to the --out YAML only (it does "
                         "not change the printed plan); add --out plan.yaml or drop --group")
    if args.out:        # before the ids are read and counted
        from arm_jax.data.outputs import check_output_file

        check_output_file(args.out, "--out")
    unused = [o for o in args.overrides
              if not (o.startswith("features.") or o.split("=", 1)[0] == "model.d_model")]
    if unused:    # the plan reads the tier's features and width only
        raise ValueError(f"embeddings plan: overrides {' '.join(unused)} would be ignored: it "
                         "reads features.* and model.d_model only")
    tier = load_tier(args.tier, args.overrides)
    cols = load_columns(args.data, tier.features)
    groups = [g.split(",") for g in args.group]
    check_groups(groups, cols)      # before planning and printing, not when writing --out
    plan = plan_sizes(stats_from_columns(cols, args.min_count), args.budget_params,
                      args.dim or tier.model.d_model, row_multiple=args.row_multiple)
    overrides = tier_overrides(plan) if args.out else {}
    built = overrides_params(plan, tier.features) if overrides else None
    if args.json:
        doc = plan.to_dict()
        if overrides:
            doc.update(overrides=overrides, overrides_params=built)
        print(json.dumps(doc, indent=2))
    else:
        print(plan.table())
        if overrides:   # one hash size for all sparse fields: the overrides build more
            written = " ".join(f"{k}={v}" for k, v in overrides.items())
            print(f"tier overrides in {args.out} ({written}) build {built:,} table params "
                  f"at dim {plan.dim}, not {plan.used_params:,}: a tier has one hash size "
                  "for all sparse fields (the largest planned)")
    if args.out:
        write_plan_yaml(plan, args.out, groups)
        print(f"wrote {args.out}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from arm_jax.config import load_tier
    from arm_jax.parallel.planner import parse_bytes, plan_memory
    from arm_jax.parallel.rules import MIN_SHARD_BYTES
    from arm_jax.parallel.sharding import format_placements

    serving_only = [o for o, v in (("--batch", args.batch), ("--candidates", args.candidates))
                    if v is not None]
    if args.mode == "train" and serving_only:    # was planned silently at the tier's batch
        raise ValueError(f"plan: {' and '.join(serving_only)} size the serving bucket only "
                         "and --mode train plans no serving; for the training batch use "
                         "train.batch_size=N train.candidates=N")
    overrides = list(args.overrides)
    if args.dtype:
        overrides += [f"model.dtype={args.dtype}", f"model.param_dtype={args.dtype}"]
    tier = load_tier(args.tier, overrides)
    plan = plan_memory(tier, args.devices, parse_bytes(args.device_memory),
                       data=args.data_parallel, batch=args.batch, candidates=args.candidates,
                       train=args.mode in ("both", "train"), serve=args.mode in ("both", "serve"),
                       min_shard_bytes=(MIN_SHARD_BYTES if args.min_shard_bytes is None
                                        else args.min_shard_bytes))
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(plan.table())
        print(format_placements(plan.placements))
    for line in plan.failures():
        print(f"arm-jax: does not fit: {line}", file=sys.stderr)
    return 0 if plan.fits else 1


def _bench(args: argparse.Namespace) -> int:
    from arm_jax.bench.embeddings import run_in_subprocess

    return run_in_subprocess(devices=args.devices, rows=args.rows, dim=args.dim,
                             lookups=args.lookups, repeats=args.repeats, out_json=args.out)
