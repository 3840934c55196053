"""Point-in-time join of training examples with user logs from the store, in a grain pipeline.

Training examples hold only (user id, timestamp, request and candidate features, labels);
the history of each is joined on the fly: the user's events strictly before the example's
timestamp, the most recent `max_len` of them (the tier's L), newest first, as the
RequestBatch history fields. Joins run per batch (one batched store read) in grain's
background reader threads, so the store round trips overlap with training steps.

    for batch, labels in joined_batches(examples, store, features, batch_size=32,
                                        max_len=tier.model.history_len, shuffle=True):
        ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from arm_jax.batch import RequestBatch, expected_widths, make_batch
from arm_jax.config import FeaturesConfig
from arm_jax.data.catalog import ItemCatalog, empty_catalog
from arm_jax.data.examples import Examples, labels_problem
from arm_jax.store.base import Events, UserLogStore, check_stored_actions

# grain is imported where it is used: it imports orbax, which sets up the root logger at
# import (arm_jax.checkpoint: _import_orbax_note)
if TYPE_CHECKING:
    import grain


def join_threads(num_threads: int | None = None) -> int:
    """The thread count a join uses: `num_threads` (at least 1), or by default one core
    left to the trainer, at most 4.

    Measured on 2 cores (`bench store`): 1 thread joins ~21k examples/s from LMDB, 4
    threads ~12k (they contend for the GIL and the cores)."""
    if num_threads is not None:
        return max(1, num_threads)
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def pack_histories(logs: Sequence[Events], ts: np.ndarray, max_len: int,
                   catalog: ItemCatalog) -> dict[str, np.ndarray]:
    """Per-example logs (oldest first, already cut before ts) -> padded, newest-first arrays.

    hist_item int32 [R, L], hist_action int32 [R, L], hist_gap float32 [R, L] (example ts -
    event ts, seconds), hist_len int32 [R], hist_side int32 [R, L, s] (the catalogue's side
    ids of each item); slots past hist_len are 0.
    """
    r = len(logs)
    item = np.zeros((r, max_len), np.int32)
    action = np.zeros((r, max_len), np.int32)
    gap = np.zeros((r, max_len), np.float32)
    lens = np.zeros(r, np.int32)
    for i, ev in enumerate(logs):
        k = min(len(ev), max_len)
        if k == 0:
            continue
        lens[i] = k
        item[i, :k] = ev.item[::-1][:k]
        action[i, :k] = ev.action[::-1][:k]
        gap[i, :k] = (int(ts[i]) - ev.ts[::-1][:k]).astype(np.float32)
    valid = np.arange(max_len)[None, :] < lens[:, None]
    side = catalog.lookup(item)
    side[~valid] = 0                                 # padding slots hold 0, as the others
    return {"hist_item": item, "hist_action": action, "hist_gap": gap, "hist_len": lens,
            "hist_side": side}


def join_histories(store: UserLogStore, user_id: np.ndarray, ts: np.ndarray,
                   max_len: int, catalog: ItemCatalog,
                   num_action_types: int | None = None) -> dict[str, np.ndarray]:
    """The point-in-time history of every (user, ts) pair: one batched store read, then
    the items' side ids from the catalogue.

    With `num_action_types`, a joined action >= it raises ActionOutOfRange naming the
    store and the user (here, not as a BatchError from make_batch that names neither)."""
    user_id, ts = np.asarray(user_id), np.asarray(ts)
    logs = store.read_many_before(user_id.tolist(), ts.tolist(), max_len)
    hist = pack_histories(logs, ts, max_len, catalog)
    if num_action_types is not None:                 # padding slots hold 0: never refused
        bad_r = np.flatnonzero((hist["hist_action"] >= num_action_types).any(axis=1))
        if bad_r.size:
            r = int(bad_r[0])
            check_stored_actions(store.url, int(user_id[r]), hist["hist_action"][r],
                                 num_action_types)
    return hist


@dataclass
class StoreHistory:
    """A history source over a store with the `join_history` signature of SyntheticWorld,
    so `arm_jax.train.loop` helpers (iterate_batches, evaluate_model) can read from it."""

    store: UserLogStore
    features: FeaturesConfig
    catalog: ItemCatalog | None = None

    def __post_init__(self) -> None:
        if self.catalog is not None:    # CatalogError: built for other side fields
            self.catalog.check_fields(self.features.history_side_fields)

    def join_history(self, user_id: np.ndarray, ts: np.ndarray,
                     max_len: int) -> dict[str, np.ndarray]:
        """`join_histories` with this store, catalogue and the features' action limit."""
        catalog = self.catalog or empty_catalog(self.features.history_side_fields)
        return join_histories(self.store, user_id, ts, max_len, catalog,
                              self.features.num_action_types)


