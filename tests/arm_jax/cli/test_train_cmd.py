"""`arm-jax train` and `eval`: bad use (of --checkpoint-every / --resume, a batch larger
than the data) is one line and a non-zero exit; undefined figures are null and "-"."""

from __future__ import annotations

import json

import pytest

from arm_jax.cli.main import main

SMALL_DATA = ("train.train_requests=16", "train.eval_requests=8", "train.num_users=20",
              "train.batch_size=8")


@pytest.mark.parametrize("flags, extra, words", [
    (["--resume"], [], "--resume: no training state under"),
    (["--checkpoint-every", "-1"], [], "--checkpoint-every must be >= 0, got -1"),
    # a batch larger than the training set used to wait forever for its first batch
    ([], ["train.batch_size=32"], "train.batch_size=32: more than the 16 training requests"),
])
def test_bad_train_use_is_one_line(tiny_overrides, tmp_path, capsys, flags, extra, words):
    out = tmp_path / "run"
    rc = main(["train", "--tier", "small", "--out", str(out), "--no-progress", *flags,
               *tiny_overrides, *SMALL_DATA, *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("arm-jax: error: ") and words in err, err
    assert "\n" not in err and not (out / "params").exists()


@pytest.mark.parametrize("flags", [[], ["--checkpoint-every", "1"]])
def test_out_that_is_a_file_is_refused_before_training(tiny_overrides, tmp_path, capsys, flags):
    """Without --checkpoint-every it trained every step, then died in save_checkpoint with a
    FileExistsError traceback; with it, '[Errno 20] Not a directory: .../train_state'."""
    out = tmp_path / "run"
    out.write_text("not a directory")
    rc = main(["train", "--tier", "small", "--out", str(out), "--no-progress", *flags,
               *tiny_overrides, *SMALL_DATA])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"arm-jax: error: --out {out}: exists and is not a directory"


def test_resume_with_baselines_starts_the_ones_never_reached(tiny_overrides, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--tier", "small", "--out", str(out), "--no-progress", "--steps", "2",
              "--checkpoint-every", "1"]
    assert main([*common, *tiny_overrides, *SMALL_DATA]) == 0      # saved after step 1
    capsys.readouterr()
    assert main([*common, "--baselines", "--resume", *tiny_overrides, *SMALL_DATA]) == 0
    err = capsys.readouterr().err
    assert "resuming ranker:small after step 1 of 2" in err, err
    assert "resuming logreg" not in err                             # it had no state: fresh
    assert (tmp_path / "run-logreg" / "params").is_dir()


def test_baselines_of_a_tier_file_with_its_own_features_train_on_its_data(tmp_path, capsys):
    """The data is drawn with the tier's features; the small baseline must read the same
    ones, not features.yaml's (it failed with 'req_sparse: shape (8, 3), expected ...
    req_sparse_fields=8' after the ranker and logreg runs had finished)."""
    tier = tmp_path / "mine.yaml"
    tier.write_text(
        "model: {d_model: 16, history_len: 12, encoder_heads: 2, target_heads: 2, "
        "mlp_hidden: 32, head_hidden: 16, fm_tokens: 4, lcb_tokens: 4, fm_rank: 4, "
        "summary_tokens: 2}\n"
        "features: {req_sparse_fields: 3, req_dense_features: 4, cand_sparse_fields: 3, "
        "cand_dense_features: 2, sparse_hash_size: 97, item_hash_size: 101}\n")
    out = tmp_path / "run"
    rc = main(["train", "--tier", str(tier), "--out", str(out), "--no-progress", "--steps", "1",
               "--baselines", *SMALL_DATA])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "ranker:small" in captured.out and (tmp_path / "run-small" / "params").is_dir()


def _refuse(constant: str) -> None:
    raise ValueError(f"non-strict JSON constant {constant}")


def test_eval_prints_strict_json_and_a_dash_for_what_it_did_not_measure(
        tiny_overrides, tmp_path, capsys):
    """eval has no training time (its table printed 'nan'); an AUC over one class is nan
    too, which json.dumps wrote as a bare NaN that strict parsers refuse."""
    out = tmp_path / "run"
    assert main(["train", "--tier", "small", "--out", str(out), "--no-progress", "--steps", "1",
                 *tiny_overrides, *SMALL_DATA]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=_refuse)
    assert main(["eval", "--checkpoint", str(out)]) == 0
    text, err = capsys.readouterr()
    assert "evaluating on tier small's bundled synthetic held-out requests" in err   # not files
    printed, end = json.JSONDecoder(parse_constant=_refuse).raw_decode(text)
    assert printed["overall"] == metrics["overall"]
    row = next(line for line in text[end:].splitlines() if line.startswith("ranker:small"))
    assert row.split()[-1] == "-" and "nan" not in row.lower()


def _no_work(monkeypatch) -> None:
    """Fail the test if training data is made or a run starts."""
    import arm_jax.train.loop as loop

    def fail(*a, **k):
        pytest.fail("work started before the output directories were checked")

    monkeypatch.setattr(loop, "make_synthetic_data", fail)
    monkeypatch.setattr(loop, "train_model", fail)


def test_out_under_a_file_is_refused_before_training(tiny_overrides, tmp_path, capsys,
                                                     monkeypatch):
    """`--out afile/sub` trained and evaluated the whole run, then died at the save with
    '[Errno 20] Not a directory', naming no option."""
    _no_work(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc = main(["train", "--tier", "small", "--out", str(afile / "sub"), "--no-progress",
               *tiny_overrides, *SMALL_DATA])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"arm-jax: error: --out {afile / 'sub'}: {afile} is a file, "
                               "not a directory")


@pytest.mark.parametrize("tier, baseline", [("small", "run-logreg"), ("medium", "run-small")])
def test_baseline_outputs_are_checked_before_the_first_run(tiny_overrides, tmp_path, capsys,
                                                           monkeypatch, tier, baseline):
    """A baseline's directory was checked in its own run: after the main model had trained
    and been saved, so the comparison table was never printed."""
    _no_work(monkeypatch)
    (tmp_path / baseline).write_text("x")
    rc = main(["train", "--tier", tier, "--out", str(tmp_path / "run"), "--no-progress",
               "--baselines", *tiny_overrides, *SMALL_DATA])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"arm-jax: error: --baselines output {tmp_path / baseline}: exists and is "
                               "not a directory")
    assert not (tmp_path / "run").exists()


def test_resume_passes_the_check_of_a_baseline_with_a_saved_state(tiny_overrides, tmp_path,
                                                                  monkeypatch):
    """The up-front check is the save check each run makes: a baseline directory holding
    only an interrupted run's state (what --resume continues) is no reason to refuse."""
    import arm_jax.train.loop as loop

    started = []

    class Started(Exception):
        pass

    def record(tier, data, *, kind, out_dir, **kw):
        started.append((kind, out_dir, kw["resume"]))
        raise Started

    monkeypatch.setattr(loop, "train_model", record)
    (tmp_path / "run" / "train_state").mkdir(parents=True)
    (tmp_path / "run-logreg" / "train_state").mkdir(parents=True)
    with pytest.raises(Started):
        main(["train", "--tier", "small", "--out", str(tmp_path / "run"), "--no-progress",
              "--baselines", "--resume", *tiny_overrides, *SMALL_DATA])
    assert started == [("ranker", tmp_path / "run", True)]
