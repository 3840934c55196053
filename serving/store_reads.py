"""History-store reads off the event loop, on threads of their own, with a bound.

Reads ran on asyncio's default executor, which `/admin/reload` and the shutdown drain also
use: reads hung on a store that never answers took every one of its threads, and a reload
or the SIGTERM drain then waited behind them without a timeout. Here they have their own
pool; past `max_in_flight` reads a request does not queue for one (`StoreBusy`, served
history-free like any store failure), and a read whose request stopped waiting is dropped
if it has not started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from typing import Any, Callable


class StoreBusy(RuntimeError):
    """Too many store reads are waiting already: the store is not keeping up."""


class StoreReads:
    """`await reads.call(fn, *args, timeout_s=...)` runs `fn(*args)` on the pool."""

    def __init__(self, threads: int = 16, max_in_flight: int = 64) -> None:
        if not 1 <= threads <= max_in_flight:
            raise ValueError(f"threads={threads}, max_in_flight={max_in_flight}: need "
                             "1 <= threads <= max_in_flight")
        self.max_in_flight = max_in_flight
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="store-read")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Reads submitted and not finished (running or waiting for a thread)."""
        return self._in_flight

    async def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float) -> Any:
        """`fn(*args)`'s result; asyncio.TimeoutError after `timeout_s`; StoreBusy at once
        when `max_in_flight` reads are in flight."""
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                raise StoreBusy(f"{self._in_flight} store reads in flight (limit "
                                f"{self.max_in_flight}): the store is not keeping up")
            self._in_flight += 1
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)    # also when cancelled before it ran
        # a timeout cancels the read if no thread has taken it yet
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)

    def _finished(self, _: Any) -> None:
        with self._lock:
            self._in_flight -= 1

    def shutdown(self) -> None:
        """Drop reads not started; reads already running finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
