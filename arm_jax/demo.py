"""Library side of `arm-jax demo` (train, export, serve, send requests).

The demo trains every tier briefly on the bundled synthetic world, exports them as AOT
artifacts, serves them on 127.0.0.1 and replays held-out synthetic requests through
`POST /v1/rank`. This module holds the parts that belong to `arm_jax` (training, the
user-log store, request payloads, the per-tier summary); the CLI entry point
`arm_jax.cli.demo_cmd`, the one place allowed to import both `arm_jax` and `serving`, wires
them to the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from arm_jax.config import TierConfig, load_tier

# Serving buckets of the demo: enough to show bucketing, few enough to export in a minute;
# a lighter training batch and held-out set so three tiers train in minutes on 2 cores.
DEMO_OVERRIDES = ("serving.batch_buckets=[1,4]", "serving.candidate_buckets=[16,64]",
                "train.batch_size=16", "train.eval_requests=500")


def batch_to_payload(batch: Any, index: int) -> dict[str, Any]:
    """Request `index` of a RequestBatch as a /v1/rank JSON body (valid candidates only)."""
    n_valid = int(np.asarray(batch.cand_mask[index]).sum())
    h = int(batch.hist_len[index])
    return {
        "req_sparse": np.asarray(batch.req_sparse[index]).tolist(),
        "req_dense": np.asarray(batch.req_dense[index]).tolist(),
        "hist_item": np.asarray(batch.hist_item[index, :h]).tolist(),
        "hist_action": np.asarray(batch.hist_action[index, :h]).tolist(),
        "hist_gap": np.asarray(batch.hist_gap[index, :h]).tolist(),
        "hist_side": np.asarray(batch.hist_side[index, :h]).tolist(),
        "cand_sparse": np.asarray(batch.cand_sparse[index, :n_valid]).tolist(),
        "cand_dense": np.asarray(batch.cand_dense[index, :n_valid]).tolist(),
    }


def train_tiers(names: Sequence[str], out: Path, steps: int | None,
                overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Train each named tier on the synthetic world; returns {tier: checkpoint dir}."""
    from arm_jax.train.loop import make_synthetic_data, train_model

    ckpts = {}
    for name in names:
        tier = load_tier(name, [*DEMO_OVERRIDES, *overrides])
        data = make_synthetic_data(tier)
        ckpts[name] = out / "checkpoints" / name
        res = train_model(tier, data, steps=steps, out_dir=ckpts[name])
        auc = res.metrics["overall"]["click"]["auc"]
        print(f"trained {name}: held-out click AUC {auc:.4f} in {res.seconds:.0f}s "
              f"-> {ckpts[name]}")
    return ckpts


def held_out_examples(tier: TierConfig, num_requests: int) -> tuple[Any, Any]:
    """The synthetic world of `tier` and its first `num_requests` held-out requests."""
    from arm_jax.train.loop import make_synthetic_data

    data = make_synthetic_data(tier)
    return data.world, data.test.take(np.arange(min(num_requests, len(data.test))))


def load_world_logs(world: Any, path: Path) -> str:
    """The synthetic world's user logs in a fresh LMDB store at `path` -> its URL."""
    import shutil

    from arm_jax.store import open_store

    shutil.rmtree(path, ignore_errors=True)     # a rerun must not append the logs twice
    url = f"lmdb://{path}"
    with open_store(url) as store:
        users = store.append_many(world.log_user, world.log_item, world.log_action,
                                  world.log_ts)
    print(f"user-log store: {int(world.log_ts.size)} events of {users} users -> {url}")
    return url


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per tier (and overall): requests, mean history, p50/p99 client latency, click AUC."""
    from arm_jax.metrics import auc

    rows = []
    groups = sorted({r["tier"] for r in records})
    for name in [*groups, "all"]:
        rs = [r for r in records if name in ("all", r["tier"])]
        ms = np.array([r["ms"] for r in rs])
        scores = np.concatenate([r["scores"] for r in rs])
        labels = np.concatenate([r["labels"] for r in rs])
        rows.append({"tier": name, "requests": len(rs),
                     "mean_history": float(np.mean([r["history"] for r in rs])),
                     "p50_ms": float(np.percentile(ms, 50)),
                     "p99_ms": float(np.percentile(ms, 99)),
                     "click_auc": float(auc(labels, scores))})
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'tier':<8} {'requests':>8} {'mean hist':>9} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'click AUC':>9}"]
    for r in rows:
        lines.append(f"{r['tier']:<8} {r['requests']:>8} {r['mean_history']:>9.0f} "
                     f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['click_auc']:>9.4f}")
    return "\n".join(lines)
