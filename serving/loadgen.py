"""Open-loop load generator: requests at a fixed rate for a bounded time, whatever the replies.

Open loop (arrivals do not wait for answers) is what exposes queueing: a closed loop
slows down with the server and hides overload. In-flight requests are capped
(`max_in_flight`); arrivals over the cap are counted as `client_dropped`, never queued
client-side. Everything is bounded: `rate * duration` requests, then at most
`drain_s` for the stragglers.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import httpx
import numpy as np

from serving.client import (WIRES, RankClient, RankError, decode_answer, encode_payload,
                            random_request)


class LoadgenError(RuntimeError):
    """The server cannot be reached or refuses the load generator's first request."""


def _server_features(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    """GET /v1/info (RankClient.info): the feature sizes random requests are drawn from."""
    try:
        with RankClient(url, token=token, timeout=timeout) as client:
            return client.info()["features"]
    except RankError as e:
        hint = (": pass the server's --token (or set ARM_JAX_TOKEN)" if e.status in (401, 403)
                else ", expected 200 from an arm-jax server")
        raise LoadgenError(f"url={url!r}: GET /v1/info answered {e.status}{hint}") from e
    except httpx.InvalidURL as e:
        raise LoadgenError(f"url={url!r}: not a valid URL ({e})") from e
    except httpx.UnsupportedProtocol as e:
        raise LoadgenError(f"url={url!r}: expected an http:// or https:// URL") from e
    except httpx.HTTPError as e:
        raise LoadgenError(f"url={url!r}: cannot reach the server "
                           f"({type(e).__name__}: {e}); is `arm-jax serve` running?") from e
    except (ValueError, KeyError, TypeError) as e:
        raise LoadgenError(f"url={url!r}: GET /v1/info did not return an arm-jax "
                           f"server's features ({type(e).__name__})") from e


_ANSWER_KEYS = ("tier", "degraded", "batch_size", "timings")


def _rank_answer(r: httpx.Response) -> dict[str, Any] | None:
    """A 200's body as a rank answer, or None when it is not one (a proxy's page, a
    truncated body): the report reads these fields of every answer it counts as ok."""
    try:
        data = decode_answer(r)
    except Exception:       # whatever the decoder of that content type raises
        return None
    ok = (isinstance(data, dict) and all(k in data for k in _ANSWER_KEYS)
          and isinstance(data["timings"], dict)
          and all(k in data["timings"] for k in ("total_ms", "compute_ms", "queue_ms")))
    return data if ok else None


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


async def _run(url: str, rate: float, duration: float, payloads: list[bytes], ctype: str,
               token: str | None, max_in_flight: int, timeout: float, drain_s: float
               ) -> dict[str, Any]:
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    results: list[tuple[int, float, dict | None]] = []
    transport_errors: collections.Counter[str] = collections.Counter()
    in_flight = 0
    dropped = 0

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=timeout) as http:
        async def one(body: bytes) -> None:
            nonlocal in_flight
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/rank", content=body)
                ms = (time.perf_counter() - t0) * 1e3
                data = None
                if r.status_code == 200:
                    data = _rank_answer(r)
                    if data is None:    # counted, not lost: it escaped as a task error
                        transport_errors["bad_answer"] += 1
                        return
                results.append((r.status_code, ms, data))
            except Exception as e:  # noqa: BLE001 - every request sent is counted somewhere
                # httpx's errors, and anything else (it was lost: counted in `sent` only)
                transport_errors[type(e).__name__] += 1
            finally:
                in_flight -= 1

        total = max(1, int(round(rate * duration)))
        tasks = []
        t_start = time.perf_counter()
        for i in range(total):
            delay = t_start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                dropped += 1
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(payloads[i % len(payloads)])))
        send_s = time.perf_counter() - t_start
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=drain_s)
            for t in pending:
                t.cancel()
            if pending:
                transport_errors["unfinished"] += len(pending)
        elapsed = time.perf_counter() - t_start

    ok = [(ms, d) for code, ms, d in results if code == 200]
    lat = [ms for ms, _ in ok]
    codes = collections.Counter(code for code, _, _ in results)
    tiers = collections.Counter(d["tier"] for _, d in ok)
    server = [d["timings"] for _, d in ok]
    return {
        "url": url, "rate": rate, "duration_s": duration, "sent": len(tasks),
        "client_dropped": dropped, "ok": len(ok), "status": dict(sorted(codes.items())),
        "rejected_503": codes.get(503, 0),
        "errors_5xx": sum(v for c, v in codes.items() if c >= 500 and c != 503),
        "errors_4xx": sum(v for c, v in codes.items() if 400 <= c < 500),
        "transport_errors": dict(transport_errors),
        "p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "p99_ms": _pct(lat, 99),
        "max_ms": max(lat) if lat else None,
        "throughput_rps": len(ok) / elapsed if elapsed > 0 else 0.0,
        "send_seconds": send_s, "elapsed_s": elapsed,
        "tier_mix": {k: v / max(1, len(ok)) for k, v in sorted(tiers.items())},
        "degraded": sum(1 for _, d in ok if d["degraded"]),
        "server_p50_total_ms": _pct([s["total_ms"] for s in server], 50),
        "server_p50_compute_ms": _pct([s["compute_ms"] for s in server], 50),
        "server_p50_queue_ms": _pct([s["queue_ms"] for s in server], 50),
        "mean_batch_size": float(np.mean([d["batch_size"] for _, d in ok])) if ok else None,
    }


