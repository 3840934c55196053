"""`bench movielens` end to end on a tiny MovieLens-format directory: rows, routing, files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from arm_jax.bench.movielens import (HISTORY_BUCKETS, RANKER_OVERRIDES, bench_tier,
                                     bootstrap_rows, by_history, by_seen, distillation_labels,
                                     resolve_steps, run_movielens_bench, train_and_evaluate)
from arm_jax.bench.movielens_report import format_by_history, format_by_seen, format_table
from arm_jax.data.movielens import MovieLensSpec, load_movielens
from arm_jax.metrics import auc, request_level_auc, within_request_auc
from arm_jax.store.lmdb_store import LmdbStore


@pytest.mark.slow
def test_movielens_bench_rows_and_routing_table(tmp_path, movielens_dir, movielens_tiny_model):
    data = movielens_dir
    out = tmp_path / "ml.json"
    res = run_movielens_bench(data, steps={"logreg": 3, "small": 3, "large": 3},
                              overrides=movielens_tiny_model, large_history=48, num_threads=1,
                              out_json=out, progress=False, distill=0.5, id_min_count=1)
    saved = json.loads(out.read_text())
    # ids new at a request were mapped to the OOV id (its path), and the JSON says how many
    vocab = saved["data"]["id_vocabulary"]
    assert saved["id_min_count"] == 1 and vocab["min_count"] == 1
    assert 0 < vocab["fitted"]["oov_user_requests"] < vocab["fitted"]["requests"]
    assert 0 < vocab["fitted"]["oov_movie_candidates"] < vocab["fitted"]["candidates"]
    assert [m["name"] for m in saved["models"]] == ["logreg", "small", "large"]
    # large learned from small's predictions on the training requests (the option's path)
    assert saved["distill"] == 0.5
    assert [m.get("distilled_from") for m in saved["models"]] == [None, None, "small"]
    assert "(large trained on 0.5 x labels + 0.5 x small's predictions)" in format_table(saved)
    for m in saved["models"]:
        assert 0.0 <= m["auc"] <= 1.0 and m["steps"] == 3 and m["best_step"] >= 1
    assert {m["name"]: m["history_len"] for m in saved["models"]}["large"] == 48
    # the history buckets cover every test request once; the first and last are the short
    # and long columns; the like rate is the data's, the same for every model
    for m in saved["models"]:
        buckets = m["by_history"]
        assert sum(b["requests"] for b in buckets) == saved["data"]["test_requests"]
        for b, key in ((buckets[0], "short_history"), (buckets[-1], "long_history")):
            assert b["requests"] == m[f"requests_{key}"]
            if b["auc"] is not None:
                assert b["auc"] == pytest.approx(m[f"auc_{key}"])
    assert len({tuple(b["like_rate"] for b in m["by_history"]) for m in saved["models"]}) == 1
    assert "by past ratings" in format_table(saved)
    # returning/new users and seen/unseen movies each split every test candidate once
    for m in saved["models"]:
        seen = m["by_seen"]
        for a, b in (("returning_users", "new_users"), ("seen_movies", "unseen_movies")):
            assert seen[a]["candidates"] + seen[b]["candidates"] == \
                saved["data"]["test_candidates"]
    assert len({tuple(v["like_rate"] for v in m["by_seen"].values())
                for m in saved["models"]}) == 1
    assert "by what training saw" in format_table(saved)
    assert isinstance(saved["target"]["large_beats_logreg_and_small"], bool)
    assert saved["ranker_overrides"] == [*RANKER_OVERRIDES, *movielens_tiny_model]
    # a 95% bootstrap interval per model around its AUC, and large's paired differences
    for m in saved["models"]:
        lo, hi = m["auc_ci95"]
        assert lo <= m["auc"] <= hi
    cmp = saved["comparison"]
    assert cmp["reference"] == "large" and set(cmp["versus"]) == {"logreg", "small"}
    by_auc = {m["name"]: m["auc"] for m in saved["models"]}
    by_within = {m["name"]: m["auc_within_request"] for m in saved["models"]}
    for key, point in (("versus", by_auc), ("versus_within_request", by_within)):
        for name, c in cmp[key].items():
            assert c["diff"] == pytest.approx(point["large"] - point[name])
            assert c["ci_low"] <= c["ci_high"] and 0.0 <= c["p_better"] <= 1.0
    # the same routing table as `bench routing`, over the tiers trained here
    routing = saved["routing"]
    names = [p["name"] for p in routing["policies"]]
    for want in ("always-small", "always-large", "rules", "learned@0.5", "oracle@0.5"):
        assert want in names
    f = routing["tiers"]
    assert 0 < f["small"]["flops_per_request"] < f["large"]["flops_per_request"]
    by = {p["name"]: p for p in routing["policies"]}
    assert by["always-large"]["flops_vs_large"] == pytest.approx(1.0)
    assert by["oracle@0.5"]["flops_per_request"] <= 0.5 * f["large"]["flops_per_request"] * (
        1 + 1e-6)
    assert Path(routing["png"]).stat().st_size > 1000
    assert Path(res["png"]).stat().st_size > 1000
    # every test candidate's label and score beside the JSON: the figures recompute from it
    assert saved["scores"] == str(tmp_path / "ml-scores.npz")
    with np.load(saved["scores"]) as z:
        assert z["label"].shape == z["cand_mask"].shape == z["movie"].shape
        assert z["user_id"].shape == z["past_ratings"].shape == (saved["data"]["test_requests"],)
        assert int(z["cand_mask"].sum()) == saved["data"]["test_candidates"]
        for m in saved["models"]:
            score = z[f"score_{m['name']}"]
            assert auc(z["label"], score, z["cand_mask"]) == pytest.approx(m["auc"], abs=1e-6)
            assert within_request_auc(z["label"], score, z["cand_mask"]) == pytest.approx(
                m["auc_within_request"], abs=1e-6)
            assert request_level_auc(z["label"], score, z["cand_mask"]) == pytest.approx(
                m["auc_request_level"], abs=1e-6)
        short = z["cand_mask"] & (z["past_ratings"] <= HISTORY_BUCKETS[0][1])[:, None]
        assert int(short.any(axis=1).sum()) == saved["models"][0]["requests_short_history"]


def test_by_history_splits_requests_by_past_ratings():
    """Three requests of two candidates with 5, 40 and 300 past ratings: each lands in its
    bucket with its own like rate, mean score and AUC; the empty bucket says None."""
    labels = np.array([[1, 0], [1, 1], [0, 1]], np.float32)[..., None]
    probs = np.array([[0.9, 0.2], [0.6, 0.4], [0.7, 0.3]], np.float32)[..., None]
    mask = np.array([[True, True], [True, False], [True, True]])
    ex = SimpleNamespace(labels=labels, cand_mask=mask)
    got = by_history(ex, probs, np.array([5, 40, 300]))
    assert [(b["past_min"], b["past_max"]) for b in got] == list(HISTORY_BUCKETS)
    short, mid, empty, long = got
    assert (short["requests"], short["candidates"], short["auc"]) == (1, 2, 1.0)
    assert short["like_rate"] == 0.5 and short["mean_score"] == pytest.approx(0.55)
    assert (mid["candidates"], mid["auc"], mid["like_rate"]) == (1, None, 1.0)  # one class
    assert (empty["requests"], empty["auc"], empty["mean_score"]) == (0, None, None)
    assert long["auc"] == 0.0 and long["mean_score"] == pytest.approx(0.5)
    lines = format_by_history([{"name": "m", "by_history": got}])
    assert lines[0].split()[-4:] == ["0-32", "33-128", "129-255", ">=256"]
    assert lines[-1].split()[-2:] == ["0.0000", "0.500"] and "-" in lines[-1].split()


def test_by_seen_splits_candidates_by_what_training_saw():
    """Training fitted on user 1 with movies 10 and 11. Test: user 1 (returning) rates 10 and
    12, user 2 (new) rates 11 and 13 (one candidate padded): each candidate lands in its user
    and movie segment, with that segment's AUC, like rate and mean score."""
    fit = SimpleNamespace(user_id=np.array([1]), cand_sparse=np.array([[[10], [11], [99]]]),
                          cand_mask=np.array([[True, True, False]]))   # 99: padding only
    ex = SimpleNamespace(user_id=np.array([1, 2]),
                         cand_sparse=np.array([[[10], [12], [0]], [[11], [13], [99]]]),
                         cand_mask=np.array([[True, True, False], [True, True, False]]),
                         labels=np.array([[1, 0, 0], [0, 1, 1]], np.float32)[..., None])
    probs = np.array([[0.9, 0.2, 0.5], [0.6, 0.4, 0.5]], np.float32)[..., None]
    got = by_seen(ex, probs, fit)
    ret, new = got["returning_users"], got["new_users"]
    assert (ret["requests"], ret["candidates"], ret["auc"], ret["like_rate"]) == (1, 2, 1.0, 0.5)
    assert (new["requests"], new["candidates"], new["auc"]) == (1, 2, 0.0)
    seen, unseen = got["seen_movies"], got["unseen_movies"]      # 10 and 11 vs 12 and 13
    assert (seen["requests"], seen["candidates"], seen["auc"]) == (2, 2, 1.0)
    assert seen["mean_score"] == pytest.approx(0.75) and seen["like_rate"] == 0.5
    assert (unseen["candidates"], unseen["auc"]) == (2, 1.0)
    assert unseen["mean_score"] == pytest.approx(0.3)
    lines = format_by_seen([{"name": "m", "by_seen": got}])
    assert lines[0].endswith("unseen movies") and lines[-1].split()[-2:] == ["1.0000", "0.300"]


