"""`arm-jax export`: how --checkpoint maps to tiers, and the command end to end."""

from __future__ import annotations

import json
import shutil

import pytest

from arm_jax.cli.main import main
from arm_jax.compile import ArtifactError, load
from arm_jax.compile.export import resolve_checkpoints


def test_resolve_checkpoint_forms(exported, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(exported["ckpt"], runs / "small")
    shutil.copytree(exported["ckpt"], runs / "large")
    (runs / "small-logreg").mkdir()
    (runs / "small-logreg" / "config.json").write_text(
        json.dumps({"kind": "logreg", "tier": exported["tier"].to_dict()}))
    assert list(resolve_checkpoints([str(runs)], None)) == ["large", "small"]
    assert list(resolve_checkpoints([str(runs)], ["small", "large"])) == ["small", "large"]
    assert list(resolve_checkpoints([str(runs / "small")], None)) == ["small"]  # config name
    got = resolve_checkpoints([f"medium={runs / 'large'}"], None)
    assert got == {"medium": runs / "large"}
    with pytest.raises(ArtifactError, match="--tiers medium: no checkpoint found"):
        resolve_checkpoints([str(runs)], ["medium"])
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_checkpoints([str(tmp_path / "nope")], None)


def test_export_command_end_to_end(exported, tmp_path, capsys):
    out = tmp_path / "art"
    rc = main(["export", "--checkpoint", f"tiny={exported['ckpt']}", "--out", str(out),
               "--platforms", "cpu", "--batch-buckets", "1", "--candidate-buckets", "4,8",
               "--cache-dir", str(exported["cache"])])
    assert rc == 0
    assert "FLOPs/req" in capsys.readouterr().out
    tier = load(out).tiers["tiny"]
    assert tier.buckets == [(1, 4), (1, 8)]
    assert tier.config.serving.batch_buckets == (1,)
    # a directory that is not an export is never replaced
    (tmp_path / "keep" / "tiny").mkdir(parents=True)
    (tmp_path / "keep" / "tiny" / "precious.txt").write_text("x")
    rc = main(["export", "--checkpoint", f"tiny={exported['ckpt']}", "--out",
               str(tmp_path / "keep"), "--platforms", "cpu", "--no-cache"])
    assert rc == 2 and "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "keep" / "tiny" / "precious.txt").exists()


def test_export_out_that_is_a_file_is_one_line(exported, tmp_path, capsys):
    """--out naming an existing file died in a FileExistsError traceback from mkdir."""
    f = tmp_path / "artifacts"
    f.write_text("not a directory")
    rc = main(["export", "--checkpoint", f"tiny={exported['ckpt']}", "--out", str(f),
               "--platforms", "cpu", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and "not a directory" in err and "Traceback" not in err
    assert f.read_text() == "not a directory"
