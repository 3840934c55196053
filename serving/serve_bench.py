"""`arm-jax bench serve`: the server's latency against the executable alone, and overload.

1. compute_ms: the tier's executable alone on one request of `candidates` candidates
   (median of repeats, in this process, before the server starts).
2. A real `arm-jax serve` subprocess on 127.0.0.1 (policy fixed:<tier>).
3. Latency: one request at a time (no queueing) -> p50_ms, p99_ms; overhead_ratio =
   p50_ms / compute_ms (target <= 1.15 for large at 256 candidates), and
   overhead_ratio_same_requests = p50_ms / the server's own median compute for those
   requests (steadier: both sides come from the same requests).
4. Saturation: closed loop with enough concurrency to fill the largest batch bucket ->
   saturated throughput.
5. Overload: open-loop load at 2x the saturated throughput: admitted p99 vs the deadline,
   rejects (503) counted, 5xx other than 503 must be zero; degradations counted.

JSON (`--out`) with a PNG beside it: the one-at-a-time latencies against the executable
alone, and the admitted latencies at 2x load against the tier's deadline.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.timing import machine_info, write_json
from arm_jax.ports import free_port


def _compute_ms(artifacts: str | Path, tier: str, candidates: int, history: int | None,
                repeats: int) -> tuple[list[float], dict[str, Any]]:
    """Ms per call of the tier's executor alone on one request, `repeats` times (history
    None: the tier's L), and the tier's serving settings with the history used."""
    from arm_jax.data.random_batch import random_batch
    from serving.executor import load_artifact_executors

    ex = load_artifact_executors(artifacts)
    if tier not in ex:
        raise ValueError(f"--tier {tier!r}: artifacts hold {sorted(ex)}")
    e = ex[tier]
    e.warmup()
    history = e.config.model.history_len if history is None else history
    if history > e.config.features.max_history:    # the server would answer 413
        raise ValueError(f"history={history}: exceeds the tier's features.max_history="
                         f"{e.config.features.max_history}")
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
            "buckets": [list(b) for b in e.buckets], "history": history}
    return times, info


class ServeBenchError(RuntimeError):
    """The server the bench started failed it: exited or not ready at start-up, or refused a
    request sent alone (e.g. 503: the tier's deadline is shorter than its compute here)."""


def _rank_alone(client: Any, body: dict[str, Any], wire: str = "json") -> dict[str, Any]:
    """One request with nothing else in flight; a refusal is the bench's error, by status."""
    from serving.client import decode_answer

    r = client.rank_raw(body, wire=wire)
    if r.status_code != 200:
        raise ServeBenchError(f"the server refused a request sent alone: HTTP {r.status_code} "
                              f"{r.text[:200]}")
    return decode_answer(r)


def _wait_for_server(client: Any, proc: subprocess.Popen, log: Any, timeout: float) -> None:
    """`client.wait_ready` while `proc` lives; a server that exits first raises with the end
    of its stderr."""
    try:
        client.wait_ready(timeout, interval=0.1, alive=lambda: proc.poll() is None)
    except TimeoutError as e:
        raise ServeBenchError(f"`arm-jax serve`: {e}") from None
    except ConnectionError:
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
        raise ServeBenchError(f"`arm-jax serve` exited with code {proc.returncode} "
                              "before it was ready: " + " | ".join(tail)) from None


def run_serve_bench(artifacts: str | Path, tier: str = "large", candidates: int = 256, *,
                    history: int | None = None, duration: float = 10.0, repeats: int = 20,
                    batch_window_ms: float | None = None, wire: str = "json",
                    out_json: str | Path | None = None, startup_timeout: float = 300.0
                    ) -> dict[str, Any]:
    """Measure the tier's executable alone, then a real server (latency, saturation, 2x
    overload); print a summary, write JSON and a PNG beside it when `out_json` is given.
    `batch_window_ms` is passed to the server (None: the server's default); every request
    is sent as `wire` ("json", "msgpack" or "arrow") and answered in it."""
    for name, v, lo in (("candidates", candidates, 1), ("repeats", repeats, 1),
                        ("history", 0 if history is None else history, 0)):
        if v < lo:
            raise ValueError(f"{name}={v}: must be >= {lo}")
    if not duration > 0:
        raise ValueError(f"duration={duration}: must be > 0 seconds")
    if batch_window_ms is not None and not 0 <= batch_window_ms <= 1000:
        raise ValueError(f"batch_window_ms={batch_window_ms}: must be in [0, 1000]")
    if not Path(artifacts).is_dir():
        raise ValueError(f"artifacts={str(artifacts)!r}: not a directory (run `arm-jax export`)")
    from serving.client import WIRES, RankClient, random_request

    if wire not in WIRES:
        raise ValueError(f"wire={wire!r}: expected one of {', '.join(WIRES)}")
    from serving.loadgen import format_report, run_load

    t_start = time.perf_counter()
    print(f"{tier}: timing the executable alone ({repeats} repeats)", flush=True)
    compute_samples, tinfo = _compute_ms(artifacts, tier, candidates, history, repeats)
    compute_ms = float(np.median(compute_samples))
    history = tinfo["history"]                      # resolved: None -> the tier's L
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "arm_jax.cli.main", "serve", str(artifacts), "--port",
           str(port), "--policy", f"fixed:{tier}", "--max-queue", "64"]
    if batch_window_ms is not None:
        cmd += ["--batch-window-ms", str(batch_window_ms)]
    # The server's own token (not whatever $ARM_JAX_TOKEN holds), so clients can always
    # authenticate and the bench measures the auth check production pays.
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "ARM_JAX_TOKEN": token}
    env.pop("ARM_JAX_ADMIN_TOKEN", None)
    log = tempfile.TemporaryFile()          # the server's stderr: shown if it fails to start
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        client = RankClient(url, token=token, timeout=60)
        print(f"{tier}: starting `arm-jax serve` on {url}", flush=True)
        _wait_for_server(client, proc, log, startup_timeout)
        feats = client.info()["features"]
        rng = np.random.default_rng(0)
        body = random_request(feats, candidates=candidates, history=history, rng=rng)

        # Latency: one request at a time.
        n_seq = int(max(10, min(200, duration * 1e3 / max(compute_ms, 1.0) / 2)))
        for _ in range(3):
            _rank_alone(client, body, wire)
        lat, server_total, server_compute = [], [], []
        for _ in tqdm(range(n_seq), desc="one at a time", unit="req"):
            t0 = time.perf_counter()
            out = _rank_alone(client, body, wire)
            lat.append((time.perf_counter() - t0) * 1e3)
            server_total.append(out["timings"]["total_ms"])
            server_compute.append(out["timings"]["compute_ms"])

        # Saturation: closed loop, enough requests in flight to fill the biggest batch.
        max_b = max(b for b, _ in tinfo["buckets"])
        conc = 2 * max_b
        t_end = time.perf_counter() + duration / 2
        done = [0]

        def worker() -> None:
            with RankClient(url, token=token, timeout=60) as c:
                while time.perf_counter() < t_end:
                    r = c.rank_raw(body, wire=wire)
                    if r.status_code == 200:
                        done[0] += 1

        print(f"saturation: {conc} in flight for {duration / 2:g} s", flush=True)
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(conc) as pool:
            list(pool.map(lambda _: worker(), range(conc)))
        sat_rps = done[0] / (time.perf_counter() - t0)
        if done[0] == 0:      # 0 req/s is no measurement; the overload phase would run at 1
            raise ServeBenchError(f"saturation: no request finished within {duration / 2:g} s "
                                  "(half of --duration); give a longer --duration")

        # Overload: open loop at twice the saturated rate.
        rate = max(1.0, 2 * sat_rps)
        print(f"overload: open loop at {rate:.1f} req/s for {duration:g} s", flush=True)
        over = run_load(url, rate=rate, duration=duration,
                        candidates=candidates, history=history, max_in_flight=1024,
                        token=token, wire=wire)
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()

    p50 = float(np.percentile(lat, 50))
    server_compute_ms = float(np.median(server_compute))
    deadline = tinfo["deadline_ms"]
    result = {
        "bench": "serve", "machine": machine_info(), "seconds": time.perf_counter() - t_start,
        "config": {"artifacts": str(artifacts), "tier": tier, "candidates": candidates,
                   "history": history, "duration_s": duration, "deadline_ms": deadline,
                   "buckets": tinfo["buckets"], "batch_window_ms": batch_window_ms,
                   "wire": wire},
        "p50_ms": p50, "p99_ms": float(np.percentile(lat, 99)),
        "latency_ms_samples": [round(x, 3) for x in lat],
        "compute_ms_samples": [round(x, 3) for x in compute_samples],
        "server_p50_total_ms": float(np.median(server_total)),
        "server_p50_compute_ms": server_compute_ms,
        "throughput_rps": sat_rps, "compute_ms": compute_ms,
        "overhead_ratio": p50 / compute_ms, "overhead_target": 1.15,
        # the same ratio against the compute the server timed for these very requests: no
        # drift between the two phases (the executable's own time moves ~10% run to run)
        "overhead_ratio_same_requests": p50 / server_compute_ms,
        "overhead_target_met": p50 / compute_ms <= 1.15,
        "overload_2x": {
            "rate": over["rate"], "admitted": over["ok"], "rejected_503": over["rejected_503"],
            "errors_5xx": over["errors_5xx"], "transport_errors": over["transport_errors"],
            "admitted_p50_ms": over["p50_ms"], "admitted_p95_ms": over["p95_ms"],
            "admitted_p99_ms": over["p99_ms"], "admitted_max_ms": over["max_ms"],
            "deadline_ms": deadline,
            "admitted_p99_within_deadline": (over["p99_ms"] is not None
                                             and over["p99_ms"] <= deadline),
            "degraded": over["degraded"], "tier_mix": over["tier_mix"],
            "throughput_rps": over["throughput_rps"],
        },
    }
    print(f"{tier} @ {candidates} candidates ({wire} bodies): compute {compute_ms:.2f} ms, server p50 {p50:.2f} "
          f"ms (x{p50 / compute_ms:.3f}), p99 {result['p99_ms']:.2f} ms, saturated "
          f"{sat_rps:.1f} req/s")
    print(f"  inside the server (p50): total {result['server_p50_total_ms']:.2f} ms, of which "
          f"compute (packing + executable) {result['server_p50_compute_ms']:.2f} ms; server "
          f"p50 / that compute x{result['overhead_ratio_same_requests']:.3f}")
    print("2x overload: " + format_report(over))
    if out_json is not None:
        write_json(out_json, result)
        result["png"] = str(plot(result, Path(out_json).with_suffix(".png")))
    return result


