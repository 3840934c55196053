"""Time each dense layer's matmul in each format at its real serving shape, on this backend.

The timed function is the layer as it serves: activation quantization, the matmul with
f32 accumulation and the rescale (`quantized_matmul`), compiled, warmed, median of
repeats; the weight is stored in its format beforehand, as in the exported tier.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from arm_jax.bench.timing import median_ms
from arm_jax.quant.formats import FORMATS, fp8_activation_scale, quantize_weight, quantized_matmul


def time_matmul(rows: int, kernel_io: Any, fmt: str, *, amax: float = 4.0, repeats: int = 9,
                seed: int = 0) -> float:
    """Median milliseconds of one layer's [rows, in] @ [in, out] in `fmt`."""
    k = jnp.asarray(kernel_io, jnp.float32)
    x = jax.random.normal(jax.random.key(seed), (rows, k.shape[0]), jnp.float32)
    q = quantize_weight(k, fmt)
    scale = fp8_activation_scale(amax)
    f = jax.jit(lambda x, q, s: quantized_matmul(x, q, fmt, s))
    jax.block_until_ready(f(x, q, scale))
    return median_ms(lambda: jax.block_until_ready(f(x, q, scale)), repeats=repeats, warmup=1)


def layer_timings(kernels: Mapping[str, Any], shapes: Mapping[str, tuple[int, int]],
                  formats: Sequence[str] = FORMATS, amax: Mapping[str, float] | None = None,
                  progress: Any = None) -> dict[str, dict[str, float]]:
    """{layer: {format: ms}} at the given input shapes (layers absent from `shapes` skipped)."""
    out: dict[str, dict[str, float]] = {}
    for name, kernel in kernels.items():
        if name not in shapes:
            continue
        rows = int(shapes[name][0])
        out[name] = {f: time_matmul(rows, kernel, f, amax=(amax or {}).get(name, 4.0) or 4.0)
                     for f in formats}
        if progress is not None:
            progress.update(1)
    return out


def speedups(timings: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{layer: {format: f32_ms / format_ms}}."""
    return {k: {f: float(v["float32"] / max(ms, 1e-9)) for f, ms in v.items()}
            for k, v in timings.items()}


__all__ = ["time_matmul", "layer_timings", "speedups"]
