"""`bench sharing` and `bench broadcast` time their variants in the same interleaved rounds,
so the ratios they print divide times from one stretch of the run, not two phases of it."""

from __future__ import annotations

import itertools
from typing import Any

import jax

from arm_jax.bench import broadcast, sharing
from arm_jax.config import load_tier


class _RecordingJax:
    """`jax` with `jit(f).lower(*args).compile()` executables that log a tag per call:
    a static string argument (sharing's mode) or else the jitted function's name."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(jax, name)

    def jit(self, fn, **kw):
        outer, real = self, jax.jit(fn, **kw)

        class Compiled:
            def __init__(self, exe, tag):
                self.exe, self.tag = exe, tag

            def __call__(self, *a):
                outer.calls.append(self.tag)
                return self.exe(*a)

            def __getattr__(self, name):
                return getattr(self.exe, name)

        class Lowered:
            def __init__(self, lowered, tag):
                self.lowered, self.tag = lowered, tag

            def compile(self):
                return Compiled(self.lowered.compile(), self.tag)

        class Jitted:
            def lower(self, *args):
                tag = next((a for a in args if isinstance(a, str)),
                           getattr(fn, "__name__", "?"))
                return Lowered(real.lower(*args), tag)

        return Jitted()


def _runs(calls: list[str]) -> list[str]:
    """Consecutive calls of one variant collapsed: [a, a, b, a] -> [a, b, a]."""
    return [tag for tag, _ in itertools.groupby(calls)]


def test_sharing_times_both_modes_in_the_same_rounds(monkeypatch, tiny_overrides):
    rec = _RecordingJax()
    monkeypatch.setattr(sharing, "jax", rec)
    monkeypatch.setattr(sharing, "matmul_peak_gflops", lambda: 100.0)
    tier = load_tier("small", list(tiny_overrides))
    res = sharing.run_sharing_bench(tier, (8,), repeats=3, pair_chunk=4)
    # two phases (every shared call, then every per-pair call) would be 2 runs
    assert len(_runs(rec.calls)) >= 5, rec.calls
    row = res["results"][0]
    assert row["shared_repeats"] == row["per_pair_repeats"] == 3
    assert row["speedup"] == row["per_pair_ms"] / row["shared_ms"]


def test_broadcast_times_both_paths_in_the_same_rounds(monkeypatch):
    rec = _RecordingJax()
    monkeypatch.setattr(broadcast, "jax", rec)
    res = broadcast.run_broadcast_bench((8,), d_model=16, history=32, heads=2, repeats=3)
    assert len(_runs(rec.calls)) >= 5, rec.calls
    r = res["results"][0]
    assert r["time_ratio_materialized_over_fused_xla"] == r["materialized_ms"] / r["fused_xla_ms"]
