"""`arm-jax bench NAME`: every benchmark prints a table and writes JSON (+ PNG)."""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from arm_jax.cli.argtypes import positive_int, positive_ints


def register(sub: argparse._SubParsersAction, plugins: list = ()) -> None:
    p = sub.add_parser("bench", help="run a benchmark (prints a table, writes JSON)")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)

    s = bsub.add_parser("sharing", help="shared (request-oriented) vs per-pair latency, FLOPs, MFU")
    s.add_argument("--tier", default="large", help="tier whose model is timed (random init)")
    s.add_argument("--candidates", type=positive_ints, default=(16, 64, 256, 1024),
                   help="candidate counts N, comma-separated (each <= features.max_candidates)")
    s.add_argument("--repeats", type=positive_int, default=7,
                   help="timed rounds per N, median (per-pair gets fewer if slow: ~60 s budget)")
    s.add_argument("--pair-chunk", type=positive_int, default=32,
                   help="pairs per step of the per-pair mode (bounds its memory)")
    s.add_argument("--out", default="bench-results/sharing.json",
                   help="JSON results path; a PNG is written beside it")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="tier config overrides, e.g. model.d_model=64")
    s.set_defaults(func=_sharing)

    for module in plugins:
        module.register_bench(bsub)
    for parser in bsub.choices.values():
        parser.set_defaults(func=_out_checked_first(parser.get_default("func")))


def _out_checked_first(func: Callable[[argparse.Namespace], int]
                       ) -> Callable[[argparse.Namespace], int]:
    """`func` after a check of its `--out` JSON path: a directory, a path under a file or
    an empty name is one line before the benchmark runs, not a traceback after it."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from arm_jax.data.outputs import check_output_file

        check_output_file(args.out, "--out")
        return func(args)

    return run


def _sharing(args: argparse.Namespace) -> int:
    from arm_jax.bench.sharing import run_sharing_bench
    from arm_jax.config import load_tier

    tier = load_tier(args.tier, args.overrides)
    limit = tier.features.max_candidates
    if max(args.candidates) > limit:
        raise ValueError(f"--candidates {max(args.candidates)}: must be <= "
                         f"features.max_candidates={limit}")
    run_sharing_bench(tier, args.candidates, repeats=args.repeats, pair_chunk=args.pair_chunk,
                      out_json=args.out)
    print(f"wrote {args.out}")
    return 0
