"""Event files into a store: every row checked before the first write, on both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arm_jax.store import InvalidEvents, StoreUnavailable
from arm_jax.store.events_file import (export_events, load_events, load_events_file,
                                       read_events_file, write_events_csv)


def _events(n=300, users=12, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, users, n), rng.integers(0, 10**6, n), rng.integers(0, 4, n),
            rng.integers(10**9, 2 * 10**9, n))


def _assert_store_holds(store, user, item, action, ts):
    for u in np.unique(user):
        sel = user == u
        order = np.lexsort((item[sel], ts[sel]))
        ev = store.read(int(u))
        assert ev.ts.tolist() == ts[sel][order].tolist()
        assert sorted(zip(ev.ts.tolist(), ev.item.tolist(), ev.action.tolist())) == sorted(
            zip(ts[sel].tolist(), item[sel].tolist(), action[sel].tolist()))


def test_csv_loads_in_chunks_into_each_backend(store, tmp_path):
    user, item, action, ts = _events()
    path = write_events_csv(tmp_path / "ev.csv", user, item, action, ts)
    seen = []
    out = load_events_file(store, path, chunk_events=7, progress=seen.append)
    assert out == {"events": 300, "users": len(np.unique(user)), "skipped": 0}
    assert sum(seen) == 300 and max(seen) == 7          # 43 chunks, users split across them
    _assert_store_holds(store, user, item, action, ts)


def test_csv_columns_in_any_order_with_extras_and_blank_lines(tmp_path):
    path = tmp_path / "ev.csv"
    path.write_text("ts,note,item,user_id,action\n100,a,5,1,0\n\n200,b,6,2,3\n")
    ev = read_events_file(path)
    assert ev["user_id"].tolist() == [1, 2] and ev["item"].tolist() == [5, 6]
    assert ev["action"].tolist() == [0, 3] and ev["ts"].tolist() == [100, 200]


def test_npz_matches_csv(tmp_path):
    user, item, action, ts = _events(n=50, seed=1)
    np.savez(tmp_path / "ev.npz", user_id=user, item=item, action=action, ts=ts)
    a = read_events_file(tmp_path / "ev.npz")
    b = read_events_file(write_events_csv(tmp_path / "ev.csv", user, item, action, ts))
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_parquet_matches_npz_and_bad_parquet_is_named(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    user, item, action, ts = _events(n=50, seed=2)
    np.savez(tmp_path / "ev.npz", user_id=user, item=item, action=action, ts=ts)
    pq.write_table(pa.table({"ts": ts, "note": [str(i) for i in range(50)], "user_id": user,
                             "item": item, "action": action.astype(np.int8)}),
                   tmp_path / "ev.parquet")          # any column order, extras, narrow ints
    a, b = read_events_file(tmp_path / "ev.parquet"), read_events_file(tmp_path / "ev.npz")
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    pq.write_table(pa.table({"user_id": user, "item": item, "action": action}),
                   tmp_path / "no_ts.parquet")
    with pytest.raises(InvalidEvents, match=r"no_ts.parquet: missing columns \['ts'\]"):
        read_events_file(tmp_path / "no_ts.parquet")
    pq.write_table(pa.table({"user_id": user, "item": item.astype(float), "action": action,
                             "ts": ts}), tmp_path / "float.parquet")
    with pytest.raises(InvalidEvents, match="item must be an integer column"):
        read_events_file(tmp_path / "float.parquet")
    pq.write_table(pa.table({"user_id": pa.array([1, None]), "item": [1, 2], "action": [0, 1],
                             "ts": [5, 6]}), tmp_path / "null.parquet")
    with pytest.raises(InvalidEvents, match="user_id: 1 null values .* at row 1"):
        read_events_file(tmp_path / "null.parquet")
    stamps = pa.array(ts * 1_000_000, pa.timestamp("us"))       # a warehouse's time column
    pq.write_table(pa.table({"user_id": user, "item": item, "action": action, "ts": stamps}),
                   tmp_path / "stamps.parquet")
    assert read_events_file(tmp_path / "stamps.parquet")["ts"].tolist() == b["ts"].tolist()
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidEvents, match="junk.parquet"):
        read_events_file(tmp_path / "junk.parquet")


def test_header_only_is_an_empty_log(tmp_path):
    path = tmp_path / "ev.csv"
    path.write_text("user_id,item,action,ts\n")
    assert all(v.size == 0 for v in read_events_file(path).values())


BAD = [
    ("user_id,item,action,ts\n1,2,3,4\n5,x,7,8\n", "line 3, item: expected an integer, got 'x'"),
    ("user_id,item,action,ts\n1,2,3,4\n5,6,,8\n", "line 3, action: expected an integer, got ''"),
    ("user_id,item,action,ts\n1,2,3,4\n5,6,7.5,8\n", "line 3, action"),
    ("user_id,item,action,ts\n1,2,3,4\n5,6,7\n", "line 3: 3 fields, the header has 4"),
    ("user_id,item,action,ts\n1,2,3,4\n5,6,1,1,700,000,100\n",      # thousands separators
     "line 3: 7 fields, the header has 4 (a comma inside a value must be quoted)"),
    ("user_id,item,ts\n1,2,3\n", "header lacks ['action']"),
    ("", "empty"),
    ("user_id,item,action,ts\n1,2,300,4\n", "action: must be in [0, 255]"),
    ("user_id,item,action,ts\n1,-2,3,4\n", "item: ids must be in"),
    ("user_id,item,action,ts\n-1,2,3,4\n", "user_id: must be in [0, 2^63), got -1"),
    ("user_id,item,action,ts\n1,2,3,-4\n", "ts=-4: must be in [0, 2^32"),
    ("user_id,item,action,ts\n1,2,3,4\n5,6,1,1700000000000\n",
     "ts=1700000000000: must be in [0, 2^32 = 4294967296): unix seconds expected "
     "(milliseconds?)"),
    ("user_id,item,action,ts\n1,2,3,4\n99999999999999999999,6,1,8\n",
     "line 3, user_id: 99999999999999999999 is out of the int64 range"),
]


@pytest.mark.parametrize("text,words", BAD, ids=[w.split(":")[0][:24] for _, w in BAD])
def test_bad_rows_are_named_and_nothing_is_written(store, tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    good = "".join(text.splitlines(keepends=True)[:2]) if text.count("\n") > 2 else None
    with pytest.raises(InvalidEvents, match=f"{path}") as e:
        load_events_file(store, path)
    assert words in str(e.value)
    assert len(store.read(1)) == 0 and len(store.read(5)) == 0   # not even the good rows
    if good is not None:     # the same file without its bad line loads
        path.write_text(good)
        assert load_events_file(store, path)["events"] == 1


def test_one_millisecond_row_after_many_users_writes_nothing(store, tmp_path):
    """The whole file is checked before the first write: a ms ts in the last row used to
    pass the file check and fail in the codec after earlier chunks / Redis pipelines (2000
    users each) were written."""
    n = 2101
    user = np.r_[np.arange(n), n - 1]
    ts = np.r_[np.full(n, 1_700_000_000), 1_700_000_000_000]
    path = write_events_csv(tmp_path / "ev.csv", user, np.ones(n + 1, int),
                            np.ones(n + 1, int), ts)
    with pytest.raises(InvalidEvents, match=r"ts=1700000000000: .*\(milliseconds\?\)"):
        load_events_file(store, path, chunk_events=1000)
    assert store.num_users() == 0


def test_npz_uint64_ids_are_checked_before_the_cast(tmp_path):
    np.savez(tmp_path / "u.npz", user_id=np.array([2**63], np.uint64), item=[1], action=[1],
             ts=[5])
    with pytest.raises(InvalidEvents, match=r"user_id: must be in \[0, 2\^63\), got 9223"):
        read_events_file(tmp_path / "u.npz")
    np.savez(tmp_path / "t.npz", user_id=[1], item=[1], action=[1],
             ts=np.array([2**64 - 1], np.uint64))
    with pytest.raises(InvalidEvents, match="ts=18446744073709551615"):
        read_events_file(tmp_path / "t.npz")


def test_a_duration_ts_is_named_not_a_type_error(tmp_path):
    """numpy counts timedelta64 as an integer dtype; its min() is no int."""
    np.savez(tmp_path / "d.npz", user_id=[1], item=[1], action=[1],
             ts=np.array([1_700_000_000], "timedelta64[s]"))
    with pytest.raises(InvalidEvents, match="ts: expected integers, got dtype timedelta64"):
        read_events_file(tmp_path / "d.npz")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": [1], "item": [1], "action": [1],
                             "ts": pa.array([1_700_000_000], pa.duration("s"))}),
                   tmp_path / "d.parquet")
    with pytest.raises(InvalidEvents, match="d.parquet: ts: expected integers, got dtype "
                                            "timedelta64"):
        read_events_file(tmp_path / "d.parquet")


@pytest.mark.parametrize("text", [
    'user_id,note,item,action,ts\n1,"hello, world",5,1,100\n',     # comma in an ignored column
    'user_id,item,action,ts\n"1","5","1","100"\n',                  # quoted integers
    '\ufeffuser_id,item,action,ts\n1,5,1,100\n',                    # UTF-8 byte order mark
    '\ufeffuser_id,note,item,action,ts\r\n1,"a ""b"", c",5,1,100\r\n\r\n',
], ids=["quoted-comma", "quoted-ints", "bom", "bom-quotes-crlf"])
def test_csv_quotes_and_byte_order_mark(tmp_path, text):
    path = tmp_path / "ev.csv"
    path.write_text(text, encoding="utf-8", newline="")
    ev = read_events_file(path)
    assert {k: v.tolist() for k, v in ev.items()} == {
        "user_id": [1], "item": [5], "action": [1], "ts": [100]}


def test_bad_npz_and_missing_file(tmp_path):
    np.savez(tmp_path / "a.npz", user_id=[1], item=[2], action=[3])
    with pytest.raises(InvalidEvents, match=r"missing arrays \['ts'\]"):
        read_events_file(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", user_id=[1], item=[2.5], action=[3], ts=[4])
    with pytest.raises(InvalidEvents, match="item must be a 1-d integer array"):
        read_events_file(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidEvents, match="not a readable .npz"):
        read_events_file(tmp_path / "c.npz")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(InvalidEvents, match="expected .csv, .npz or .parquet"):
        read_events_file(tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_events_file(tmp_path / "nope.csv")


class _TimesOutAfterSecondChunk:
    """A store whose second batch is applied on the server but answered by a timeout:
    the at-least-once case a retry must not turn into duplicates."""

    def __init__(self, store):
        self.store, self.calls = store, 0

    def append_batch(self, *args):
        self.calls += 1
        applied = self.store.append_batch(*args)
        if self.calls == 2:
            raise StoreUnavailable("redis://x: EXEC timed out")
        return applied


def test_a_load_that_failed_after_writing_resumes_without_duplicates(store):
    user, item, action, ts = _events(n=20)
    ev = {"user_id": user, "item": item, "action": action, "ts": ts}
    with pytest.raises(StoreUnavailable, match="after 8 of 20 events were written; run the "
                                               "load again"):
        load_events(_TimesOutAfterSecondChunk(store), ev, chunk_events=8)
    out = load_events(store, ev, chunk_events=8)
    assert out == {"events": 20, "users": len(np.unique(user)), "skipped": 16}
    _assert_store_holds(store, user, item, action, ts)
    with pytest.raises(ValueError, match="chunk_events=0"):
        load_events(store, ev, chunk_events=0)


def test_the_same_events_again_in_any_format_or_order_are_skipped(store, tmp_path):
    user, item, action, ts = _events(n=60, seed=3)
    csv = write_events_csv(tmp_path / "ev.csv", user, item, action, ts)
    assert load_events_file(store, csv, chunk_events=25)["skipped"] == 0
    perm = np.random.default_rng(0).permutation(60)
    np.savez(tmp_path / "ev.npz", user_id=user[perm], item=item[perm], action=action[perm],
             ts=ts[perm])
    assert load_events_file(store, tmp_path / "ev.npz", chunk_events=25)["skipped"] == 60
    _assert_store_holds(store, user, item, action, ts)
    assert load_events_file(store, csv, chunk_events=25, once=False)["skipped"] == 0
    double = [np.concatenate([a, a]) for a in (user, item, action, ts)]
    _assert_store_holds(store, *double)                  # once=False appends regardless


@pytest.mark.parametrize("suffix", [".csv", ".npz", ".parquet"])
def test_export_then_load_moves_a_store_between_backends(tmp_path, redis_url, suffix):
    """LMDB -> file -> Redis: the same logs; the exported file reads like any events file."""
    import uuid

    from arm_jax.store.lmdb_store import LmdbStore
    from arm_jax.store.redis_store import RedisStore

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    user, item, action, ts = _events(n=120, users=9, seed=4)
    with LmdbStore(tmp_path / "logs") as src:
        load_events(src, {"user_id": user, "item": item, "action": action, "ts": ts})
        seen = []
        out = export_events(src, tmp_path / f"out{suffix}", users_per_read=4,
                            progress=seen.append)
    assert out == {"events": 120, "users": len(np.unique(user))} and sum(seen) == out["users"]
    dst = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        assert load_events_file(dst, tmp_path / f"out{suffix}")["events"] == 120
        _assert_store_holds(dst, user, item, action, ts)
    finally:
        dst.clear()
        dst.close()


def test_export_of_an_empty_store_and_a_bad_suffix(tmp_path):
    from arm_jax.store.lmdb_store import LmdbStore

    with LmdbStore(tmp_path / "logs") as s:
        assert export_events(s, tmp_path / "e.npz") == {"events": 0, "users": 0}
        with pytest.raises(InvalidEvents, match="expected .csv, .npz or .parquet"):
            export_events(s, tmp_path / "e.json")
    assert all(v.size == 0 for v in read_events_file(tmp_path / "e.npz").values())


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_an_interrupted_export_leaves_the_previous_backup_whole(tmp_path, monkeypatch,
                                                                 suffix, interrupt):
    """The export is written beside the target and moved onto it at the end: cut off after
    whole lines, a CSV parsed cleanly, so `store load` took a partial backup; and the old
    backup at the same path was truncated first. No temporary file is left behind."""
    from arm_jax.store import events_file
    from arm_jax.store.lmdb_store import LmdbStore

    def cut_off(target, *args, **kwargs):       # whole lines, then Ctrl-C or a full disk
        part = b"user_id,item,action,ts\n1,5,1,100\n"
        target.write(part) if hasattr(target, "write") else Path(target).write_bytes(part)
        raise interrupt("cut off")

    backup = tmp_path / "backups" / f"logs{suffix}"
    with LmdbStore(tmp_path / "logs") as s:
        s.append_many([1, 2, 3], [5, 6, 7], [1, 1, 1], [100, 200, 300])
        assert export_events(s, backup)["events"] == 3
        s.append_many([4], [8], [1], [400])
        monkeypatch.setattr(events_file, "write_events_csv", cut_off)
        monkeypatch.setattr(np, "savez", cut_off)
        with pytest.raises(interrupt, match="cut off"):
            export_events(s, backup)
        monkeypatch.undo()
        assert read_events_file(backup)["user_id"].tolist() == [1, 2, 3]  # the old one, whole
        assert [p.name for p in backup.parent.iterdir()] == [backup.name]
        assert export_events(s, backup)["events"] == 4                   # replaced when whole
    assert read_events_file(backup)["user_id"].tolist() == [1, 2, 3, 4]
    assert [p.name for p in backup.parent.iterdir()] == [backup.name]


def test_export_of_many_short_logs_does_not_hold_arrays_per_user(tmp_path):
    """Near the documented 32 bytes per event, not four small arrays per user (~600 bytes
    each however short the log: 6 MB here before, 1.6 MB now)."""
    import tracemalloc

    from arm_jax.store.lmdb_store import LmdbStore

    n = 10_000                                    # users of one event each
    with LmdbStore(tmp_path / "logs") as s:
        s.append_many(np.arange(n), np.ones(n, int), np.ones(n, int), np.full(n, 100))
        tracemalloc.start()
        try:
            assert export_events(s, tmp_path / "e.npz")["events"] == n
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 300 * n, peak


def test_parquet_columns_other_than_the_four_are_never_read(tmp_path, monkeypatch):
    """A warehouse export's wide extra columns would otherwise be loaded in full (a 200 MB
    file with a text column took 684 MB of Arrow memory for 6.4 MB of events)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": [1], "payload": ["x" * 1000], "item": [2],
                             "action": [1], "ts": [5]}), tmp_path / "wide.parquet")
    read, real = [], pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: read.append(real(*a, **k)) or read[-1])
    assert read_events_file(tmp_path / "wide.parquet")["item"].tolist() == [2]
    assert [t.column_names for t in read] == [["user_id", "item", "action", "ts"]]


