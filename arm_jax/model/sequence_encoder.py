"""Request-level sequence encoder over the user's most recent L events."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.model.age_bias import age_biases
from arm_jax.model.attention import SelfAttentionBlock
from arm_jax.model.embeddings import HashedEmbedding
from arm_jax.model.preprocess import age_bucket


class SequenceEncoder(nnx.Module):
    """event = item + action + age-bucket + position embeddings; then pre-norm blocks.

    Runs once per request (never per candidate in `shared` mode).
    """

    def __init__(self, *, d_model: int, history_len: int, num_layers: int, num_heads: int,
                 mlp_ratio: int, item_hash_size: int, num_action_types: int,
                 time_buckets: int, age_bias_slope: float = 0.0, rank_bias_slope: float = 0.0,
                 dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.history_len = history_len
        self.time_buckets = time_buckets
        self.dtype = dtype
        self.items = HashedEmbedding(1, item_hash_size, d_model, salt_base=1 << 20,
                                     param_dtype=param_dtype, rngs=rngs)
        init = nnx.initializers.normal(0.05)
        self.actions = nnx.Embed(num_action_types, d_model, embedding_init=init,
                                 param_dtype=param_dtype, rngs=rngs)
        self.ages = nnx.Embed(time_buckets, d_model, embedding_init=init,
                              param_dtype=param_dtype, rngs=rngs)
        self.positions = nnx.Param(init(rngs.params(), (history_len, d_model), param_dtype))
        self.blocks = nnx.List([
            SelfAttentionBlock(d_model, num_heads, mlp_ratio,
                               age_bias=age_biases(time_buckets, num_heads, age_bias_slope,
                                                   rank_slope=rank_bias_slope,
                                                   param_dtype=param_dtype),
                               dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for _ in range(num_layers)
        ])
        self.norm = nnx.LayerNorm(d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hist_item_bl: jax.Array, hist_action_bl: jax.Array,
                 hist_gap_bl: jax.Array, hist_len_b: jax.Array,
                 extra_bld: jax.Array | None = None,
                 item_bld: jax.Array | None = None,
                 age_bucket_bl: jax.Array | None = None,
                 hide_action_bl: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """-> (encoded history [b, l, d], validity mask [b, l]); l = min(batch L, tier L).

        `extra_bld` is added to each event's embedding (the item's side-field embeddings);
        `item_bld` is `self.items` of the events and `age_bucket_bl` their
        `age_bucket(hist_gap_bl)`, when the caller already computed them. Events where
        `hide_action_bl` is True enter without their action (training's masked-action
        task, `action_logits`).
        """
        l = hist_item_bl.shape[1]
        mask_bl = jnp.arange(l)[None, :] < hist_len_b[:, None]
        if item_bld is None:
            item_bld = self.items(hist_item_bl[..., None])[..., 0, :]
        if extra_bld is not None:
            item_bld = item_bld + extra_bld
        age_bl = (age_bucket(hist_gap_bl, self.time_buckets) if age_bucket_bl is None
                  else age_bucket_bl)
        # A padded event's action is never read, but nnx.Embed returns NaN for an id past
        # the table and NaN survives any later masking by multiplication: look up row 0.
        action_bld = self.actions(jnp.where(mask_bl, hist_action_bl, 0))
        if hide_action_bl is not None:
            action_bld = jnp.where(hide_action_bl[..., None], 0.0, action_bld)
        x_bld = (item_bld
                 + action_bld
                 + self.ages(age_bl)
                 + self.positions[...][:l]).astype(self.dtype)
        for block in self.blocks:
            x_bld = block(x_bld, mask_bl, age_bl)
        x_bld = self.norm(x_bld)
        return jnp.where(mask_bl[..., None], x_bld, 0).astype(x_bld.dtype), mask_bl

    def action_logits(self, seq_bld: jax.Array) -> jax.Array:
        """Each encoded event's logits over action types [b, l, A], scored against the
        action embeddings themselves (tied, as BERT ties its output to its input table):
        the masked-action task adds no parameters, so exports are unchanged."""
        return jnp.einsum("bld,ad->bla", seq_bld.astype(jnp.float32),
                          self.actions.embedding[...].astype(jnp.float32))
