"""RedisStore only (a real server): compaction, prefixes, key types, settings."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.store import CorruptValue, StoreUnavailable
from arm_jax.store.redis_store import RedisStore


def test_unreachable_redis_is_a_typed_error():
    from arm_jax.ports import free_port

    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable, match="MGET"):
        s.read(1)


def test_redis_compact_keeps_an_append_that_lands_mid_rewrite(redis_url, monkeypatch):
    """WATCH/MULTI: an APPEND between compact's read and its write aborts the write; the
    key is read again, so the late event survives."""
    import uuid

    from arm_jax.store import codec

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    other = RedisStore(redis_url, prefix=store.prefix)
    for ts in (10, 20):
        store.append(1, ts, 0, ts)
    real_decode, calls = codec.decode, []

    def decode_then_append(value, **kw):
        calls.append(1)
        if len(calls) == 1:                 # another writer appends right now
            other.append(1, 99, 1, 15)
        return real_decode(value, **kw)

    monkeypatch.setattr(codec, "decode", decode_then_append)
    assert store.compact() == 1 and len(calls) == 2          # aborted once, then redone
    monkeypatch.undo()
    assert store.read(1).ts.tolist() == [10, 15, 20]
    assert codec.num_chunks(store.client.get(store.key(1))) == 1
    store.clear()
    store.close()
    other.close()


def test_redis_write_path_compaction_counts_every_kind_of_append(redis_url, caplog):
    """append, append_many and append_batch all count their chunks; off with None; a
    rewrite that fails (a corrupt value) is logged and the appends stand."""
    import uuid

    from arm_jax.store import codec

    def chunks(s, user):
        return codec.num_chunks(s.client.get(s.key(user)))

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", compact_every=4)
    off = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", compact_every=None)
    for i in range(6):
        store.append(1, i, 0, 100 + i)
        store.append_many([2, 3], [i, i], [0, 0], [100 + i, 200 + i])
        store.append_batch(f"b{i}", [3], [i], [1], [300 + i])
        off.append(1, i, 0, 100 + i)
    assert chunks(store, 1) == 1 + 6 % 4 and chunks(store, 2) == 1 + 6 % 4
    assert chunks(store, 3) == 1 + 12 % 4                 # 12 appends: rewritten at 4, 8, 12
    assert store.read(3).ts.tolist() == sorted([200 + i for i in range(6)] +
                                               [300 + i for i in range(6)])
    assert chunks(off, 1) == 6 and store.num_users() == 3
    store.put_raw(5, b"\xa7\x01garbage")
    with caplog.at_level("WARNING", logger="arm_jax.store.redis_store"):
        for i in range(4):
            store.append(5, i, 0, 10 + i)                # the 4th triggers a failed rewrite
    assert "compacting user 5 after its append failed" in caplog.text
    with pytest.raises(CorruptValue):
        store.read(5)
    with pytest.raises(ValueError, match="compact_every=1: must be >= 2"):
        RedisStore(redis_url, compact_every=1)
    for s in (store, off):
        s.clear()
        s.close()


def test_redis_prefix_with_glob_characters_lists_its_users(redis_url):
    """SCAN's pattern is a glob: the prefix is escaped, or `logs[eu]:` lists nobody."""
    import uuid

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:6]}[eu]*?:")
    store.append_many([5, 6], [1, 2], [0, 0], [10, 20])
    assert sorted(store.user_ids()) == [5, 6] and store.num_users() == 2
    assert store.clear() >= 2 and store.num_users() == 0
    store.close()


def test_redis_multi_users_must_be_positive(redis_url):
    with pytest.raises(ValueError, match="multi_users=0"):
        RedisStore(redis_url, multi_users=0)


@pytest.mark.parametrize("kw", [{"timeout_s": -1.0}, {"timeout_s": float("nan")},
                                {"timeout_s": 0}, {"timeout_s": float("inf")},
                                {"timeout_s": "1"}, {"timeout_s": True},
                                {"connect_timeout_s": -1.0}, {"connect_timeout_s": 0.0}])
def test_redis_timeouts_must_be_positive_seconds(redis_url, kw):
    """timeout_s=-1 or nan was accepted, then redis-py's bare "Timeout value out of range"
    at the first command named no argument; timeout_s=0 made every read StoreUnavailable."""
    (name, value), = kw.items()
    with pytest.raises(ValueError, match=f"{name}={value!r}: must be a number of seconds > 0"):
        RedisStore(redis_url, **kw)
    assert RedisStore(redis_url, timeout_s=1, connect_timeout_s=np.float32(0.5)).check()


