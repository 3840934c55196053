"""Training on examples files joined with a store is training on the in-memory world.

The synthetic world written out as files (`write_synthetic_files`), its logs loaded into a
store: the grain-joined training run must end on bit-identical weights, and evaluation on
either backend must give identical metrics; a resumed run refuses other data.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from arm_jax.checkpoint import build_model
from arm_jax.config import load_tier
from arm_jax.data.synthetic_files import write_synthetic_files
from arm_jax.store import open_store
from arm_jax.store.events_file import load_events_file
from arm_jax.train import loop
from arm_jax.train.file_data import close_file_data, make_eval_data, make_file_data
from arm_jax.train.resume import ResumeError

RUN = ("train.train_requests=40", "train.batch_size=8", "train.eval_requests=16",
       "train.num_users=40", "train.candidates=4", "train.log_every=2")
STEPS = 7    # crosses an epoch (5 batches each): the second epoch's order comes from its seed


@pytest.fixture(scope="module")
def files(tiny_overrides, tmp_path_factory):
    tier = load_tier("small", [*tiny_overrides, *RUN])
    data = loop.make_synthetic_data(tier)
    root = tmp_path_factory.mktemp("files")
    paths = write_synthetic_files(data.world, data.train, data.test, root / "data")
    url = f"lmdb://{root / 'logs'}"
    store = open_store(url)
    load_events_file(store, paths["events"])
    store.close()
    return tier, data, paths, url


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))]


def test_training_from_files_and_a_store_is_bit_identical(files, tmp_path):
    """... and its saved training state resumes only on the same data."""
    tier, synthetic, paths, url = files
    fd = make_file_data(tier.features, paths["train"], url, eval_examples=paths["test"],
                        catalog=paths["catalog"])
    held_out = make_file_data(tier.features, paths["train"], url)    # latest 10% held out
    out = tmp_path / "run"
    try:
        a = loop.train_model(tier, synthetic, steps=STEPS, progress=False)
        b = loop.train_model(tier, fd, steps=STEPS, progress=False, out_dir=out,
                             checkpoint_every=STEPS)
        with pytest.raises(ResumeError, match=r"another run.s state \(data\.catalog: saved \{"):
            loop.train_model(tier, held_out, steps=STEPS, out_dir=out, progress=False,
                             checkpoint_every=STEPS, resume=True)
    finally:
        close_file_data(fd)
        close_file_data(held_out)
    la, lb = _leaves(a.params), _leaves(b.params)
    assert len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))
    assert a.losses == b.losses
    assert a.metrics["overall"] == b.metrics["overall"]
    assert a.metrics["long_history"] == b.metrics["long_history"]


@pytest.mark.parametrize("backend", ["lmdb", "redis"])
def test_evaluation_from_a_store_matches_the_world(files, backend, request):
    tier, synthetic, paths, url = files
    if backend == "redis":       # a database of its own: the default key prefix is used
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/7"
        store = open_store(url)
        store.clear()
        load_events_file(store, paths["events"])
        store.close()
    graphdef, params = nnx.split(build_model("ranker", tier, seed=0))
    want = loop.evaluate_model(graphdef, params, tier, synthetic)
    ed = make_eval_data(tier.features, paths["test"], url, catalog=paths["catalog"])
    try:
        got = loop.evaluate_model(graphdef, params, tier, ed)
    finally:
        close_file_data(ed)
    assert got == want


def test_training_opens_redis_with_the_bulk_read_timeout(files, redis_url):
    """A training join reads a batch of logs per MGET: the store it opens waits
    BULK_TIMEOUT_S for an answer, not the serving default (0.5 s), on the client too."""
    from arm_jax.store import BULK_TIMEOUT_S
    from arm_jax.store.redis_store import RedisStore
    from arm_jax.train.file_data import open_history

    tier, _, paths, _ = files
    assert BULK_TIMEOUT_S > RedisStore(redis_url).timeout_s
    fd = make_eval_data(tier.features, paths["test"], redis_url)
    hist = open_history(tier.features, redis_url)
    try:
        for store in (fd.world.store, hist.store):
            assert isinstance(store, RedisStore) and store.timeout_s == BULK_TIMEOUT_S
            kwargs = store.client.connection_pool.connection_kwargs
            assert kwargs["socket_timeout"] == BULK_TIMEOUT_S
    finally:
        close_file_data(fd)
        hist.store.close()


def _store_copy(paths, root):
    """A fresh LMDB store holding the world's logs, to damage."""
    from arm_jax.store.lmdb_store import LmdbStore

    store = LmdbStore(root / "logs")
    load_events_file(store, paths["events"])
    return store


