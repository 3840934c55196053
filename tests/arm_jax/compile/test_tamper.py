"""Hashes are checked before anything is deserialized: tampered, missing, foreign artifacts
are refused with ArtifactError naming the file; `inspect --verify` exits non-zero."""

from __future__ import annotations

import json

import pytest

from arm_jax.cli.main import main
from arm_jax.compile import ArtifactError, load
from arm_jax.compile import manifest as mf


def _flip_byte(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", ["small/executables/b1_n8.cpu.xla", "small/weights/_METADATA",
                                 "small/exported/b2_n4.cuda.jaxexport"])
def test_tampered_file_is_refused(artifact_copy, rel, capsys):
    _flip_byte(artifact_copy / rel, offset=len((artifact_copy / rel).read_bytes()) // 2)
    with pytest.raises(ArtifactError, match=rf"hash mismatch: .*{rel}"):
        load(artifact_copy)
    assert main(["inspect", str(artifact_copy), "--verify"]) == 1
    assert rel in capsys.readouterr().err


def test_missing_file_is_refused(artifact_copy, capsys):
    (artifact_copy / "small/executables/b2_n8.cpu.xla").unlink()
    with pytest.raises(ArtifactError, match=r"missing file: .*b2_n8\.cpu\.xla"):
        load(artifact_copy)
    assert main(["inspect", str(artifact_copy), "--verify"]) == 1
    assert "b2_n8.cpu.xla" in capsys.readouterr().err


def test_edited_manifest_and_extra_file_are_refused(artifact_copy):
    m = artifact_copy / "small" / "manifest.json"
    data = json.loads(m.read_text())
    data["buckets"][0]["cost"]["flops"] = 1.0
    m.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="tier manifest changed"):
        load(artifact_copy)


def test_unlisted_file_is_reported(artifact_copy):
    (artifact_copy / "small/executables/extra.xla").write_bytes(b"\0")
    assert any("unexpected file" in p for p in mf.verify(artifact_copy))


def _rehash(root, edit):
    """Edit a tier manifest and re-sign it honestly: only the runtime check can refuse."""
    m = root / "small" / "manifest.json"
    data = json.loads(m.read_text())
    edit(data)
    m.write_text(json.dumps(data))
    index = json.loads((root / "manifest.json").read_text())
    index["tiers"]["small"]["sha256"] = mf.sha256_file(m)
    (root / "manifest.json").write_text(json.dumps(index))
    assert mf.verify(root) == []


def test_version_mismatch_is_refused(artifact_copy):
    _rehash(artifact_copy, lambda d: d.update(jax="0.0.1"))
    with pytest.raises(ArtifactError, match=r"built with jax 0\.0\.1.*portable=True"):
        load(artifact_copy)


def test_platform_mismatch_is_refused(artifact_copy):
    _rehash(artifact_copy, lambda d: d.update(platform="tpu"))
    with pytest.raises(ArtifactError, match=r"platform 'tpu'"):
        load(artifact_copy)


def test_not_an_artifact_directory(tmp_path):
    with pytest.raises(ArtifactError, match="missing file: .*manifest.json"):
        load(tmp_path)
    with pytest.raises(ArtifactError, match="not a directory"):
        load(tmp_path / "nope")


def test_inspect_verify_ok_prints_table(exported, capsys):
    assert main(["inspect", str(exported["dir"]), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs/req" in out and "2x8" in out and "every file matches" in out
    assert main(["inspect", str(exported["dir"]), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    r = next(r for r in rows if r["bucket"] == "2x8")
    assert r["flops_per_candidate"] == pytest.approx(r["flops"] / 16)
