"""Pure, jitted train and predict steps over (graphdef, params) split from an NNX model.

One signature for training, evaluation and export: functions of
(params, batch[, labels]) with the graphdef bound statically. Optimiser state and
params are donated so each step updates in place.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from arm_jax.batch import RequestBatch
from arm_jax.train.augment import crop_histories
from arm_jax.train.loss import masked_action_ce, ranker_loss


EMBEDDING_LEAVES = ("table", "embedding")   # HashedEmbedding.table, nnx.Embed.embedding


def _is_embedding(path: tuple[Any, ...]) -> bool:
    names = [getattr(k, "key", getattr(k, "name", k)) for k in path]
    names = [n for n in names if n != "value"]          # nnx Variables end in `.value`
    return bool(names) and names[-1] in EMBEDDING_LEAVES


def embedding_labels(params: Any) -> Any:
    """'embedding' for embedding tables, 'dense' for everything else (same tree as params)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "embedding" if _is_embedding(path) else "dense", params)


def make_optimizer(learning_rate: float, steps: int, warmup_steps: int,
                   weight_decay: float, embedding_lr_scale: float = 1.0
                   ) -> optax.GradientTransformation:
    """AdamW with linear warm-up from 0 over `warmup_steps` (none when 0) and cosine decay
    to 5% of the peak; gradients clipped at norm 1.

    Embedding rows see a gradient only when their id occurs in the batch, so they learn
    from far fewer updates than dense weights; `embedding_lr_scale` gives the tables their
    own (larger) learning rate, the usual remedy in recommender training.
    """
    warmup = min(warmup_steps, steps - 1)

    def adamw(peak: float) -> optax.GradientTransformation:
        if warmup > 0:   # the warm-up starts at 0: step 0 only fills Adam's moments
            schedule = optax.warmup_cosine_decay_schedule(
                0.0, peak, warmup, max(steps, 2), end_value=peak * 0.05)
        else:            # no warm-up (or a 1-step run): step 0 already at the peak
            schedule = optax.cosine_decay_schedule(peak, max(steps, 1), alpha=0.05)
        return optax.adamw(schedule, weight_decay=weight_decay)

    if embedding_lr_scale == 1.0:
        return optax.chain(optax.clip_by_global_norm(1.0), adamw(learning_rate))
    return optax.chain(optax.clip_by_global_norm(1.0), optax.multi_transform(
        {"dense": adamw(learning_rate), "embedding": adamw(learning_rate * embedding_lr_scale)},
        embedding_labels))


def _forward(graphdef: nnx.GraphDef, params: Any, batch: RequestBatch, **kw: Any) -> jax.Array:
    return nnx.merge(graphdef, params)(batch, **kw)


def step_keys(rate: float, seed: int, history_crop: float = 0.0, masked_actions: float = 0.0
              ) -> Callable[[int], jax.Array | None]:
    """step -> the train step's random key for dropout, history cropping and action
    masking (None, i.e. deterministic, when none is on)."""
    base = jax.random.key(seed)
    off = rate == 0.0 and history_crop == 0.0 and masked_actions == 0.0
    return lambda step: None if off else jax.random.fold_in(base, step)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    history_crop: float = 0.0, ema_decay: float = 0.0,
                    masked_actions: float = 0.0, masked_action_weight: float = 1.0,
                    rank_loss_weight: float = 0.0) -> Callable:
    """(params, opt_state, ema, batch, labels, step_index[, key])
    -> (params, opt_state, ema, loss), one jitted dispatch per step.

    With a `key` (see `step_keys`) the model applies its `model.dropout`;
    when `history_crop` > 0, histories are cut at random first (`crop_histories`); when
    `masked_actions` > 0, that share of history events enter without their action and the
    loss adds `masked_action_weight` x the cross-entropy of predicting it back
    (`Ranker.masked_action_forward`; the returned loss is the sum). With
    `rank_loss_weight` > 0 the loss also adds that times the batch-wide pairwise ranking
    loss (`batch_pairwise_logistic`). With
    `ema_decay` > 0, `ema` (a params-shaped tree) moves toward the updated params in the
    same dispatch (`ema_update`); otherwise pass and get back None. params, opt_state and
    ema are donated."""

    def step(params, opt_state, ema, batch, labels, step_index, key=None):
        if key is not None and history_crop > 0.0:
            crop_key, key = jax.random.split(key)
            batch = crop_histories(batch, crop_key, history_crop)
        if key is not None and masked_actions > 0.0:
            mask_key, key = jax.random.split(key)

            def loss_fn(p):
                logits, aux = nnx.merge(graphdef, p).masked_action_forward(
                    batch, mask_key, masked_actions, dropout_key=key)
                return (ranker_loss(logits, labels, batch.cand_mask, rank_loss_weight)
                        + masked_action_weight
                        * masked_action_ce(aux.logits_bla, aux.actions_bl, aux.hidden_bl))
        else:
            kw = {} if key is None else {"dropout_key": key}

            def loss_fn(p):
                return ranker_loss(_forward(graphdef, p, batch, **kw), labels, batch.cand_mask,
                                   rank_loss_weight)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ema_decay > 0.0:
            ema = ema_update(ema, params, step_index, ema_decay)
        return params, opt_state, ema, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def ema_update(ema: Any, params: Any, step: jax.Array | int, decay: float) -> Any:
    """`ema` moved toward `params` (optax's Polyak average), keeping its dtype.

    The rate warms up as min(decay, (1 + step) / (10 + step)) so early averages are not
    dominated by the initial weights (the schedule of TF's ExponentialMovingAverage with
    num_updates)."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    moved = optax.incremental_update(params, ema, 1.0 - d)    # d * ema + (1 - d) * params
    return jax.tree.map(lambda m, e: m.astype(e.dtype), moved, ema)


def make_predict(graphdef: nnx.GraphDef, **kw: Any) -> Callable:
    """(params, batch) -> probabilities [b, c, tasks]; a plain jax.jit (no nnx.jit overhead)."""
    fwd = partial(_forward, graphdef, **kw)
    return jax.jit(lambda params, batch: jax.nn.sigmoid(fwd(params, batch)))
