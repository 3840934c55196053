"""Per-tier dynamic micro-batching: an asyncio-facing queue drained by one worker thread.

Requests are grouped by candidate bucket (a 10-candidate request is never padded to
1,024 because it shared a call with a big one). The worker takes the oldest request,
then waits up to `window_ms` from that request's arrival for more of the same bucket;
a full batch bucket goes at once, and so does a group whose earliest deadline would not
leave room for the estimated compute time at the end of the window. Under load the
backlog forms batches with no waiting at all. A request that could no longer finish within its
deadline when its turn comes is failed fast (503) instead of being run late. The queue is bounded by admission.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from arm_jax.batch import RequestBatch
from serving.executor import TierExecutor

log = logging.getLogger(__name__)


class DeadlineExceeded(RuntimeError):
    """The request's budget ran out before the executor could take it."""


class ShuttingDown(RuntimeError):
    """The batcher stopped before the request ran."""


@dataclasses.dataclass(eq=False)
class Pending:
    """One request (a RequestBatch of b=1) waiting for its tier's executor. Compared by
    identity: the queue's `remove` compared a request of another bucket field by field,
    numpy arrays included, which raised and killed the tier's worker thread."""

    batch: RequestBatch
    n: int
    deadline: float            # time.monotonic() seconds
    enqueued: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


@dataclasses.dataclass(frozen=True)
class Scored:
    """One request's share of an executor call. Times in ms."""

    probs: np.ndarray          # [n, T]
    top_indices: np.ndarray    # [k] real candidates only
    top_scores: np.ndarray     # [k]
    bucket: tuple[int, int]
    queue_ms: float
    compute_ms: float
    batch_size: int


class BusyClock:
    """Executor busy intervals over a sliding window -> busy ratio in [0, 1]."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        # evicted by age, not count: a tier running thousands of short batches a second
        # keeps every span of the window, so its ratio does not under-read
        self._spans: collections.deque[tuple[float, float]] = collections.deque()
        self._since: float | None = None
        self._lock = threading.Lock()
        self.total_s = 0.0

    def start(self) -> None:
        with self._lock:
            self._since = time.monotonic()

    def stop(self) -> None:
        with self._lock:
            if self._since is not None:
                now = time.monotonic()
                self._spans.append((self._since, now))
                self.total_s += now - self._since
                self._since = None
                while self._spans and self._spans[0][1] < now - self.window_s:
                    self._spans.popleft()

    @property
    def busy_since(self) -> float | None:
        return self._since

    def ratio(self) -> float:
        now = time.monotonic()
        lo = now - self.window_s
        with self._lock:
            spans = list(self._spans) + ([(self._since, now)] if self._since else [])
        busy = sum(max(0.0, e - max(s, lo)) for s, e in spans if e > lo)
        return min(1.0, busy / self.window_s)


class MicroBatcher:
    """Packs requests for one tier into executor calls at the nearest bucket."""

    def __init__(self, executor: TierExecutor, *, window_ms: float,
                 estimate_ms: Callable[[tuple[int, int]], float],
                 on_batch: Callable[[tuple[int, int], int, float], None] | None = None):
        self.executor = executor
        self.window_s = window_ms / 1e3
        self.estimate_ms = estimate_ms
        self.on_batch = on_batch
        self.busy = BusyClock()
        self.batch_sizes = sorted({b for b, _ in executor.buckets})
        self.cand_sizes = sorted({n for _, n in executor.buckets})
        self.max_batch = self.batch_sizes[-1]
        self.history_len = executor.config.model.history_len
        self._queue: collections.deque[Pending] = collections.deque()
        self._cond = threading.Condition()
        self._running = False
        self._drain = True
        self._thread: threading.Thread | None = None
        self.current_estimate_ms = 0.0

    # -- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"batcher-{self.executor.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The worker thread is running (False before start and after stop)."""
        return self._thread is not None and self._thread.is_alive()

    def stop_accepting(self, *, drain: bool = True) -> None:
        """Refuse new requests; the worker drains the queue (`drain`) or drops it."""
        with self._cond:
            self._running = False
            self._drain = drain
            self._cond.notify_all()

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        self.stop_accepting(drain=drain)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:  # anything left (drain timed out or drain=False)
            left = list(self._queue)
            self._queue.clear()
        for p in left:
            _fail(p, ShuttingDown("server is shutting down"))

    # -- producer side
    @property
    def depth(self) -> int:
        return len(self._queue)

    def depth_for(self, n: int) -> int:
        return self.depth_by_bucket().get(self.cand_bucket(n), 0)

    def depth_by_bucket(self) -> dict[int, int]:
        """Queued requests per candidate bucket."""
        with self._cond:
            return dict(collections.Counter(self.cand_bucket(p.n) for p in self._queue))

    def cand_bucket(self, n: int) -> int:
        i = bisect.bisect_left(self.cand_sizes, n)
        return self.cand_sizes[min(i, len(self.cand_sizes) - 1)]

    def batch_bucket(self, b: int) -> int:
        i = bisect.bisect_left(self.batch_sizes, b)
        return self.batch_sizes[min(i, len(self.batch_sizes) - 1)]

    def submit(self, pending: Pending) -> None:
        with self._cond:
            if not self._running:
                raise ShuttingDown("server is shutting down")
            self._queue.append(pending)
            self._cond.notify_all()

    # -- worker side
    def _take_group(self) -> list[Pending] | None:
        with self._cond:
            while not self._queue:
                if not self._running:
                    return None
                self._cond.wait(0.1)
            if not self._running and not self._drain:
                return None
            head = self._queue[0]
            nb = self.cand_bucket(head.n)
            window_end = head.enqueued + self.window_s
            while True:
                group = [p for p in self._queue if self.cand_bucket(p.n) == nb][:self.max_batch]
                now = time.monotonic()
                est = self.estimate_ms((self.batch_bucket(len(group)), nb)) / 1e3
                latest_start = min(p.deadline for p in group) - est
                # A group whose tightest deadline cannot afford the rest of the window goes
                # now. Waiting until `latest_start` itself would fail that request: `_run`
                # refuses one that starts with no slack left, and a wake-up is never early.
                if (len(group) >= self.max_batch or now >= window_end
                        or latest_start <= window_end or not self._running):
                    break
                self._cond.wait(window_end - now)
            for p in group:
                self._queue.remove(p)
            return group

    def _run(self) -> None:
        while True:
            try:
                group = self._take_group()
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one group
                log.exception("tier worker: grouping the queue failed")
                self._fail_head(e)
                time.sleep(0.001)    # a fault that repeats cannot spin the core
                continue
            if group is None:
                return
            try:
                self._run_group(group)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one group
                log.exception("tier worker: a batch failed outside the executor call")
                for p in group:      # those already answered keep their answer
                    _fail(p, e)

    def _fail_head(self, e: Exception) -> None:
        """Fail the oldest queued request: a grouping error it causes cannot repeat forever."""
        with self._cond:
            head = self._queue.popleft() if self._queue else None
        if head is not None:
            _fail(head, e)

    def _run_group(self, group: list[Pending]) -> None:
        """Drop requests gone or out of time, run the rest as one executor call."""
        now = time.monotonic()
        nb = self.cand_bucket(max(p.n for p in group))
        est_s = self.estimate_ms((self.batch_bucket(len(group)), nb)) / 1e3
        live = []
        for p in group:
            if p.future.done():          # client went away / timed out
                continue
            if p.deadline <= now + est_s:  # cannot finish in time: do not run it late
                _fail(p, DeadlineExceeded("the budget ran out while queued"))
            else:
                live.append(p)
        if live:
            self._execute(live)

    def _execute(self, group: list[Pending]) -> None:
        t0 = time.monotonic()
        try:
            batch = pack_requests([p.batch for p in group], self.history_len)
            self.current_estimate_ms = self.estimate_ms(
                (self.batch_bucket(len(group)), self.cand_bucket(batch.num_candidates)))
            self.busy.start()
            try:
                res = self.executor.score(batch)
                probs = np.asarray(res.probs)
                top_i = np.asarray(res.top_indices)
                top_s = np.asarray(res.top_scores)
            finally:
                self.busy.stop()
            compute_ms = (time.monotonic() - t0) * 1e3
            bucket = tuple(int(x) for x in res.bucket)
            answers = []     # every answer built before any is sent: a short result fails all
            for i, p in enumerate(group):
                keep = (top_i[i] >= 0) & (top_i[i] < p.n)     # -1: a slot no candidate fills
                answers.append(Scored(
                    probs=probs[i, :p.n], top_indices=top_i[i][keep],
                    top_scores=top_s[i][keep], bucket=bucket,
                    queue_ms=(t0 - p.enqueued) * 1e3, compute_ms=compute_ms,
                    batch_size=len(group)))
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            for p in group:
                _fail(p, e)
            return
        if self.on_batch is not None:
            self.on_batch(bucket, len(group), compute_ms)
        for p, answer in zip(group, answers):
            _resolve(p, answer)


