"""`bench store` at toy size: the figures it reports are consistent with what it measured."""

from __future__ import annotations

import json

import pytest

from arm_jax.bench.store import run_store_bench
from arm_jax.cli.main import main
from arm_jax.store import codec


def test_store_bench_tiny(tmp_path, capsys):
    out = tmp_path / "store.json"
    res = run_store_bench(users=12, history_median=40, requests_per_user=5, candidates=4,
                          history_len=16, join_examples=30, batch_size=8, num_threads=2,
                          out_json=out)
    saved = json.loads(out.read_text())
    assert (tmp_path / "store.png").stat().st_size > 0
    b = saved["bytes"]
    ex = saved["config"]["examples"]
    assert ex == 60 and b["store_lmdb"] >= b["store_payload"] > 0
    assert b["materialized_history_ragged"] >= codec.HEADER_BYTES * ex
    assert b["catalog"] > 0
    assert abs(saved["storage_ratio"] - (b["examples"] + b["materialized_history_ragged"])
               / (b["examples"] + b["store_lmdb"] + b["catalog"])) < 1e-9
    side_bytes = 4 * 2 * (b["materialized_history_ragged"] - codec.HEADER_BYTES * ex) // (
        codec.BYTES_PER_EVENT + 8)                    # 2 int32 side ids per joined event
    assert abs(saved["storage_ratio_without_side"]
               - (b["examples"] + b["materialized_history_ragged"] - side_bytes)
               / (b["examples"] + b["store_lmdb"])) < 1e-9
    assert saved["join_examples_per_s"]["lmdb"] > 0
    assert saved["join_examples_per_s"]["lmdb_compressed"] > 0
    assert 0 < b["store_lmdb_compressed"] <= b["store_lmdb"]
    assert "storage_ratio" in capsys.readouterr().out
    assert res["config"]["mean_joined_events"] <= 16
    if "storage_ratio_parquet" in saved:
        assert abs(saved["storage_ratio_parquet"] - b["materialized_parquet"]
                   / (b["examples_parquet"] + b["store_lmdb"] + b["catalog"])) < 1e-9
        assert abs(saved["storage_ratio_parquet_compressed_store"] - b["materialized_parquet"]
                   / (b["examples_parquet"] + b["store_lmdb_compressed"] + b["catalog"])
                   ) < 1e-9


def test_the_parquet_baseline_holds_every_joined_history(tmp_path):
    """The materialized Parquet file the ratio divides is the real thing: its history
    columns read back as the world's point-in-time join, request by request."""
    pytest.importorskip("pyarrow")
    import numpy as np
    import pyarrow.parquet as pq

    from arm_jax.bench.store import _parquet_bytes
    from arm_jax.config import load_tier
    from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld

    f = load_tier("large", ["features.max_history=16"]).features
    world = SyntheticWorld.generate(SyntheticSpec(num_users=9, history_median=20.0), f)
    ex = world.sample_examples(4100, 3, seed=2)           # two row groups
    sizes = _parquet_bytes(ex, world, 16, tmp_path)
    assert sizes["materialized_parquet"] > sizes["examples_parquet"] > 0
    table = pq.read_table(tmp_path / "examples_with_history.parquet")
    h = world.join_history(ex.user_id, ex.ts, 16)
    for r in (0, 1, 4097, 4099):
        n = int(h["hist_len"][r])
        for col in ("hist_item", "hist_action", "hist_gap"):
            assert table.column(col)[r].as_py() == h[col][r, :n].tolist(), (col, r)
        assert table.column("hist_side")[r].as_py() == h["hist_side"][r, :n].tolist()
    assert np.array_equal(table.column("user_id").to_numpy(), ex.user_id)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "movielens", "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "MovieLens data not found" in err


def test_bad_out_or_redis_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """--out that can never be written (a directory, a path under a file) and a --redis
    that is malformed or does not answer stop the bench before the world is built: they
    were a traceback after the whole run (--out) or a failure after ~10 s of work."""
    from arm_jax.data.synthetic import SyntheticWorld

    def no_world(*args, **kwargs):
        raise AssertionError("the bench started before its arguments were checked")

    monkeypatch.setattr(SyntheticWorld, "generate", no_world)
    adir = tmp_path / "adir.json"
    adir.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("")
    for argv, words in ((["--out", str(adir)], f"--out {adir}: is a directory"),
                        (["--out", str(afile / "s.json")], f"{afile} is a file"),
                        (["--redis", "foo://x"], "foo://x: not a redis://"),
                        (["--redis", "redis://127.0.0.1:1/0"],
                         "redis://127.0.0.1:1/0: PING failed")):
        assert main(["bench", "store", "--out", str(tmp_path / "s.json"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
        assert words in err, err
