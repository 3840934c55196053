"""Admission's queue estimate: every request queued ahead counts, whatever its bucket."""

from __future__ import annotations

import asyncio
import time

from serving.admission import Admission, ComputeModel, Rejected
from serving.batcher import MicroBatcher, Pending
from serving.registry import dummy_batch


def test_estimate_counts_queued_requests_of_other_candidate_buckets(tiny_tiers, gated):
    # buckets B 1/4 x N 8/32, every call 100 ms. One call runs; 8 requests of 20 candidates
    # (bucket 32) wait: two more calls. A 5-candidate request (bucket 8) runs after them,
    # since the worker serves the oldest request first: ~100 + 200 + 100 ms, not ~200.
    cfg = tiny_tiers["small"]
    ex = gated(cfg)
    model = ComputeModel({b: 1.0 for b in ex.buckets})
    for b in ex.buckets:
        model.observe(b, 100.0)
    bt = MicroBatcher(ex, window_ms=0, estimate_ms=model.estimate_ms)
    adm = Admission({"small": bt}, {"small": model}, ["small"], max_queue=64, window_ms=0)
    bt.start()

    async def run():
        loop = asyncio.get_running_loop()

        def submit(n):
            now = time.monotonic()
            bt.submit(Pending(dummy_batch(cfg.features, 1, n, 2), n, now + 10, now, loop,
                              loop.create_future()))

        submit(20)
        await asyncio.to_thread(ex.entered.wait, 5)       # the first call is running
        for _ in range(8):
            submit(20)
        est = adm.estimate_ms("small", 5)
        try:
            adm.decide("small", 5, 250.0)
            refused = False
        except Rejected:
            refused = True
        ex.gate.set()
        return est, refused

    try:
        est, refused = asyncio.run(run())
    finally:
        ex.gate.set()
        bt.stop()
    assert est > 300.0 - 1.0 and refused
