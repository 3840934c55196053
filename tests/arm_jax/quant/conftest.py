"""A tiny tier, its float model and small calibration / held-out sets, built once."""

import pytest

TINY_DATA = ("train.num_users=300", "train.candidates=8", "model.history_len=8",
             "serving.batch_buckets=[1,2]", "serving.candidate_buckets=[4,8]")


@pytest.fixture(scope="module")
def tiny(tiny_overrides):
    """{'tier', 'graphdef', 'params', 'calib', 'holdout'} for a briefly trained tiny ranker."""
    from arm_jax.config import load_tier
    from arm_jax.quant.data import synthetic_sets
    from arm_jax.train.loop import make_synthetic_data, train_model
    import dataclasses

    tier = load_tier("small", [*tiny_overrides, *TINY_DATA, "model.target_attention=true",
                               "train.train_requests=512", "train.eval_requests=64",
                               "train.batch_size=16"])
    res = train_model(tier, make_synthetic_data(tier), steps=30, progress=False)
    calib, holdout, _ = synthetic_sets(tier, calib_requests=64, holdout_requests=64,
                                       batch_size=16)
    tier = dataclasses.replace(tier)
    return {"tier": tier, "graphdef": res.graphdef, "params": res.params, "calib": calib,
            "holdout": holdout}
