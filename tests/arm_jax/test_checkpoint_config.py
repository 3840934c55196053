"""A checkpoint whose stored shapes differ from its config is refused with one clear error."""

import json

import pytest
from flax import nnx


def test_shape_mismatch_names_the_parameter(tiny_overrides, tmp_path):
    from arm_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    assert load_checkpoint(d)[0] == "ranker"
    cfg = json.loads((d / "config.json").read_text())
    cfg["tier"]["model"]["head_hidden"] = 24          # the stored head has 16 units
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"head_in/bias.*\[16\].*expects \[24\]"):
        load_checkpoint(d)
