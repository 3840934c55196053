"""`arm-jax embeddings plan`: --out is checked before the ids are read, and a bad --data
file is one line naming it."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.cli.main import main


@pytest.mark.parametrize("kind", ["under a file", "a directory"])
def test_plan_out_is_checked_before_the_ids_are_read(tmp_path, capsys, monkeypatch, kind):
    """The plan was computed and printed, then writing --out was a FileExistsError or
    IsADirectoryError traceback."""
    import arm_jax.embeddings.id_data as id_data

    monkeypatch.setattr(id_data, "load_columns",
                        lambda *a, **k: pytest.fail("read the ids before checking --out"))
    if kind == "under a file":
        (tmp_path / "afile").write_text("x")
        out, words = tmp_path / "afile" / "x.yaml", f"{tmp_path / 'afile'} is a file"
    else:
        out, words = tmp_path, "is a directory (expected a file name)"
    rc = main(["embeddings", "plan", "--data", "synthetic", "--budget-params", "100000",
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"arm-jax: error: --out {out}: ") and words in err, err
    assert "\n" not in err


def test_a_lone_npy_as_data_is_one_line(tmp_path, capsys):
    path = tmp_path / "ids.npz"
    with path.open("wb") as f:
        np.save(f, np.arange(10))
    rc = main(["embeddings", "plan", "--data", str(path), "--budget-params", "10000"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"arm-jax: error: --data {path}: ") and "\n" not in err


def test_overrides_the_plan_would_ignore_are_refused(capsys):
    rc = main(["embeddings", "plan", "--data", "synthetic", "--budget-params", "100000",
               "train.seed=3", "features.sparse_hash_size=1009", "model.d_model=16",
               "model.encoder_layers=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("arm-jax: error: embeddings plan: overrides train.seed=3 "
                               "model.encoder_layers=1 would be ignored: it reads features.* "
                               "and model.d_model only"), err


def _ids_npz(tmp_path):
    """Ids of two request fields of different sizes, one candidate field and the items."""
    r = np.random.default_rng(0)
    path = tmp_path / "ids.npz"
    np.savez(path, req_0=r.integers(0, 400, 4000), req_1=r.integers(0, 20, 4000),
             cand_0=r.integers(0, 60, 4000), item=r.integers(0, 900, 8000))
    return path


def test_group_without_out_is_refused_before_the_ids_are_read(capsys, monkeypatch):
    """--group only goes into the --out YAML (it does not change the sizes): without --out
    it was silently ignored."""
    import arm_jax.embeddings.id_data as id_data

    monkeypatch.setattr(id_data, "load_columns",
                        lambda *a, **k: pytest.fail("read the ids before refusing --group"))
    rc = main(["embeddings", "plan", "--data", "synthetic", "--budget-params", "100000",
               "--group", "req_3,req_5"])
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2 and cap.out == "" and "\n" not in err, err
    assert err.startswith("arm-jax: error: embeddings plan: --group is written to the --out "
                          "YAML only"), err


def test_unknown_group_is_refused_before_the_plan_is_printed(tmp_path, capsys):
    """The whole plan was printed, then writing --out refused the unknown name."""
    out = tmp_path / "plan.yaml"
    rc = main(["embeddings", "plan", "--data", str(_ids_npz(tmp_path)), "--budget-params",
               "20000", "--dim", "8", "--group", "req_0,nope", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and not out.exists()
    assert cap.err.strip() == ("arm-jax: error: --group req_0,nope: unknown feature(s) "
                               "['nope']; known: ['cand_0', 'item', 'req_0', 'req_1']")


def test_the_params_the_written_overrides_build_are_printed_beside_the_plan(
        tmp_path, capsys, tiny_overrides):
    """One features.sparse_hash_size (the largest planned) for every sparse field builds
    more than the plan's params; the CLI printed only the plan's."""
    import yaml

    out = tmp_path / "plan.yaml"
    rc = main(["embeddings", "plan", "--data", str(_ids_npz(tmp_path)), "--budget-params",
               "40000", "--out", str(out), *(o for o in tiny_overrides      # what it reads
                                              if o.startswith(("features.", "model.d_model=")))])
    lines = capsys.readouterr().out.splitlines()
    doc = yaml.safe_load(out.read_text())
    rows = {k: v["rows"] for k, v in doc["embeddings"]["features"].items()}
    sparse = max(rows["req_0"], rows["req_1"], rows["cand_0"])
    # what is written is unchanged: the largest sparse size and the item rows
    assert doc["overrides"] == [f"features.sparse_hash_size={sparse}",
                                f"features.item_hash_size={rows['item']}"]
    used, dim = doc["embeddings"]["used_params"], doc["embeddings"]["dim"]
    built = ((3 + 3) * sparse + rows["item"]) * dim      # tiny tier: 3 req + 3 cand fields
    assert rc == 0 and dim == 16 and built > used
    i = next(i for i, ln in enumerate(lines) if ln.startswith(f"params {used:,} of budget"))
    assert lines[i + 1] == (f"tier overrides in {out} ({' '.join(doc['overrides'])}) build "
                            f"{built:,} table params at dim 16, not {used:,}: a tier has one "
                            "hash size for all sparse fields (the largest planned)")


@pytest.mark.parametrize("given", [["--batch", "4096"], ["--candidates", "64"],
                                   ["--batch", "4096", "--candidates", "4096"]])
def test_plan_train_mode_refuses_the_serving_bucket_options(capsys, monkeypatch, given):
    """--mode train --batch 4096 planned training at the tier's own batch, silently."""
    import arm_jax.parallel.planner as planner

    monkeypatch.setattr(planner, "plan_memory", lambda *a, **k: pytest.fail("planned"))
    rc = main(["plan", "--tier", "small", "--devices", "8", "--device-memory", "80GiB",
               "--mode", "train", *given])
    err = capsys.readouterr().err.strip()
    named = " and ".join(o for o in given if o.startswith("--"))
    assert rc == 2 and "\n" not in err and err.startswith(
        f"arm-jax: error: plan: {named} size the serving bucket only"), err
    assert "train.batch_size=N" in err
