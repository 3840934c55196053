"""`bench movielens --seeds`: the summary over training seeds, its errors and the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arm_jax.bench.movielens_seeds import (check_seeds, format_seed_summary, paired_difference,
                                           plot_seeds, run_movielens_seeds, seed_summary)


def _run(aucs: dict[str, float], within: float = 0.6, met: bool | None = None,
         val: float | None = None) -> dict:
    rows = [{"name": n, "auc": a, "auc_within_request": within,
             **({} if val is None else {"val_auc": val + a / 100})} for n, a in aucs.items()]
    target = None if met is None else {"large_beats_logreg_and_small": met}
    return {"models": rows, "target": target}


def test_paired_difference_by_hand():
    # diffs +0.01, +0.01, -0.01: mean 1/300, sd sqrt(4/3) / 100, se = sd / sqrt(3)
    got = paired_difference([0.01, 0.01, -0.01])
    sd = np.sqrt(4 / 3) / 100
    assert got["mean"] == pytest.approx(1 / 300) and got["sd"] == pytest.approx(sd)
    assert got["se"] == pytest.approx(sd / np.sqrt(3)) and got["t"] == pytest.approx(0.5)
    assert (got["df"], got["ahead"], got["seeds"]) == (2, 2, 3)
    half = 4.302653 * sd / np.sqrt(3)          # t(0.975, df=2)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((1 / 300 - half, 1 / 300 + half))


def test_seed_summary_pairs_the_reference_with_every_other_model():
    runs = [_run({"logreg": 0.70, "small": 0.80, "large": 0.81}, met=True),
            _run({"logreg": 0.71, "small": 0.79, "large": 0.80}, met=True),
            _run({"logreg": 0.69, "small": 0.81, "large": 0.80}, met=False)]
    s = seed_summary([3, 5, 9], runs)
    assert s["reference"] == "large" and set(s["versus"]) == {"logreg", "small"}
    assert s["models"]["small"]["auc"] == [0.80, 0.79, 0.81]
    assert s["models"]["large"]["mean"] == pytest.approx(0.80333333)
    assert s["versus"]["small"]["diffs"] == pytest.approx([0.01, 0.01, -0.01])
    assert s["versus"]["small"]["ahead"] == 2 and s["versus"]["logreg"]["ahead"] == 3
    assert s["target"] == {"met_at_seeds": [3, 5], "met_on_mean": True}
    text = format_seed_summary(s)
    assert "seed 9" in text and "2 of 3" in text and "met at seeds [3, 5]" in text
    # without large, the last model is the reference and there is no target
    s2 = seed_summary([0, 1], [_run({"logreg": 0.7, "small": 0.8}),
                               _run({"logreg": 0.6, "small": 0.8})])
    assert s2["reference"] == "small" and s2["target"] is None
    assert s2["versus"]["logreg"]["mean"] == pytest.approx(0.15)
    assert s["models"]["large"]["val_auc"] is None and "validation" not in text


def test_seed_summary_prints_validation_auc_per_seed():
    s = seed_summary([1, 2], [_run({"small": 0.80, "large": 0.81}, val=0.7),
                              _run({"small": 0.79, "large": 0.80}, val=0.6)])
    assert s["models"]["large"]["val_auc"] == pytest.approx([0.7081, 0.6080])
    text = format_seed_summary(s).splitlines()
    at = text.index("validation AUC (best checkpoint; each seed draws its own split)")
    assert text[at + 1].split() == ["small", "0.70800", "0.60790"]
    assert text[at + 2].split() == ["large", "0.70810", "0.60800"]


def test_one_model_sweep_prints_and_plots_without_differences(tmp_path, recwarn):
    s = seed_summary([1, 2], [_run({"large": 0.80}), _run({"large": 0.79})])
    assert s["versus"] == {}
    text = format_seed_summary(s)
    assert "0.7950" in text and "minus" not in text
    png = plot_seeds(s, tmp_path / "one.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not [w for w in recwarn if "legend" in str(w.message)]


@pytest.mark.parametrize("seeds, overrides, match", [
    ([0], (), "at least two distinct seeds"),
    ([0, 0, 1], (), "at least two distinct seeds"),
    ([-1, 2], (), "must be >= 0"),
    ([0, 1], ("train.seed=4",), "overrides: train.seed=4 conflicts"),
])
def test_bad_seed_sweeps_name_the_field(seeds, overrides, match):
    with pytest.raises(ValueError, match=match):
        check_seeds(seeds, overrides)


def test_absent_data_stops_the_sweep_before_any_seed(tmp_path, capsys):
    from arm_jax.data.movielens import MovieLensMissing

    with pytest.raises(MovieLensMissing, match="not found"):
        run_movielens_seeds([0, 1], tmp_path / "absent", progress=False)
    assert "seed" not in capsys.readouterr().out


def test_cli_seeds_argument_error_is_one_line(capsys):
    from arm_jax.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "movielens", "--seeds", "0,one"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--seeds" in err and "comma list of integer seeds" in err


@pytest.mark.slow
def test_seed_sweep_runs_the_bench_per_seed_and_writes_every_file(tmp_path, movielens_dir,
                                                                  movielens_tiny_model):
    data = movielens_dir
    out = tmp_path / "ml.json"
    res = run_movielens_seeds([0, 1], data, models=("logreg", "small"),
                              steps={"logreg": 2, "small": 2}, overrides=movielens_tiny_model,
                              num_threads=1, bootstrap_samples=0, out_json=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["seeds"] == [0, 1] and saved["reference"] == "small"
    per_seed = [json.loads(Path(p).read_text()) for p in saved["runs"]]
    assert [p.name for p in map(Path, saved["runs"])] == ["ml-seed0.json", "ml-seed1.json"]
    for seed, run in zip((0, 1), per_seed):
        assert f"train.seed={seed}" in run["ranker_overrides"]
    assert not any(o.startswith("train.seed") for o in saved["ranker_overrides"])
    # the summary is made of the per-seed runs' own AUCs
    for name in ("logreg", "small"):
        assert saved["models"][name]["auc"] == [
            next(m["auc"] for m in run["models"] if m["name"] == name) for run in per_seed]
    assert saved["versus"]["logreg"]["diffs"] == pytest.approx(
        np.subtract(saved["models"]["small"]["auc"], saved["models"]["logreg"]["auc"]))
    assert Path(res["png"]).stat().st_size > 1000
    assert all(Path(run["png"]).exists() for run in per_seed)
