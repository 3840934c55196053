"""`arm-jax demo`: train every tier briefly, export, serve on 127.0.0.1, send requests.

The CLI entry point is the one place allowed to import both `arm_jax` and `serving`
(DESIGN.md), so the wiring of the two lives here; each step is a library call.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="end to end: train, export AOT tiers, serve, send held-out requests",
        description="Train each tier on the bundled synthetic data for --steps steps, export "
                    "them as AOT artifacts, start the server in-process on 127.0.0.1 and replay "
                    "held-out requests through POST /v1/rank; prints the tier mix, latency and "
                    "the AUC of the served scores.")
    p.add_argument("--out", default="runs/demo", help="checkpoints and artifacts go here")
    p.add_argument("--tiers", default="small,medium,large",
                   help="comma-separated tiers, cheapest first (default: small,medium,large)")
    p.add_argument("--steps", type=int, default=200, help="training steps per tier")
    p.add_argument("--requests", type=int, default=200, help="held-out requests to send")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides applied to every tier")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip())
    if not tiers:
        raise ValueError("--tiers: give at least one tier name, e.g. small,large")
    for name, value in (("--steps", args.steps), ("--requests", args.requests)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    run_demo(args.out, tiers=tiers, steps=args.steps, requests=args.requests,
             overrides=args.overrides)
    return 0


def run_demo(out: str | Path = "runs/demo", *, tiers: Sequence[str] = ("small", "medium", "large"),
             steps: int | None = 200, requests: int = 200,
             overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Train -> export -> serve -> replay held-out requests; returns the per-tier summary."""
    from arm_jax.compile.export import export_tiers
    from arm_jax.config import load_tier
    from arm_jax.demo import (DEMO_OVERRIDES, format_summary, held_out_examples, summarize,
                              train_tiers)
    from serving.app import create_app
    from serving.executor import load_artifact_executors
    from serving.server import ServerThread
    from serving.settings import ServerSettings

    out = Path(out)
    ckpts = train_tiers(tiers, out, steps, overrides)
    artifacts = out / "artifacts"
    export_tiers(ckpts, artifacts, platforms=("cpu",))
    print(f"exported {', '.join(tiers)} -> {artifacts}  (inspect: arm-jax inspect {artifacts})")
    reference = load_tier(tiers[-1], [*DEMO_OVERRIDES, *overrides])
    world, examples = held_out_examples(reference, requests)
    # the items' side ids (advertiser, topic): the server joins them into histories
    # that come without hist_side, e.g. those it reads from a user-log store
    catalog = world.catalog().save(out / "catalog.npz")
    settings = ServerSettings(policy="rules", catalog=str(catalog))
    with ServerThread(create_app(load_artifact_executors(artifacts), settings), settings) as srv:
        print(f"serving on {srv.url} (docs: {srv.url}/docs)")
        records = replay_requests(srv.url, reference, requests, held_out=(world, examples))
    rows = summarize(records)
    print(format_summary(rows))
    print(f"serve these artifacts yourself: arm-jax serve {artifacts} --catalog {catalog}")
    return rows


def replay_requests(url: str, tier: Any, num_requests: int, token: str | None = None,
                    held_out: tuple[Any, Any] | None = None) -> list[dict[str, Any]]:
    """Send held-out synthetic requests to a running server; one record per request.

    `held_out` is (world, examples) from `held_out_examples` when already built.
    """
    import numpy as np
    from tqdm import tqdm

    from arm_jax.data.synthetic import iterate_batches
    from arm_jax.demo import batch_to_payload, held_out_examples
    from serving.client import RankClient

    world, examples = held_out or held_out_examples(tier, num_requests)
    records = []
    with RankClient(url, token=token) as client:
        client.wait_ready(timeout=600)
        batches = iterate_batches(world, examples, 1, tier.features.max_history,
                                  shuffle=False, seed=0, drop_remainder=False)
        for batch, labels in tqdm(batches, total=len(examples), desc="requests", unit="req"):
            body = batch_to_payload(batch, 0)
            t0 = time.perf_counter()
            result = client.rank(body)
            n = len(body["cand_sparse"])
            records.append({"tier": result["tier"], "ms": (time.perf_counter() - t0) * 1e3,
                            "history": len(body["hist_item"]),
                            "scores": np.asarray(result["scores"])[:, 0],
                            "labels": np.asarray(labels[0, :n, 0])})
    return records
