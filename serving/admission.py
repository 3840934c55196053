"""Deadline-aware admission: admit, degrade to a cheaper tier, or shed with Retry-After.

The estimate of a request's server time on a tier is built from measured compute
times per bucket (an exponentially weighted mean, seeded by warm-up):

    wait  = what is left of the batch running now
          + the batches already queued ahead of this one: the full batches of its own
            candidate bucket, and every batch of the other buckets (the worker serves
            the oldest request first, whatever its bucket)
    total = wait + the compute of this request's own batch + the batching window

If `total` fits the request's remaining budget and the tier's queue has room, the
request is admitted there. Otherwise the next cheaper tier is tried (the response is
marked degraded); if none fits, the request is refused with 503 and a Retry-After of
roughly the time the cheapest tier needs to drain its queue. Queues are bounded, so
memory never grows with offered load.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

from serving.batcher import MicroBatcher


class Rejected(Exception):
    """The request cannot meet its deadline on any tier (-> 503 + Retry-After)."""

    def __init__(self, reason: str, retry_after_s: int, message: str):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclasses.dataclass(frozen=True)
class Decision:
    tier: str
    degraded: bool
    estimate_ms: float


class ComputeModel:
    """Measured compute ms per (B, N) bucket; unmeasured buckets scale from measured ones
    by cost (FLOPs) ratio, so one warm-up measurement already gives usable estimates."""

    def __init__(self, cost: dict[tuple[int, int], float], alpha: float = 0.2):
        self.cost = {tuple(k): float(v) for k, v in cost.items()}
        self.alpha = alpha
        self._ms: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()

    def observe(self, bucket: tuple[int, int], ms: float) -> None:
        bucket = tuple(bucket)
        with self._lock:
            old = self._ms.get(bucket)
            self._ms[bucket] = ms if old is None else (1 - self.alpha) * old + self.alpha * ms

    def estimate_ms(self, bucket: tuple[int, int]) -> float:
        bucket = tuple(bucket)
        with self._lock:
            if bucket in self._ms:
                return self._ms[bucket]
            if not self._ms:
                return 0.0
            c = self.cost.get(bucket)
            rates = [ms / self.cost[b] for b, ms in self._ms.items()
                     if self.cost.get(b, 0) > 0 and math.isfinite(self.cost[b])]
            if c and math.isfinite(c) and rates:
                return c * max(rates)
            return max(self._ms.values())

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {f"{b}x{n}": round(v, 3) for (b, n), v in sorted(self._ms.items())}


class Admission:
    """Chooses the tier a request actually runs on, given the router's preference."""

    def __init__(self, batchers: dict[str, MicroBatcher], models: dict[str, ComputeModel],
                 order: list[str], *, max_queue: int, window_ms: float):
        self.batchers = batchers
        self.models = models
        self.order = order              # cheapest first
        self.max_queue = max_queue
        self.window_ms = window_ms

    def fits(self, tier: str, n: int) -> bool:
        return n <= self.batchers[tier].cand_sizes[-1]

    def estimate_ms(self, tier: str, n: int) -> float:
        """Expected server time (queue + compute) for one more request of n candidates."""
        bt, model = self.batchers[tier], self.models[tier]
        nb = bt.cand_bucket(n)
        queued = bt.depth_by_bucket()
        ahead = queued.pop(nb, 0)
        wait = (ahead // bt.max_batch) * model.estimate_ms((bt.max_batch, nb))
        for other, k in queued.items():   # an upper bound: some may share batches with later ones
            full, rest = divmod(k, bt.max_batch)
            wait += full * model.estimate_ms((bt.max_batch, other))
            if rest:
                wait += model.estimate_ms((bt.batch_bucket(rest), other))
        own = model.estimate_ms((bt.batch_bucket(ahead % bt.max_batch + 1), nb))
        running = 0.0
        since = bt.busy.busy_since
        if since is not None:
            running = max(0.0, bt.current_estimate_ms - (time.monotonic() - since) * 1e3)
        return running + wait + own + self.window_ms

    def pressure(self, tier: str, n: int, budget_ms: float) -> float:
        """Estimated time over budget: > 1 means this tier would miss the deadline now."""
        return self.estimate_ms(tier, n) / max(budget_ms, 1e-3)

    def decide(self, preferred: str, n: int, budget_ms: float) -> Decision:
        """Admit on `preferred` or the next cheaper tier that fits; raise Rejected if none."""
        start = self.order.index(preferred)
        reasons = []
        best_wait = math.inf
        for tier in reversed(self.order[:start + 1]):
            if not self.fits(tier, n):
                reasons.append("too_large")
                continue
            bt = self.batchers[tier]
            est = self.estimate_ms(tier, n)
            best_wait = min(best_wait, est)
            if bt.depth >= self.max_queue:
                reasons.append("queue_full")
                continue
            if est > budget_ms:
                reasons.append("deadline")
                continue
            return Decision(tier, tier != preferred, est)
        reason = "queue_full" if reasons and all(r == "queue_full" for r in reasons) else "overload"
        retry = 1 if not math.isfinite(best_wait) else max(1, min(30, math.ceil(best_wait / 1e3)))
        raise Rejected(reason, retry,
                       f"overloaded: no tier can answer within {budget_ms:.0f} ms "
                       f"(best estimate {best_wait:.0f} ms); retry after {retry} s")
