"""`arm-jax data synthetic|check` and `arm-jax train|eval --examples`: the README's path
from files to a checkpoint, and its bad uses as one line and exit 2."""

from __future__ import annotations

import pytest

from arm_jax.cli.main import main

DATA = ("train.train_requests=40", "train.eval_requests=16", "train.num_users=30",
        "train.batch_size=8", "train.candidates=4")


@pytest.fixture(scope="module")
def files(tiny_overrides, tmp_path_factory):
    root = tmp_path_factory.mktemp("data-cmd")
    assert main(["data", "synthetic", "--out", str(root / "data"), "--tier", "small",
                 *tiny_overrides, *DATA]) == 0
    url = f"lmdb://{root / 'logs'}"
    assert main(["store", "load", url, str(root / "data" / "events.npz")]) == 0
    return root, url


def test_synthetic_files_check_train_and_evaluate(files, tiny_overrides, capsys):
    root, url = files
    data = root / "data"
    capsys.readouterr()
    assert main(["data", "check", str(data / "train.npz"), *tiny_overrides]) == 0
    assert "ok for tier small: 40 requests of up to 4 candidates" in capsys.readouterr().out
    # overrides may also come before FILE, as after any other command
    assert main(["data", "check", *tiny_overrides, str(data / "train.npz")]) == 0
    assert "ok for tier small: 40 requests" in capsys.readouterr().out
    out = root / "run"
    assert main(["train", "--tier", "small", "--steps", "2", "--out", str(out),
                 "--no-progress", "--examples", str(data / "train.npz"), "--history-store",
                 url, "--catalog", str(data / "catalog.npz"), *tiny_overrides, *DATA]) == 0
    table = capsys.readouterr().out
    assert "ranker:small" in table and (out / "params").is_dir()
    assert main(["eval", "--checkpoint", str(out), "--examples", str(data / "test.npz"),
                 "--history-store", url, "--catalog", str(data / "catalog.npz")]) == 0
    assert "ranker:small" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["train", "--examples", "{data}/train.npz"], "--examples: needs --history-store"),
    (["train", "--catalog", "{data}/catalog.npz"], "--catalog: only with --examples"),
    (["eval", "--checkpoint", "{root}/none", "--history-store", "{url}"],
     "--history-store: only with --examples"),
    (["train", "--examples", "{data}/events.npz", "--history-store", "{url}"],
     "events.npz: missing arrays"),
    (["train", "--examples", "{data}/train.npz", "--history-store", "lmdb://{root}/nothing"],
     "no LMDB store"),
    (["train", "--examples", "{data}/train.npz", "--history-store", "{url}", "--catalog",
      "{data}/train.npz"], "not a catalogue"),
    (["data", "check", "{data}/train.npz"], "req_sparse"),    # the default (full) widths
])
def test_bad_uses_are_one_line(files, tiny_overrides, capsys, argv, words):
    root, url = files
    argv = [a.format(root=root, data=root / "data", url=url) for a in argv]
    extra = [] if argv[0] == "data" or argv[0] == "eval" else [*tiny_overrides, *DATA]
    if argv[0] == "train":
        argv = [*argv, "--out", str(root / "bad-run"), "--no-progress"]
    capsys.readouterr()
    rc = main([*argv, *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("arm-jax: error: ") and words in err, err
    assert "\n" not in err and not (root / "bad-run").exists()


def test_parquet_files_evaluate_like_the_npz_ones(files, tiny_overrides, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    root, url = files
    pq_data = tmp_path / "pq"
    assert main(["data", "synthetic", "--out", str(pq_data), "--format", "parquet",
                 "--tier", "small", *tiny_overrides, *DATA]) == 0
    pq_url = f"lmdb://{tmp_path / 'logs'}"
    assert main(["store", "load", pq_url, str(pq_data / "events.parquet")]) == 0
    assert main(["data", "check", str(pq_data / "train.parquet"), *tiny_overrides]) == 0
    out = root / "pq-run"
    assert main(["train", "--tier", "small", "--steps", "1", "--out", str(out),
                 "--no-progress", "--examples", str(root / "data" / "train.npz"),
                 "--history-store", url, *tiny_overrides, *DATA]) == 0
    capsys.readouterr()
    tables = []
    for test_file, store in ((root / "data" / "test.npz", url),
                             (pq_data / "test.parquet", pq_url)):
        assert main(["eval", "--checkpoint", str(out), "--examples", str(test_file),
                     "--history-store", store]) == 0
        tables.append([ln for ln in capsys.readouterr().out.splitlines() if "ranker" in ln])
    assert tables[0] and tables[0] == tables[1]


def test_synthetic_out_that_is_a_file_is_one_line_before_any_work(tmp_path, capsys,
                                                                  monkeypatch):
    """`data synthetic --out X` where X is a file (or lies under one) is refused naming it
    before the data is generated; it was a traceback from the first mkdir."""
    import arm_jax.train.loop as loop

    def no_generation(tier):
        raise AssertionError("data generated before --out was checked")

    monkeypatch.setattr(loop, "make_synthetic_data", no_generation)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, words in ((afile, f"--out {afile}: exists and is not a directory"),
                       (afile / "sub", f"--out {afile / 'sub'}: {afile} is a file, not a "
                                       "directory")):
        assert main(["data", "synthetic", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
        assert words in err, err
    assert afile.read_text() == "keep"


def test_synthetic_out_that_holds_a_previous_run_is_one_line_before_any_work(
        tmp_path, capsys, monkeypatch):
    """`data synthetic --out X` where X is not empty (a previous run) is refused naming what
    it holds before the data is generated: a second run replaced the files, and its
    `next:` store load added a second world's events to the first's logs in X/logs. An
    empty X is fine."""
    from arm_jax.train import loop

    class Generated(Exception):
        pass

    def no_generation(tier):
        raise Generated

    monkeypatch.setattr(loop, "make_synthetic_data", no_generation)
    out = tmp_path / "d"
    out.mkdir()
    with pytest.raises(Generated):              # empty: on to the generation
        main(["data", "synthetic", "--out", str(out)])
    (out / "events.npz").write_bytes(b"first run")
    (out / "logs").mkdir()
    assert main(["data", "synthetic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
    assert (f"--out {out}: not empty, holds events.npz, logs (a previous run?); pick a new "
            "directory or remove it") in err, err
    assert (out / "events.npz").read_bytes() == b"first run"


def test_synthetic_interrupted_while_writing_can_simply_be_run_again(tiny_overrides, tmp_path,
                                                                     capsys, monkeypatch):
    """Ctrl-C while the files are written (measured: SIGINT 2.4 s into the bundled run left
    events.npz and train.npz) is one line and exit 130; the same command then completes."""
    from arm_jax.data import synthetic_files

    real_save = synthetic_files.save_examples

    def ctrl_c_at_the_test_file(examples, path):
        if str(path).endswith("test.npz"):
            raise KeyboardInterrupt
        return real_save(examples, path)

    out = tmp_path / "d"
    argv = ["data", "synthetic", "--out", str(out), "--tier", "small", *tiny_overrides, *DATA]
    monkeypatch.setattr(synthetic_files, "save_examples", ctrl_c_at_the_test_file)
    assert main(argv) == 130
    assert capsys.readouterr().err == "arm-jax: interrupted\n"
    monkeypatch.setattr(synthetic_files, "save_examples", real_save)
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["catalog.npz", "events.npz", "test.npz",
                                                     "train.npz"]
