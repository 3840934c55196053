"""Calibration, held-out and test sets from the bundled synthetic world of a tier.

The world is the one the tier trained on (same seed); the requests are drawn with seeds
the training run never used, so the calibration and selection sets are disjoint from the
training requests and from each other.
"""

from __future__ import annotations

from arm_jax.config import TierConfig
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld, iterate_batches
from arm_jax.quant.sweep import EvalSet

CALIB_SEED_OFFSET, HOLDOUT_SEED_OFFSET, TEST_SEED_OFFSET = 11, 12, 2  # test = training's eval


def synthetic_sets(tier: TierConfig, *, calib_requests: int, holdout_requests: int,
                   test_requests: int = 0, batch_size: int = 32
                   ) -> tuple[EvalSet, EvalSet, EvalSet]:
    """(calibration, held-out, test) lists of (batch, labels); whole batches only."""
    for name, n in (("calib_requests", calib_requests), ("holdout_requests", holdout_requests)):
        if n < batch_size:
            raise ValueError(f"{name}={n}: must be at least the batch size {batch_size}")
    tc = tier.train
    world = SyntheticWorld.generate(SyntheticSpec(num_users=tc.num_users, seed=tc.seed),
                                    tier.features)

    def take(n: int, offset: int) -> EvalSet:
        if n <= 0:
            return []
        ex = world.sample_examples(n, tc.candidates, seed=tc.seed + offset)
        return list(iterate_batches(world, ex, batch_size, tier.model.history_len,
                                    shuffle=False, seed=0, drop_remainder=True))

    return (take(calib_requests, CALIB_SEED_OFFSET), take(holdout_requests, HOLDOUT_SEED_OFFSET),
            take(test_requests, TEST_SEED_OFFSET))
