"""The tiers a server runs: executors, their batchers, cost models, readiness, hot swap.

Start-up: every executor is warmed (`warmup()`), then each bucket is timed once on a
padded dummy batch so admission has a measured compute time from the first request.
Only then is the registry ready (`/readyz`).

Hot swap: `reload(tier, path)` asks the executor to load the new weights beside the
old ones and swap atomically (the executor's contract: a batch reads one weights
reference, so no request sees a mix). Incompatible shapes raise IncompatibleWeights
and the old weights keep serving. Swaps of one tier are serialized.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from arm_jax.batch import RequestBatch
from arm_jax.config import FeaturesConfig
from serving.admission import Admission, ComputeModel
from serving.batcher import MicroBatcher
from serving.executor import TierExecutor, WeightsNotFound
from serving.settings import ServerSettings

log = logging.getLogger("serving.registry")


class RegistryError(ValueError):
    """Executors are inconsistent (different request schemas) or a tier is unknown."""


class TierRegistry:
    def __init__(self, executors: dict[str, TierExecutor], settings: ServerSettings,
                 on_batch: Callable[[str, tuple[int, int], int, float], None] | None = None):
        if not executors:
            raise RegistryError("executors: need at least one tier")
        feats = {name: ex.config.features for name, ex in executors.items()}
        first = next(iter(feats.values()))
        for name, f in feats.items():
            if f != first:
                raise RegistryError(f"tier {name!r}: request schema differs from the others; "
                                    "every tier must accept the same requests")
        self.features: FeaturesConfig = first
        self.executors = executors
        self.settings = settings
        # cheapest first, by FLOPs of the largest bucket
        self.order = sorted(executors, key=lambda n: self._cost_key(executors[n]))
        self.models = {n: ComputeModel({b: ex.cost_flops(b) for b in ex.buckets})
                       for n, ex in executors.items()}
        self.batchers = {
            n: MicroBatcher(ex, window_ms=settings.batch_window_ms,
                            estimate_ms=self.models[n].estimate_ms,
                            on_batch=self._observer(n, on_batch))
            for n, ex in executors.items()}
        self.admission = Admission(self.batchers, self.models, self.order,
                                   max_queue=settings.max_queue,
                                   window_ms=settings.batch_window_ms)
        self.max_candidates = min(first.max_candidates,
                                  *(max(n for _, n in ex.buckets) for ex in executors.values()))
        self._started = False
        self.versions = {n: 0 for n in executors}
        self._swap_locks = {n: threading.Lock() for n in executors}

    @staticmethod
    def _cost_key(ex: TierExecutor) -> tuple[float, int]:
        big = max(ex.buckets, key=lambda b: b[0] * b[1])
        c = ex.cost_flops(big)
        return (c if np.isfinite(c) else float("inf"), ex.config.model.history_len)

    def _observer(self, name: str, outer):
        def observe(bucket, size, ms):
            self.models[name].observe(bucket, ms)
            if outer is not None:
                outer(name, bucket, size, ms)
        return observe

    # -- lifecycle
    def start(self, *, measure: bool = True) -> None:
        """Warm every executor, time each bucket once, start the batchers, become ready."""
        for name in self.order:
            ex = self.executors[name]
            ex.warmup()
            if measure:
                for b, n in ex.buckets:
                    batch = dummy_batch(self.features, b, n, ex.config.model.history_len)
                    t0 = time.monotonic()
                    ex.score(batch)
                    self.models[name].observe((b, n), (time.monotonic() - t0) * 1e3)
            self.batchers[name].start()
        self._started = True

    @property
    def ready(self) -> bool:
        """Warmed, started, not stopping, and every tier's worker thread alive."""
        return self._started and not self.stopped_workers()

    def stopped_workers(self) -> list[str]:
        """Tiers whose batcher worker thread has ended while the registry runs (a worker
        only ends by a bug: the server then reports not ready instead of timing out that
        tier's requests while /readyz says ready)."""
        return [n for n, bt in self.batchers.items() if not bt.alive] if self._started else []

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Every tier drains at once, within one `timeout` (not one per tier)."""
        self._started = False
        for bt in self.batchers.values():
            bt.stop_accepting(drain=drain)
        end = time.monotonic() + timeout
        for bt in self.batchers.values():
            bt.stop(drain=drain, timeout=max(0.0, end - time.monotonic()))

    # -- hot swap
    def reload(self, tier: str, path: str | Path) -> dict[str, Any]:
        if tier not in self.executors:
            raise RegistryError(f"tier: unknown tier {tier!r}; tiers: {self.order}")
        try:
            exists = Path(path).exists()
        except (OSError, ValueError) as e:   # a component over NAME_MAX, a NUL byte
            raise WeightsNotFound(f"path: cannot be used as a directory ({e})") from None
        if not exists:
            raise WeightsNotFound(f"path: {path} does not exist")
        with self._swap_locks[tier]:
            t0 = time.monotonic()
            info = self.executors[tier].swap_weights(path) or {}
            self.versions[tier] += 1
            gc.collect()  # drop the last references to the old weights now, not later
            return {"tier": tier, "version": self.versions[tier],
                    "seconds": round(time.monotonic() - t0, 4), **info}


def dummy_batch(features: FeaturesConfig, b: int, n: int, history: int) -> RequestBatch:
    """A valid batch of the given shape (ones, full history) for warm-up timing."""
    f = features
    return RequestBatch(
        req_sparse=np.ones((b, f.req_sparse_fields), np.int32),
        req_dense=np.zeros((b, f.req_dense_features), np.float32),
        hist_item=np.ones((b, history), np.int32),
        hist_action=np.zeros((b, history), np.int32),
        hist_gap=np.ones((b, history), np.float32),
        hist_len=np.full((b,), history, np.int32),
        hist_side=np.ones((b, history, len(f.history_side_fields)), np.int32),
        cand_sparse=np.ones((b, n, f.cand_sparse_fields), np.int32),
        cand_dense=np.zeros((b, n, f.cand_dense_features), np.float32),
        cand_mask=np.ones((b, n), bool),
    )
