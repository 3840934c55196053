"""O(N) top-K: a Pallas radix-select kernel for the GPU, `lax.top_k` on CPU, one dispatcher.

XLA's GPU top_k sorts the whole row once k > 16; a radix select reads the row a fixed
number of times (32 / radix_bits histogram passes) whatever k is. The Pallas kernel is
the histogram pass: grid (row, block of N), each program counts the current digit of its
block's keys that still match the row's prefix, writing one small histogram per block
(no atomics); XLA sums the block histograms and picks the digit, and the final
threshold compaction (two cumsums and a scatter, O(N)) and the ordering of the k winners
(O(k log k)) are XLA ops shared with the jnp reference (`radix_select.py`).

On CPU `jax.lax.top_k` is already linear, so the dispatcher uses it there, with the
package's semantics enforced: XLA orders NaN above +inf, so when a NaN reaches the
result the call is redone by the jnp radix select, where NaN ranks below -inf.

Semantics (all implementations; see radix_select.py): values descending, ties by lower
index, NaN never selected, unfillable slots (k > N or too few non-NaN values) hold index
-1 and value -inf. Values are differentiable (a gather of x); indices are int32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels.dispatch import (KernelError, check_impl, default_interpret, next_pow2,
                                     on_platform)
from pallas_kernels.radix_select import (order_key, radix_threshold, radix_topk,
                                         rowwise, select_by_threshold)

IMPLS = ("auto", "pallas", "xla", "radix")


@dataclass(frozen=True)
class TopKBlocks:
    """Keys per histogram program, digit width, Triton launch parameters."""

    block_n: int = 1024
    radix_bits: int = 4   # 16 bins: the [block_n, 16] one-hot stays in registers
    num_warps: int = 4

    @classmethod
    def default(cls) -> "TopKBlocks":
        return cls()

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1):
            raise KernelError(f"block_n={self.block_n}: must be a power of two >= 16")
        if self.radix_bits not in (1, 2, 4, 8):
            raise KernelError(f"radix_bits={self.radix_bits}: expected 1, 2, 4 or 8")


# ----------------------------------------------------------------------------- kernel
def _histogram_kernel(prefix_ref, key_ref, out_ref, *, shift: int, bits: int):
    """One (row, block): counts [2**bits] of the digit among keys matching the prefix."""
    key = key_ref[...]                                   # [block_n] uint32
    digit = ((key >> shift) & ((1 << bits) - 1)).astype(jnp.int32)
    hs = shift + bits
    if hs >= 32:
        active = jnp.ones(key.shape, jnp.bool_)
    else:
        active = (key >> hs) == (prefix_ref[...] >> hs)  # prefix: [1], broadcast
    bins = jax.lax.broadcasted_iota(jnp.int32, (1, 1 << bits), 1)
    hit = (digit[:, None] == bins) & active[:, None]
    out_ref[...] = hit.astype(jnp.int32).sum(axis=0)


def histogram_pallas(key_bn: jax.Array, prefix_b: jax.Array, shift: int, bits: int, *,
                     block_n: int, num_warps: int, interpret: bool) -> jax.Array:
    """Per-row digit histogram [b, 2**bits] from per-block Pallas histograms.

    key_bn must be padded to a multiple of block_n with key 0 (NaN's key): padding only
    ever counts below every real value, so it never changes a threshold for k <= N.
    """
    b, n = key_bn.shape
    nb = n // block_n
    per_block = pl.pallas_call(
        functools.partial(_histogram_kernel, shift=shift, bits=bits),
        out_shape=jax.ShapeDtypeStruct((b, nb, 1 << bits), jnp.int32),
        grid=(b, nb),
        in_specs=[pl.BlockSpec((None, 1), lambda i, j: (i, 0)),
                  pl.BlockSpec((None, block_n), lambda i, j: (i, j))],
        out_specs=pl.BlockSpec((None, None, 1 << bits), lambda i, j: (i, j, 0)),
        compiler_params=plt.CompilerParams(num_warps=num_warps, num_stages=1),
        cost_estimate=pl.CostEstimate(flops=b * n * (1 << bits), transcendentals=0,
                                      bytes_accessed=4 * b * n + 4 * b * nb * (1 << bits)),
        interpret=interpret,
        name=f"radix_histogram_s{shift}",
    )(prefix_b[:, None], key_bn)
    return per_block.sum(axis=1)


def topk_pallas(x: jax.Array, k: int, *, blocks: TopKBlocks | None = None,
                interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Top-k along the last axis with the Pallas radix-select histogram kernel."""
    blocks = blocks or TopKBlocks.default()

    def run(x_bn: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
        n = x_bn.shape[1]
        bn = min(blocks.block_n, max(16, next_pow2(n)))
        key = order_key(x_bn)
        padded = jnp.pad(key, ((0, 0), (0, -(-n // bn) * bn - n)))
        hist = functools.partial(histogram_pallas, block_n=bn, num_warps=blocks.num_warps,
                                 interpret=interpret)
        thresh = radix_threshold(padded, m, bits=blocks.radix_bits, histogram=hist)
        return select_by_threshold(x_bn, key, thresh, m)

    return rowwise(run, x, k)


# ----------------------------------------------------------------------------- XLA path
def topk_xla(x: jax.Array, k: int, *, check_nan: bool = True) -> tuple[jax.Array, jax.Array]:
    """Top-k along the last axis via `jax.lax.top_k` (stable: ties by lower index).

    XLA ranks NaN above +inf, so a NaN in x reaches the result whenever x has one; only
    then (a `lax.cond` on k values) is the call redone by the jnp radix select, which
    ranks NaN below -inf. (lax.top_k on integer keys would also do, but XLA:CPU sorts
    integer rows: ~400x slower than its float top_k at N = 1M.) The conditional is not
    free on XLA:CPU even when not taken (measured: up to ~2x lax.top_k alone at N = 1M);
    `check_nan=False` drops it for callers that guarantee no NaN: exactly lax.top_k.
    """

    def run(x_bn: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
        vals, idx = jax.lax.top_k(x_bn, m)
        if not check_nan or not jnp.issubdtype(x_bn.dtype, jnp.floating):
            return vals, idx
        exact = lambda xx: radix_topk(xx, m)  # noqa: E731
        return jax.lax.cond(jnp.isnan(vals).any(), exact, lambda _: (vals, idx), x_bn)

    return rowwise(run, x, k)


# ----------------------------------------------------------------------------- dispatch
def topk(x: jax.Array, k: int, *, impl: str = "auto", interpret: bool | None = None,
         blocks: TopKBlocks | None = None, check_nan: bool = True
         ) -> tuple[jax.Array, jax.Array]:
    """Top-k (values [..., k], int32 indices [..., k]) along the last axis of x.

    impl: "auto" (Pallas kernel when lowered for CUDA, lax.top_k elsewhere), "pallas"
    (always the kernel; interpret mode without a GPU unless interpret=False), "xla"
    (lax.top_k with NaN handling), "radix" (plain-jnp radix select). k is a static int;
    see the module docstring for ties, NaN and k > N. `check_nan=False` promises x holds
    no NaN and makes the XLA path plain lax.top_k (the other paths are exact anyway).
    """
    check_impl(impl, IMPLS)
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise KernelError(f"x: dtype {x.dtype}; top-k orders floats and integers")
    if impl == "xla":
        return topk_xla(x, k, check_nan=check_nan)
    if impl == "radix":
        return radix_topk(x, k)
    if impl == "pallas":
        return topk_pallas(x, k, blocks=blocks, interpret=default_interpret(interpret))
    gpu = functools.partial(topk_pallas, k=k, blocks=blocks, interpret=False)
    xla = functools.partial(topk_xla, k=k, check_nan=check_nan)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == jnp.int32):
        return xla(x)      # the kernel orders floats and int32 only: auto works everywhere
    return on_platform((x,), gpu=gpu, default=xla)


__all__ = ["TopKBlocks", "radix_topk", "topk", "topk_pallas", "topk_xla"]
