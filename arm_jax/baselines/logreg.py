"""Logistic regression on the ranker's features: the floor every quality table is read against.

Linear in hashed one-hot sparse ids, signed-log dense features and a bag of history items,
with no feature crosses: whatever the ranker gains over it comes from interactions
(user interest x ad topic, planted crosses) and from reading the history in context.
Request-level terms are computed once per request and broadcast over candidates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from arm_jax.batch import RequestBatch
from arm_jax.config import FeaturesConfig

_KNUTH = 2654435761          # multiplicative hash constant (2^32 / golden ratio)
_SALT = 0x9E3779B9           # field f gets salt (f + 1) * _SALT (uint32 wrap-around)


def hash_bucket(ids: jax.Array, salt: jax.Array | int, size: int) -> jax.Array:
    """(id * 2654435761 + salt) mod size in uint32 arithmetic -> int32 rows in [0, size)."""
    x = ids.astype(jnp.uint32) * jnp.uint32(_KNUTH) + jnp.asarray(salt, jnp.uint32)
    return (x % jnp.uint32(size)).astype(jnp.int32)


def _salts(num_fields: int, first: int = 0) -> np.ndarray:
    return ((np.arange(first, first + num_fields, dtype=np.uint64) + 1) * _SALT
            % 2**32).astype(np.uint32)


def _signed_log(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


class LogisticRegression(nnx.Module):
    """Per-task linear logits [b, c, T] from a RequestBatch.

    Parameters: one stacked sparse table [(f_r + f_c) * H, T] (field f owns rows
    [f * H, (f + 1) * H)), dense weights [e_r, T] and [e_c, T], a history-item table
    [H_item, T], and a bias [T]. H = features.sparse_hash_size, H_item = item_hash_size.
    """

    def __init__(self, features: FeaturesConfig, *, rngs: nnx.Rngs,
                 param_dtype: jnp.dtype = jnp.float32) -> None:
        f = features
        t_n = len(f.tasks)
        self.num_req_fields = f.req_sparse_fields
        self.num_cand_fields = f.cand_sparse_fields
        self.hash_size = f.sparse_hash_size
        self.item_hash_size = f.item_hash_size
        n_fields = f.req_sparse_fields + f.cand_sparse_fields
        init = nnx.initializers.normal(0.01)
        self.sparse_w = nnx.Param(init(rngs.params(), (n_fields * f.sparse_hash_size, t_n),
                                       param_dtype))
        self.item_w = nnx.Param(init(rngs.params(), (f.item_hash_size, t_n), param_dtype))
        self.req_dense_w = nnx.Param(jnp.zeros((f.req_dense_features, t_n), param_dtype))
        self.cand_dense_w = nnx.Param(jnp.zeros((f.cand_dense_features, t_n), param_dtype))
        self.bias = nnx.Param(jnp.zeros((t_n,), param_dtype))

    def _sparse_rows(self, ids: jax.Array, first_field: int) -> jax.Array:
        """Rows of the stacked table for ids [..., f] whose fields start at `first_field`."""
        f_n = ids.shape[-1]
        salt_f = jnp.asarray(_salts(f_n, first_field))
        offset_f = (jnp.arange(f_n, dtype=jnp.int32) + first_field) * self.hash_size
        return hash_bucket(ids, salt_f, self.hash_size) + offset_f

    def __call__(self, batch: RequestBatch) -> jax.Array:
        """Logits [b, c, T]; padded candidates get logits too (the loss masks them)."""
        table = self.sparse_w[...]
        # request-level terms, once per request: [b, T]
        req_rows = self._sparse_rows(batch.req_sparse, 0)                    # [b, f_r]
        req_bt = table[req_rows].sum(axis=1)
        req_bt += _signed_log(batch.req_dense) @ self.req_dense_w[...]
        hist_rows_bl = hash_bucket(batch.hist_item, _salts(1, 10**4)[0], self.item_hash_size)
        valid_bl = (jnp.arange(batch.hist_item.shape[1])[None, :]
                    < batch.hist_len[:, None]).astype(table.dtype)
        hist_sum_bt = jnp.einsum("bl,blt->bt", valid_bl, self.item_w[...][hist_rows_bl])
        req_bt += hist_sum_bt / jnp.maximum(valid_bl.sum(axis=1), 1.0)[:, None]
        # candidate terms: [b, c, T]
        cand_rows = self._sparse_rows(batch.cand_sparse, self.num_req_fields)  # [b, c, f_c]
        cand_bct = table[cand_rows].sum(axis=2)
        cand_bct += _signed_log(batch.cand_dense) @ self.cand_dense_w[...]
        return cand_bct + req_bt[:, None, :] + self.bias[...]


__all__ = ["LogisticRegression", "hash_bucket"]
