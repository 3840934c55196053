"""`arm-jax store load|read|stats` on LMDB and on a real Redis server; a second load of
the same events skips them unless --again."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.store.events_file import write_events_csv
from arm_jax.store.redis_store import RedisStore


@pytest.fixture
def events_csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    user = rng.integers(0, 9, n)
    ts = rng.integers(1_600_000_000, 1_700_000_000, n)
    item, action = rng.integers(0, 5000, n), rng.integers(0, 3, n)
    return write_events_csv(tmp_path / "ev.csv", user, item, action, ts), (user, item, action, ts)


def _read_json(capsys, *argv):
    capsys.readouterr()
    assert main(["store", "read", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _check_store(capsys, url, data, users_line):
    user, item, action, ts = data
    assert main(["store", "stats", url]) == 0
    assert users_line in capsys.readouterr().out
    got = _read_json(capsys, url, "--user", "4")
    sel = np.flatnonzero(user == 4)
    assert [e["ts"] for e in got["events"]] == sorted(ts[sel].tolist())
    cut = int(np.sort(ts[sel])[3])
    got = _read_json(capsys, url, "--user", "4", "--before", str(cut), "--max-len", "2")
    assert [e["ts"] for e in got["events"]] == np.sort(ts[sel])[1:3].tolist()


def test_load_read_stats_lmdb(tmp_path, capsys, events_csv):
    path, data = events_csv
    url = f"lmdb://{tmp_path / 'logs'}"
    assert main(["store", "load", url, str(path)]) == 0
    assert "loaded 200 events of 9 users" in capsys.readouterr().out
    _check_store(capsys, url, data, "9 users")
    assert main(["store", "read", url, "--user", "4"]) == 0        # the table form
    out = capsys.readouterr().out
    assert out.startswith(f"user 4: {int((data[0] == 4).sum())} events") and "UTC" in out
    assert main(["store", "load", url, str(path)]) == 0          # the same file again
    assert "(200 of them were already stored and were skipped" in capsys.readouterr().out
    _check_store(capsys, url, data, "9 users")
    assert main(["store", "load", url, str(path), "--again"]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert len(_read_json(capsys, url, "--user", "4")["events"]) == 2 * int((data[0] == 4).sum())


def test_load_read_stats_redis(redis_url, capsys, events_csv):
    path, data = events_csv
    with RedisStore(redis_url) as s:           # the CLI's default prefix
        s.clear()
        try:
            assert main(["store", "load", redis_url, str(path)]) == 0
            _check_store(capsys, redis_url, data, "9 users")
        finally:
            s.clear()


def test_compact_rewrites_redis_logs_and_never_creates_a_store(redis_url, tmp_path, capsys):
    with RedisStore(redis_url) as s:           # the CLI's default prefix
        s.clear()
        try:
            for ts in (30, 10, 20):
                s.append(7, ts, 0, ts)           # three APPENDs: three chunks
            assert main(["store", "compact", redis_url]) == 0
            assert "rewrote 1 users' logs as one chunk" in capsys.readouterr().out
            assert s.read(7).ts.tolist() == [10, 20, 30]
        finally:
            s.clear()
    missing = tmp_path / "none"
    assert main(["store", "compact", f"lmdb://{missing}"]) == 2
    assert "no LMDB store here" in capsys.readouterr().err and not missing.exists()


def test_export_delete_and_reload_into_redis(redis_url, tmp_path, capsys, events_csv):
    path, data = events_csv
    user = data[0]
    lmdb = f"lmdb://{tmp_path / 'logs'}"
    assert main(["store", "load", lmdb, str(path)]) == 0
    out = tmp_path / "backup.npz"
    capsys.readouterr()
    assert main(["store", "export", lmdb, str(out)]) == 0
    assert f"exported 200 events of 9 users from {lmdb} to {out}" in capsys.readouterr().out
    assert main(["store", "delete", lmdb, "--user", "4", "--user", "4", "--user", "99"]) == 0
    assert "deleted the logs of 1 of 2 users (1 had none)" in capsys.readouterr().out
    assert _read_json(capsys, lmdb, "--user", "4")["events"] == []
    with RedisStore(redis_url) as s:           # the CLI's default prefix
        s.clear()
        try:
            assert main(["store", "load", redis_url, str(out)]) == 0
            _check_store(capsys, redis_url, data, "9 users")
            assert main(["store", "delete", redis_url, "--user", "-3"]) == 2
            assert "user_id: must be in [0, 2^63)" in capsys.readouterr().err
            assert s.num_users() == 9
        finally:
            s.clear()
    assert int((user == 4).sum()) > 0
    missing = tmp_path / "none"
    for argv in (["export", f"lmdb://{missing}", str(tmp_path / "x.npz")],
                 ["delete", f"lmdb://{missing}", "--user", "1"]):
        assert main(["store", *argv]) == 2
        assert "no LMDB store here" in capsys.readouterr().err and not missing.exists()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    missing = tmp_path / "none"
    assert main(["store", "read", str(missing), "--user", "1"]) == 2
    assert "no LMDB store here" in capsys.readouterr().err
    assert not missing.exists()                # reading never creates a store
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item,action,ts\n1,2,3,4\n1,2,x,5\n")
    assert main(["store", "load", str(tmp_path / "logs"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 3, action: expected an integer, got 'x'" in err
    assert not (tmp_path / "logs").exists()    # the file is checked before the store opens
    for argv, words in ((["--user", "-1"], "user_id"), (["--user", "1", "--max-len", "-1"],
                                                         "--max-len=-1"),
                        (["--user", "1", "--before", "1700000000000"], "(milliseconds?)")):
        good = tmp_path / "good.csv"
        good.write_text("user_id,item,action,ts\n1,2,3,4\n")
        assert main(["store", "load", str(tmp_path / "ok"), str(good)]) == 0
        assert main(["store", "read", str(tmp_path / "ok"), *argv]) == 2
        assert words in capsys.readouterr().err


def test_load_refuses_millisecond_timestamps_before_opening_the_store(tmp_path, capsys):
    bad = tmp_path / "ms.csv"
    bad.write_text("user_id,item,action,ts\n1,2,3,1700000000\n2,2,3,1700000000000\n")
    assert main(["store", "load", str(tmp_path / "logs"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ts=1700000000000" in err and "(milliseconds?)" in err
    assert not (tmp_path / "logs").exists()


def test_load_with_a_tier_refuses_actions_past_its_table_before_opening_the_store(
        tmp_path, capsys):
    bad = tmp_path / "actions.csv"
    bad.write_text("user_id,item,action,ts\n1,2,3,1700000000\n42,2,9,1700000001\n")
    url = str(tmp_path / "logs")
    assert main(["store", "load", url, str(bad), "--tier", "small"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"events file {bad}: user 42: action 9" in err
    assert "features.num_action_types=4 of tier small" in err
    assert not (tmp_path / "logs").exists()
    # without --tier the load cannot know the tier's table: any action in [0, 255] is stored
    assert main(["store", "load", url, str(bad)]) == 0
    ok = tmp_path / "ok.csv"
    ok.write_text("user_id,item,action,ts\n1,2,3,1700000000\n")
    assert main(["store", "load", str(tmp_path / "ok"), str(ok), "--tier", "small"]) == 0


def test_load_with_a_tier_checks_the_limit_its_overrides_give(tmp_path, capsys):
    """`--tier NAME --override KEY=VALUE ...` checks against the config training will run
    with."""
    events = tmp_path / "actions.csv"
    events.write_text("user_id,item,action,ts\n1,2,3,1700000000\n42,2,6,1700000001\n")
    over = ["--override", "features.num_action_types=8"]
    assert main(["store", "load", str(tmp_path / "a"), str(events), "--tier", "small",
                 *over]) == 0
    capsys.readouterr()
    assert main(["store", "load", str(tmp_path / "b"), str(events), "--tier", "small",
                 "--override", "features.num_action_types=6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "user 42: action 6 >= features.num_action_types=6" in err
    assert "of tier small with features.num_action_types=6" in err
    assert not (tmp_path / "b").exists()
    # overrides without --tier would be silently unused: refused, naming both
    assert main(["store", "load", str(tmp_path / "c"), str(events), *over]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "features.num_action_types=8" in err and "--tier" in err
    assert not (tmp_path / "c").exists()
    # a bad override is the config's own error, before the store is opened
    assert main(["store", "load", str(tmp_path / "d"), str(events), "--tier", "small",
                 "--override", "features.num_action_types=0"]) == 2
    assert "num_action_types" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_read_table_survives_a_time_out_of_range():
    """A store filled before ts were bounded may hold milliseconds: the table still prints."""
    from arm_jax.cli.log_store_cmd import _utc

    assert _utc(0) == "1970-01-01 00:00:00"
    assert _utc(1_700_000_000_000) == _utc(2**62) == "(out of range)"


def test_catalog_command_writes_what_serve_loads(tmp_path, capsys):
    from arm_jax.data.catalog import ItemCatalog

    items = tmp_path / "items.csv"
    items.write_text("item,advertiser,topic\n2,7,3\n0,5,1\n")
    out = tmp_path / "new" / "dir" / "catalog.npz"       # parents are created
    assert main(["store", "catalog", str(items), "--fields", "1,2", "--out", str(out)]) == 0
    assert "3 item rows (2 with known side ids), fields [1, 2]" in capsys.readouterr().out
    cat = ItemCatalog.load(out)
    assert cat.fields == (1, 2) and cat.side[[0, 2]].tolist() == [[5, 1], [7, 3]]
    assert main(["store", "catalog", str(items), "--fields", "1", "--out", str(out)]) == 2
    assert "give one column per field" in capsys.readouterr().err


def test_load_and_compact_compress(tmp_path, capsys):
    """`store load --compress` writes version-2 chunks; `store compact --compress`
    converts a plain store; reads are the same either way."""
    from arm_jax.store import codec, open_store
    from arm_jax.store.lmdb_store import user_key

    rng = np.random.default_rng(3)
    n = 3000
    user = np.repeat([1, 2], n // 2)
    ts = rng.integers(1_600_000_000, 1_607_000_000, n)
    item, action = rng.zipf(1.3, n) % 50_000, rng.integers(0, 3, n)
    path = write_events_csv(tmp_path / "ev.csv", user, item, action, ts)

    def versions(url):
        with open_store(url, readonly=True) as s, s.env.begin() as txn:
            return [codec.chunk_versions(txn.get(user_key(u))) for u in (1, 2)]

    packed, plain = f"lmdb://{tmp_path / 'packed'}", f"lmdb://{tmp_path / 'plain'}"
    assert main(["store", "load", packed, str(path), "--compress"]) == 0
    assert main(["store", "load", plain, str(path)]) == 0
    assert versions(packed) == [[2], [2]] and versions(plain) == [[1], [1]]
    want = _read_json(capsys, plain, "--user", "2")
    assert _read_json(capsys, packed, "--user", "2") == want
    capsys.readouterr()
    assert main(["store", "compact", plain, "--compress"]) == 0
    assert "rewrote 2 users' logs as one compressed chunk" in capsys.readouterr().out
    assert versions(plain) == [[2], [2]]
    assert _read_json(capsys, plain, "--user", "2") == want


def test_an_output_path_that_cannot_be_a_file_is_one_line_before_any_work(tmp_path, capsys):
    """`store export FILE` and `store catalog --out FILE` where FILE is a directory, or lies
    under a file, are refused naming it before the store is read (no progress bar yet) or
    the item table parsed; they were a traceback from the final write."""
    good = tmp_path / "good.csv"
    good.write_text("user_id,item,action,ts\n1,2,3,4\n")
    url = str(tmp_path / "logs")
    assert main(["store", "load", url, str(good)]) == 0
    items = tmp_path / "items.csv"
    items.write_text("item,advertiser,topic\n2,7,3\n")
    adir = tmp_path / "adir.npz"
    adir.mkdir()
    capsys.readouterr()
    for argv, words in (
            (["export", url, str(adir)], f"events file {adir}: is a directory"),
            (["export", url, str(good / "x.csv")], f"{good} is a file, not a directory"),
            (["catalog", str(items), "--fields", "1,2", "--out", str(adir)],
             f"catalogue file {adir}: is a directory"),
            (["catalog", str(items), "--fields", "1,2", "--out", str(good / "c.npz")],
             f"{good} is a file, not a directory")):
        assert main(["store", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
        assert words in err, err
    assert good.read_text() == "user_id,item,action,ts\n1,2,3,4\n" and not any(adir.iterdir())


@pytest.mark.parametrize("fields, words", [
    ("99999999999999999999999,2", "99999999999999999999999"),   # was an OverflowError
    ("-1,2", "-1"),          # never a candidate field: no config would take the catalogue
    ("1,1", "[1, 1]"),       # features.history_side_fields are distinct
])
def test_catalog_fields_out_of_range_are_one_line_before_the_table_is_read(
        tmp_path, capsys, fields, words):
    items = tmp_path / "items.csv"
    items.write_text("item,advertiser,topic\n2,7,3\n")
    out = tmp_path / "catalog.npz"
    assert main(["store", "catalog", str(items), f"--fields={fields}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fields" in err and words in err, err
    assert "distinct field indices in [0, 2147483647]" in err and not out.exists()


def test_a_redis_that_does_not_answer_is_one_line_before_any_progress(tmp_path, capsys):
    """`store load` / `store export` against a Redis with no server: the one error line,
    not a progress bar left on stderr and a load "after 0 of N events were written"."""
    good = tmp_path / "good.csv"
    good.write_text("user_id,item,action,ts\n1,2,3,4\n")
    down = "redis://127.0.0.1:1/0"
    for argv in (["load", down, str(good)], ["export", down, str(tmp_path / "out.csv")]):
        assert main(["store", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"arm-jax: error: {down}: PING failed") and err.count("\n") == 1, err
        assert "after 0 of" not in err
    assert not (tmp_path / "out.csv").exists()


def test_check_reports_each_bad_log_and_exits_1(tmp_path, capsys, events_csv):
    from arm_jax.store.lmdb_store import LmdbStore

    path, data = events_csv
    url = f"lmdb://{tmp_path / 'logs'}"
    assert main(["store", "load", url, str(path)]) == 0
    capsys.readouterr()
    assert main(["store", "check", url, "--tier", "small"]) == 0
    out = capsys.readouterr().out
    assert "9 users, 200 events" in out and "ok: every log reads back whole" in out
    # a tier with fewer action types than the file's (0..2) and a damaged value
    with LmdbStore(tmp_path / "logs") as s:
        s.put_raw(4, b"\xa7\x01garbage")
    assert main(["store", "check", url, "--tier", "small", "--override",
                 "features.num_action_types=2", "--show", "1"]) == 1
    out = capsys.readouterr().out
    assert "problems (1 corrupt, " in out and "action_out_of_range" in out
    assert "... and " in out and "more (--json lists every one)" in out
    assert main(["store", "check", url, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and report["problem_counts"]["corrupt"] == 1
    assert [p["user"] for p in report["problems"]] == [4]
    assert report["events"] == 200 - int((data[0] == 4).sum())


@pytest.mark.parametrize("argv, words", [
    (["--override", "features.num_action_types=2"], "give --tier NAME too"),
    (["--show", "-1"], "--show=-1: must be >= 0"),
    (["--tier", "no-such-tier"], "no-such-tier")])
def test_check_bad_arguments_are_one_line_before_the_store_is_read(tmp_path, capsys, argv,
                                                                   words):
    assert main(["store", "check", str(tmp_path / "none"), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "none").exists()
