"""`arm-jax bench topk` and `arm-jax bench broadcast`: the Pallas kernels' benchmarks.

Only argument parsing; the logic lives in arm_jax/bench/{topk,broadcast}.py.
"""

from __future__ import annotations

import argparse

from arm_jax.cli.argtypes import positive_int, positive_ints


def register_bench(bsub: argparse._SubParsersAction) -> None:
    t = bsub.add_parser("topk",
                        help="O(N) top-K: dispatched vs radix select vs lax.top_k vs argsort",
                        description="Median ms per method at every (N, k), log-log slopes of "
                                    "time against N, and the targets at the largest N.")
    t.add_argument("--n", type=positive_ints, default=(4096, 65536, 1048576), help="row lengths")
    t.add_argument("--k", type=positive_ints, default=(16, 256),
                   help="top-K sizes, comma-separated (each <= the smallest --n)")
    t.add_argument("--repeats", type=positive_int, default=15, help="timed rounds (round-robin)")
    t.add_argument("--out", default="bench-results/topk.json",
                   help="JSON results path; a PNG is written beside it")
    t.set_defaults(func=_topk)

    b = bsub.add_parser("broadcast",
                        help="fused vs materialized request broadcast (target attention)",
                        description="Bytes (XLA cost analysis; the kernel's cost estimate) and "
                                    "time of target attention with the request's K/V broadcast "
                                    "to every candidate vs read once per request.")
    b.add_argument("--candidates", type=positive_ints, default=(64, 256, 1024),
                   help="candidate counts N, comma-separated")
    b.add_argument("--batch", type=positive_int, default=1, help="requests")
    b.add_argument("--d-model", type=positive_int, default=128,
                   help="model width d (divisible by --heads)")
    b.add_argument("--history", type=positive_int, default=1024, help="L")
    b.add_argument("--heads", type=positive_int, default=4,
                   help="attention heads (head width = --d-model / heads)")
    b.add_argument("--repeats", type=positive_int, default=7,
                   help="timed rounds per N, median (paths interleaved)")
    b.add_argument("--out", default="bench-results/broadcast.json",
                   help="JSON results path; a PNG is written beside it")
    b.set_defaults(func=_broadcast)


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')}={v}: must be >= 1")


def _topk(args: argparse.Namespace) -> int:
    from arm_jax.bench.topk import run_topk_bench

    _check_positive(repeats=args.repeats)
    if max(args.n) > 1 << 26:
        raise ValueError(f"--n={max(args.n)}: at most {1 << 26}")
    run_topk_bench(args.n, args.k, repeats=args.repeats, out_json=args.out)
    print(f"wrote {args.out}")
    return 0


def _broadcast(args: argparse.Namespace) -> int:
    from arm_jax.bench.broadcast import run_broadcast_bench

    _check_positive(batch=args.batch, d_model=args.d_model, history=args.history,
                    heads=args.heads, repeats=args.repeats)
    if args.d_model % args.heads:
        raise ValueError(f"--d-model={args.d_model} must be divisible by --heads={args.heads}")
    run_broadcast_bench(args.candidates, batch=args.batch, d_model=args.d_model,
                        history=args.history, heads=args.heads, repeats=args.repeats,
                        out_json=args.out)
    print(f"wrote {args.out}")
    return 0
