"""The top-level index and `--out` of an export: a tier directory, a foreign or malformed
index, reserved tier names and ragged bucket lists are refused in one line, before any
compile, and leave the directory they were pointed at as it was."""

from __future__ import annotations

import json

import pytest

from arm_jax.cli.main import main
from arm_jax.compile import ArtifactError, load
from arm_jax.compile import manifest as mf
from arm_jax.compile import export as export_mod
from arm_jax.compile.export import check_bucket_grid, export_tiers
from arm_jax.compile.report import summary_rows


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if an export reaches its first tier."""
    def refuse(*args, **kwargs):
        raise AssertionError("the export started before its arguments were checked")

    monkeypatch.setattr(export_mod, "export_tier", refuse)


def _tree(root):
    return sorted((p.relative_to(root).as_posix(), p.read_bytes() if p.is_file() else b"")
                  for p in root.rglob("*"))


def test_a_tier_directory_is_not_an_artifact_directory(artifact_copy, capsys):
    """`inspect --verify` on a tier directory printed an empty table and "every file matches
    its sha256" (exit 0) without checking a file."""
    tier_dir = artifact_copy / "small"
    (tier_dir / "executables" / "b1_n4.cpu.xla").write_bytes(b"truncated")
    assert main(["inspect", str(tier_dir), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "a tier manifest, not an artifact index; use the artifact directory above it, " \
           f"{artifact_copy}" in err, err
    with pytest.raises(ArtifactError, match="a tier manifest, not an artifact index"):
        load(tier_dir)


def test_an_index_listing_no_tiers_fails_verify(artifact_copy):
    index = json.loads((artifact_copy / mf.INDEX).read_text())
    index["tiers"] = {}
    (artifact_copy / mf.INDEX).write_text(json.dumps(index))
    assert mf.verify(artifact_copy) == [f"{artifact_copy / mf.INDEX}: the index lists no tiers"]


@pytest.mark.parametrize("tiers, words", [
    (["small"], "field 'tiers' must be an object"),
    (None, "field 'tiers' must be an object"),
    ({"small": "abc"}, "tiers.small: expected an object with a 'sha256' string"),
    ({"../../elsewhere": {"sha256": "0"}}, "bad tier name '../../elsewhere'"),
])
def test_a_malformed_index_is_one_error_everywhere(artifact_copy, capsys, tiers, words):
    """These were AttributeError tracebacks from inspect --verify, load() and serve; a tier
    name with '..' loaded files from outside the artifact directory."""
    index = json.loads((artifact_copy / mf.INDEX).read_text())
    index["tiers"] = tiers
    (artifact_copy / mf.INDEX).write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="tiers"):
        load(artifact_copy)
    assert main(["inspect", str(artifact_copy), "--verify"]) == 1
    assert words in capsys.readouterr().err
    assert main(["inspect", str(artifact_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arm-jax: error: ") and err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("edit", ["drop_cost", "null_buckets"])
def test_inspect_names_a_malformed_tier_manifest(artifact_copy, capsys, edit):
    """Without --verify, a hand-edited tier manifest was a KeyError / TypeError traceback."""
    path = artifact_copy / "small" / mf.INDEX
    m = json.loads(path.read_text())
    if edit == "drop_cost":
        del m["buckets"][0]["cost"]
    else:
        m["buckets"] = None
    path.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=f"{path}: malformed tier manifest"):
        summary_rows(artifact_copy)
    assert main(["inspect", str(artifact_copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed tier manifest" in err, err


def test_export_into_a_tier_directory_stops_before_any_work(exported, artifact_copy,
                                                            no_compile):
    """It compiled, then died with KeyError: 'tiers', leaving small/small/ inside the
    tier: the artifact directory around it no longer verified or loaded."""
    before = _tree(artifact_copy)
    with pytest.raises(ArtifactError, match=f"--out {artifact_copy / 'small'}: .*a tier "
                                            "manifest.*use the artifact directory above it"):
        export_tiers({"small": exported["ckpt"]}, artifact_copy / "small", progress=False)
    assert _tree(artifact_copy) == before


@pytest.mark.parametrize("content", ['{"name": "my-other-project"}', '{"format": "arm-jax-a'])
def test_export_never_replaces_a_foreign_or_damaged_index(exported, tmp_path, no_compile,
                                                          content):
    """Both were replaced silently: another tool's manifest.json overwritten, or the tiers
    a damaged index listed dropped from the new one (still on disk, no longer served)."""
    out = tmp_path / "art"
    out.mkdir()
    (out / mf.INDEX).write_text(content)
    with pytest.raises(ArtifactError, match=f"--out {out}: .*refusing to replace it"):
        export_tiers({"small": exported["ckpt"]}, out, progress=False)
    assert (out / mf.INDEX).read_text() == content


@pytest.mark.parametrize("name", ["manifest.json", "x.tmp", ".hidden", "a/b", ""])
def test_reserved_tier_names_are_refused(exported, tmp_path, no_compile, name):
    """`manifest.json=CKPT` compiled, then failed to write the index over its own tier
    directory, leaving a manifest.json directory that broke every later export."""
    with pytest.raises(ArtifactError, match="bad tier name"):
        export_tiers({name: exported["ckpt"]}, tmp_path / "art", progress=False)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("out, words", [("", "--out '': names no directory"),
                                        ("afile/x", "afile is a file, not a directory")])
def test_export_out_is_checked_like_every_output(exported, tmp_path, no_compile, out, words):
    """`--out ""` exported into the current directory; a path under a file was a bare
    [Errno 20] naming no option."""
    (tmp_path / "afile").write_text("x")
    target = "" if not out else str(tmp_path / out)
    with pytest.raises(ArtifactError, match=words):
        export_tiers({"small": exported["ckpt"]}, target, progress=False)


def test_bucket_lists_must_be_a_grid(exported, tmp_path, no_compile):
    """A ragged list was recorded as the full grid; the server then grouped requests into
    a bucket never compiled, and answered 500."""
    assert check_bucket_grid([(1, 4), (1, 4), (2, 4), (1, 8), (2, 8)]) == ((1, 2), (4, 8))
    with pytest.raises(ArtifactError, match=r"missing \(1, 16\) and 1 more"):
        export_tiers({"small": exported["ckpt"]}, tmp_path / "art",
                     buckets=[(1, 4), (2, 16)], progress=False)
    assert not (tmp_path / "art").exists()