def test_every_ranker_gets_the_movielens_settings_and_overrides_win():
    spec = MovieLensSpec()
    small, large = bench_tier("small", spec), bench_tier("large", spec, large_history=64)
    for tier in (small, large):
        assert tier.model.age_bias_slope == 0.5 and tier.train.embedding_lr_scale == 0.1
        assert tier.model.activation == "gelu"
    assert (large.model.history_len, small.model.history_len) == (64, 32)
    assert bench_tier("small", spec, ["model.age_bias_slope=0"]).model.age_bias_slope == 0.0
    assert bench_tier("logreg", spec).train.embedding_lr_scale == 1.0  # not a ranker


def test_bootstrap_rows_compare_the_reference_with_every_other_model():
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 6, 1)) < 0.5).astype(np.float32)
    mask = np.ones((50, 6), bool)
    probs = {"logreg": rng.random((50, 6)), "small": labels[..., 0] + rng.normal(0, 1, (50, 6))}
    rows = [{"name": n, "auc": auc(labels[..., 0], p),
             "auc_within_request": within_request_auc(labels[..., 0], p)}
            for n, p in probs.items()]
    cmp = bootstrap_rows(rows, probs, labels[..., 0], mask, 200)
    assert cmp["reference"] == "small"           # no large: the last model
    assert cmp["versus"]["logreg"]["p_better"] > 0.95 and cmp["versus"]["logreg"]["ci_low"] > 0
    assert all(len(r["auc_ci95"]) == 2 and len(r["auc_within_request_ci95"]) == 2
               for r in rows)
    assert cmp["versus_within_request"]["logreg"]["ci_low"] > 0
    assert bootstrap_rows([dict(r) for r in rows], probs, labels[..., 0], mask, 0) is None
    with pytest.raises(ValueError, match="bootstrap_samples=-1"):
        run_movielens_bench("/nonexistent", bootstrap_samples=-1)
    with pytest.raises(ValueError, match="id_min_count=-1"):
        run_movielens_bench("/nonexistent", id_min_count=-1)


