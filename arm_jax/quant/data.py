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


SET_BATCH = 32     # requests per batch of the calibration, held-out and test sets


def check_set_sizes(batch_size: int = SET_BATCH, **requests: int) -> None:
    """ValueError naming the first set of fewer requests than one batch: sets hold whole
    batches only, so it would be empty (the test set of 0 requests is no test set)."""
    for name, n in requests.items():
        if n < batch_size and not (name == "test_requests" and n == 0):
            raise ValueError(f"{name}={n}: must be at least the batch size {batch_size}")


def check_candidates(candidates: int, tier: TierConfig) -> None:
    """ValueError unless `candidates` is at most what a request of `tier` may carry: the
    layers would be timed (and the plan chosen) at a shape the tier never serves."""
    limit = tier.features.max_candidates
    if candidates > limit:
        raise ValueError(f"--candidates {candidates}: must be <= features.max_candidates="
                         f"{limit} (tier {tier.name})")


def synthetic_sets(tier: TierConfig, *, calib_requests: int, holdout_requests: int,
                   test_requests: int = 0, batch_size: int = SET_BATCH
                   ) -> tuple[EvalSet, EvalSet, EvalSet]:
    """(calibration, held-out, test) lists of (batch, labels); whole batches only."""
    check_set_sizes(batch_size, calib_requests=calib_requests,
                    holdout_requests=holdout_requests, test_requests=test_requests)
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
