"""in_daemon_thread: awaitable work on a daemon thread (never joined at exit)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.daemon_call import in_daemon_thread


def test_result_and_error_reach_the_awaiting_coroutine_from_a_daemon_thread():
    seen = []

    def work(x):
        seen.append(threading.current_thread().daemon)
        return x * 2

    def broken():
        raise OSError("disk stalled")

    async def run():
        assert await in_daemon_thread(work, 21) == 42
        with pytest.raises(OSError, match="disk stalled"):
            await in_daemon_thread(broken)

    asyncio.run(run())
    assert seen == [True]
