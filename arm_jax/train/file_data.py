"""Training data from files: examples (.npz / .parquet) joined with a user-log store, as in
production.

`arm-jax train --examples train.npz --history-store lmdb:///logs --catalog catalog.npz`
trains on your own logged requests: the examples hold no histories; each is joined, point
in time, with the user's events strictly before its timestamp from the store (grain
background threads), and the events' side ids from the item catalogue. Everything is
opened and checked before the first step, so a bad file stops the run with one line:
the store too, whose logs for the examples' users are each read once (`check_store`) so
a damaged log or an action beyond the tier's stops the run before step 0, not at the
first batch that joins it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from arm_jax.config import FeaturesConfig
from arm_jax.data.catalog import ItemCatalog
from arm_jax.data.examples_file import holdout_latest, load_examples
from arm_jax.data.join import StoreHistory
from arm_jax.data.synthetic import Examples
from arm_jax.store import open_store
from arm_jax.store.check import check_store, refuse_problems
from arm_jax.train.loop import TrainingData

log = logging.getLogger(__name__)

HOLDOUT = 0.1    # without eval examples: the latest 10% of the requests by time


def make_file_data(features: FeaturesConfig, examples: str | Path, history_store: str, *,
                   eval_examples: str | Path | None = None, catalog: str | Path | None = None,
                   holdout: float = HOLDOUT, progress: bool = True) -> TrainingData:
    """Load and check the examples, open the store read-only, load the catalogue.

    Without `eval_examples` the latest `holdout` of `examples` by timestamp is held out
    for evaluation. The caller closes the store when done (`close_file_data`).
    `progress=False` hides the bar of the users' log check.
    """
    train = load_examples(examples, features)
    if eval_examples is None:
        train, test = holdout_latest(train, holdout)
    else:
        test = load_examples(eval_examples, features)
    identity = {"examples": _file_id(examples),
                "eval_examples": None if eval_examples is None else _file_id(eval_examples),
                "holdout": None if eval_examples is not None else holdout,
                "catalog": None if catalog is None else _file_id(catalog),
                "history_store": history_store}
    history = open_history(features, history_store, catalog)
    _check_users_logs(history, train, test, progress=progress)
    return TrainingData(history, train, test, identity=identity)


def make_eval_data(features: FeaturesConfig, examples: str | Path, history_store: str, *,
                   catalog: str | Path | None = None, progress: bool = True) -> TrainingData:
    """Held-out requests only (`arm-jax eval --examples`): every example is evaluated."""
    test = load_examples(examples, features)
    history = open_history(features, history_store, catalog)
    _check_users_logs(history, test, progress=progress)
    return TrainingData(history, test.take(slice(0, 0)), test)


def open_history(features: FeaturesConfig, history_store: str,
                 catalog: str | Path | None = None) -> StoreHistory:
    """The store (opened read-only for batch reads: Redis waits BULK_TIMEOUT_S, not the
    serving default; checked to answer) and the catalogue, as a history source."""
    cat = None
    if catalog is not None:
        cat = ItemCatalog.load(catalog)
        cat.check_fields(features.history_side_fields)
    store = open_store(history_store, readonly=True, bulk=True)
    try:
        store.check()
    except Exception:
        store.close()
        raise
    return StoreHistory(store, features, cat)


def _check_users_logs(history: StoreHistory, *parts: Examples, progress: bool = True) -> None:
    """Read the log of every user of `parts` once: a problem `check_store` finds stops
    here, before the first step (the store closed); a store holding no event of any of
    these users (a wrong path or Redis prefix?) is a warning."""
    from tqdm import tqdm

    users = np.unique(np.concatenate([p.user_id for p in parts]))
    store = history.store
    try:
        with tqdm(total=int(users.size), unit="user", desc="check store",
                  leave=False, disable=not progress) as bar:
            report = check_store(store, num_action_types=history.features.num_action_types,
                                 users=users, progress=bar.update)
        refuse_problems(report, "the examples' users",
                        f"`arm-jax store check {report.url} --tier TIER` lists every one")
    except BaseException:
        store.close()
        raise
    if report.users and report.without_log == report.users:
        log.warning("%s: none of the %d users of the examples has a stored event: every "
                    "example trains without history (the wrong store, or Redis prefix?)",
                    report.url, report.users)


def close_file_data(data: TrainingData) -> None:
    """Close the store a `make_file_data` result holds (a no-op for synthetic data)."""
    if isinstance(data.world, StoreHistory):
        data.world.store.close()


def _file_id(path: str | Path) -> dict[str, Any]:
    """Name and content hash: a resumed run must read the same bytes, wherever they moved."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"name": Path(path).name, "sha256": h.hexdigest()}


__all__ = ["make_file_data", "make_eval_data", "open_history", "close_file_data", "HOLDOUT"]