class _JoinBatch:
    """grain map: batch index -> (RequestBatch, labels). Picklable (store reopens itself)."""

    def __init__(self, examples: Examples, order: np.ndarray, batch_size: int,
                 store: UserLogStore, features: FeaturesConfig, max_len: int,
                 catalog: ItemCatalog) -> None:
        self.examples, self.order, self.batch_size = examples, order, batch_size
        self.store, self.features, self.max_len = store, features, max_len
        self.catalog = catalog
        self.expected = expected_widths(features)

    def __call__(self, i: int) -> tuple[RequestBatch, np.ndarray]:
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        ex = self.examples.take(idx)
        hist = join_histories(self.store, ex.user_id, ex.ts, self.max_len, self.catalog,
                              self.features.num_action_types)
        batch = make_batch(req_sparse=ex.req_sparse, req_dense=ex.req_dense,
                           cand_sparse=ex.cand_sparse, cand_dense=ex.cand_dense,
                           cand_mask=ex.cand_mask, num_action_types=self.features.num_action_types,
                           expected=self.expected, **hist)
        return batch, ex.labels


def _check_examples(examples: Examples, features: FeaturesConfig) -> None:
    """ValueError naming labels unless the examples' labels fit `features` for training:
    one per task of features.tasks, each finite and in [0, 1] (Examples checks its
    shapes itself; make_batch checks the request and candidate arrays batch by batch)."""
    labels = np.asarray(examples.labels)
    tasks = list(features.tasks)
    if labels.shape[2] != len(tasks):
        raise ValueError(f"labels: {labels.shape[2]} per candidate (shape {labels.shape}), "
                         f"but features.tasks={tasks} has {len(tasks)}")
    problem = labels_problem(labels)
    if problem:
        raise ValueError(problem)


def joined_dataset(examples: Examples, store: UserLogStore, features: FeaturesConfig, *,
                   batch_size: int, max_len: int, shuffle: bool = False, seed: int = 0,
                   drop_remainder: bool = False, num_threads: int | None = None,
                   prefetch: int = 8, catalog: ItemCatalog | None = None,
                   first_batch: int = 0) -> grain.IterDataset:
    """A grain IterDataset of joined (RequestBatch, labels) batches, joined in `num_threads`
    background threads (None: `join_threads()`) with `prefetch` batches buffered.
    Order is deterministic (the order of `iterate_batches` for the same seed); it starts
    at batch `first_batch` without joining the ones before (a resumed run).
    `catalog` gives history events their side ids (None: unknown, UNKNOWN_SIDE); one
    built for other fields than features.history_side_fields is a CatalogError, and labels
    that do not fit features.tasks a ValueError (`_check_examples`), before any join."""
    import grain

    if batch_size < 1 or max_len < 1:
        raise ValueError(f"batch_size={batch_size} and max_len={max_len} must be >= 1")
    if first_batch < 0:
        raise ValueError(f"first_batch={first_batch}: must be >= 0")
    if max_len > features.max_history:
        raise ValueError(f"max_len={max_len} exceeds features.max_history={features.max_history}")
    if catalog is not None:             # CatalogError: built for other side fields
        catalog.check_fields(features.history_side_fields)
    _check_examples(examples, features)
    n = len(examples)
    order = np.random.default_rng((seed, 3)).permutation(n) if shuffle else np.arange(n)
    num_batches = n // batch_size if drop_remainder else -(-n // batch_size)
    ds = grain.MapDataset.range(min(first_batch, num_batches), num_batches).map(
        _JoinBatch(examples, order, batch_size, store, features, max_len,
                   catalog or empty_catalog(features.history_side_fields)))
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=join_threads(num_threads),
                                                prefetch_buffer_size=max(1, prefetch)))


def joined_batches(examples: Examples, store: UserLogStore, features: FeaturesConfig, *,
                   batch_size: int, max_len: int, shuffle: bool = False, seed: int = 0,
                   drop_remainder: bool = False, num_threads: int | None = None,
                   prefetch: int = 8, progress: bool = False, desc: str = "join",
                   catalog: ItemCatalog | None = None) -> Iterator[Any]:
    """Iterate `joined_dataset` with a tqdm progress bar (when `progress`). The join's
    threads stop however the iteration ends: exhausted, closed early, or by an error in
    a worker (held in a traceback, that error used to keep them alive)."""
    ds = joined_dataset(examples, store, features, batch_size=batch_size, max_len=max_len,
                        shuffle=shuffle, seed=seed, drop_remainder=drop_remainder,
                        num_threads=num_threads, prefetch=prefetch, catalog=catalog)
    n = len(examples)   # after joined_dataset has checked batch_size
    total = n // batch_size if drop_remainder else -(-n // batch_size)
    it = iter(ds)
    try:
        with tqdm(it, total=total, disable=not progress, desc=desc, unit="batch") as bar:
            yield from bar
    finally:
        it.close()


__all__ = ["join_threads", "join_histories", "pack_histories",
           "joined_dataset", "joined_batches", "StoreHistory"]