def pack_requests(batches: list[RequestBatch], history_len: int) -> RequestBatch:
    """Stack b=1 RequestBatches into one [b, c_max, ...] batch; history cut/padded to L.

    Histories are newest first, so cutting to the tier's L keeps the most recent events
    (what the tier reads anyway); padded candidates are masked out.
    """
    c = max(x.num_candidates for x in batches)
    L = history_len

    def pad_to(a: np.ndarray, axis: int, size: int) -> np.ndarray:
        a = np.asarray(a)
        if a.shape[axis] >= size:
            return np.take(a, np.arange(size), axis=axis) if a.shape[axis] > size else a
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, size - a.shape[axis])
        return np.pad(a, widths)

    cols: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for x in batches:
        cols["req_sparse"].append(np.asarray(x.req_sparse))
        cols["req_dense"].append(np.asarray(x.req_dense))
        for f in ("hist_item", "hist_action", "hist_gap", "hist_side"):
            cols[f].append(pad_to(getattr(x, f), 1, L))
        cols["hist_len"].append(np.minimum(np.asarray(x.hist_len), L))
        for f in ("cand_sparse", "cand_dense", "cand_mask"):
            cols[f].append(pad_to(getattr(x, f), 1, c))
    return RequestBatch(**{k: np.concatenate(v) for k, v in cols.items()})


def _resolve(p: Pending, value: Any) -> None:
    def set_():
        if not p.future.done():
            p.future.set_result(value)
    try:
        p.loop.call_soon_threadsafe(set_)
    except RuntimeError:  # loop closed
        pass


def _fail(p: Pending, exc: BaseException) -> None:
    def set_():
        if not p.future.done():
            p.future.set_exception(exc)
    try:
        p.loop.call_soon_threadsafe(set_)
    except RuntimeError:
        pass
