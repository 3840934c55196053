"""`arm-jax bench store`: storage saved by one log copy per user, and join throughput.

Synthetic world with long user logs (default: median 1,500 events per user) and many
requests per user, as in production where each user is seen many times.

Storage (bytes on disk):
- store layout = examples file (request + candidate features, labels, user id, ts; an
  uncompressed .npz written to disk) + the LMDB store (allocated blocks of data.mdb: the
  events at 9 bytes each, plus LMDB's pages, as a log longer than half a page is stored
  in whole 4 KB overflow pages, its last one partly empty; the table shows both).
  The store layout also holds the item catalogue once (side ids per ad, an .npz).
- materialized = the same examples file + every example's joined history (the most recent
  L events before its time, each with its item's s side ids, which the model reads). Two
  encodings, both reported: `ragged` (the store's own 9 bytes/event codec plus 4 bytes per
  side id, chunk per example: the conservative comparison, exact byte count from the
  codec's fixed layout) and `padded` (RequestBatch arrays int32 item, int32 action,
  float32 gap, int32 side ids padded to L: what a fixed-shape training file holds).
`storage_ratio` = materialized (ragged) / store layout; `storage_ratio_padded` likewise;
`storage_ratio_without_side` leaves side ids and catalogue out of both (the figure before
histories carried side ids).

Both layouts as Parquet too (when pyarrow is installed), what a pipeline that compresses
its training files would compare: the store layout's examples as the `.parquet` examples
file `save_examples` writes (the store and catalogue as above, uncompressed), against one
Parquet file of the examples with each one's joined history as list columns (item,
action, gap, side ids: what the model reads), both with pyarrow's default compression.
`storage_ratio_parquet` = that file / (examples.parquet + store + catalogue).

Compressed store (codec version 2, `LmdbStore(compress=True)`): the same logs loaded into
a second LMDB store that compresses them. Its bytes are `store_lmdb_compressed`, and
`storage_ratio_parquet_compressed_store` is the Parquet comparison with that store, where
both sides are compressed (the like-for-like comparison for a pipeline that compresses).
`storage_ratio` and the other ratios keep the plain store, against uncompressed
materialized histories. Join throughput is measured through both stores, as it is for
Redis, since inflating costs time on every read.

Join throughput: examples per second through the grain join pipeline (batched reads,
background threads) for LMDB and for a real Redis server (a throwaway `redis-server` on
127.0.0.1 unless `redis_url` is given; skipped with a note when the binary is absent).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.memory import check_fits_in_memory
from arm_jax.bench.timing import machine_info, write_json
from arm_jax.config import load_tier
from arm_jax.data.join import join_threads, joined_batches
from arm_jax.data.outputs import check_output_file
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld
from arm_jax.store import codec
from arm_jax.store.lmdb_store import LmdbStore
from arm_jax.store.redis_server import RedisServer, find_redis_server
from arm_jax.store.redis_store import RedisStore


def _examples_bytes(ex: Any, path: Path) -> int:
    np.savez(path, user_id=ex.user_id, ts=ex.ts, req_sparse=ex.req_sparse,
             req_dense=ex.req_dense, cand_sparse=ex.cand_sparse, cand_dense=ex.cand_dense,
             cand_mask=ex.cand_mask, labels=ex.labels)
    return path.stat().st_size


def _parquet_bytes(ex: Any, world: Any, history_len: int, tmp: Path) -> dict[str, int]:
    """Bytes of examples.parquet, and of the examples with their histories materialized as
    list columns (written 4,096 requests per row group)."""
    from arm_jax.data.arrow import require_pyarrow
    from arm_jax.data.examples_file import FORMAT_VERSION
    from arm_jax.data.examples_parquet import examples_table

    pa, pq = require_pyarrow()
    names = ("user_id", "ts", "req_sparse", "req_dense", "cand_sparse", "cand_dense",
             "cand_mask", "labels")
    plain = tmp / "examples.parquet"
    pq.write_table(examples_table({k: getattr(ex, k) for k in names}, tuple(ex.tasks),
                                  FORMAT_VERSION), plain)
    joined = tmp / "examples_with_history.parquet"
    writer = None
    try:
        for lo in range(0, len(ex), 4096):
            part = ex.take(np.arange(lo, min(lo + 4096, len(ex))))
            table = examples_table({k: getattr(part, k) for k in names}, tuple(ex.tasks),
                                   FORMAT_VERSION)
            h = world.join_history(part.user_id, part.ts, history_len)
            valid = np.arange(history_len)[None, :] < h["hist_len"][:, None]
            offsets = pa.array(np.r_[0, np.cumsum(h["hist_len"])].astype(np.int32))
            for col in ("hist_item", "hist_action", "hist_gap"):
                table = table.append_column(
                    col, pa.ListArray.from_arrays(offsets, pa.array(h[col][valid])))
            side = h["hist_side"][valid]
            table = table.append_column("hist_side", pa.ListArray.from_arrays(
                offsets, pa.FixedSizeListArray.from_arrays(pa.array(side.reshape(-1)),
                                                           side.shape[1])))
            if writer is None:
                writer = pq.ParquetWriter(joined, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return {"examples_parquet": plain.stat().st_size,
            "materialized_parquet": joined.stat().st_size}


def _throughput(ex: Any, store: Any, features: Any, L: int, batch_size: int,
                num_threads: int | None, catalog: Any) -> float:
    t0 = time.perf_counter()
    n = 0
    for batch, _ in joined_batches(ex, store, features, batch_size=batch_size, max_len=L,
                                   num_threads=num_threads, catalog=catalog):
        n += batch.num_requests
    return n / (time.perf_counter() - t0)


HISTORY_SIGMA = 0.6   # the synthetic logs' lengths are lognormal around --history-median


def run_store_bench(*, users: int = 1000, history_median: float = 1500.0,
                    requests_per_user: int = 50, candidates: int = 16, history_len: int = 1024,
                    join_examples: int = 4000, batch_size: int = 64,
                    num_threads: int | None = None,
                    redis_url: str | None = None, out_json: str | Path | None = None
                    ) -> dict[str, Any]:
    """Build the world, load LMDB (+ Redis), measure bytes and join throughput; print, JSON, PNG."""
    for name, v, lo in (("users", users, 1), ("requests_per_user", requests_per_user, 1),
                        ("candidates", candidates, 1), ("history_len", history_len, 1),
                        ("join_examples", join_examples, 1), ("batch_size", batch_size, 1)):
        if v < lo:
            raise ValueError(f"{name}={v}: must be >= {lo}")
    check_fits_in_memory(   # the world's logs (20 bytes an event) and one int32 per candidate
        20.0 * users * history_median * math.exp(HISTORY_SIGMA ** 2 / 2)
        + 4.0 * users * requests_per_user * candidates,
        f"users={users}, history_median={history_median:g}, "
        f"requests_per_user={requests_per_user}, candidates={candidates}")
    if out_json is not None:        # else a traceback after the whole run
        check_output_file(out_json, "out_json")
    if redis_url is not None:       # malformed or not answering: before the world is built
        with RedisStore(redis_url, prefix="armjax:bench:", timeout_s=30.0) as rs:
            rs.check()
    tier = load_tier("large", [f"features.max_history={max(history_len, 1)}"])
    f = tier.features
    world = SyntheticWorld.generate(
        SyntheticSpec(num_users=users, history_median=history_median, history_sigma=HISTORY_SIGMA,
                      history_max=4 * int(history_median) + 1), f)
    ex = world.sample_examples(users * requests_per_user, candidates, seed=1)
    hist_len = np.concatenate([   # chunked: the full join of every example is large
        world.join_history(ex.user_id[lo:lo + 4096], ex.ts[lo:lo + 4096], history_len)[
            "hist_len"] for lo in range(0, len(ex), 4096)]).astype(np.int64)
    events = int(world.log_ts.size)

    res: dict[str, Any] = {"bench": "store", "machine": machine_info(), "config": {
        "users": users, "events": events, "history_median": history_median,
        "examples": len(ex), "requests_per_user": requests_per_user, "candidates": candidates,
        "history_len": history_len, "mean_joined_events": float(hist_len.mean()),
        "join_examples": join_examples, "batch_size": batch_size,
        "num_threads": join_threads(num_threads)}}
    with tempfile.TemporaryDirectory(prefix="armjax-store-bench-") as tmp:
        ex_bytes = _examples_bytes(ex, Path(tmp) / "examples.npz")
        lmdb_store = LmdbStore(Path(tmp) / "logs")
        t0 = time.perf_counter()
        lmdb_store.append_many(world.log_user, world.log_item, world.log_action, world.log_ts)
        load_s = time.perf_counter() - t0
        store_bytes = lmdb_store.disk_bytes()
        packed_store = LmdbStore(Path(tmp) / "logs_compressed", compress=True)
        t0 = time.perf_counter()
        packed_store.append_many(world.log_user, world.log_item, world.log_action,
                                 world.log_ts)
        packed_load_s = time.perf_counter() - t0
        catalog = world.catalog()
        catalog_bytes = catalog.save(Path(tmp) / "catalog.npz").stat().st_size
        side = 4 * len(f.history_side_fields)            # int32 side ids per event
        ragged0 = int(codec.HEADER_BYTES * len(ex) + codec.BYTES_PER_EVENT * hist_len.sum())
        ragged = ragged0 + int(side * hist_len.sum())
        padded = int(len(ex) * history_len * (12 + side) + len(ex) * 4)
        res["bytes"] = {"examples": ex_bytes, "store_lmdb": store_bytes,
                        "store_payload": int(events * codec.BYTES_PER_EVENT),
                        "store_lmdb_compressed": packed_store.disk_bytes(),
                        "catalog": catalog_bytes,
                        "materialized_history_ragged": ragged,
                        "materialized_history_padded": padded}
        layout = ex_bytes + store_bytes + catalog_bytes
        res["storage_ratio"] = (ex_bytes + ragged) / layout
        res["storage_ratio_padded"] = (ex_bytes + padded) / layout
        res["storage_ratio_without_side"] = (ex_bytes + ragged0) / (ex_bytes + store_bytes)
        try:
            pqb = _parquet_bytes(ex, world, history_len, Path(tmp))
        except ImportError as e:
            res["parquet_note"] = f"not measured: {e}"
        else:
            res["bytes"].update(pqb)
            res["storage_ratio_parquet"] = pqb["materialized_parquet"] / (
                pqb["examples_parquet"] + store_bytes + catalog_bytes)
            res["storage_ratio_parquet_compressed_store"] = pqb["materialized_parquet"] / (
                pqb["examples_parquet"] + res["bytes"]["store_lmdb_compressed"]
                + catalog_bytes)
        sub = ex.take(np.arange(min(join_examples, len(ex))))
        tput: dict[str, float | None] = {}
        tput["lmdb"] = _throughput(sub, lmdb_store, f, history_len, batch_size, num_threads,
                                   catalog)
        tput["lmdb_compressed"] = _throughput(sub, packed_store, f, history_len, batch_size,
                                              num_threads, catalog)
        res["load_seconds"] = {"lmdb": round(load_s, 3),
                               "lmdb_compressed": round(packed_load_s, 3)}
        lmdb_store.close()
        packed_store.close()

        server = None
        try:
            if redis_url is None and find_redis_server() is not None:
                server = RedisServer().start()
                redis_url = server.url
            if redis_url is None:
                tput["redis"] = tput["redis_compressed"] = None
                res["redis_note"] = "redis-server not installed: Redis not measured"
            else:
                rs = RedisStore(redis_url, prefix="armjax:bench:", timeout_s=30.0)
                rs.clear()
                t0 = time.perf_counter()
                rs.append_many(world.log_user, world.log_item, world.log_action, world.log_ts)
                res["load_seconds"]["redis"] = round(time.perf_counter() - t0, 3)
                res["bytes"]["store_redis_memory"] = rs.memory_bytes()
                tput["redis"] = _throughput(sub, rs, f, history_len, batch_size, num_threads,
                                            catalog)
                rs.compress = True
                t0 = time.perf_counter()
                res["compacted_users"] = {"redis": rs.compact()}
                res["load_seconds"]["redis_compress_existing"] = round(
                    time.perf_counter() - t0, 3)
                res["bytes"]["store_redis_memory_compressed"] = rs.memory_bytes()
                tput["redis_compressed"] = _throughput(sub, rs, f, history_len, batch_size,
                                                       num_threads, catalog)
                rs.clear()
                rs.close()
        finally:
            if server is not None:
                server.stop()
        t0 = time.perf_counter()
        for lo in range(0, len(sub), batch_size):
            world.join_history(sub.user_id[lo:lo + batch_size], sub.ts[lo:lo + batch_size],
                               history_len)
        tput["in_memory_reference"] = len(sub) / (time.perf_counter() - t0)
    res["join_examples_per_s"] = tput
    res["target"] = {"storage_ratio_ge_10": bool(res["storage_ratio"] >= 10)}
    print(format_table(res))
    if out_json is not None:
        write_json(out_json, res)
        res["png"] = str(plot(res, Path(out_json).with_suffix(".png")))
    return res


def format_table(res: dict[str, Any]) -> str:
    c, b, t = res["config"], res["bytes"], res["join_examples_per_s"]
    mb = 1e6
    lines = [
        f"{c['users']} users, {c['events']} events, {c['examples']} examples x "
        f"{c['candidates']} candidates, L={c['history_len']} (mean joined "
        f"{c['mean_joined_events']:.0f} events)",
        f"{'layout':<34} {'MB on disk':>11}",
        f"{'examples (no history)':<34} {b['examples'] / mb:>11.1f}",
        f"{'store (LMDB data.mdb)':<34} {b['store_lmdb'] / mb:>11.1f}",
        f"{'  of it: events, 9 B each':<34} {b['store_payload'] / mb:>11.1f}",
        f"{'  of it: LMDB pages and tree':<34} "
        f"{(b['store_lmdb'] - b['store_payload']) / mb:>11.1f}",
        f"{'store, compressed (LMDB)':<34} {b['store_lmdb_compressed'] / mb:>11.1f}",
        f"{'item catalogue (.npz)':<34} {b['catalog'] / mb:>11.1f}",
        f"{'history materialized, ragged':<34} {b['materialized_history_ragged'] / mb:>11.1f}",
        f"{'history materialized, padded':<34} {b['materialized_history_padded'] / mb:>11.1f}",
        f"storage_ratio (ragged) = {res['storage_ratio']:.2f}   "
        f"(padded) = {res['storage_ratio_padded']:.2f}   "
        f"(without side ids) = {res['storage_ratio_without_side']:.2f}",
    ]
    if "storage_ratio_parquet" in res:
        lines += [f"{'examples (no history), .parquet':<34} {b['examples_parquet'] / mb:>11.1f}",
                  f"{'examples + history, .parquet':<34} "
                  f"{b['materialized_parquet'] / mb:>11.1f}",
                  f"storage_ratio_parquet (materialized and examples compressed, plain "
                  f"store) = {res['storage_ratio_parquet']:.2f}",
                  f"storage_ratio_parquet_compressed_store (everything compressed) = "
                  f"{res['storage_ratio_parquet_compressed_store']:.2f}"]
    else:
        lines.append(f"Parquet layouts {res.get('parquet_note', 'not measured')}")
    lines.append(f"{'join backend':<22} {'examples/s':>12}")
    for k, v in t.items():
        lines.append(f"{k:<22} {'n/a' if v is None else f'{v:12.0f}':>12}")
    if "store_redis_memory" in b:
        lines.append(f"Redis memory: {b['store_redis_memory'] / mb:.1f} MB plain, "
                     f"{b['store_redis_memory_compressed'] / mb:.1f} MB compressed")
    return "\n".join(lines)


def plot(res: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    b = res["bytes"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = ["store layout", "store layout\n(compressed\nstore)", "materialized\n(ragged)",
              "materialized\n(padded)"]
    ex = b["examples"] / 1e6
    hist = [b["store_lmdb"], b["store_lmdb_compressed"], b["materialized_history_ragged"],
            b["materialized_history_padded"]]
    a1.bar(labels, [ex] * 4, label="examples")
    a1.bar(labels, [h / 1e6 for h in hist], bottom=[ex] * 4, label="histories / store")
    a1.tick_params(axis="x", labelsize=7)
    a1.set_ylabel("MB on disk")
    a1.set_title(f"storage ratio {res['storage_ratio']:.1f}x (ragged)")
    a1.legend(fontsize=8)
    t = {k: v for k, v in res["join_examples_per_s"].items() if v is not None}
    a2.bar([k.replace("_", "\n") for k in t], list(t.values()))
    a2.tick_params(axis="x", labelsize=7)
    a2.set_ylabel("examples / s")
    a2.set_title(f"join throughput, L={res['config']['history_len']}")
    fig.tight_layout()
    return save_png(fig, png)


__all__ = ["run_store_bench", "format_table"]
