"""BusyClock: the executor busy ratio over a sliding window, at any batch rate."""

from __future__ import annotations

import pytest

import serving.batcher as batcher
from serving.batcher import BusyClock


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
