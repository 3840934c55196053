"""The f32 matmul peak of this process's backend, measured (not assumed) for MFU."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.bench.timing import median_ms


def matmul_peak_gflops(sizes: tuple[int, ...] = (512, 1024, 2048), repeats: int = 5,
                       dtype: jnp.dtype = jnp.float32) -> float:
    """Best median GFLOP/s over square matmuls of the given sizes."""
    best = 0.0
    key = jax.random.key(0)
    for n in sizes:
        a = jax.random.normal(key, (n, n), dtype)
        b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
        f = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
        ms = median_ms(lambda: f(a, b), repeats=repeats)
        best = max(best, 2 * n**3 / (ms * 1e-3) / 1e9)
    return best