def plot(res: dict[str, Any], png: Path) -> Path:
    """Left: one-at-a-time latencies vs the executable alone; right: admitted latency
    percentiles at 2x load vs the deadline, with what was admitted and refused."""
    plt = pyplot()

    c, o = res["config"], res["overload_2x"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    samples = res["latency_ms_samples"] + res["compute_ms_samples"]
    lo, hi = min(samples), max(samples)
    bins = np.linspace(lo, max(hi, lo + 1.0), 40)
    a1.hist(res["compute_ms_samples"], bins=bins, color="0.6", alpha=0.8,
            label="executable alone")
    a1.hist(res["latency_ms_samples"], bins=bins, color="tab:blue", alpha=0.7,
            label="through the server")
    for x, label, style in ((res["compute_ms"], "executable alone p50", "k-"),
                            (res["p50_ms"], "server p50", "g--"),
                            (res["p99_ms"], "server p99", "r--")):
        a1.axvline(x, color=style[0], linestyle=style[1:], label=f"{label} {x:.1f} ms")
    a1.set_xlabel("ms per request (one at a time)")
    a1.set_ylabel("requests")
    a1.set_title(f"{c['tier']} @ {c['candidates']} candidates: overhead "
                 f"x{res['overhead_ratio']:.3f}")
    a1.legend(fontsize=8)
    names = ("p50", "p95", "p99", "max")
    vals = [o.get(f"admitted_{n}_ms") for n in names]
    a2.bar(names, [0.0 if v is None else v for v in vals], color="tab:orange")
    a2.axhline(o["deadline_ms"], color="r", linestyle="--",
               label=f"deadline {o['deadline_ms']:g} ms")
    a2.set_ylabel("admitted latency, ms")
    a2.set_title(f"2x load ({o['rate']:.1f} req/s): {o['admitted']} admitted, "
                 f"{o['rejected_503']} refused (503), {o['errors_5xx']} other 5xx", fontsize=9)
    a2.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, png)
