"""One model's training state and its jitted step: the setup every training loop shares.

`arm-jax train` (synthetic data) and `bench movielens` (joined MovieLens batches) differ in
their data and in what they evaluate; building the model, the optimiser, the donated train
step and the per-step random keys (dropout, history cropping) is the same, and lives here once.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.batch import RequestBatch
from arm_jax.checkpoint import build_model
from arm_jax.config import TierConfig
from arm_jax.train.step import make_optimizer, make_train_step, step_keys

MAX_STEPS_IN_FLIGHT = 2


class TrainingDiverged(ValueError):
    """The training loss (or the trained weights) went NaN or infinite: nothing more is
    saved or evaluated from such a run."""


@dataclass
class Trainer:
    """(graphdef, params, optimiser state) of one model and `step` to advance them.

    With `train.ema_decay` > 0 it also keeps an exponential moving average of the weights
    (`ema_params`); `eval_params` is what evaluation, checkpoints and exports should use."""

    graphdef: nnx.GraphDef
    params: Any
    opt_state: Any
    train_step: Callable
    step_key: Callable[[int], jax.Array | None]
    steps: int
    log_every: int
    ema_params: Any = None
    _loss_sum: Any = field(default=0.0, repr=False)     # on device: no sync per step
    _loss_steps: int = field(default=0, repr=False)
    _in_flight: collections.deque = field(default_factory=collections.deque, repr=False)
    _last_step: int = field(default=-1, repr=False)

    @classmethod
    def create(cls, kind: str, tier: TierConfig, steps: int) -> "Trainer":
        """A fresh `kind` model ("ranker" | "logreg") seeded by `train.seed`, AdamW over
        `steps` (warm-up, cosine, table learning-rate scale); dropout, history cropping,
        the masked-action task and the pairwise ranking loss for rankers only."""
        tc = tier.train
        graphdef, params = nnx.split(build_model(kind, tier, seed=tc.seed))
        tx = make_optimizer(tc.learning_rate, steps, tc.warmup_steps, tc.weight_decay,
                            tc.embedding_lr_scale)
        rate = tier.model.dropout if kind == "ranker" else 0.0
        crop = tc.history_crop if kind == "ranker" else 0.0
        masked = tc.masked_actions if kind == "ranker" else 0.0
        ema_params = None
        if tc.ema_decay > 0:    # its own buffers: params are donated to every step
            ema_params = jax.tree.map(jnp.copy, params)
        rank_weight = tc.rank_loss_weight if kind == "ranker" else 0.0
        step = make_train_step(graphdef, tx, crop, tc.ema_decay, masked,
                               tc.masked_action_weight, rank_weight)
        return cls(graphdef, params, tx.init(params), step,
                   step_keys(rate, tc.seed, crop, masked), steps, tc.log_every,
                   ema_params=ema_params)

    @property
    def eval_params(self) -> Any:
        """The weights to evaluate and save: the moving average when on, else the params."""
        return self.params if self.ema_params is None else self.ema_params

    def step(self, i: int, batch: RequestBatch, labels: Any) -> jax.Array:
        """Train step `i` on one batch, one dispatch (params, optimiser state and the moving
        average are donated); the loss.

        Returns once at most MAX_STEPS_IN_FLIGHT steps are dispatched and unfinished: the
        next batch is still prepared while one computes, but a progress bar counts steps
        done, not steps queued (unbounded, jax queued ~16 steps ahead here, so a bar raced
        ahead and then stalled at every loss read), and queued batches do not pile up in
        memory."""
        self.params, self.opt_state, self.ema_params, loss = self.train_step(
            self.params, self.opt_state, self.ema_params, batch, labels, i,
            self.step_key(i))
        self._loss_sum = self._loss_sum + loss
        self._loss_steps += 1
        self._last_step = i
        self._in_flight.append(loss)
        while len(self._in_flight) > MAX_STEPS_IN_FLIGHT:
            self._in_flight.popleft().block_until_ready()
        return loss

    def loss_window(self) -> tuple[float, int]:
        """(sum, steps) of the losses since the last `mean_loss`: what a checkpoint keeps so
        that a resumed run logs the window it cut in two exactly (one device sync).
        Raises TrainingDiverged when that sum is not finite, so no diverged state is saved."""
        loss_sum = float(self._loss_sum)
        self._check_finite(loss_sum / max(self._loss_steps, 1))
        return loss_sum, self._loss_steps

    def _check_finite(self, mean: float) -> None:
        if not math.isfinite(mean):
            first = self._last_step - self._loss_steps + 1
            raise TrainingDiverged(
                f"training diverged: the mean loss of steps {first}-{self._last_step} is "
                f"{mean}; nothing from them is saved (try a lower train.learning_rate)")

    def restore_loss_window(self, loss_sum: float, steps: int) -> None:
        """Continue a window `loss_window` saved (float32 sums round-trip exactly)."""
        self._loss_sum, self._loss_steps = loss_sum, steps

    def logs_at(self, i: int) -> bool:
        """Whether the loops log after step `i`: every `train.log_every` steps and the last."""
        return i % self.log_every == 0 or i == self.steps - 1

    def mean_loss(self) -> float:
        """Mean training loss over the steps since the last call (one device sync);
        TrainingDiverged when it is NaN or infinite.

        What the loops log: one batch's loss swings by +-50% on these batch sizes, so a
        single-step figure says little about where training stands."""
        if self._loss_steps == 0:
            raise ValueError("mean_loss: no train step since the last call")
        value = float(self._loss_sum) / self._loss_steps
        self._check_finite(value)
        self._loss_sum, self._loss_steps = 0.0, 0
        return value
