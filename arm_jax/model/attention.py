"""Masked multi-head attention pieces shared by the sequence encoder and summary pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.model.age_bias import AgeBias

_NEG = -1e30


def key_bias(age_bias: AgeBias | None, age_bucket_bl: jax.Array | None) -> jax.Array | None:
    """`age_bias(age_bucket_bl)`, or None when the module has no age bias."""
    if age_bias is None:
        return None
    if age_bucket_bl is None:
        raise ValueError("age_bucket_bl: required by a module built with an age bias")
    return age_bias(age_bucket_bl)


def masked_softmax_attention(q_bqhk: jax.Array, k_blhk: jax.Array, v_blhk: jax.Array,
                             mask_bl: jax.Array, bias_blh: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(dk) + bias) v over valid keys. A row with no valid key yields zeros.

    `bias_blh` is an optional additive score per key and head (e.g. `AgeBias`).

    Computed head-major ([b, h, q, l] scores from [b, h, *, k] operands: contiguous
    per-head matmuls) with the softmax normalisation applied after the value matmul,
    so the large score tensor is read once fewer.
    """
    scale = q_bqhk.shape[-1] ** -0.5
    q_bhqk = jnp.swapaxes(q_bqhk * scale, 1, 2)
    k_bhlk = jnp.swapaxes(k_blhk, 1, 2)
    v_bhlk = jnp.swapaxes(v_blhk, 1, 2)
    s_bhql = jnp.einsum("bhqk,bhlk->bhql", q_bhqk, k_bhlk)
    if bias_blh is not None:
        s_bhql = s_bhql + jnp.transpose(bias_blh, (0, 2, 1))[:, :, None, :].astype(s_bhql.dtype)
    s_bhql = jnp.where(mask_bl[:, None, None, :], s_bhql, _NEG)
    e_bhql = jnp.exp(s_bhql - s_bhql.max(axis=-1, keepdims=True))
    o_bhqk = jnp.einsum("bhql,bhlk->bhqk", e_bhql, v_bhlk) / e_bhql.sum(-1)[..., None]
    any_valid_b = mask_bl.any(axis=-1)
    return jnp.where(any_valid_b[:, None, None, None], jnp.swapaxes(o_bhqk, 1, 2), 0
                     ).astype(o_bhqk.dtype)


class SelfAttentionBlock(nnx.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, *,
                 age_bias: AgeBias | None = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.age_bias = age_bias
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(d_model, **kw)
        self.qkv = nnx.Linear(d_model, 3 * d_model, **kw)
        self.out = nnx.Linear(d_model, d_model, **kw)
        self.norm2 = nnx.LayerNorm(d_model, **kw)
        self.mlp_in = nnx.Linear(d_model, mlp_ratio * d_model, **kw)
        self.mlp_out = nnx.Linear(mlp_ratio * d_model, d_model, **kw)

    def __call__(self, x_bld: jax.Array, mask_bl: jax.Array,
                 age_bucket_bl: jax.Array | None = None) -> jax.Array:
        b, l, d = x_bld.shape
        h = self.num_heads
        qkv = self.qkv(self.norm1(x_bld)).reshape(b, l, 3, h, d // h)
        bias = key_bias(self.age_bias, age_bucket_bl)
        att_blhk = masked_softmax_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask_bl,
                                            bias)
        x_bld = x_bld + self.out(att_blhk.reshape(b, l, d))
        y = self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x_bld))))
        return x_bld + y


class SummaryPooling(nnx.Module):
    """k learned queries attend over the encoded history: k request-level summary tokens."""

    def __init__(self, d_model: int, num_tokens: int, num_heads: int, *,
                 age_bias: AgeBias | None = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.age_bias = age_bias
        self.queries = nnx.Param(
            nnx.initializers.normal(0.05)(rngs.params(), (num_tokens, d_model), param_dtype))
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.kv = nnx.Linear(d_model, 2 * d_model, **kw)
        self.out = nnx.Linear(d_model, d_model, **kw)

    def __call__(self, seq_bld: jax.Array, mask_bl: jax.Array,
                 age_bucket_bl: jax.Array | None = None) -> jax.Array:
        b, l, d = seq_bld.shape
        h = self.num_heads
        kv = self.kv(seq_bld).reshape(b, l, 2, h, d // h)
        q = jnp.broadcast_to(self.queries[...].astype(seq_bld.dtype), (b,) + self.queries.shape)
        q_bqhk = q.reshape(b, -1, h, d // h)
        pooled = masked_softmax_attention(q_bqhk, kv[:, :, 0], kv[:, :, 1], mask_bl,
                                          key_bias(self.age_bias, age_bucket_bl))
        return self.out(pooled.reshape(b, -1, d))
