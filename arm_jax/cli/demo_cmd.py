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
    from arm_jax.demo import (DEMO_OVERRIDES, format_summary, held_out_examples,
                              load_world_logs, summarize, train_tiers)
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
    # every user's log, once, in an embedded store: requests may send only user_id and ts
    store_url = load_world_logs(world, out / "logs")
    settings = ServerSettings(policy="rules", catalog=str(catalog), history_store=store_url)
    with ServerThread(create_app(load_artifact_executors(artifacts), settings), settings) as srv:
        print(f"serving on {srv.url} (docs: {srv.url}/docs)")
        records = replay_requests(srv.url, reference, requests, held_out=(world, examples))
        check = compare_store_to_inline(srv.url, reference, (world, examples),
                                        min(STORE_CHECK_REQUESTS, requests))
    rows = summarize(records)
    print(format_summary(rows))
    print(f"history from the store (requests with only user_id and ts): {check['requests']} "
          f"requests, history_source=store in {check['from_store']}, max |score - inline| "
          f"{check['max_abs_diff']:.2e}")
    print(f"serve these artifacts yourself: arm-jax serve {artifacts} --catalog {catalog} "
          f"--history-store {store_url}")
    return rows


STORE_CHECK_REQUESTS = 20


def compare_store_to_inline(url: str, tier: Any, held_out: tuple[Any, Any],
                            num_requests: int) -> dict[str, Any]:
    """Send requests with only user_id and ts (the server reads the history from its store),
    then the same request with the history inline on the tier the first went to; the
    scores must agree. -> {requests, from_store, max_abs_diff}."""
    import numpy as np

    from arm_jax.data.synthetic import iterate_batches
    from arm_jax.demo import batch_to_payload
    from serving.client import RankClient

    world, examples = held_out
    examples = examples.take(np.arange(min(num_requests, len(examples))))
    diffs, from_store = [], 0
    with RankClient(url) as client:
        batches = iterate_batches(world, examples, 1, tier.features.max_history,
                                  shuffle=False, seed=0, drop_remainder=False)
        for i, (batch, _) in enumerate(batches):
            inline = batch_to_payload(batch, 0)
            bare = {k: v for k, v in inline.items() if not k.startswith("hist_")}
            got = client.rank({**bare, "user_id": int(examples.user_id[i]),
                               "ts": int(examples.ts[i])})
            from_store += got["history_source"] == "store"
            want = client.rank({**inline, "tier": got["tier"]})
            diffs.append(float(np.max(np.abs(np.subtract(got["scores"], want["scores"])))))
    return {"requests": len(diffs), "from_store": from_store,
            "max_abs_diff": max(diffs, default=0.0)}


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
