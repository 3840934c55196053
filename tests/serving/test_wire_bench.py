"""`arm-jax bench wire` on tiny shapes: every format timed, same batches checked, JSON + PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from serving.wire_bench import _same_batches, run_wire_bench  # noqa: E402


def test_wire_bench_writes_every_figure(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "wire.json"
    res = run_wire_bench(tier="small", candidates=(3, 7), history=5, repeats=1,
                         overrides=tuple(tiny_overrides), out_json=out)
    saved = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert [r["candidates"] for r in saved["rows"]] == [3, 7]
    for row in saved["rows"]:
        for wire in ("json", "msgpack", "arrow"):
            assert row[wire]["bytes"] > 0
            assert all(row[wire][f"{k}_us"] > 0 for k in ("encode", "decode", "answer"))
        assert row["decode_json_over_arrow"] == pytest.approx(
            row["json"]["decode_us"] / row["arrow"]["decode_us"])
    # more candidates, bigger bodies
    assert saved["rows"][1]["json"]["bytes"] > saved["rows"][0]["json"]["bytes"]
    assert res["config"]["history"] == 5
    assert "json/arrow" in capsys.readouterr().out


def test_wire_bench_refuses_sizes_past_the_schema(tiny_overrides):
    with pytest.raises(ValueError, match=r"candidates=100000: must be in \[1, "):
        run_wire_bench(tier="small", candidates=(100000,), repeats=1,
                       overrides=tuple(tiny_overrides))
    with pytest.raises(ValueError, match=r"history=100000: must be in \[0, "):
        run_wire_bench(tier="small", history=100000, repeats=1, overrides=tuple(tiny_overrides))


def test_formats_that_decode_differently_stop_the_bench(tiny_tiers, payload):
    from serving.schema import RankRequest, parse_model, to_batch

    f = tiny_tiers["small"].features
    b = to_batch(parse_model(RankRequest, payload()), f, f.max_candidates)
    _same_batches({"json": b, "arrow": b})
    with pytest.raises(AssertionError, match="arrow decodes req_dense differently"):
        _same_batches({"json": b, "arrow": b.replace(req_dense=np.asarray(b.req_dense) + 1)})
