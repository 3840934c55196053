"""`bench store` at toy size: the figures it reports are consistent with what it measured."""

from __future__ import annotations

import json

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
    assert "storage_ratio" in capsys.readouterr().out
    assert res["config"]["mean_joined_events"] <= 16


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "movielens", "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "MovieLens data not found" in err