@pytest.mark.parametrize("damage", ["truncated", "bad_crc", "zip_junk", "lone_npy"])
def test_a_damaged_or_pickled_npz_is_named_not_a_traceback(tmp_path, damage):
    """A half-copied .npz, a flipped byte in it, or a lone .npy named .npz raised
    zipfile.BadZipFile, a bare ValueError or a TypeError, naming no file (object arrays:
    test_npz_object_arrays_and_a_directory_are_named)."""
    path = tmp_path / "ev.npz"
    n = 1000
    np.savez_compressed(path, user_id=np.arange(n), item=np.arange(n),
                        action=np.zeros(n, np.int64), ts=np.arange(n) + 100)
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[:len(raw) // 2]
    elif damage == "bad_crc":
        raw[len(raw) // 3] ^= 0xFF
    elif damage == "zip_junk":
        raw = bytearray(b"PK\x03\x04" + bytes(100))
    if damage == "lone_npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(n))
    else:
        path.write_bytes(bytes(raw))
    with pytest.raises(InvalidEvents, match=r"events file .*ev\.npz: not a readable \.npz"):
        read_events_file(path)


@pytest.mark.parametrize("data, where", [
    (b"user_id,item,action,ts\n1,2,3,4\n\xff,2,3,4\n", "line 3"),   # numpy's parse fails
    (b"\xff\xfeu\x00s\x00e\x00r\x00", "line 1"),                     # UTF-16: the header
])
def test_a_csv_that_is_not_utf8_names_the_file_and_the_line(tmp_path, data, where):
    """Was a bare UnicodeDecodeError ("'utf-8' codec can't decode byte 0xff ..."), naming
    neither the file nor where in it."""
    path = tmp_path / "latin1.csv"
    path.write_bytes(data)
    with pytest.raises(InvalidEvents, match=f"events file {path}: {where}: not UTF-8 text"):
        read_events_file(path)


def test_npz_object_arrays_and_a_directory_are_named(tmp_path):
    """An object array (a pickle: never loaded) was a bare ValueError naming neither the
    file nor the array; a directory was reported as "not found"."""
    np.savez(tmp_path / "o.npz", user_id=np.array([{"a": 1}], dtype=object), item=[2],
             action=[3], ts=[4])
    with pytest.raises(InvalidEvents, match=f"events file {tmp_path / 'o.npz'}: user_id: "
                                            "an object array"):
        read_events_file(tmp_path / "o.npz")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(InvalidEvents, match=f"events file {tmp_path / 'd.csv'}: is a "
                                            "directory"):
        read_events_file(tmp_path / "d.csv")


def test_a_load_stopped_by_a_damaged_log_says_to_repair_it_not_just_to_run_again(tmp_path):
    """LMDB reads a log before appending to it (Redis APPENDs blind). A rerun fails the same
    way until the damaged log is repaired or removed; the message said only "run the load
    again"."""
    from arm_jax.store import CorruptValue, codec
    from arm_jax.store.lmdb_store import LmdbStore

    store = LmdbStore(tmp_path / "logs")
    store.put_raw(3, codec.encode([1, 2], [0, 1], [10, 20])[:-4])      # truncated
    ev = {"user_id": np.array([1, 3]), "item": np.array([5, 6]), "action": np.array([0, 0]),
          "ts": np.array([30, 30])}
    with pytest.raises(CorruptValue, match=r"fails the same way until that log is repaired "
                                           r"or removed \(`arm-jax store check`"):
        load_events(store, ev, chunk_events=1)
    store.delete([3])
    assert load_events(store, ev, chunk_events=1)["skipped"] == 1    # user 1's chunk
    assert store.read(3).item.tolist() == [6]
    store.close()
