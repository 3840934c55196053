"""StoreReads: store reads on their own threads, bounded, a timed-out read dropped unstarted."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.store_reads import StoreBusy, StoreReads


def test_reads_past_the_bound_are_refused_at_once_and_the_count_returns_to_zero():
    reads = StoreReads(threads=1, max_in_flight=2)
    release, ran = threading.Event(), []

    def hung(tag):
        ran.append(tag)
        release.wait(5)
        return tag

    async def run():
        first = asyncio.ensure_future(reads.call(hung, "a", timeout_s=5))
        second = asyncio.ensure_future(reads.call(hung, "b", timeout_s=0.05))  # queued
        await asyncio.sleep(0.02)
        with pytest.raises(StoreBusy, match="2 store reads in flight"):
            await reads.call(hung, "c", timeout_s=5)
        with pytest.raises(asyncio.TimeoutError):
            await second
        release.set()
        return await first

    try:
        assert asyncio.run(run()) == "a"
    finally:
        release.set()
        reads.shutdown()
    assert ran == ["a"]            # "b" timed out before a thread took it: never read
    assert reads.in_flight == 0


def test_a_read_error_reaches_the_caller():
    reads = StoreReads(threads=1, max_in_flight=1)

    def broken():
        raise OSError("store gone")

    try:
        with pytest.raises(OSError, match="store gone"):
            asyncio.run(reads.call(broken, timeout_s=5))
    finally:
        reads.shutdown()
    assert reads.in_flight == 0
    with pytest.raises(ValueError, match="threads=3, max_in_flight=2"):
        StoreReads(threads=3, max_in_flight=2)
