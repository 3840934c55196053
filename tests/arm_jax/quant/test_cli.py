"""`arm-jax quantize`: files written, the decision table, and one-line errors."""

import json

import pytest

from arm_jax.cli.main import main


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    from arm_jax.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("qcli") / "small", kind="ranker",
                           tier=tiny["tier"], params=tiny["params"])


def test_quantize_writes_checkpoint_plan_and_table(checkpoint, tmp_path, capsys):
    from arm_jax.checkpoint import read_config

    out = tmp_path / "q"
    code = main(["quantize", "--checkpoint", str(checkpoint), "--tier", "small",
                 "--out", str(out), "--no-export", "--calib-requests", "32",
                 "--holdout-requests", "32", "--candidates", "8"])
    assert code == 0
    text = capsys.readouterr().out
    assert "wukong/0/mlp_in" in text and "held-out AUC drop" in text and "faster than" in text
    plan = json.loads((out / "plan.json").read_text())
    kind, tier = read_config(out / "checkpoint")
    assert kind == "ranker" and len(tier.quant.layers) == len(plan["layers"]) > 0
    assert plan["plan_holdout_auc_drop"] <= 0.001


@pytest.mark.parametrize("args, message", [
    (["--budget-auc", "2"], "--budget-auc=2.0"),
    (["--tier", "huge"], "--tier huge: no such tier in"),
    (["--calib-requests", "0"], "--calib-requests=0"),
])
def test_quantize_bad_arguments_exit_2_with_one_line(checkpoint, tmp_path, capsys, args,
                                                     message):
    base = {"--checkpoint": str(checkpoint), "--tier": "small", "--out": str(tmp_path / "o")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["quantize", "--no-export"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_quantize_out_that_is_a_file_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    """It used to calibrate, time and select, then fail writing out/checkpoint."""
    out = tmp_path / "o"
    out.write_text("not a directory")
    assert main(["quantize", "--no-export", "--checkpoint", str(checkpoint), "--tier", "small",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"arm-jax: error: --out {out}: exists and is not a directory"]


@pytest.mark.parametrize("case", ["out under a file", "foreign checkpoint dir", "platform typo"])
def test_quantize_outputs_are_checked_before_any_work(checkpoint, tmp_path, capsys,
                                                      monkeypatch, case):
    """Only an --out that was itself a file was refused first: under a file, or with a
    checkpoint/ that is not one, it calibrated, timed and selected, then failed at the
    save (and a mistyped export platform was exported without a word)."""
    import arm_jax.quant.pipeline as pipeline

    monkeypatch.setattr(pipeline, "quantize",
                        lambda *a, **k: pytest.fail("quantized before checking the outputs"))
    out, extra = tmp_path / "o", ["--no-export"]
    if case == "out under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "q"
        words = f"--out {out}: {tmp_path / 'afile'} is a file, not a directory"
    elif case == "foreign checkpoint dir":
        (out / "checkpoint").mkdir(parents=True)
        (out / "checkpoint" / "precious.txt").write_text("x")
        words = "refusing to save a checkpoint into a non-empty directory"
    else:
        extra = ["--platforms", "cpu,cdua"]
        words = "--platforms cpu,cdua: unknown platform 'cdua' (known: cpu, cuda, rocm, tpu)"
    assert main(["quantize", *extra, "--checkpoint", str(checkpoint), "--tier", "small",
                 "--out", str(out), "--calib-requests", "32", "--holdout-requests", "32",
                 "--candidates", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("arm-jax: error: ") and words in err[0], err


@pytest.mark.parametrize("argv, words", [
    (["quantize", "--tier", "small", "--calib-requests", "5"],
     "--calib-requests=5: must be at least the batch size 32"),
    (["bench", "precision", "--tier", "small", "--calib-requests", "5"],
     "--calib-requests=5: must be at least the batch size 32"),
    (["bench", "precision", "--tier", "small", "--test-requests", "31"],
     "--test-requests=31: must be at least the batch size 32"),
])
def test_request_sets_smaller_than_a_batch_are_refused_before_any_work(
        checkpoint, tmp_path, capsys, monkeypatch, argv, words):
    """`bench precision` trained first and then refused 5 calibration requests; 31 test
    requests made an empty test set that failed after the whole quantization."""
    import arm_jax.bench.precision as precision
    import arm_jax.checkpoint as ckpt

    monkeypatch.setattr(precision, "run_precision_bench",
                        lambda *a, **k: pytest.fail("the bench ran before the checks"))
    monkeypatch.setattr(ckpt, "load_checkpoint",
                        lambda *a, **k: pytest.fail("read the checkpoint before the checks"))
    extra = (["--checkpoint", str(checkpoint), "--no-export"] if argv[0] == "quantize"
             else ["--steps", "1"])
    assert main([*argv, *extra, "--out", str(tmp_path / "o.json" if argv[0] == "bench"
                                             else tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"arm-jax: error: {words}", err


@pytest.fixture(scope="module")
def bf16_checkpoint(tiny, tmp_path_factory):
    """The tiny model's weights under a model.dtype=bfloat16 config (same parameters)."""
    import dataclasses

    from arm_jax.checkpoint import save_checkpoint

    t = tiny["tier"]
    tier = dataclasses.replace(t, model=dataclasses.replace(t.model, dtype="bfloat16"))
    return save_checkpoint(tmp_path_factory.mktemp("qbf") / "small", kind="ranker", tier=tier,
                           params=tiny["params"])


@pytest.mark.parametrize("case", ["candidates over max", "bf16 compute", "tier not there"])
def test_quantize_checkpoint_mismatches_are_refused_before_any_work(
        checkpoint, bf16_checkpoint, tmp_path, capsys, monkeypatch, case):
    """--candidates 2000 on a tier that carries at most 1024 was timed (and the plan chosen)
    at a shape it never serves; a bfloat16-compute tier was quantized against float32
    compute; a missing --tier was reported as '--tiers', a flag quantize does not have."""
    import arm_jax.quant.pipeline as pipeline

    monkeypatch.setattr(pipeline, "quantize",
                        lambda *a, **k: pytest.fail("quantized a mismatched checkpoint"))
    ckpt, extra = checkpoint, ["--tier", "small"]
    if case == "candidates over max":
        extra += ["--candidates", "2000"]
        words = "--candidates 2000: must be <= features.max_candidates=1024 (tier small)"
    elif case == "bf16 compute":
        ckpt = bf16_checkpoint
        words = "tier 'small': model.dtype=bfloat16: quantize measures"
    else:
        extra = ["--tier", "huge"]
        words = f"--tier huge: no such tier in {checkpoint} (found: small)"
    assert main(["quantize", "--no-export", "--checkpoint", str(ckpt), *extra,
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("arm-jax: error: ") and words in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["tier not in checkpoint", "candidates over max"])
def test_bench_precision_checks_tier_and_candidates_before_any_work(
        checkpoint, tmp_path, capsys, monkeypatch, case):
    """`--tier large --checkpoint <small>` benched the small tier (--tier was never read);
    --candidates over features.max_candidates was accepted (after training, untried)."""
    import arm_jax.bench.precision as precision
    import arm_jax.train.loop as loop

    monkeypatch.setattr(loop, "train_model",
                        lambda *a, **k: pytest.fail("trained before the checks"))
    if case == "tier not in checkpoint":
        monkeypatch.setattr(precision, "run_precision_bench",
                            lambda *a, **k: pytest.fail("benched the checkpoint's tier"))
        argv = ["--tier", "large", "--checkpoint", str(checkpoint)]
        words = f"--tier large: no such tier in {checkpoint} (found: small)"
    else:   # the real bench: it must refuse before training
        argv = ["--tier", "small", "--steps", "1", "--candidates", "8,2000"]
        words = "--candidates 2000: must be <= features.max_candidates=1024 (tier small)"
    assert main(["bench", "precision", *argv, "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"arm-jax: error: {words}", err
