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
               "train.seed=3", "features.sparse_hash_size=1009"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("arm-jax: error: embeddings plan: overrides train.seed=3 would "
                               "be ignored: it reads features.* and model.d_model only"), err
