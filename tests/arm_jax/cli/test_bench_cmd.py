"""`arm-jax bench NAME`: every benchmark checks its --out before it runs."""

from __future__ import annotations

import argparse

import pytest

from arm_jax.cli.main import build_parser, main


def _bench_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    bsub = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    return dict(bsub.choices)


def test_every_bench_checks_its_out_first():
    """topk, wire, serve, embeddings, sharing, precision and coldstart ran their whole
    workload (a server and its load phases, for serve) and then died writing --out."""
    parsers = _bench_parsers()
    assert {"sharing", "topk", "serve", "store", "movielens"} <= set(parsers)
    for name, parser in parsers.items():
        func = parser.get_default("func")
        assert getattr(func, "__wrapped__", None) is not None, name


@pytest.mark.parametrize("out, words", [("afile/x.json", "afile is a file, not a directory"),
                                        ("", "names no file")])
def test_a_bad_out_is_one_line_before_the_bench(tmp_path, capsys, monkeypatch, out, words):
    import arm_jax.bench.topk as topk

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(topk, "run_topk_bench",
                        lambda *a, **k: pytest.fail("the bench ran before --out was checked"))
    rc = main(["bench", "topk", "--n", "16", "--k", "4", "--out", out])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"arm-jax: error: --out {out}") and words in err, err


def test_sharing_candidates_beyond_the_schema_are_refused(tmp_path, capsys):
    rc = main(["bench", "sharing", "--tier", "small", "--candidates", "16,100000000",
               "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("arm-jax: error: --candidates 100000000: must be <= "
                               "features.max_candidates=1024"), err
