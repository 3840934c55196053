"""Multi-task binary cross-entropy over valid (unpadded) candidates; the masked-action
cross-entropy over hidden history events."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_bce(logits_bct: jax.Array, labels_bct: jax.Array, mask_bc: jax.Array) -> jax.Array:
    """Mean over valid candidates, summed over tasks: padded slots never contribute."""
    per = optax.sigmoid_binary_cross_entropy(logits_bct, labels_bct)
    w = mask_bc[..., None].astype(per.dtype)
    return (per * w).sum() / jnp.maximum(w.sum(), 1.0)


def masked_action_ce(logits_bla: jax.Array, actions_bl: jax.Array,
                     hidden_bl: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of the hidden events' true actions (0 when none is hidden)."""
    per = optax.softmax_cross_entropy_with_integer_labels(logits_bla,
                                                          actions_bl.astype(jnp.int32))
    w = hidden_bl.astype(per.dtype)
    return (per * w).sum() / jnp.maximum(w.sum(), 1.0)
