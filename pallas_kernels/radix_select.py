"""Radix select in plain jnp: O(N) top-K on the float's order-preserving uint32 key.

The reference for the Pallas top-K kernel and the CPU demonstration of linear scaling.

1. `order_key` maps every value to a uint32 whose unsigned order is the value order
   (IEEE total order: -inf < ... < -0.0 < +0.0 < ... < +inf); NaN maps to 0, below -inf.
2. `radix_threshold` finds the k-th largest key T digit by digit, most significant first
   (8-bit digits -> 4 passes here; the Pallas kernel uses 4-bit digits, 8 passes). Each
   pass histograms the digit of the keys that still match the prefix found so far; only
   the histogram (O(N)) depends on N.
3. `select_by_threshold` keeps every key > T and the lowest-index keys == T until k are
   kept (ties broken by lower index), compacts them with a cumsum (O(N)), and orders the
   k winners (O(k log k)).

Shared semantics of `topk` (all implementations): along the last axis, values descending,
equal values by lower index, NaN never selected. Output slots that cannot be filled (k
greater than N, or fewer than k non-NaN values) hold index -1 and value -inf (the dtype's
minimum for integer inputs), after all real selections.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.dispatch import KernelError

Histogram = Callable[[jax.Array, jax.Array, int, int], jax.Array]
_SIGN = np.uint32(0x80000000)


def order_key(x: jax.Array) -> jax.Array:
    """uint32 keys with the same order as x (floats: NaN -> 0, the smallest key)."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        u = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
        key = jnp.where((u & _SIGN) != 0, ~u, u | _SIGN)
        return jnp.where(jnp.isnan(x), jnp.uint32(0), key)
    if x.dtype == jnp.int32:
        return jax.lax.bitcast_convert_type(x, jnp.uint32) ^ _SIGN
    raise KernelError(f"x.dtype={x.dtype}: top-K supports floating dtypes and int32")


def fill_value(dtype: jnp.dtype) -> jax.Array:
    """Value of an unfillable output slot: -inf (floats) or the integer minimum."""
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.array(-jnp.inf, dtype)
    return jnp.array(jnp.iinfo(dtype).min, dtype)


def histogram_jnp(key_bn: jax.Array, prefix_b: jax.Array, shift: int, bits: int) -> jax.Array:
    """[b, 2**bits] counts of digit (key >> shift) among keys whose higher bits match prefix."""
    b = key_bn.shape[0]
    digit = ((key_bn >> shift) & ((1 << bits) - 1)).astype(jnp.int32)
    hs = shift + bits
    active = (jnp.ones(key_bn.shape, jnp.int32) if hs >= 32 else
              ((key_bn >> hs) == (prefix_b[:, None] >> hs)).astype(jnp.int32))
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], key_bn.shape)
    return jnp.zeros((b, 1 << bits), jnp.int32).at[rows, digit].add(active)


def radix_threshold(key_bn: jax.Array, k: int, *, bits: int = 8,
                    histogram: Histogram = histogram_jnp) -> jax.Array:
    """The k-th largest key per row [b] (1 <= k <= N), found in 32 / bits histogram passes."""
    if 32 % bits:
        raise KernelError(f"bits={bits}: must divide 32 (1, 2, 4, 8, 16)")
    b = key_bn.shape[0]
    prefix = jnp.zeros((b,), jnp.uint32)
    rem = jnp.full((b,), k, jnp.int32)  # how many still to take at or below the prefix
    for p in range(32 // bits):
        shift = 32 - bits * (p + 1)
        hist_bd = histogram(key_bn, prefix, shift, bits)
        ge_bd = jnp.cumsum(hist_bd[:, ::-1], axis=1)[:, ::-1]  # count with digit >= d
        digit = (ge_bd >= rem[:, None]).sum(axis=1) - 1        # largest d with enough
        gt_bd = jnp.pad(ge_bd[:, 1:], ((0, 0), (0, 1)))        # count with digit > d
        rem = rem - jnp.take_along_axis(gt_bd, digit[:, None], axis=1)[:, 0]
        prefix = prefix | (digit.astype(jnp.uint32) << shift)
    return prefix


def select_by_threshold(x_bn: jax.Array, key_bn: jax.Array, thresh_b: jax.Array,
                        k: int) -> tuple[jax.Array, jax.Array]:
    """Top-k (values, int32 indices) [b, k] given the k-th largest key per row (k <= N)."""
    b, n = key_bn.shape
    t = thresh_b[:, None]
    gt, eq = key_bn > t, key_bn == t
    need_b = k - gt.sum(axis=1, dtype=jnp.int32)
    tie_rank = jnp.cumsum(eq, axis=1, dtype=jnp.int32) - 1
    sel = gt | (eq & (tie_rank < need_b[:, None]))
    pos = jnp.where(sel, jnp.cumsum(sel, axis=1, dtype=jnp.int32) - 1, k)
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, n))
    cols = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    idx_bk = jnp.zeros((b, k), jnp.int32).at[rows, pos].set(cols, mode="drop")
    key_bk = jnp.take_along_axis(key_bn, idx_bk, axis=1)
    _, idx_bk = jax.lax.sort((~key_bk, idx_bk), dimension=1, num_keys=2)
    return finish(x_bn, key_bn, idx_bk)


