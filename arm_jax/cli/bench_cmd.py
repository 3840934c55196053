"""`arm-jax bench NAME`: every benchmark prints a table and writes JSON (+ PNG)."""

from __future__ import annotations

import argparse


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'")
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (prints a table, writes JSON)")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)

    s = bsub.add_parser("sharing", help="shared (request-oriented) vs per-pair latency, FLOPs, MFU")
    s.add_argument("--tier", default="large")
    s.add_argument("--candidates", type=_ints, default=(16, 64, 256, 1024))
    s.add_argument("--repeats", type=int, default=7)
    s.add_argument("--pair-chunk", type=int, default=32,
                   help="pairs per step of the per-pair mode (bounds its memory)")
    s.add_argument("--out", default="bench-results/sharing.json")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.set_defaults(func=_sharing)

    t = bsub.add_parser("topk", help="O(N) top-K: dispatched path vs radix jnp, lax.top_k, argsort")
    t.add_argument("--n", type=_ints, default=(4096, 65536, 1048576))
    t.add_argument("--k", type=_ints, default=(16, 256))
    t.add_argument("--out", default="bench-results/topk.json")
    t.set_defaults(func=_topk)

    b = bsub.add_parser("broadcast", help="fused request->candidate broadcast vs materialized")
    b.add_argument("--candidates", type=_ints, default=(64, 256, 1024))
    b.add_argument("--out", default="bench-results/broadcast.json")
    b.set_defaults(func=_broadcast)

    st = bsub.add_parser("store", help="user-log store: storage ratio and join throughput")
    st.add_argument("--history-len", type=int, default=1024)
    st.add_argument("--out", default="bench-results/store.json")
    st.set_defaults(func=_store)


def _sharing(args: argparse.Namespace) -> int:
    from arm_jax.bench.sharing import run_sharing_bench
    from arm_jax.config import load_tier

    tier = load_tier(args.tier, args.overrides)
    run_sharing_bench(tier, args.candidates, repeats=args.repeats, pair_chunk=args.pair_chunk,
                      out_json=args.out)
    print(f"wrote {args.out}")
    return 0


def _topk(args: argparse.Namespace) -> int:
    from arm_jax.bench.topk import run_topk_bench

    run_topk_bench(ns=args.n, ks=args.k, out_json=args.out)
    print(f"wrote {args.out}")
    return 0


def _broadcast(args: argparse.Namespace) -> int:
    from arm_jax.bench.broadcast import run_broadcast_bench

    run_broadcast_bench(candidates=args.candidates, out_json=args.out)
    print(f"wrote {args.out}")
    return 0


def _store(args: argparse.Namespace) -> int:
    from arm_jax.bench.store import run_store_bench

    run_store_bench(history_len=args.history_len, out_json=args.out)
    print(f"wrote {args.out}")
    return 0
