"""Swapping in another export's weights (its tier directory or weights/): checked against
the config in its tier manifest and its files' sha256, like a training checkpoint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from arm_jax.compile import ArtifactError, load
from arm_jax.compile.export import export_tiers
from arm_jax.data.random_batch import random_batch


def _export(exported, ckpt, out):
    return export_tiers({"small": ckpt}, out, platforms=(), buckets=[(1, 4)],
                        cache_dir=exported["cache"], progress=False) / "small"


@pytest.fixture
def same_export(exported, checkpoint_like, tmp_path):
    """Another export of a checkpoint of the tier's own config (other weights)."""
    return _export(exported, checkpoint_like(21, "same"), tmp_path / "same")


@pytest.fixture
def gelu_export(exported, checkpoint_like, tmp_path):
    """An export of a checkpoint of the same shapes, trained with GELU."""
    return _export(exported, checkpoint_like(22, "gelu", activation="gelu"), tmp_path / "gelu")


def _scores(tier, seed=9):
    batch = random_batch(tier.config.features, batch=1, candidates=4, history=6, seed=seed)
    return tier.score(batch).probs


def test_an_export_of_the_same_config_swaps_in(exported, same_export):
    tier = load(exported["dir"]).tiers["small"]
    before = _scores(tier)
    want = _scores(load(same_export.parent).tiers["small"])
    with pytest.raises(ArtifactError, match=r"has no jax.export module for 'cpu' \(have \[\]\)"):
        load(same_export.parent, portable=True)      # exported with platforms=(): none
    assert not np.allclose(before, want)
    for path in (same_export, same_export / "weights"):
        tier.swap_weights(path)
        np.testing.assert_array_equal(_scores(tier), want)


def test_an_export_of_another_config_is_refused(exported, gelu_export):
    """It was accepted: a GELU model's weights served through ReLU executables gave scores
    matching neither model."""
    tier = load(exported["dir"]).tiers["small"]
    before = _scores(tier)
    for path in (gelu_export, gelu_export / "weights"):
        with pytest.raises(ArtifactError, match="model.activation: artifact compiled with "
                                                "'relu', exported with 'gelu'"):
            tier.swap_weights(path)
    np.testing.assert_array_equal(_scores(tier), before)


def test_exported_weights_changed_since_export_are_refused(exported, same_export, tmp_path):
    tier = load(exported["dir"]).tiers["small"]
    before = _scores(tier)
    copy = shutil.copytree(same_export, tmp_path / "tampered")
    metadata = copy / "weights" / "_METADATA"
    metadata.write_bytes(metadata.read_bytes() + b" ")
    with pytest.raises(ArtifactError, match=r"hash mismatch: .*weights/_METADATA; refusing"):
        tier.swap_weights(copy)
    metadata.unlink()
    with pytest.raises(ArtifactError, match=r"missing file: .*weights/_METADATA; refusing"):
        tier.swap_weights(copy / "weights")
    np.testing.assert_array_equal(_scores(tier), before)
