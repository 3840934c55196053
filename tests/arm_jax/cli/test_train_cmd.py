"""`arm-jax train --checkpoint-every / --resume`: bad use is one line and a non-zero exit."""

from __future__ import annotations

import pytest

from arm_jax.cli.main import main

SMALL_DATA = ("train.train_requests=16", "train.eval_requests=8", "train.num_users=20",
              "train.batch_size=8")


@pytest.mark.parametrize("flags, words", [
    (["--resume"], "--resume: no training state under"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0, got -1"),
])
def test_bad_resume_use_is_one_line(tiny_overrides, tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    rc = main(["train", "--tier", "small", "--out", str(out), "--no-progress", *flags,
               *tiny_overrides, *SMALL_DATA])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("arm-jax: error: ") and words in err, err
    assert "\n" not in err and not (out / "params").exists()
