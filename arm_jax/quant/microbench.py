"""Time each dense layer's matmul in each format at its real serving shape, on this backend.

The timed function is the layer as it serves: activation quantization, the matmul with
f32 accumulation and the rescale (`quantized_matmul`), compiled, warmed, median of
interleaved repeats; the weight is stored in its format beforehand, as in the exported tier.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from arm_jax.bench.timing import interleaved_median_ms
from arm_jax.quant.formats import FORMATS, fp8_activation_scale, quantize_weight, quantized_matmul


def time_formats(rows: int, kernel_io: Any, formats: Sequence[str], *, amax: float = 4.0,
                 repeats: int = 15, seed: int = 0) -> dict[str, float]:
    """Median ms of one layer's [rows, in] @ [in, out] per format.

    Every format is compiled and warmed first, then timed in interleaved rounds, so a
    slow spell of the machine hits all formats alike instead of deciding between them.
    """
    k = jnp.asarray(kernel_io, jnp.float32)
    x = jax.random.normal(jax.random.key(seed), (rows, k.shape[0]), jnp.float32)
    scale = fp8_activation_scale(amax)
    thunks = {}
    for fmt in formats:
        q = quantize_weight(k, fmt)
        f = jax.jit(lambda x, q, s, fmt=fmt: quantized_matmul(x, q, fmt, s))
        jax.block_until_ready(f(x, q, scale))  # compile + warm
        thunks[fmt] = lambda f=f, q=q: f(x, q, scale)
    return interleaved_median_ms(thunks, repeats)


def layer_timings(kernels: Mapping[str, Any], shapes: Mapping[str, tuple[int, int]],
                  formats: Sequence[str] = FORMATS, amax: Mapping[str, float] | None = None,
                  progress: Any = None) -> dict[str, dict[str, float]]:
    """{layer: {format: ms}} at the given input shapes (layers absent from `shapes` skipped)."""
    out: dict[str, dict[str, float]] = {}
    for name, kernel in kernels.items():
        if name not in shapes:
            continue
        out[name] = time_formats(int(shapes[name][0]), kernel, formats,
                                 amax=(amax or {}).get(name, 4.0) or 4.0)
        if progress is not None:
            progress.update(1)
    return out


def model_latency_ms(variants: Mapping[str, tuple[Any, Any]], batch: Any, repeats: int = 7
                     ) -> dict[str, float]:
    """Median ms of whole models {name: (graphdef, params)} scoring `batch`.

    Each is compiled and warmed first; rounds are interleaved so machine drift hits every
    variant alike.
    """
    from flax import nnx

    thunks = {}
    for name, (gd, params) in variants.items():
        f = jax.jit(lambda p, b, gd=gd: jax.nn.sigmoid(nnx.merge(gd, p)(b)))
        jax.block_until_ready(f(params, batch))  # compile + warm
        thunks[name] = lambda f=f, params=params: f(params, batch)
    return interleaved_median_ms(thunks, repeats)


def speedups(timings: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{layer: {format: f32_ms / format_ms}}."""
    return {k: {f: float(v["float32"] / max(ms, 1e-9)) for f, ms in v.items()}
            for k, v in timings.items()}


__all__ = ["time_formats", "layer_timings", "model_latency_ms", "speedups"]
