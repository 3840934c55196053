"""`arm-jax export`, `arm-jax inspect` and `arm-jax bench coldstart` (argument parsing only).

The logic lives in arm_jax/compile/ and arm_jax/bench/coldstart.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arm_jax.cli.argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export", help="compile every (tier, bucket) ahead of time into an artifact directory",
        description="Per tier: one serialized executable per (batch, candidate) bucket, a "
                    "jax.export module per platform, the weights (orbax) and manifest.json "
                    "with costs and the sha256 of every file. --checkpoint takes NAME=DIR "
                    "(repeatable), a checkpoint directory (tier named by its config), or a "
                    "directory holding one checkpoint per tier (DIR/small, DIR/medium, ...).")
    e.add_argument("--checkpoint", action="append", required=True, metavar="DIR|NAME=DIR",
                   help="checkpoint(s) to export (repeatable)")
    e.add_argument("--tiers", default=None,
                   help="comma-separated tiers to export (default: every checkpoint found)")
    e.add_argument("--out", required=True, help="artifact directory (tiers are replaced)")
    e.add_argument("--platforms", default="cpu,cuda",
                   help="platforms for the portable jax.export modules (default: cpu,cuda)")
    e.add_argument("--batch-buckets", default=None, help="override, e.g. 1,4,16")
    e.add_argument("--candidate-buckets", default=None, help="override, e.g. 16,64,256")
    e.add_argument("--top-k", type=positive_int, default=16, help="candidates ranked in-graph")
    e.add_argument("--cache-dir", default=None,
                   help="executable cache (default: $ARM_JAX_COMPILATION_CACHE or "
                        "~/.cache/arm-jax/executables)")
    e.add_argument("--no-cache", action="store_true", help="compile everything afresh")
    e.set_defaults(func=_export)

    i = sub.add_parser("inspect", help="print an artifact directory's manifests as a table",
                       description="Per tier and bucket: FLOPs per request and per candidate "
                                   "(XLA cost analysis), bytes accessed, peak memory. "
                                   "--verify checks every file's sha256 and exits 1 naming "
                                   "each bad or missing file.")
    i.add_argument("artifacts", help="artifact directory from `arm-jax export`")
    i.add_argument("--verify", action="store_true", help="check every file's hash")
    i.add_argument("--json", action="store_true", help="print rows as JSON")
    i.set_defaults(func=_inspect)


def register_bench(bsub: argparse._SubParsersAction) -> None:
    c = bsub.add_parser(
        "coldstart", help="process start -> first scored request: load artifacts vs compile",
        description="Exports random-init checkpoints of each tier (nothing is trained), then "
                    "times fresh subprocesses from process start to the first scored "
                    "request: (a) loading the artifacts, (b) building the model and compiling "
                    "the same buckets from scratch. ratio = compile_s / load_s.")
    c.add_argument("--tiers", default="small,medium,large",
                   help="comma-separated tiers to export (random init) and time")
    c.add_argument("--batch-buckets", default=None, help="override the configured buckets")
    c.add_argument("--candidate-buckets", default=None, help="override the configured buckets")
    c.add_argument("--repeats", type=positive_int, default=1,
                   help="subprocess runs per side (median)")
    c.add_argument("--workdir", default="bench-results/coldstart-work",
                   help="checkpoints and artifacts are written here")
    c.add_argument("--out", default="bench-results/coldstart.json",
                   help="JSON results path; a PNG is written beside it")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="tier config overrides")
    c.set_defaults(func=_coldstart)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}={text!r}: expected comma-separated integers") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{flag}={text!r}: expected positive integers")
    return vals


def _buckets(args: argparse.Namespace) -> list[tuple[int, int]] | None:
    bb = _ints(args.batch_buckets, "--batch-buckets")
    nb = _ints(args.candidate_buckets, "--candidate-buckets")
    if bb is None and nb is None:
        return None
    if bb is None or nb is None:
        raise ValueError("--batch-buckets and --candidate-buckets go together")
    from arm_jax.compile.buckets import bucket_grid

    return bucket_grid(bb, nb)


def _check_cache_dir(args: argparse.Namespace) -> None:
    """The executable cache export will use, checked before --out is created: a file
    there failed at the first compile and left an empty --out behind."""
    if args.no_cache:
        return
    from arm_jax.compile.cache import check_cache_dir, default_cache_dir

    if args.cache_dir is not None:
        check_cache_dir(args.cache_dir, "--cache-dir")
    else:
        check_cache_dir(default_cache_dir(), "executable cache ($ARM_JAX_COMPILATION_CACHE "
                                             "or ~/.cache/arm-jax/executables)")


def _export(args: argparse.Namespace) -> int:
    from arm_jax.compile.export import check_platforms, export_tiers, resolve_checkpoints
    from arm_jax.compile.report import format_table, summary_rows

    platforms = check_platforms(tuple(p for p in args.platforms.split(",") if p),
                                f"--platforms {args.platforms}")
    _check_cache_dir(args)
    tiers = [t for t in (args.tiers or "").split(",") if t] or None
    ckpts = resolve_checkpoints(args.checkpoint, tiers)
    kw = {} if args.cache_dir is None else {"cache_dir": args.cache_dir}
    if args.no_cache:
        kw["cache_dir"] = None
    out = export_tiers(ckpts, args.out, platforms=platforms, buckets=_buckets(args),
                       top_k=args.top_k, **kw)
    rows = [r for r in summary_rows(out) if r["tier"] in ckpts]
    print(format_table(rows))
    print(f"wrote {out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from arm_jax.compile import manifest as mf
    from arm_jax.compile.report import format_table, summary_rows

    if not Path(args.artifacts).is_dir():      # as `serve` and `load` say it
        raise ValueError(f"artifacts: {args.artifacts} is not a directory")
    if args.verify:
        problems = mf.verify(args.artifacts)
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        if problems:
            print(f"arm-jax: verify failed: {len(problems)} problem(s)", file=sys.stderr)
            return 1
    rows = summary_rows(args.artifacts)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    if args.verify:
        print("verify: every file matches its sha256")
    return 0


def _coldstart(args: argparse.Namespace) -> int:
    from arm_jax.bench.coldstart import run_coldstart

    tiers = [t for t in args.tiers.split(",") if t]
    run_coldstart(tiers, overrides=args.overrides, buckets=_buckets(args),
                  repeats=args.repeats, workdir=args.workdir, out_json=args.out)
    print(f"wrote {args.out}")
    return 0
