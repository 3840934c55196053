"""MicroBatcher: deadline-aware grouping, a shared drain timeout; BusyClock: the executor
busy ratio over a sliding window, at any batch rate."""

from __future__ import annotations

import asyncio
import time

import pytest

import serving.batcher as batcher
from serving.batcher import BusyClock, MicroBatcher, Pending
from serving.executor import FakeExecutor
from serving.registry import TierRegistry, dummy_batch
from serving.settings import ServerSettings


def pending(loop, cfg, n, budget_s):
    now = time.monotonic()
    return Pending(dummy_batch(cfg.features, 1, n, 2), n, now + budget_s, now, loop,
                   loop.create_future())


def run_with(bt, scenario, gate=None):
    """Start `bt`, run the coroutine function `scenario`, stop `bt` (opening `gate` first,
    so a gated executor never holds the stop): -> (its result, whether the worker was
    still alive when it returned)."""
    bt.start()
    try:
        out = asyncio.run(scenario())
        return out, bt.alive
    finally:
        if gate is not None:
            gate.set()
        bt.stop(timeout=2)


def test_a_tight_deadline_closes_the_group_at_once_and_is_served(tiny_tiers):
    # window 2 s, compute 20 ms: B (300 ms) cannot wait out the window, so its group goes
    # now; it used to wait until B's last possible start, then fail B for starting late
    cfg = tiny_tiers["small"]
    bt = MicroBatcher(FakeExecutor(cfg), window_ms=2000, estimate_ms=lambda b: 20.0)

    async def run():
        loop = asyncio.get_running_loop()
        a, b = pending(loop, cfg, 5, 5.0), pending(loop, cfg, 5, 0.3)
        bt.submit(a)
        bt.submit(b)
        return await asyncio.gather(a.future, b.future)

    t0 = time.monotonic()
    scored, _ = run_with(bt, run)
    assert [s.batch_size for s in scored] == [2, 2]
    assert time.monotonic() - t0 < 1.0


def test_a_request_whose_budget_ran_out_while_queued_fails_fast_and_is_never_run(
        tiny_tiers, gated):
    # A holds the executor for ~400 ms; B (budget 200 ms, estimate 20 ms) waits behind it.
    # When B's turn comes it can no longer finish in time: DeadlineExceeded, and it is not
    # run late (the executor sees A's call only).
    cfg = tiny_tiers["small"]
    ex = gated(cfg)
    bt = MicroBatcher(ex, window_ms=0, estimate_ms=lambda b: 20.0)

    async def run():
        loop = asyncio.get_running_loop()
        a = pending(loop, cfg, 5, 10.0)
        bt.submit(a)
        await asyncio.to_thread(ex.entered.wait, 5)       # A is running
        b = pending(loop, cfg, 20, 0.2)                  # another bucket: never grouped with A
        bt.submit(b)
        await asyncio.sleep(0.4)
        ex.gate.set()
        return await asyncio.gather(a.future, b.future, return_exceptions=True)

    (got_a, got_b), _ = run_with(bt, run, gate=ex.gate)
    assert got_a.batch_size == 1
    assert isinstance(got_b, batcher.DeadlineExceeded), got_b
    assert ex.calls == 1


def test_registry_stop_drains_every_tier_within_one_timeout(tiny_tiers, gated):
    ex = {n: gated(t, flops_per_pair=1e6 * (i + 1))
          for i, (n, t) in enumerate(tiny_tiers.items())}
    reg = TierRegistry(ex, ServerSettings(batch_window_ms=0))
    reg.start(measure=False)

    async def run():
        loop = asyncio.get_running_loop()
        ps = [pending(loop, tiny_tiers[n], 5, 10.0) for n in ex]
        for n, p in zip(ex, ps):
            reg.batchers[n].submit(p)
        await asyncio.to_thread(lambda: all(e.entered.wait(5) for e in ex.values()))
        t0 = time.monotonic()
        await asyncio.to_thread(reg.stop, drain=True, timeout=0.3)
        took = time.monotonic() - t0
        for e in ex.values():
            e.gate.set()
        return took

    assert asyncio.run(run()) < 0.6            # 3 tiers used to take 3 x 0.3 s


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("busy_share", [1.0, 0.5, 0.1])
def test_ratio_is_the_busy_share_even_at_thousands_of_batches_a_second(monkeypatch, busy_share):
    clock = FakeClock()
    monkeypatch.setattr(batcher.time, "monotonic", clock)
    busy = BusyClock(window_s=10.0)
    period = 0.001                          # 1,000 batches a second for 12 s: 12,000 spans
    for _ in range(12_000):
        busy.start()
        clock.t += period * busy_share
        busy.stop()
        clock.t += period * (1 - busy_share)
    assert busy.ratio() == pytest.approx(busy_share, abs=1e-3)
    assert len(busy._spans) <= 10_001       # only the window's spans are kept
    assert busy.total_s == pytest.approx(12.0 * busy_share, rel=1e-6)