def test_redis_a_non_ascii_prefix_lists_its_users(redis_url, tmp_path):
    """Keys come back as bytes: the prefix was cut off by its length in characters, so a
    prefix such as "журнал:" listed no user (num_users 0, compact and export skipped
    every log)."""
    import uuid

    from arm_jax.store import codec
    from arm_jax.store.events_file import export_events, read_events_file

    store = RedisStore(redis_url, prefix=f"журнал{uuid.uuid4().hex[:6]}:", compact_every=None)
    store.append_many([5, 6], [1, 2], [0, 0], [10, 20])
    store.append(5, 3, 1, 30)
    assert sorted(store.user_ids()) == [5, 6] and store.num_users() == 2
    assert store.compact() == 1 and codec.num_chunks(store.client.get(store.key(5))) == 1
    assert export_events(store, tmp_path / "all.npz") == {"events": 3, "users": 2}
    assert read_events_file(tmp_path / "all.npz")["item"].tolist() in ([1, 3, 2], [2, 1, 3])
    store.clear()
    store.close()


def test_redis_a_key_of_another_type_is_named_without_the_chunk_bytes(redis_url):
    """A failed pipeline command was shown with all its arguments: the APPEND's binary
    chunk, unreadable in a one-line message. Now its name and key; reads name it too."""
    import uuid

    from arm_jax.store.base import StoreError

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    store.client.rpush(store.key(5), "not a log")
    with pytest.raises(StoreError) as e:
        store.append(5, [1, 2], [0, 1], [10, 11])
    message = str(e.value)
    assert f"(APPEND {store.key(5)}): WRONGTYPE" in message, message
    assert message.isprintable() and len(message) < 200, message
    # append_many checks its keys first (its pipeline would append the other users)
    with pytest.raises(StoreError, match=f"key {store.key(5)} holds a list, not a user log"):
        store.append_many([5, 6], [1, 2], [0, 1], [10, 11])
    assert len(store.read(6)) == 0
    # a batch checks its keys first: a MULTI would have appended user 6 and recorded the
    # batch despite user 5's error, so a retry would skip the batch and never write user 5
    with pytest.raises(StoreError, match=f"key {store.key(5)} holds a list, not a user log"):
        store.append_batch("b", [5, 6], [1, 2], [0, 1], [10, 11])
    assert not store.batch_applied("b") and len(store.read(6)) == 0
    # MGET answers nil for a key of another type, as for a missing one: a read named it
    # "no events", dropping the user's history without a word
    for read in (lambda: store.read(5), lambda: store.read_many([6, 5]),
                 lambda: store.read_many_before([5], [100], max_len=4)):
        with pytest.raises(CorruptValue, match=f"{store.key(5)}: holds a list, not a user "):
            read()
    assert [len(e) for e in store.read_many([6, 7])] == [0, 0]
    store.client.delete(store.key(5))
    assert store.append_batch("b", [5, 6], [1, 2], [0, 1], [10, 11]) is True
    assert len(store.read(5)) == len(store.read(6)) == 1
    store.clear()
    store.close()


def test_redis_append_many_refused_by_one_key_writes_no_other_user(redis_url):
    """append_many's pipeline does not stop at a failed APPEND: with one user's key of
    another type, the others' events landed while load_events said '0 of 3 events were
    written', so the retry it invites stored them twice. Keys are now checked first."""
    import uuid

    from arm_jax.store.base import StoreError
    from arm_jax.store.events_file import load_events

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        store.client.rpush(store.key(5), "not a log")       # another program's key
        events = {c: np.asarray(v, np.int64) for c, v in (
            ("user_id", [4, 5, 6]), ("item", [1, 2, 3]), ("action", [0, 0, 0]),
            ("ts", [10, 11, 12]))}
        with pytest.raises(StoreError, match=r"after 0 of 3 events were written"):
            load_events(store, events, once=False)
        assert [len(e) for e in store.read_many([4, 6])] == [0, 0]   # as the message says
        store.client.delete(store.key(5))
        load_events(store, events, once=False)                      # the retry it invites
        assert [e.ts.tolist() for e in store.read_many([4, 5, 6])] == [[10], [11], [12]]
    finally:
        store.clear()
        store.close()


@pytest.mark.parametrize("prefix", [None, 5, b"armjax:log:"])
def test_redis_prefix_must_be_a_string(redis_url, prefix):
    """prefix=None was taken: every key became 'None<user>' and reads found nothing."""
    with pytest.raises(ValueError, match=f"prefix={prefix!r}: must be a string"):
        RedisStore(redis_url, prefix=prefix)


def test_redis_compact_names_a_key_of_another_type(redis_url, capsys):
    """A list under the prefix failed compact() with redis's bare 'WRONGTYPE Operation
    against a key holding the wrong kind of value', naming no key; `arm-jax store compact`
    printed that. Now CorruptValue naming the key, one line from the CLI, exit 2."""
    from arm_jax.cli.main import main

    with RedisStore(redis_url) as store:              # the CLI's default prefix
        store.clear()
        try:
            store.append(6, [1], [0], [10])
            store.client.lpush(store.key(7), "not a log")   # another program's key
            with pytest.raises(CorruptValue, match=f"{store.key(7)}: holds a list, not a "
                                                   "user log"):
                store.compact()
            capsys.readouterr()
            assert main(["store", "compact", redis_url]) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith("arm-jax: error: ") and "\n" not in err, err
            assert f"{store.key(7)}: holds a list, not a user log" in err, err
            assert store.read(6).ts.tolist() == [10]
        finally:
            store.clear()
