"""`arm-jax bench store` and `arm-jax bench movielens` (user-log store and real-data evaluation).

Logic lives in arm_jax/bench/store.py and arm_jax/bench/movielens.py; this file parses
arguments only.
"""

from __future__ import annotations

import argparse

from arm_jax.cli.argtypes import positive_float, positive_int


def register_bench(bsub: argparse._SubParsersAction) -> None:
    s = bsub.add_parser("store", help="storage ratio (one log copy per user vs histories "
                                      "materialized per example) and join throughput")
    s.add_argument("--users", type=int, default=1000, help="synthetic users, one log each")
    s.add_argument("--history-median", type=positive_float, default=1500.0,
                   help="median events per user log")
    s.add_argument("--requests-per-user", type=int, default=50,
                   help="examples drawn per user (examples = users x this)")
    s.add_argument("--candidates", type=int, default=16, help="candidates per example")
    s.add_argument("--history-len", type=int, default=1024, help="L joined per example")
    s.add_argument("--join-examples", type=int, default=4000,
                   help="examples joined for the throughput figure")
    s.add_argument("--batch-size", type=int, default=64,
                   help="examples per join batch for the throughput figure")
    s.add_argument("--threads", type=positive_int, default=None,
                   help="grain background join threads (default: CPUs - 1, 1..4)")
    s.add_argument("--redis", default=None, metavar="URL",
                   help="existing Redis (default: start a throwaway redis-server)")
    s.add_argument("--out", default="bench-results/store.json",
                   help="JSON results path; a PNG is written beside it")
    s.set_defaults(func=_store)

    m = bsub.add_parser("movielens", help="logistic regression vs small vs large tier on "
                                          "MovieLens (temporal split): AUC, log loss, NE")
    m.add_argument("--data", default="../shared/data/movielens-latest-small",
                   help="directory with ratings.csv and movies.csv")
    m.add_argument("--steps", type=_steps_arg, default=None, metavar="N|MODEL=N,...",
                   help="training steps: one number for every model, or per model, e.g. "
                        "large=600 (default: logreg 1500, small/medium/large 450: "
                        "~15 min in all)")
    m.add_argument("--models", default="logreg,small,large",
                   help="comma list of logreg, small, medium, large; with small and large a "
                        "routing table over the trained tiers is printed too")
    m.add_argument("--large-history", type=positive_int, default=512,
                   help="L of the large tier here (its config says 1024; 512 fits ~15 min)")
    m.add_argument("--large-batch", type=positive_int, default=16,
                   help="requests per large-tier step")
    m.add_argument("--store", default=None, metavar="URL",
                   help="user-log store (default: LMDB in a temporary directory)")
    m.add_argument("--threads", type=positive_int, default=None,
                   help="grain background join threads (default: CPUs - 1, 1..4)")
    m.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="redraws of the test requests for 95%% AUC intervals and the paired "
                        "large-minus-other differences (0: off)")
    m.add_argument("--distill", type=float, default=0.0, metavar="W",
                   help="train large on (1-W) x labels + W x the predictions of the small "
                        "tier trained before it in the same run (knowledge distillation; "
                        "needs --models with small and large; default 0: off)")
    m.add_argument("--id-min-count", type=int, default=0, metavar="K",
                   help="user and movie ids with fewer than K ratings in the period the "
                        "models fit on share one out-of-vocabulary id (0: off, every id "
                        "keeps its own embedding row)")
    m.add_argument("--seeds", type=_seeds_arg, default=None, metavar="N,N,...",
                   help="run the whole bench at each training seed (train.seed) and print "
                        "the mean, spread and paired large-minus-other differences over "
                        "seeds (~10 min per seed with the defaults)")
    m.add_argument("--out", default="bench-results/movielens.json",
                   help="JSON results path; beside it a PNG, <stem>-scores.npz and, with small "
                        "and large, <stem>-routing.png (--seeds: per seed as <stem>-seedN*)")
    m.add_argument("overrides", nargs="*", metavar="key=value",
                   help="tier config overrides applied to every model")
    m.set_defaults(func=_movielens)


def _steps_arg(text: str) -> int | dict[str, int]:
    """`--steps 600` or `--steps large=600,small=450`."""
    try:
        if "=" not in text:
            return int(text)
        out = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, value = part.split("=", 1)
            out[name.strip()] = int(value)
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number or MODEL=N pairs such as large=600") from None


def _seeds_arg(text: str) -> list[int]:
    """`--seeds 0,1,2`."""
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma list of integer seeds such as 0,1,2") from None


def _store(args: argparse.Namespace) -> int:
    from arm_jax.bench.store import run_store_bench

    run_store_bench(users=args.users, history_median=args.history_median,
                    requests_per_user=args.requests_per_user, candidates=args.candidates,
                    history_len=args.history_len, join_examples=args.join_examples,
                    batch_size=args.batch_size, num_threads=args.threads,
                    redis_url=args.redis, out_json=args.out)
    print(f"wrote {args.out}")
    return 0


def _movielens(args: argparse.Namespace) -> int:
    from arm_jax.bench.movielens import run_movielens_bench

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    kw = dict(steps=args.steps, models=models, store_url=args.store, overrides=args.overrides,
              num_threads=args.threads, out_json=args.out, large_history=args.large_history,
              large_batch=args.large_batch, bootstrap_samples=args.bootstrap,
              distill=args.distill, id_min_count=args.id_min_count)
    if args.seeds is not None:
        from arm_jax.bench.movielens_seeds import run_movielens_seeds

        run_movielens_seeds(args.seeds, args.data, **kw)
    else:
        run_movielens_bench(args.data, **kw)
    print(f"wrote {args.out}")
    return 0