def test_a_bad_log_of_an_examples_user_stops_before_the_first_step(files, tmp_path):
    """Was found by the first batch that joined the user (a run stopping at step N)."""
    from arm_jax.store import ActionOutOfRange, CorruptValue
    from arm_jax.store import codec

    tier, synthetic, paths, _ = files
    store = _store_copy(paths, tmp_path)
    url = f"lmdb://{tmp_path / 'logs'}"
    both = np.intersect1d(synthetic.train.user_id, synthetic.test.user_id)
    assert both.size >= 2                # users with training and evaluation requests
    user, other = int(both[0]), int(both[1])
    limit = tier.features.num_action_types
    store.put_raw(user, codec.encode([1, 2], [0, limit], [100, 200]))
    store.close()
    with pytest.raises(ActionOutOfRange, match=f"1 problem in the logs of the examples' "
                                               f"users .*user {user}: stored action {limit}"):
        make_file_data(tier.features, paths["train"], url)
    store = open_store(url)              # the run closed the store it opened
    store.put_raw(other, b"\xa7\x01 damaged")
    store.close()
    with pytest.raises(CorruptValue, match=r"2 problems .*\(1 corrupt, 1 action_out_of_range"
                                           r"\).*store check"):
        make_file_data(tier.features, paths["train"], url)
    with pytest.raises(CorruptValue, match="2 problems"):    # evaluation checks its users
        make_eval_data(tier.features, paths["test"], url)


def test_a_store_with_none_of_the_users_warns(files, tmp_path, caplog):
    from arm_jax.store.lmdb_store import LmdbStore

    tier, _, paths, _ = files
    LmdbStore(tmp_path / "empty").close()
    with caplog.at_level("WARNING", logger="arm_jax.train.file_data"):
        ed = make_eval_data(tier.features, paths["test"], f"lmdb://{tmp_path / 'empty'}")
    close_file_data(ed)
    assert "none of the" in caplog.text and "wrong store, or Redis prefix?" in caplog.text


def test_no_progress_also_hides_the_store_check_bar(files, capsys):
    """`arm-jax train --no-progress` showed no training bar but still drew `check store`."""
    import argparse

    from arm_jax.cli.train_cmd import _data

    tier, _, paths, url = files
    for no_progress in (True, False):
        args = argparse.Namespace(examples=str(paths["train"]), history_store=url,
                                  eval_examples=str(paths["test"]), catalog=None,
                                  no_progress=no_progress)
        close_file_data(_data(args, tier, eval_only=False))
        shown = "check store" in capsys.readouterr().err
        assert shown is not no_progress


def test_a_failing_join_worker_leaves_no_grain_thread_running_after_training_stops(
        files, monkeypatch):
    """The training loop read the join with `yield from` and never closed grain's iterator
    when a worker raised: its prefetch thread stayed alive, reading the store, for as long
    as the error was held."""
    import threading
    import time

    from arm_jax.store import CorruptValue

    tier, _, paths, url = files
    fd = make_file_data(tier.features, paths["train"], url, progress=False)
    # the join fails on its first read, before any step: no model is built or compiled
    monkeypatch.setattr(loop.Trainer, "create",
                        classmethod(lambda cls, *a, **k: object()))

    def planted(*args, **kwargs):
        raise CorruptValue("planted")

    monkeypatch.setattr(fd.world.store, "read_many_before", planted)
    try:
        with pytest.raises(CorruptValue, match="planted") as held:
            loop.train_model(tier, fd, steps=5, progress=False)
        deadline = time.monotonic() + 5
        alive = ["?"]
        while alive and time.monotonic() < deadline:
            alive = [t.name for t in threading.enumerate() if t.name.startswith("grain")]
            time.sleep(0.05)
    finally:
        close_file_data(fd)
    assert held.value is not None and alive == [], alive
