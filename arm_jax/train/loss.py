"""Multi-task binary cross-entropy over valid (unpadded) candidates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_bce(logits_bct: jax.Array, labels_bct: jax.Array, mask_bc: jax.Array) -> jax.Array:
    """Mean over valid candidates, summed over tasks: padded slots never contribute."""
    per = optax.sigmoid_binary_cross_entropy(logits_bct, labels_bct)
    w = mask_bc[..., None].astype(per.dtype)
    return (per * w).sum() / jnp.maximum(w.sum(), 1.0)
