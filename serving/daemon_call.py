"""Blocking work awaited from the event loop on a daemon thread of its own.

For rare work that may hang, such as a weight swap reading a stalled disk. asyncio.to_thread's
pool is joined when the process exits, so a hung swap kept the server alive after SIGTERM's
drain, for good; a daemon thread is abandoned instead. Frequent work (store reads) has its
bounded pool in `serving.store_reads`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable


def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future:
    """`fn(*args)` on a daemon thread of its own, awaitable (its result or its error)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:         # the loop has closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name=f"daemon-{getattr(fn, '__name__', 'call')}",
                     daemon=True).start()
    return done
