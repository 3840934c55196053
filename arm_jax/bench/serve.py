"""`arm-jax bench serve`: the server's latency against the executable alone, and overload.

1. compute_ms: the tier's executable alone on one request of `candidates` candidates
   (median of repeats, in this process, before the server starts).
2. A real `arm-jax serve` subprocess on 127.0.0.1 (policy fixed:<tier>).
3. Latency: one request at a time (no queueing) -> p50_ms, p99_ms; overhead_ratio =
   p50_ms / compute_ms (target <= 1.15 for large at 256 candidates).
4. Saturation: closed loop with enough concurrency to fill the largest batch bucket ->
   saturated throughput.
5. Overload: open-loop load at 2x the saturated throughput: admitted p99 vs the deadline,
   rejects (503) counted, 5xx other than 503 must be zero; degradations counted.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from arm_jax.bench.timing import machine_info, write_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _compute_ms(artifacts: str | Path, tier: str, candidates: int, history: int | None,
                repeats: int) -> tuple[float, dict[str, Any]]:
    """Median ms of the tier's executor alone on one request (history None: the tier's L)."""
    from arm_jax.data.random_batch import random_batch
    from serving.executor import load_artifact_executors

    ex = load_artifact_executors(artifacts)
    if tier not in ex:
        raise ValueError(f"--tier {tier!r}: artifacts hold {sorted(ex)}")
    e = ex[tier]
    e.warmup()
    history = history or e.config.model.history_len
    batch = random_batch(e.config.features, batch=1, candidates=candidates, history=history,
                         full_history=True, seed=0)
    for _ in range(2):
        e.score(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.asarray(e.score(batch).probs)
        times.append((time.perf_counter() - t0) * 1e3)
    info = {"deadline_ms": e.config.serving.deadline_ms,
            "buckets": [list(b) for b in e.buckets],
            "history_len": e.config.model.history_len}
    return float(np.median(times)), info


def run_serve_bench(artifacts: str | Path, tier: str = "large", candidates: int = 256, *,
                    history: int | None = None, duration: float = 10.0, repeats: int = 20,
                    out_json: str | Path | None = None, startup_timeout: float = 300.0
                    ) -> dict[str, Any]:
    from serving.client import RankClient, random_request
    from serving.loadgen import format_report, run_load

    t_start = time.perf_counter()
    compute_ms, tinfo = _compute_ms(artifacts, tier, candidates, history, repeats)
    history = history or tinfo["history_len"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "arm_jax.cli.main", "serve", str(artifacts), "--port",
           str(port), "--policy", f"fixed:{tier}", "--max-queue", "64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ))
    try:
        client = RankClient(url, timeout=60)
        client.wait_ready(startup_timeout)
        feats = client.info()["features"]
        rng = np.random.default_rng(0)
        body = random_request(feats, candidates=candidates, history=history, rng=rng)

        # Latency: one request at a time.
        n_seq = int(max(10, min(200, duration * 1e3 / max(compute_ms, 1.0) / 2)))
        for _ in range(3):
            client.rank(body)
        lat, server_total, server_compute = [], [], []
        for _ in range(n_seq):
            t0 = time.perf_counter()
            out = client.rank(body)
            lat.append((time.perf_counter() - t0) * 1e3)
            server_total.append(out["timings"]["total_ms"])
            server_compute.append(out["timings"]["compute_ms"])

        # Saturation: closed loop, enough requests in flight to fill the biggest batch.
        max_b = max(b for b, _ in tinfo["buckets"])
        conc = 2 * max_b
        t_end = time.perf_counter() + duration / 2
        done = [0]

        def worker() -> None:
            with RankClient(url, timeout=60) as c:
                while time.perf_counter() < t_end:
                    r = c.rank_raw(body)
                    if r.status_code == 200:
                        done[0] += 1

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(conc) as pool:
            list(pool.map(lambda _: worker(), range(conc)))
        sat_rps = done[0] / (time.perf_counter() - t0)

        # Overload: open loop at twice the saturated rate.
        over = run_load(url, rate=max(1.0, 2 * sat_rps), duration=duration,
                        candidates=candidates, history=history, max_in_flight=1024)
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    p50 = float(np.percentile(lat, 50))
    deadline = tinfo["deadline_ms"]
    result = {
        "bench": "serve", "machine": machine_info(), "seconds": time.perf_counter() - t_start,
        "config": {"artifacts": str(artifacts), "tier": tier, "candidates": candidates,
                   "history": history, "duration_s": duration, "deadline_ms": deadline,
                   "buckets": tinfo["buckets"]},
        "p50_ms": p50, "p99_ms": float(np.percentile(lat, 99)),
        "server_p50_total_ms": float(np.median(server_total)),
        "server_p50_compute_ms": float(np.median(server_compute)),
        "throughput_rps": sat_rps, "compute_ms": compute_ms,
        "overhead_ratio": p50 / compute_ms, "overhead_target": 1.15,
        "overhead_target_met": p50 / compute_ms <= 1.15,
        "overload_2x": {
            "rate": over["rate"], "admitted": over["ok"], "rejected_503": over["rejected_503"],
            "errors_5xx": over["errors_5xx"], "transport_errors": over["transport_errors"],
            "admitted_p99_ms": over["p99_ms"], "deadline_ms": deadline,
            "admitted_p99_within_deadline": (over["p99_ms"] is not None
                                             and over["p99_ms"] <= deadline),
            "degraded": over["degraded"], "tier_mix": over["tier_mix"],
            "throughput_rps": over["throughput_rps"],
        },
    }
    print(f"{tier} @ {candidates} candidates: compute {compute_ms:.2f} ms, server p50 {p50:.2f} "
          f"ms (x{p50 / compute_ms:.3f}), p99 {result['p99_ms']:.2f} ms, saturated "
          f"{sat_rps:.1f} req/s")
    print("2x overload: " + format_report(over))
    write_json(out_json, result)
    return result
