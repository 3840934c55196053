"""Training and evaluation of one tier (or the logistic-regression baseline): on the bundled
synthetic data, or on examples files joined with a user-log store (`arm_jax.train.file_data`)."""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from arm_jax.checkpoint import check_save_target, save_checkpoint
from arm_jax.compile.weights import first_non_finite, flatten
from arm_jax.config import TierConfig, check_rank_loss_batch
from arm_jax.data.join import StoreHistory, joined_dataset
from arm_jax.data.synthetic import Examples, SyntheticSpec, SyntheticWorld, iterate_batches
from arm_jax.metrics import evaluate
from arm_jax.train.resume import TrainStateCheckpoints, run_identity
from arm_jax.train.step import make_predict
from arm_jax.train.trainer import Trainer, TrainingDiverged

SHORT_HISTORY = 32    # events: the small tier sees all of such a user's history
LONG_HISTORY = 256    # events: more than the small and medium tiers read


@dataclasses.dataclass
class TrainResult:
    kind: str
    tier: TierConfig
    graphdef: nnx.GraphDef
    params: Any
    losses: list[float]     # mean train loss per logging window (the first: step 0 alone)
    metrics: dict[str, Any]
    seconds: float


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Train and held-out requests, and where their histories come from.

    `world` joins a history (`join_history(user_id, ts, max_len)`, `.features`): the
    synthetic world itself, or a `StoreHistory` over a user-log store, whose training joins
    then run in grain background threads. `identity` names the data for `--resume`
    (None: the tier's synthetic data, which the tier config already pins)."""

    world: SyntheticWorld | StoreHistory
    train: Examples
    test: Examples
    identity: dict[str, Any] | None = None


def make_synthetic_data(tier: TierConfig) -> TrainingData:
    """The bundled synthetic world and its train / held-out requests (same seed, same data)."""
    tc = tier.train
    if tc.candidates > tier.features.max_candidates:     # before generating anything
        raise ValueError(f"train.candidates={tc.candidates} exceeds "
                         f"features.max_candidates={tier.features.max_candidates}")
    world = SyntheticWorld.generate(SyntheticSpec(num_users=tc.num_users, seed=tc.seed),
                                    tier.features)
    train = world.sample_examples(tc.train_requests, tc.candidates, seed=tc.seed + 1)
    test = world.sample_examples(tc.eval_requests, tc.candidates, seed=tc.seed + 2)
    return TrainingData(world, train, test)


def history_len_for(kind: str, tier: TierConfig) -> int:
    """Events joined per request: the tier's L; the linear baseline reads the longest history.
    ValueError naming both settings when L exceeds features.max_history (every batch of
    such histories would be refused)."""
    if kind == "logreg":
        return tier.features.max_history
    if tier.model.history_len > tier.features.max_history:
        raise ValueError(f"model.history_len={tier.model.history_len} exceeds "
                         f"features.max_history={tier.features.max_history}")
    return tier.model.history_len


def train_model(tier: TierConfig, data: TrainingData, *, kind: str = "ranker",
                steps: int | None = None, out_dir: str | Path | None = None,
                progress: bool = True, checkpoint_every: int = 0,
                resume: bool = False) -> TrainResult:
    """Train with AdamW on `data`, evaluate on its held-out requests, checkpoint.

    With `out_dir`, `checkpoint_every` > 0 also saves the whole training state every that
    many steps (`arm_jax.train.resume`), and `resume` continues from the newest saved state
    of the same run instead of starting over: the weights it ends with are bit-identical
    to an uninterrupted run's."""
    tc = tier.train
    steps = steps or tc.steps
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        # before any step: the final save would fail only after the whole run
        raise ValueError(f"out_dir {out_dir}: exists and is not a directory")
    max_len = history_len_for(kind, tier)
    if kind == "ranker":        # an examples file sets its own candidates per request
        width = data.train.cand_mask.shape[1]
        check_rank_loss_batch(tc.rank_loss_weight, tc.batch_size, width,
                              f"train.batch_size={tc.batch_size} x the training examples' "
                              f"{width} candidates per request")
    trainer = Trainer.create(kind, tier, steps)
    per_epoch = len(data.train) // tc.batch_size
    if per_epoch == 0:
        raise ValueError(f"train.batch_size={tc.batch_size}: more than the "
                         f"{len(data.train)} training requests")
    state = None
    if out_dir is not None:
        check_save_target(out_dir)      # refused now, not after training (save_checkpoint)
        state = TrainStateCheckpoints(out_dir, run_identity(kind, tier, steps, data.identity),
                                      checkpoint_every)
    elif resume or checkpoint_every:
        raise ValueError("checkpoint_every / resume: need an output directory")

    def batches(done: int):
        for epoch in itertools.count(done // per_epoch):
            first = done % per_epoch if epoch == done // per_epoch else 0
            if isinstance(data.world, StoreHistory):     # store reads overlap the steps
                w = data.world
                it = iter(joined_dataset(data.train, w.store, w.features,
                                         batch_size=tc.batch_size, max_len=max_len,
                                         shuffle=True, seed=tc.seed + epoch,
                                         drop_remainder=True, catalog=w.catalog,
                                         first_batch=first))
                try:   # grain's threads stop however this ends, a join worker's error too
                    yield from it
                finally:
                    it.close()
            else:
                yield from iterate_batches(data.world, data.train, tc.batch_size, max_len,
                                           shuffle=True, seed=tc.seed + epoch,
                                           drop_remainder=True, first_batch=first)

    feed = None
    try:                          # a failed restore closes the checkpointer too
        done, losses = _begin(state, trainer, resume, f"{kind}:{tier.name}", steps)
        t0 = time.perf_counter()
        feed = batches(done)
        bar = tqdm(itertools.islice(feed, steps - done), total=steps, initial=done,
                   disable=not progress, desc=f"train {kind}:{tier.name}", unit="step")
        for i, (batch, labels) in enumerate(bar, start=done):
            trainer.step(i, batch, labels)
            if trainer.logs_at(i):
                losses.append(trainer.mean_loss())
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if state is not None:
                if state.due(i + 1, steps):
                    state.save(i + 1, trainer, losses)
                else:
                    state.poll()
    finally:
        if feed is not None:      # the join's threads stop, also when a step raised
            feed.close()
        if state is not None:
            state.close()         # an interrupted run still commits its last save
    graphdef, params = trainer.graphdef, jax.block_until_ready(trainer.eval_params)
    seconds = time.perf_counter() - t0
    bad = first_non_finite(flatten(params))       # the last update is in no logged loss
    if bad is not None:
        raise TrainingDiverged(f"training diverged: the trained weight {bad[0]} holds NaN or "
                               "inf; nothing is saved (try a lower train.learning_rate)")
    metrics = evaluate_model(graphdef, params, tier, data, kind=kind)
    metrics.update(train_seconds=seconds, steps=steps, first_loss=losses[0], last_loss=losses[-1],
                   resumed_at_step=done if resume else None)
    if out_dir is not None:
        save_checkpoint(out_dir, kind=kind, tier=tier, params=params, metrics=metrics)
    return TrainResult(kind, tier, graphdef, params, losses, metrics, seconds)


def _begin(state: TrainStateCheckpoints | None, trainer: Trainer, resume: bool, name: str,
           steps: int) -> tuple[int, list[float]]:
    """(steps done, loss log): restored from the newest saved state, or a fresh start."""
    if not resume:
        if state is not None:
            state.start_fresh()
        return 0, []
    done, losses, refused = state.restore(trainer)
    for r in refused:
        print(f"arm-jax: skipped a damaged training state: {r}", file=sys.stderr)
    print(f"arm-jax: resuming {name} after step {done} of {steps}", file=sys.stderr)
    return done, losses


def predict_examples(graphdef: nnx.GraphDef, params: Any, data: TrainingData,
                     examples: Examples, max_len: int, batch_size: int = 64) -> np.ndarray:
    """Probabilities [R, N, tasks] for every held-out request (last batch padded, not recompiled)."""
    predict = make_predict(graphdef)
    n = len(examples)
    out = []
    for batch, _ in iterate_batches(data.world, examples, batch_size, max_len, shuffle=False,
                                    seed=0, drop_remainder=False):
        b = batch.num_requests
        if b < batch_size:  # pad the tail to the compiled shape
            batch = jax.tree.map(lambda x: np.concatenate(
                [x, np.repeat(x[:1], batch_size - b, axis=0)]), batch)
        out.append(np.asarray(predict(params, batch))[:b])
    return np.concatenate(out)[:n]


HISTORY_CHUNK = 4096   # requests per join when only the history lengths are wanted


def full_history_lengths(world: Any, examples: Examples, max_len: int,
                         chunk: int | None = None) -> np.ndarray:
    """Each request's history length up to `max_len`, int [R], joined `chunk` requests at
    a time: one join of every held-out request built [R, max_len] arrays (~850 MB for
    20,000 requests at L=1024 from a store), so a large --examples file ran out of memory
    at the evaluation after training."""
    chunk = chunk or HISTORY_CHUNK
    return np.concatenate([np.zeros(0, np.int32)] + [
        world.join_history(examples.user_id[lo:lo + chunk], examples.ts[lo:lo + chunk],
                           max_len)["hist_len"] for lo in range(0, len(examples), chunk)])


def evaluate_model(graphdef: nnx.GraphDef, params: Any, tier: TierConfig, data: TrainingData,
                   *, kind: str = "ranker") -> dict[str, Any]:
    """AUC / log loss / NE per task on held-out data, overall and by history length."""
    ex = data.test
    probs = predict_examples(graphdef, params, data, ex, history_len_for(kind, tier))
    tasks = tier.features.tasks
    full = full_history_lengths(data.world, ex, tier.features.max_history)
    res: dict[str, Any] = {"overall": evaluate(ex.labels, probs, ex.cand_mask, tasks)}
    for name, sel in (("short_history", full <= SHORT_HISTORY),
                      ("long_history", full >= LONG_HISTORY)):
        mask = ex.cand_mask & sel[:, None]
        res[name] = evaluate(ex.labels, probs, mask, tasks)
        res[name]["requests"] = int(sel.sum())
    return res
