"""Fused target attention: N candidate queries over one request's encoded history.

out[b, c, h] = softmax_l(q[b, c, h] . k[b, l, h] / sqrt(dk) + bias[b, l, h],
                         masked to valid l) v[b, l, h]

The request operand (k, v: [b, L, h, dk]) is never broadcast to the candidates. The
kernel's grid is (request, head, block of candidates); each program reads its request's
K/V once, L-block by L-block with an online softmax (flash-attention style), for a whole
block of `block_c` candidates. HBM traffic is q + out + (K + V) * ceil(N / block_c)
instead of (K + V) * N for the materialized per-pair form.

Semantics (shared by kernel, reference and dispatcher; identical to
`arm_jax.model.attention.masked_softmax_attention`): scores are scaled by dk**-0.5,
an optional per-key bias (e.g. a learned recency prior) is added to the scores, padded
history positions (mask False) get zero weight and their keys and values are never read
(NaN or inf there reaches neither the output nor a gradient), and a request with no valid
event yields zeros. Gradients (q, k, v and the bias): a custom_vjp whose backward pass is
the reference's.
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

IMPLS = ("auto", "pallas", "xla")
_NEG = -1e30


@dataclass(frozen=True)
class TargetAttentionBlocks:
    """Tile sizes (powers of two, >= 16 for Triton's dot) and Triton launch parameters."""

    block_c: int = 64    # candidates per program: K/V are read once per this many
    block_l: int = 128   # history events per inner step
    num_warps: int = 4
    num_stages: int = 2

    @classmethod
    def default(cls) -> "TargetAttentionBlocks":
        return cls()

    def __post_init__(self) -> None:
        for name in ("block_c", "block_l"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise KernelError(f"{name}={v}: must be a power of two >= 16")


# ----------------------------------------------------------------------------- reference
def target_attention_reference(q_bchk: jax.Array, k_blhk: jax.Array, v_blhk: jax.Array,
                               mask_bl: jax.Array,
                               bias_blh: jax.Array | None = None) -> jax.Array:
    """Plain-jnp target attention [b, c, h, dk]; k/v are used per request, never tiled."""
    scale = q_bchk.shape[-1] ** -0.5
    # Masked keys and values are selected away, never weighted by 0: 0 * nan (or inf) is
    # nan, in the output (values) and in the gradient of q (keys).
    valid_bl11 = mask_bl[:, :, None, None]
    k_blhk = jnp.where(valid_bl11, k_blhk, jnp.zeros((), k_blhk.dtype))
    v_blhk = jnp.where(valid_bl11, v_blhk, jnp.zeros((), v_blhk.dtype))
    s_bhcl = jnp.einsum("bchk,blhk->bhcl", q_bchk * scale, k_blhk)
    if bias_blh is not None:
        s_bhcl = s_bhcl + jnp.transpose(bias_blh, (0, 2, 1))[:, :, None, :].astype(s_bhcl.dtype)
    s_bhcl = jnp.where(mask_bl[:, None, None, :], s_bhcl, _NEG)
    e_bhcl = jnp.exp(s_bhcl - s_bhcl.max(axis=-1, keepdims=True))
    o_bhck = jnp.einsum("bhcl,blhk->bhck", e_bhcl, v_blhk) / e_bhcl.sum(-1)[..., None]
    any_valid_b = mask_bl.any(axis=-1).astype(o_bhck.dtype)
    return jnp.swapaxes(o_bhck, 1, 2) * any_valid_b[:, None, None, None]


# ----------------------------------------------------------------------------- kernel
def _kernel(q_ref, k_ref, v_ref, m_ref, bias_ref, o_ref, *, scale: float, block_l: int,
            n_l: int):
    """One (request, head, candidate block): q [bc, dk]; k, v [Lp, dk]; mask, bias [Lp]."""
    q = q_ref[...].astype(jnp.float32) * scale
    bc, dk = q.shape

    def step(j, carry):
        m_c, l_c, acc_ck = carry
        start = pl.multiple_of(j * block_l, block_l)
        k_lk = k_ref[pl.ds(start, block_l), :].astype(jnp.float32)
        valid_l = m_ref[pl.ds(start, block_l)] != 0
        # p is 0 at masked events, but 0 * nan (or inf) in v would still be nan: select.
        v_lk = jnp.where(valid_l[:, None], v_ref[pl.ds(start, block_l), :].astype(jnp.float32),
                         0.0)
        s_cl = jnp.dot(q, k_lk.T) + bias_ref[pl.ds(start, block_l)][None, :]
        s_cl = jnp.where(valid_l[None, :], s_cl, _NEG)
        m_new = jnp.maximum(m_c, s_cl.max(axis=1))
        alpha = jnp.exp(m_c - m_new)
        p_cl = jnp.where(valid_l[None, :], jnp.exp(s_cl - m_new[:, None]), 0.0)
        l_new = l_c * alpha + p_cl.sum(axis=1)
        acc_new = acc_ck * alpha[:, None] + jnp.dot(p_cl, v_lk)
        return m_new, l_new, acc_new

    init = (jnp.full((bc,), _NEG, jnp.float32), jnp.zeros((bc,), jnp.float32),
            jnp.zeros((bc, dk), jnp.float32))
    _, l_c, acc_ck = jax.lax.fori_loop(0, n_l, step, init)
    # No valid event at all: l == 0 and acc == 0, so the row is zeros, as in the reference.
    o_ref[...] = (acc_ck / jnp.where(l_c > 0, l_c, 1.0)[:, None]).astype(o_ref.dtype)


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad)


def kernel_cost(b: int, c: int, l: int, h: int, dk: int, itemsize: int,
                blocks: TargetAttentionBlocks) -> pl.CostEstimate:
    """What the kernel moves and computes: K/V read once per candidate block, not per candidate."""
    c_blocks = -(-c // blocks.block_c)
    kv_bytes = 2 * b * l * h * dk * itemsize * c_blocks
    qo_bytes = 2 * b * c * h * dk * itemsize
    mask_bias_bytes = (b * l * 4 + b * l * h * 4) * c_blocks
    return pl.CostEstimate(flops=4 * b * c * l * h * dk, transcendentals=b * c * l * h,
                           bytes_accessed=kv_bytes + qo_bytes + mask_bias_bytes)


def target_attention_kernel(q_bchk: jax.Array, k_blhk: jax.Array, v_blhk: jax.Array,
                            mask_bl: jax.Array, bias_blh: jax.Array | None = None, *,
                            blocks: TargetAttentionBlocks | None = None,
                            interpret: bool = False) -> jax.Array:
    """The Pallas (Triton) kernel; pads c, L, dk to the tiles and slices the result back.

    The bias is passed head-major ([b, h, L], float32; zeros without one), so each
    program reads its head's row contiguously, L-block by L-block, beside the mask."""
    blocks = blocks or TargetAttentionBlocks.default()
    b, c, h, dk = q_bchk.shape
    l = k_blhk.shape[1]
    bc = min(blocks.block_c, max(16, next_pow2(c)))
    bl = min(blocks.block_l, max(16, next_pow2(l)))
    cp, lp, dkp = -(-c // bc) * bc, -(-l // bl) * bl, max(16, next_pow2(dk))
    q = _pad_axis(_pad_axis(q_bchk, 1, cp), 3, dkp)
    k = _pad_axis(_pad_axis(k_blhk, 1, lp), 3, dkp)
    v = _pad_axis(_pad_axis(v_blhk, 1, lp), 3, dkp)
    m = _pad_axis(mask_bl.astype(jnp.int32), 1, lp)
    bias = (jnp.zeros((b, h, l), jnp.float32) if bias_blh is None
            else jnp.transpose(bias_blh.astype(jnp.float32), (0, 2, 1)))
    bias = _pad_axis(bias, 2, lp)
    out_dtype = jnp.result_type(q_bchk, k_blhk, v_blhk)  # the reference's promoted dtype
    kernel = functools.partial(_kernel, scale=dk ** -0.5, block_l=bl, n_l=lp // bl)
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((b, cp, h, dkp), out_dtype),
        grid=(b, h, cp // bc),
        in_specs=[
            pl.BlockSpec((None, bc, None, dkp), lambda bi, hi, ci: (bi, ci, hi, 0)),
            pl.BlockSpec((None, lp, None, dkp), lambda bi, hi, ci: (bi, 0, hi, 0)),
            pl.BlockSpec((None, lp, None, dkp), lambda bi, hi, ci: (bi, 0, hi, 0)),
            pl.BlockSpec((None, lp), lambda bi, hi, ci: (bi, 0)),
            pl.BlockSpec((None, None, lp), lambda bi, hi, ci: (bi, hi, 0)),
        ],
        out_specs=pl.BlockSpec((None, bc, None, dkp), lambda bi, hi, ci: (bi, ci, hi, 0)),
        compiler_params=plt.CompilerParams(num_warps=blocks.num_warps,
                                           num_stages=blocks.num_stages),
        cost_estimate=kernel_cost(b, c, l, h, dk, q_bchk.dtype.itemsize, blocks),
        interpret=interpret,
        name="target_attention",
    )(q, k, v, m, bias)
    return out[:, :c, :, :dk]


# ----------------------------------------------------------------------------- dispatch
@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _fused(q, k, v, bias, mask, impl, interpret, blocks):
    run_kernel = functools.partial(target_attention_kernel, blocks=blocks, interpret=interpret)
    if impl == "pallas":
        return run_kernel(q, k, v, mask, bias)
    return on_platform((q, k, v, mask, bias), gpu=run_kernel,
                       default=target_attention_reference)


def _fused_fwd(q, k, v, bias, mask, impl, interpret, blocks):
    return _fused(q, k, v, bias, mask, impl, interpret, blocks), (q, k, v, bias, mask)


def _fused_bwd(impl, interpret, blocks, res, g):
    q, k, v, bias, mask = res
    if bias is None:  # an empty pytree: no bias, so no gradient to compute for it
        _, vjp = jax.vjp(lambda q_, k_, v_: target_attention_reference(q_, k_, v_, mask),
                         q, k, v)
        return (*vjp(g), None, None)
    _, vjp = jax.vjp(lambda q_, k_, v_, b_: target_attention_reference(q_, k_, v_, mask, b_),
                     q, k, v, bias)
    return (*vjp(g), None)


_fused.defvjp(_fused_fwd, _fused_bwd)


def target_attention(q_bchk: jax.Array, k_blhk: jax.Array, v_blhk: jax.Array,
                     mask_bl: jax.Array, bias_blh: jax.Array | None = None,
                     impl: str = "auto", *, interpret: bool | None = None,
                     blocks: TargetAttentionBlocks | None = None) -> jax.Array:
    """Target attention [b, c, h, dk] of candidate queries over request history k/v [b, L, h, dk].

    mask_bl [b, L] marks valid events; bias_blh [b, L, h] (optional) is added to each
    key's score. `impl`: "auto" (kernel when lowered for CUDA, XLA
    elsewhere), "pallas" (always the kernel; interpret mode without a GPU unless
    `interpret=False`), "xla" (the reference). Differentiable (reference backward).
    """
    check_impl(impl, IMPLS)
    q_bchk, k_blhk, v_blhk, mask_bl = map(jnp.asarray, (q_bchk, k_blhk, v_blhk, mask_bl))
    for name, x in (("q_bchk", q_bchk), ("k_blhk", k_blhk), ("v_blhk", v_blhk)):
        if not jnp.issubdtype(x.dtype, jnp.floating):   # the kernel kept ints, XLA promoted
            raise KernelError(f"{name}: dtype {x.dtype}; expected a floating dtype")
    if q_bchk.ndim != 4 or k_blhk.ndim != 4 or v_blhk.shape != k_blhk.shape:
        raise KernelError(f"q_bchk {q_bchk.shape}, k_blhk {k_blhk.shape}, v_blhk "
                          f"{v_blhk.shape}: expected [b, c, h, dk] and two equal [b, L, h, dk]")
    b, _, h, dk = q_bchk.shape
    if (k_blhk.shape[0], k_blhk.shape[2], k_blhk.shape[3]) != (b, h, dk):
        raise KernelError(f"k_blhk {k_blhk.shape}: batch, heads, dk must match q {q_bchk.shape}")
    if mask_bl.shape != k_blhk.shape[:2]:
        raise KernelError(f"mask_bl {mask_bl.shape}: expected {k_blhk.shape[:2]}")
    if bias_blh is not None and bias_blh.shape != k_blhk.shape[:3]:
        raise KernelError(f"bias_blh {bias_blh.shape}: expected {k_blhk.shape[:3]}")
    if q_bchk.size == 0 or k_blhk.shape[1] == 0:
        # Nothing to compute (the kernel's grid would be empty), or no history at all: no
        # request has a valid event, so every output is zero, as for an all-False mask.
        return jnp.zeros(q_bchk.shape, jnp.result_type(q_bchk, k_blhk, v_blhk))
    if impl == "xla":
        return target_attention_reference(q_bchk, k_blhk, v_blhk, mask_bl, bias_blh)
    interp = default_interpret(interpret) if impl == "pallas" else False
    return _fused(q_bchk, k_blhk, v_blhk, bias_blh, mask_bl.astype(bool), impl, interp,
                  blocks or TargetAttentionBlocks.default())
