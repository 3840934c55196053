"""Number formats for post-training quantization, and the matmul each one runs.

Every format keeps f32 accumulation; they differ in what the matmul reads:
  bfloat16       weights stored bf16; activations cast to bf16.
  int8           weights int8, symmetric per output channel; activations quantized per
                 row at run time (dynamic, symmetric); int8 x int8 -> int32 accumulation.
  float8_e4m3fn  weights per output channel scaled to the e4m3 range (amax / 448);
                 activations scaled by one calibrated per-tensor factor (static amax).
  float32        the reference.

`quantize_weight` runs once, offline; `quantized_matmul` runs in the serving graph and
is the only place these formats are interpreted, so the sensitivity sweep (which
quantizes weights in-graph) and the exported model compute the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.config import QUANT_FORMATS

FORMATS = QUANT_FORMATS
LOW_PRECISION = tuple(f for f in FORMATS if f != "float32")
INT8_MAX = 127.0
FP8_MAX = float(jnp.finfo(jnp.float8_e4m3fn).max)  # 448
STORAGE_DTYPE = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "int8": jnp.int8,
                 "float8_e4m3fn": jnp.float8_e4m3fn}
# Expected relative error of a quantize/dequantize round trip (half an ulp or step).
ROUND_TRIP_RTOL = {"float32": 0.0, "bfloat16": 2.0 ** -8, "int8": 0.5 / INT8_MAX,
                   "float8_e4m3fn": 2.0 ** -4}


class QuantizedWeight(NamedTuple):
    """Stored weight [in, out] and its per-output-channel scale [out] (ones when unscaled)."""

    values: jax.Array
    scale: jax.Array


def check_format(fmt: str) -> str:
    """`fmt` if it is a known quantization format, else ValueError listing them."""
    if fmt not in FORMATS:
        raise ValueError(f"quantization format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def check_act_scale(act_scale: float | jax.Array, where: str = "act_scale") -> None:
    """ValueError, prefixed by `where`, unless the float8 input scale is finite and > 0:
    x / 0 is inf (clipped to the float8 maximum) and 0 / 0 NaN, an inf scale makes every
    input 0 and then 0 x inf NaN, a NaN scale NaN; every score NaN or zero. A traced scale
    (an abstract model) is not checked."""
    if isinstance(act_scale, jax.core.Tracer):
        return
    v = np.asarray(act_scale, np.float32)
    if v.size != 1 or not (np.isfinite(v).all() and float(v.reshape(())) > 0):
        raise ValueError(f"{where} act_scale={act_scale}: must be > 0 and finite (its "
                         f"calibrated input amax / {FP8_MAX:g})")


def _safe(scale: jax.Array) -> jax.Array:
    """A zero scale (all-zero channel or row) becomes 1: zeros quantize to zeros either way.
    A NaN or inf scale (a non-finite weight or input) stays as it is, so the channel or row
    comes out NaN instead of finite garbage."""
    return jnp.where(scale == 0, 1.0, scale)


def non_finite_problem(w: jax.Array) -> str | None:
    """`holds nan at [i, j]` for the first NaN or inf of a concrete array, else None (a
    traced one is not checked: that would sync inside a trace)."""
    if isinstance(w, jax.core.Tracer) or bool(jnp.isfinite(w).all()):
        return None
    arr = np.asarray(w)
    at = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
    return f"holds {arr[at]} at {list(at)}"


def quantize_weight(w_io: jax.Array, fmt: str) -> QuantizedWeight:
    """[in, out] float weight -> stored values and per-output-channel f32 scale.

    ValueError for a concrete weight holding NaN or inf (int8 and float8 would otherwise
    fold it into its channel's scale: finite garbage no later check can see); a traced
    weight (the sweep's in-graph quantization) is not checked, its channel comes out NaN."""
    check_format(fmt)
    w_io = jnp.asarray(w_io).astype(jnp.float32)
    problem = non_finite_problem(w_io)
    if problem:
        raise ValueError(f"quantize_weight: w_io {problem}: weights must be finite")
    ones = jnp.ones(w_io.shape[-1], jnp.float32)
    if fmt in ("float32", "bfloat16"):
        return QuantizedWeight(w_io.astype(STORAGE_DTYPE[fmt]), ones)
    top = INT8_MAX if fmt == "int8" else FP8_MAX
    scale = _safe(jnp.max(jnp.abs(w_io), axis=0) / top)
    scaled = w_io / scale
    if fmt == "int8":
        return QuantizedWeight(jnp.clip(jnp.round(scaled), -top, top).astype(jnp.int8), scale)
    return QuantizedWeight(jnp.clip(scaled, -top, top).astype(jnp.float8_e4m3fn), scale)


def dequantize_weight(q: QuantizedWeight) -> jax.Array:
    """The float32 weight a QuantizedWeight stands for (values x scale)."""
    return q.values.astype(jnp.float32) * q.scale


def fp8_activation_scale(amax: float | jax.Array) -> jax.Array:
    """Static per-tensor input scale from a calibrated absolute maximum."""
    return _safe(jnp.asarray(amax, jnp.float32) / FP8_MAX)


# Largest fan-in whose int8 x int8 products (up to 127 x 127 each) cannot overflow int32.
INT8_MAX_FAN_IN = (2 ** 31 - 1) // int(INT8_MAX) ** 2


def quantized_matmul(x: jax.Array, q: QuantizedWeight, fmt: str,
                     act_scale: jax.Array | float = 1.0) -> jax.Array:
    """x [..., in] @ W [in, out] in `fmt` with f32 accumulation -> f32 [..., out]."""
    check_format(fmt)
    x = x.astype(jnp.float32)
    if fmt == "float32":
        return jnp.dot(x, q.values.astype(jnp.float32))
    if fmt == "bfloat16":
        return jnp.dot(x.astype(jnp.bfloat16), q.values, preferred_element_type=jnp.float32)
    if fmt == "int8":
        if x.shape[-1] > INT8_MAX_FAN_IN:   # shapes are static: refused at trace time
            raise ValueError(f"int8 matmul with {x.shape[-1]} inputs: at most "
                             f"{INT8_MAX_FAN_IN} fit the int32 accumulator (127 x 127 each)")
        row = _safe(jnp.max(jnp.abs(x), axis=-1, keepdims=True) / INT8_MAX)
        xq = jnp.clip(jnp.round(x / row), -INT8_MAX, INT8_MAX).astype(jnp.int8)
        acc = jnp.dot(xq, q.values, preferred_element_type=jnp.int32)
        return acc.astype(jnp.float32) * row * q.scale
    s = jnp.asarray(act_scale, jnp.float32)
    x8 = jnp.clip(x / s, -FP8_MAX, FP8_MAX).astype(jnp.float8_e4m3fn)
    return jnp.dot(x8, q.values, preferred_element_type=jnp.float32) * (s * q.scale)
