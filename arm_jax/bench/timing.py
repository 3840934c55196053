"""Timing helpers shared by every benchmark: warm up, block, median; machine facts."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np


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


def compiled_flops(compiled: Any) -> float:
    """FLOPs from XLA's cost analysis of a compiled executable."""
    return float(cost_analysis(compiled).get("flops", float("nan")))


def cost_analysis(compiled: Any) -> dict[str, float]:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return dict(ca or {})


def machine_info() -> dict[str, Any]:
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
    if path is None:
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=2))
    return p
