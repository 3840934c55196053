"""Multi-task binary cross-entropy over valid (unpadded) candidates; a batch-wide pairwise
ranking loss; the masked-action cross-entropy over hidden history events."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from arm_jax.config import check_rank_loss_batch


def masked_bce(logits_bct: jax.Array, labels_bct: jax.Array, mask_bc: jax.Array) -> jax.Array:
    """Mean over valid candidates, summed over tasks: padded slots never contribute."""
    per = optax.sigmoid_binary_cross_entropy(logits_bct, labels_bct)
    w = mask_bc[..., None].astype(per.dtype)
    return (per * w).sum() / jnp.maximum(w.sum(), 1.0)


def batch_pairwise_logistic(logits_bct: jax.Array, labels_bct: jax.Array,
                            mask_bc: jax.Array) -> jax.Array:
    """RankNet's pairwise logistic loss over every pair of valid candidates in the batch,
    across requests as well as within them; summed over tasks.

    A pair (i, j) with label y_i > y_j weighs y_i - y_j (1 for hard labels, less for soft
    ones) and costs softplus(s_j - s_i): what a batch-global AUC surrogate asks, where
    cross-entropy alone scores each candidate on its own. Memory is O((b x c)^2) per
    task, hence the bound that `ranker_loss` and `TrainConfig` check.
    """
    b, c, t = logits_bct.shape
    # float32 whatever the compute dtype: the sums run over (b x c)^2 pairs
    s_nt = logits_bct.reshape(b * c, t).astype(jnp.float32)
    y_nt = labels_bct.reshape(b * c, t).astype(jnp.float32)
    m_n = mask_bc.reshape(b * c).astype(jnp.float32)
    pair_m_nn = m_n[:, None] * m_n[None, :]
    # [i, j, t]: how much i should rank above j, and the cost of the order the model gives
    w_nnt = jax.nn.relu(y_nt[:, None, :] - y_nt[None, :, :]) * pair_m_nn[..., None]
    cost_nnt = jax.nn.softplus(s_nt[None, :, :] - s_nt[:, None, :])
    per_task = (w_nnt * cost_nnt).sum((0, 1)) / jnp.maximum(w_nnt.sum((0, 1)), 1e-6)
    return per_task.sum()


def ranker_loss(logits_bct: jax.Array, labels_bct: jax.Array, mask_bc: jax.Array,
                rank_loss_weight: float = 0.0) -> jax.Array:
    """`masked_bce`, plus `rank_loss_weight` x `batch_pairwise_logistic` when it is > 0.

    The batch's shape is checked against the pairwise loss's bound here, when the step is
    traced: examples files set their own candidates per request, which the config's check
    on `train.candidates` does not see."""
    loss = masked_bce(logits_bct, labels_bct, mask_bc)
    if rank_loss_weight > 0.0:
        b, c = mask_bc.shape
        check_rank_loss_batch(rank_loss_weight, b, c,
                              f"a batch of {b} requests x {c} candidates")
        loss = loss + rank_loss_weight * batch_pairwise_logistic(logits_bct, labels_bct,
                                                                 mask_bc)
    return loss


def masked_action_ce(logits_bla: jax.Array, actions_bl: jax.Array,
                     hidden_bl: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of the hidden events' true actions (0 when none is hidden)."""
    per = optax.softmax_cross_entropy_with_integer_labels(logits_bla,
                                                          actions_bl.astype(jnp.int32))
    w = hidden_bl.astype(per.dtype)
    return (per * w).sum() / jnp.maximum(w.sum(), 1.0)