def finish(x_bn: jax.Array, key_bn: jax.Array, idx_bk: jax.Array
           ) -> tuple[jax.Array, jax.Array]:
    """Values for sorted winner indices; NaN winners become (fill, -1)."""
    empty = jnp.take_along_axis(key_bn, idx_bk, axis=1) == 0
    if not jnp.issubdtype(x_bn.dtype, jnp.floating):
        empty = jnp.zeros_like(empty)  # key 0 is a real value (int32 min) for integers
    vals = jnp.where(empty, fill_value(x_bn.dtype), jnp.take_along_axis(x_bn, idx_bk, axis=1))
    return vals, jnp.where(empty, -1, idx_bk)


def pad_to_k(vals_bm: jax.Array, idx_bm: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Append unfillable slots (fill value, index -1) up to k columns."""
    m = vals_bm.shape[1]
    if m >= k:
        return vals_bm, idx_bm
    b = vals_bm.shape[0]
    vals = jnp.concatenate([vals_bm, jnp.full((b, k - m), fill_value(vals_bm.dtype))], axis=1)
    return vals, jnp.concatenate([idx_bm, jnp.full((b, k - m), -1, jnp.int32)], axis=1)


def rowwise(fn: Callable[[jax.Array, int], tuple[jax.Array, jax.Array]], x: jax.Array,
            k: int) -> tuple[jax.Array, jax.Array]:
    """Apply a [b, n] -> ([b, m], [b, m]) top-k to the last axis of any-rank x, pad to k."""
    check_k(x, k)
    lead, n = x.shape[:-1], x.shape[-1]
    x_bn = x.reshape((math.prod(lead), n))  # not (-1, n): reshape cannot infer -1 when n = 0
    m = min(k, n)
    if m == 0 or x_bn.shape[0] == 0:  # nothing to select, or no rows (an empty kernel grid)
        vals = jnp.zeros((x_bn.shape[0], 0), x.dtype)
        idx = jnp.zeros((x_bn.shape[0], 0), jnp.int32)
    else:
        vals, idx = fn(x_bn, m)
    vals, idx = pad_to_k(vals, idx, k)
    return vals.reshape(lead + (k,)), idx.reshape(lead + (k,))


def check_k(x: jax.Array, k: int) -> None:
    """KernelError unless k is a static non-negative int and x has an axis to select along."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise KernelError(f"k={k!r}: must be a non-negative Python int (static)")
    if x.ndim < 1:
        raise KernelError(f"x.shape={x.shape}: top-K needs at least one axis")


def radix_topk(x: jax.Array, k: int, *, bits: int = 8) -> tuple[jax.Array, jax.Array]:
    """Top-k along the last axis by jnp radix select (values, int32 indices); see module doc."""

    def run(x_bn: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
        key = order_key(x_bn)
        return select_by_threshold(x_bn, key, radix_threshold(key, m, bits=bits), m)

    return rowwise(run, x, k)
