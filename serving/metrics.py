"""Prometheus metrics of one server (its own CollectorRegistry: apps never share state)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1.0,
                    1.5, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_EVENT_BUCKETS = (0, 1, 4, 16, 64, 256, 1024, 4096)


class ServerMetrics:
    """Names are `armjax_*`; per-tier series carry a `tier` label."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("armjax_request_latency_seconds",
                                 "server time of admitted /v1/rank requests",
                                 ["tier"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("armjax_queue_wait_seconds", "time queued before compute",
                                    ["tier"], buckets=_LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("armjax_compute_seconds", "executor time per call",
                                 ["tier"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("armjax_batch_size", "requests per executor call",
                                    ["tier"], buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("armjax_queue_depth", "requests waiting", ["tier"], registry=r)
        self.busy_ratio = Gauge("armjax_executor_busy_ratio",
                                "fraction of the last 10 s the executor was computing",
                                ["tier"], registry=r)
        self.requests = Counter("armjax_requests_total", "answered /v1/rank requests",
                                ["tier", "degraded"], registry=r)
        self.rejects = Counter("armjax_rejects_total", "refused requests by reason",
                               ["reason"], registry=r)
        self.swaps = Counter("armjax_weight_swaps_total", "weight reloads by outcome",
                             ["tier", "outcome"], registry=r)
        self.history_fetch = Histogram("armjax_history_fetch_seconds",
                                       "user-log store reads on the request path",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.history_events = Histogram(
            "armjax_history_events", "events a successful store read returned (cut to the "
            "tier's L); a jump in the 0 bucket is a store that lost its data, which is no "
            "failure", buckets=_EVENT_BUCKETS, registry=r)
        self.store_fallbacks = Counter("armjax_store_fallbacks_total",
                                       "requests served history-free on the cheapest tier "
                                       "because the user-log store failed", ["reason"],
                                       registry=r)
        self.ready = Gauge("armjax_ready", "1 while every executor is warmed and every tier's "
                           "batching worker runs",
                           registry=r)
        self.build = Info("armjax_build", "versions of arm-jax and its numeric stack "
                          "(labels of armjax_build_info, value 1)", registry=r)

    def bind_tier(self, tier: str, depth: Callable[[], float], busy: Callable[[], float]) -> None:
        """Gauges read live from the batcher at scrape time."""
        self.queue_depth.labels(tier).set_function(depth)
        self.busy_ratio.labels(tier).set_function(busy)

    def on_batch(self, tier: str, bucket: tuple[int, int], size: int, ms: float) -> None:
        self.compute.labels(tier).observe(ms / 1e3)
        self.batch_size.labels(tier).observe(size)
