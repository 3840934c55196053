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


@pytest.mark.parametrize("under", [False, True])
def test_export_cache_dir_that_cannot_be_made_is_one_line_before_out(exported, tmp_path,
                                                                     capsys, under):
    """--cache-dir naming a file was a FileExistsError traceback at the first compile, and
    left the --out directory behind, empty."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    cache = afile / "sub" if under else afile
    out = tmp_path / "art"
    rc = main(["export", "--checkpoint", f"tiny={exported['ckpt']}", "--out", str(out),
               "--platforms", "cpu", "--batch-buckets", "1", "--candidate-buckets", "4",
               "--cache-dir", str(cache)])
    err = capsys.readouterr().err.strip()
    words = f"{afile} is a file, not a directory" if under else "exists and is not a directory"
    assert rc == 2 and err == f"arm-jax: error: --cache-dir {cache}: {words}", err
    assert not out.exists() and afile.read_text() == "x"


def test_export_unknown_platform_is_refused_before_any_work(exported, tmp_path, capsys):
    """jax.export takes any platform name: `--platforms cpu,cdua` exited 0 and wrote a
    b1_n4.cdua.jaxexport module that no device loads."""
    out = tmp_path / "art"
    rc = main(["export", "--checkpoint", f"tiny={exported['ckpt']}", "--out", str(out),
               "--platforms", "cpu,cdua", "--batch-buckets", "1", "--candidate-buckets", "4",
               "--no-cache"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("arm-jax: error: --platforms cpu,cdua: unknown platform 'cdua' "
                               "(known: cpu, cuda, rocm, tpu)"), err
    assert not out.exists()


def test_export_tiers_refuses_an_unknown_platform(exported, tmp_path):
    from arm_jax.compile.export import export_tiers

    with pytest.raises(ArtifactError, match=r"platforms: unknown platforms 'gpu', 'x86' "
                                            r"\(known: cpu, cuda, rocm, tpu\)"):
        export_tiers({"tiny": exported["ckpt"]}, tmp_path / "art", platforms=("gpu", "x86"),
                     cache_dir=None, progress=False)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("verify", [[], ["--verify"]])
def test_inspect_of_no_directory_says_so_like_serve(tmp_path, capsys, verify):
    """`inspect nothere --verify` printed `FAIL missing file: nothere/manifest.json`."""
    rc = main(["inspect", str(tmp_path / "nothere"), *verify])
    assert rc == 2 and capsys.readouterr().err == (
        f"arm-jax: error: artifacts: {tmp_path / 'nothere'} is not a directory\n")
