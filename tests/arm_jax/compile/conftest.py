"""One tiny tier exported once per session: checkpoint, artifact directory, configs."""

from __future__ import annotations

import shutil

import pytest

BUCKETS = ("serving.batch_buckets=[1,2]", "serving.candidate_buckets=[4,8]")


def make_checkpoint(tier, out, seed):
    from flax import nnx

    from arm_jax.checkpoint import save_checkpoint
    from arm_jax.model import Ranker

    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(seed)))[1]
    return save_checkpoint(out, kind="ranker", tier=tier, params=params)


@pytest.fixture(scope="session")
def exported(tiny_overrides, tmp_path_factory):
    """{'dir', 'tier', 'ckpt', 'cache'}: tier 'small' (tiny) with buckets [1,2] x [4,8],
    exported for cpu and cuda with a fresh executable cache."""
    from arm_jax.compile.export import export_tiers
    from arm_jax.config import load_tier

    root = tmp_path_factory.mktemp("aot")
    tier = load_tier("small", [*tiny_overrides, *BUCKETS, "model.history_len=6",
                               "model.target_attention=true"])
    ckpt = make_checkpoint(tier, root / "ckpt", seed=3)
    out = export_tiers({"small": ckpt}, root / "artifacts", platforms=("cpu", "cuda"),
                       cache_dir=root / "cache", progress=False)
    return {"dir": out, "tier": tier, "ckpt": ckpt, "cache": root / "cache", "root": root}


@pytest.fixture
def artifact_copy(exported, tmp_path):
    """A private copy of the artifact directory, free to tamper with."""
    dst = tmp_path / "artifacts"
    shutil.copytree(exported["dir"], dst)
    return dst


@pytest.fixture
def checkpoint_like(exported):
    """checkpoint_like(seed, name, **model_overrides) -> a new checkpoint of the tier."""
    import dataclasses

    def make(seed: int, name: str, **model):
        tier = exported["tier"]
        if model:
            tier = dataclasses.replace(tier, model=dataclasses.replace(tier.model, **model))
        return make_checkpoint(tier, exported["root"] / "more" / name, seed)

    return make