def test_distillation_labels_mix_labels_and_teacher():
    labels = np.array([[[1.0], [0.0], [0.0]]], np.float32)
    teacher = np.array([[[0.6], [0.2], [0.9]]], np.float32)
    mask = np.array([[True, True, False]])
    got = distillation_labels(labels, teacher, mask, 0.25)
    np.testing.assert_allclose(got[..., 0], [[0.75 + 0.15, 0.05, 0.0]], rtol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(distillation_labels(labels, teacher, mask, 0.0)[0, :2],
                                  labels[0, :2])
    with pytest.raises(ValueError, match=r"distill=1.5: must be in \[0, 1\]"):
        distillation_labels(labels, teacher, mask, 1.5)
    with pytest.raises(ValueError, match="do not match"):
        distillation_labels(labels, teacher[:, :2], mask, 0.5)
    with pytest.raises(ValueError, match="distill=-0.1"):
        run_movielens_bench("/nonexistent", distill=-0.1)
    with pytest.raises(ValueError, match="--models must include small and large"):
        run_movielens_bench("/nonexistent", models=("logreg", "large"), distill=0.5)


def test_training_targets_replace_labels_for_training_only(tmp_path, movielens_dir,
                                                          movielens_tiny_model):
    """Trained on all-ones targets, logistic regression scores every test candidate higher
    than trained on the data's labels; validation still scores against the real labels
    (all-ones validation labels would leave its AUC undefined)."""
    data = load_movielens(movielens_dir, MovieLensSpec())
    tier = bench_tier("logreg", MovieLensSpec(), [*movielens_tiny_model, "train.learning_rate=0.1"])
    with LmdbStore(tmp_path / "logs") as store:
        data.load_into(store)
        runs = {name: train_and_evaluate("logreg", "logreg", tier, data, store, steps=20,
                                         num_threads=1, progress=False, train_labels=labels)
                for name, labels in (("data", None),
                                     ("ones", np.ones_like(data.train.labels)))}
    mask = data.test.cand_mask
    mean = {k: float(probs[..., 0][mask].mean()) for k, (_, probs, _) in runs.items()}
    assert mean["ones"] > mean["data"] + 0.05
    assert 0.0 <= runs["ones"][0]["val_auc"] <= 1.0


def test_steps_per_model_and_errors():
    models = ("logreg", "small", "large")
    assert resolve_steps(models, None) == {"logreg": 1500, "small": 450, "large": 450}
    assert resolve_steps(models, 7) == {"logreg": 7, "small": 7, "large": 7}
    assert resolve_steps(models, {"large": 600})["large"] == 600
    with pytest.raises(ValueError, match="unknown model"):
        resolve_steps(models, {"huge": 3})
    with pytest.raises(ValueError, match="large=0 must be >= 1"):
        resolve_steps(models, {"large": 0})


def test_cli_steps_argument_errors_are_one_line(capsys):
    from arm_jax.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "movielens", "--steps", "large=lots"])
    assert e.value.code == 2
    assert "expected a number or MODEL=N pairs" in capsys.readouterr().err