def test_ratio_counts_a_running_call_and_forgets_old_ones(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(batcher.time, "monotonic", clock)
    busy = BusyClock(window_s=10.0)
    busy.start()
    clock.t += 4.0
    assert busy.ratio() == pytest.approx(0.4)          # still running
    busy.stop()
    clock.t += 8.0                                     # 2 s of it left in the window
    assert busy.ratio() == pytest.approx(0.2)
    clock.t += 10.0
    assert busy.ratio() == 0.0


def test_a_group_taken_past_a_request_of_another_bucket_is_served_and_the_worker_lives(
        tiny_tiers, gated):
    # X holds the executor; A (8-bucket), B (32-bucket), C (8-bucket) queue behind it in that
    # order. Next group: [A, C], taken out of the queue past B.
    cfg = tiny_tiers["small"]
    ex = gated(cfg)
    bt = MicroBatcher(ex, window_ms=0, estimate_ms=lambda b: 1.0)

    async def run():
        loop = asyncio.get_running_loop()
        x = pending(loop, cfg, 5, 10.0)
        bt.submit(x)
        await asyncio.to_thread(ex.entered.wait, 5)
        a, b, c = (pending(loop, cfg, n, 10.0) for n in (5, 20, 3))
        for p in (a, b, c):
            bt.submit(p)
        ex.gate.set()
        done, _ = await asyncio.wait([p.future for p in (x, a, b, c)], timeout=5)
        return [p.future.result() if p.future in done else None for p in (x, a, b, c)]

    got, alive = run_with(bt, run, gate=ex.gate)
    assert all(s is not None for s in got), got          # every request answered in time
    assert [s.probs.shape[0] for s in got] == [5, 5, 20, 3]   # each its own row
    assert [s.batch_size for s in got] == [1, 2, 1, 2]        # A and C shared a call
    assert alive and bt.depth == 0


def test_an_executor_answering_a_malformed_result_fails_that_batch_and_the_worker_lives(
        tiny_tiers):
    from serving.executor import ScoreResult

    cfg = tiny_tiers["small"]
    ex = FakeExecutor(cfg)
    real = ex.score

    def one_row_short(batch):
        r = real(batch)
        return ScoreResult(r.probs[:-1], r.top_indices[:-1], r.top_scores[:-1], r.bucket)

    ex.score = one_row_short
    bt = MicroBatcher(ex, window_ms=0, estimate_ms=lambda b: 1.0)

    async def run():
        loop = asyncio.get_running_loop()
        bad = pending(loop, cfg, 5, 10.0)
        bt.submit(bad)
        await asyncio.wait([bad.future], timeout=3)
        ex.score = real
        good = pending(loop, cfg, 5, 10.0)
        bt.submit(good)
        await asyncio.wait([good.future], timeout=3)
        return bad.future, good.future

    (bad, good), alive = run_with(bt, run)
    assert bad.done() and bad.exception() is not None     # failed at once, not left waiting
    assert good.done() and good.result().probs.shape[0] == 5
    assert alive


def test_a_failure_while_grouping_kills_no_worker_and_leaves_no_request_waiting(tiny_tiers):
    cfg = tiny_tiers["small"]
    calls = []

    def estimate(bucket):
        calls.append(bucket)
        if len(calls) == 1:
            raise RuntimeError("planted: estimate failed")
        return 1.0

    bt = MicroBatcher(FakeExecutor(cfg), window_ms=0, estimate_ms=estimate)

    async def run():
        loop = asyncio.get_running_loop()
        a = pending(loop, cfg, 5, 10.0)
        bt.submit(a)
        await asyncio.wait([a.future], timeout=1)
        b = pending(loop, cfg, 5, 10.0)
        try:
            bt.submit(b)              # a dead worker may refuse it at once instead
        except Exception:             # noqa: BLE001
            return a.future, None
        await asyncio.wait([a.future, b.future], timeout=3)
        return a.future, b.future

    (a, b), _ = run_with(bt, run)
    assert a.done(), "the request being grouped was left waiting"
    assert b is None or b.done(), "a later request was accepted and left waiting"
