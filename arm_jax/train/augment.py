"""Training-time augmentation of a RequestBatch (never applied in evaluation or serving)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from arm_jax.batch import RequestBatch


def crop_histories(batch: RequestBatch, key: jax.Array, prob: float) -> RequestBatch:
    """Cut each request's history, with probability `prob`, to a length drawn uniformly
    from [0, hist_len]; the most recent events are kept (history is newest first).

    Only `hist_len` changes: every history consumer masks by it, so shapes (and the
    compiled step) stay the same. The model then also learns from short views of long
    histories, which it cannot reach by memorising their old tails."""
    if prob == 0.0:
        return batch
    k_apply, k_len = jax.random.split(key)
    hist_len = batch.hist_len.astype(jnp.int32)
    apply_b = jax.random.bernoulli(k_apply, prob, hist_len.shape)
    cut_b = jax.random.randint(k_len, hist_len.shape, 0, hist_len + 1)
    cropped = jnp.where(apply_b, cut_b, hist_len).astype(batch.hist_len.dtype)
    return batch.replace(hist_len=cropped)