def test_arguments_are_checked_before_the_data_is_read(tmp_path, movielens_dir, capsys,
                                                       monkeypatch):
    """Every argument error is one line before the data is parsed: a --large-history or
    --large-batch past the config's limits (and bad overrides) used to stop the run only
    when the large tier's turn came, after the other models trained; --out that is a
    directory, after the whole run (a traceback); a store that is malformed or does not
    answer, after the data was parsed; an empty --models ran the bench with no model."""
    import arm_jax.bench.movielens as bench
    from arm_jax.cli.main import main

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the arguments were checked")

    monkeypatch.setattr(bench, "load_movielens", no_data)
    adir = tmp_path / "adir.json"
    adir.mkdir()
    for argv, words in (
            (["--large-history", "100000"], "100000 is out of range"),
            (["--large-batch", "100000000"], "train.batch_size=100000000 is out of range"),
            (["model.d_model=abc"], "model.d_model='abc'"),
            (["--models", ","], "models: none given"),
            (["--id-min-count", "-1"], "--id-min-count -1: must be >= 0"),
            (["--store", "foo://x"], "unknown scheme 'foo'"),
            (["--store", "redis://127.0.0.1:1/0"], "redis://127.0.0.1:1/0: PING failed"),
            (["--out", str(adir)], f"--out {adir}: is a directory"),
            (["--seeds", "0,1", "--out", str(adir)], f"--out {adir}: is a directory")):
        rc = main(["bench", "movielens", "--data", str(movielens_dir), "--out",
                   str(tmp_path / "ml.json"), *argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
        assert words in err, err