def run_load(url: str, *, rate: float, duration: float, candidates: int = 64,
             history: int = 64, token: str | None = None, use_msgpack: bool = False,
             wire: str | None = None,
             max_in_flight: int = 512, timeout: float = 30.0, drain_s: float = 30.0,
             seed: int = 0, pool: int = 32, extra: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Open-loop load against a running server; returns the report dict. Bodies are sent
    as `wire` ("json", "msgpack" or "arrow"; `use_msgpack=True` is "msgpack")."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be > 0, got rate={rate}, duration={duration}")
    for name, v, lo in (("candidates", candidates, 1), ("history", history, 0),
                        ("max_in_flight", max_in_flight, 1)):
        if v < lo:
            raise ValueError(f"{name}={v}: must be >= {lo}")
    wire = wire or ("msgpack" if use_msgpack else "json")
    if wire not in WIRES:
        raise ValueError(f"wire={wire!r}: expected one of {', '.join(WIRES)}")
    if wire == "arrow":       # before any request: PyarrowMissing says what to install
        from serving.arrow_wire import require_arrow

        require_arrow()
    url = url.rstrip("/")
    features = _server_features(url, token, timeout)
    rng = np.random.default_rng(seed)
    reqs = [random_request(features, candidates=candidates, history=history, rng=rng,
                           **(extra or {})) for _ in range(pool)]
    encoded = [encode_payload(r, wire) for r in reqs]
    payloads, ctype = [body for body, _ in encoded], encoded[0][1]
    report = asyncio.run(_run(url, rate, duration, payloads, ctype, token,
                              max_in_flight, timeout, drain_s))
    report.update(candidates=candidates, history=history)
    return report


def format_report(r: dict[str, Any]) -> str:
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    return (f"sent {r['sent']}  ok {r['ok']}  503 {r['rejected_503']}  5xx {r['errors_5xx']}  "
            f"4xx {r['errors_4xx']}  transport {sum(r['transport_errors'].values())}  "
            f"dropped {r['client_dropped']}\n"
            f"p50 {f(r['p50_ms'])} ms  p95 {f(r['p95_ms'])} ms  p99 {f(r['p99_ms'])} ms  "
            f"throughput {r['throughput_rps']:.1f} req/s  tier mix {r['tier_mix']}  "
            f"degraded {r['degraded']}")
