"""Timing helpers shared by every benchmark: warm up, block, median; machine facts."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from arm_jax import strict_json


def median_ms(fn: Callable[[], Any], repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of `fn()` in ms; results are blocked on before reading the clock."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def interleaved_median_ms(thunks: Mapping[str, Callable[[], Any]], repeats: int, *,
                          repeats_of: Mapping[str, int] | None = None,
                          settle_of: Mapping[str, int] | None = None) -> dict[str, float]:
    """Median ms per thunk, timed round-robin so machine drift hits every variant alike.

    Warm (compile) each thunk before calling this; results are blocked on per call.
    `repeats_of` gives a slow thunk fewer samples (say, to fit a time budget): it is timed
    in that many of the `repeats` rounds, spread evenly over them, so its samples still
    come from the same stretch of the run as everyone else's. `settle_of` runs a thunk
    that many times untimed right before each timed call: after a variant that touches
    gigabytes, a light one's next call runs on cold memory (1.75x slower for the shared
    mode right after a per-pair call, measured), which is no part of its own cost.
    """
    repeats = max(1, repeats)
    rounds = {name: _spread(min(max(1, (repeats_of or {}).get(name, repeats)), repeats),
                            repeats) for name in thunks}
    times: dict[str, list[float]] = {name: [] for name in thunks}
    for i in range(repeats):
        for name, fn in thunks.items():
            if i in rounds[name]:
                times[name].append(median_ms(fn, repeats=1,
                                             warmup=(settle_of or {}).get(name, 0)))
    return {name: float(np.median(t)) for name, t in times.items()}


def _spread(count: int, rounds: int) -> set[int]:
    """`count` distinct round indices in [0, rounds), the middle of equal slices."""
    return {int((i + 0.5) * rounds / count) for i in range(count)}


def compiled_flops(compiled: Any) -> float:
    """FLOPs from XLA's cost analysis of a compiled executable."""
    return float(cost_analysis(compiled).get("flops", float("nan")))


def cost_analysis(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis of a compiled executable as one dict (jax versions differ on
    whether it is a dict or a list of one)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return dict(ca or {})


def machine_info() -> dict[str, Any]:
    """What every benchmark JSON records about where it ran."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def publish(result: dict[str, Any], out_json: str | Path | None,
            table: Callable[[dict[str, Any]], str],
            plot: Callable[[dict[str, Any], Path], Any] | None = None) -> dict[str, Any]:
    """Every benchmark ends the same way: print its table, write JSON, a PNG beside it."""
    print(table(result))
    path = write_json(out_json, result)
    if path is not None and plot is not None:
        plot(result, path.with_suffix(".png"))
    return result


def write_json(path: str | Path | None, payload: dict[str, Any]) -> Path | None:
    """Write `payload` as strict JSON: NaN and infinities (an AUC over one class, a t
    statistic with no spread) become null, which every JSON parser reads."""
    if path is None:
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(strict_json.dumps(payload, indent=2))
    return p
