"""LmdbStore only: read-only opens, truncated files, forks, reader slots, a full map."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from arm_jax.store import StoreError, StoreUnavailable
from arm_jax.store.lmdb_store import LmdbStore


def test_missing_readonly_lmdb_is_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable, match="data.mdb"):
        LmdbStore(tmp_path / "nope", readonly=True)


_READ_ALL = """
import sys
from arm_jax.store.base import CorruptValue
from arm_jax.store.lmdb_store import LmdbStore
try:
    s = LmdbStore(sys.argv[1], readonly=sys.argv[2] == "ro")
except CorruptValue as e:
    print(e)
    sys.exit(3)
with s.env.begin() as txn:                         # every page a read can touch
    print("read", sum(len(v) for _, v in txn.cursor()), "bytes")
"""


def _read_all_in_a_child(path, mode: str):
    """(exit code, stdout) of a child that opens the LMDB store at `path` and reads every
    value: a SIGBUS kills the child (exit -7), not the test run."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", _READ_ALL, str(path), mode],
                           capture_output=True, text=True, timeout=120, check=False)
    return child.returncode, child.stdout.strip()


def _short_but_whole_lmdb(path) -> None:
    """An LMDB environment whose data.mdb ends before its last page, with every page past
    the end free: pages a transaction allocated and freed again are never written (what
    inserts and deletes in one transaction leave, and `store delete` after loads)."""
    import os
    import random

    import lmdb

    rnd = random.Random(8)
    env = lmdb.open(str(path), map_size=1 << 28)
    live: list[bytes] = []
    for _ in range(6):
        with env.begin(write=True) as txn:
            keys = [rnd.randbytes(8) for _ in range(rnd.randint(1, 2000))]
            for k in keys:
                txn.put(k, rnd.randbytes(rnd.choice([10, 100, 1000, 5000])))
            kept = rnd.randint(0, len(keys))
            for k in keys[:kept]:
                txn.delete(k)
            live += keys[kept:]
            rnd.shuffle(live)
            for k in live[:rnd.randint(0, len(live)) // 2]:
                txn.delete(k)
            live = live[len(live) // 4:]
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if os.path.getsize(path / "data.mdb") < need:
            break
    env.close()
    assert os.path.getsize(path / "data.mdb") < need, "no short file: try another seed"


def test_a_truncated_lmdb_file_is_corrupt_not_a_bus_error(tmp_path):
    """A data.mdb cut short (a copy stopped part way) killed every reader and writer with
    SIGBUS (exit 135 from the CLI, no message) on the first read of a page past its end;
    now opening it is CorruptValue naming the file, the size its pages need and its size.
    A file that ends early with only free pages past its end is whole, and opens."""
    import shutil

    path = tmp_path / "logs"
    rng = np.random.default_rng(0)
    with LmdbStore(path) as s:
        s.append_many(rng.integers(0, 300, 30_000), rng.integers(0, 10**6, 30_000),
                      np.ones(30_000, int), rng.integers(0, 10**6, 30_000))
    size = (path / "data.mdb").stat().st_size
    for cut in (8192, size // 2 + 100):
        bad = tmp_path / f"cut{cut}"
        shutil.copytree(path, bad)
        with open(bad / "data.mdb", "r+b") as f:
            f.truncate(cut)
        for mode in ("ro", "rw"):
            rc, out = _read_all_in_a_child(bad, mode)
            assert rc == 3, (mode, rc, out)
            assert out == (f"lmdb://{bad}: {bad / 'data.mdb'} is truncated: {cut} bytes, its "
                           f"pages need {size} (a copy cut short?); copy the store again, "
                           "or load it from a backup"), out
    short = tmp_path / "short"
    _short_but_whole_lmdb(short)
    for mode in ("ro", "rw"):
        rc, out = _read_all_in_a_child(short, mode)
        assert rc == 0 and out.startswith("read "), (mode, rc, out)


def test_new_lmdb_store_creates_its_parents_and_an_impossible_path_is_typed(tmp_path):
    with LmdbStore(tmp_path / "a" / "b" / "logs", map_size=1 << 24) as s:
        s.append(1, [5], [0], [10])
    assert (tmp_path / "a" / "b" / "logs" / "data.mdb").exists()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot open LMDB store") as e:
        LmdbStore(tmp_path / "file" / "logs")
    assert str(tmp_path / "file" / "logs") in str(e.value)


def test_readonly_lmdb_reads_and_refuses_writes(tmp_path):
    writer = LmdbStore(tmp_path / "ro", map_size=1 << 24)
    writer.append(1, [5, 6], [0, 1], [10, 20])
    writer.close()
    reader = LmdbStore(tmp_path / "ro", readonly=True)
    assert reader.read(1).item.tolist() == [5, 6]
    for write in (lambda: reader.append(1, [7], [0], [30]),
                  lambda: reader.append_many([1], [7], [0], [30]),
                  lambda: reader.put_raw(1, b"x")):
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert reader.read(1).item.tolist() == [5, 6]
    # one environment per path and process: a writer cannot take over the read-only one
    with pytest.raises(StoreUnavailable, match="already open read-only"):
        LmdbStore(tmp_path / "ro")
    reader.close()
    LmdbStore(tmp_path / "ro").close()             # once it is closed, it can


def test_readonly_lmdb_shares_an_open_writer(tmp_path):
    writer = LmdbStore(tmp_path / "rw", map_size=1 << 24)
    writer.append(2, [1], [0], [10])
    reader = LmdbStore(tmp_path / "rw", readonly=True)
    writer.append(2, [2], [1], [20])               # the reader sees appends made after it opened
    assert reader.read(2).item.tolist() == [1, 2]
    with pytest.raises(StoreError, match="read-only"):   # and still refuses to write
        reader.append(2, [3], [0], [30])
    reader.close()
    writer.append(2, [3], [0], [30])               # closing the reader left the writer open
    assert writer.read(2).item.tolist() == [1, 2, 3]
    writer.close()


def test_store_survives_pickling(tmp_path):
    import pickle

    s = LmdbStore(tmp_path / "p", map_size=1 << 24)
    s.append(1, [1], [0], [5])
    t = pickle.loads(pickle.dumps(s))
    assert t.read(1).item.tolist() == [1]


def _open_in_child(path, queue):
    try:
        LmdbStore(path).read(1)
        queue.put("opened")
    except StoreUnavailable as e:
        queue.put(str(e))


def test_a_forked_child_is_told_to_open_the_store_after_the_fork(tmp_path):
    """py-lmdb refuses an environment the parent holds open; the error says what to do."""
    import multiprocessing as mp

    parent = LmdbStore(tmp_path / "logs")
    parent.append(1, 2, 0, 10)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_open_in_child, args=(str(tmp_path / "logs"), queue))
    child.start()
    child.join(60)
    got = queue.get(timeout=10)
    assert "open the store after the fork, or use spawned workers" in got, got
    assert parent.read(1).item.tolist() == [2]          # the parent's store is unharmed
    parent.close()


def test_a_dropped_lmdb_store_releases_its_environment(tmp_path):
    """Dropped without close(), its directory deleted, a store made again at the path must
    be a new, empty store (it reused the old environment, reading deleted data)."""
    import gc
    import shutil

    path = tmp_path / "logs"
    store = LmdbStore(path)
    store.append(1, 111, 0, 100)
    del store
    gc.collect()
    shutil.rmtree(path)
    again = LmdbStore(path)
    assert len(again.read(1)) == 0 and again.num_users() == 0
    again.append(2, 222, 0, 100)
    again.close()
    assert (path / "data.mdb").exists() and LmdbStore(path, readonly=True).num_users() == 1


def test_a_full_lmdb_store_is_a_typed_error_and_keeps_what_it_had(tmp_path):
    """Past map_size LMDB raises lmdb.MapFullError, which no caller catches (`store load`
    printed a traceback, without the events already written): a StoreError naming the
    store and its map_size; the failed append wrote nothing."""
    from arm_jax.store.events_file import load_events

    store = LmdbStore(tmp_path / "small", map_size=1 << 20)
    store.append(1, [5], [0], [100])
    n = 200_000                                     # 1.8 MB of events: past 1 MB
    with pytest.raises(StoreError, match=r"lmdb://.*small: full.*map_size=1048576"):
        store.append(2, np.arange(n), np.zeros(n, int), np.arange(n))
    with pytest.raises(StoreError, match=r"full.*\(after 0 of 200000 events were written"):
        load_events(store, {"user_id": np.full(n, 3), "item": np.arange(n),
                            "action": np.zeros(n, np.int64), "ts": np.arange(n)})
    assert store.read(1).item.tolist() == [5] and store.num_users() == 1
    store.close()


def test_lmdb_every_reader_slot_taken_is_store_unavailable(tmp_path):
    """More threads reading at once than max_readers raised lmdb.ReadersFullError, an
    exception of the lmdb package callers cannot know to catch."""
    from arm_jax.store.base import StoreUnavailable

    store = LmdbStore(tmp_path / "logs", map_size=1 << 22, max_readers=1)
    store.append(1, [2], [0], [10])
    holding, release = threading.Event(), threading.Event()

    def hold_a_reader_slot():
        with store.env.begin():
            holding.set()
            release.wait(10)
    t = threading.Thread(target=hold_a_reader_slot)
    t.start()
    try:
        assert holding.wait(10)
        with pytest.raises(StoreUnavailable, match=r"reader slot .*max_readers=1"):
            store.read(1)
    finally:
        release.set()
        t.join()
    assert store.read(1).item.tolist() == [2]          # the slot is free again
    store.close()


_GC_IN_OPEN = r"""
import gc, sys
import arm_jax.store.lmdb_store as ls
from arm_jax.store.lmdb_store import LmdbStore

root = sys.argv[1]
dropped = LmdbStore(root + "/a", map_size=1 << 24)
dropped.append(1, 2, 0, 10)
dropped.cycle = dropped      # reachable only through a cycle: a traceback, a closure
del dropped
gc.disable()                 # the collector runs only where the patch below runs it
real_open = ls.lmdb.open


def open_and_collect(*args, **kwargs):
    gc.collect()             # as an allocation in `_open` may trigger it
    return real_open(*args, **kwargs)


ls.lmdb.open = open_and_collect
other = LmdbStore(root + "/b", map_size=1 << 24)
other.append(1, 2, 0, 10)
other.close()
print("opened")
"""


def test_a_dropped_store_collected_while_another_opens_deadlocks_nothing(tmp_path):
    """The finalizer of a store dropped without close() took the environments' lock: a
    garbage collection inside `_open` (which holds it) deadlocked that thread, and every
    later open or close. Run in a subprocess, so a deadlock fails the test, not the run."""
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[3])
    try:
        r = subprocess.run([sys.executable, "-c", _GC_IN_OPEN, str(tmp_path)], cwd=repo,
                           capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlocked: opening a store while a dropped one was collected")
    assert r.returncode == 0 and "opened" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("arg, value, words", [
    ("map_size", -1, "map_size=-1: must be >= 1"),
    ("map_size", 0, "map_size=0: must be >= 1"),
    ("map_size", 1.5, "map_size=1.5: must be an integer >= 1"),
    ("map_size", "64G", "map_size='64G': must be an integer >= 1"),
    ("max_readers", -1, "max_readers=-1: must be >= 1"),
])
def test_lmdb_sizes_must_be_positive_integers(tmp_path, arg, value, words):
    """lmdb.open raised a bare OverflowError for map_size=-1 (TypeError for 1.5): now a
    ValueError naming the argument, before anything is created."""
    with pytest.raises(ValueError, match=re.escape(words)):
        LmdbStore(tmp_path / "s", **{arg: value})
    assert not (tmp_path / "s").exists()
    with LmdbStore(tmp_path / "ok", map_size=np.int64(1 << 20)) as s:   # numpy ints: fine
        assert s.map_size == 1 << 20 and type(s.map_size) is int
