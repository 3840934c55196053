"""The optimizer's learning-rate schedule: warm-up from 0, or none."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.train.step import make_optimizer


def _update_sizes(tx, n: int = 3) -> list[float]:
    """|update| of n steps under a constant gradient of ones (clipped to norm 1, but Adam
    normalises it away: each update is the step's learning rate)."""
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    sizes = []
    for _ in range(n):
        u, state = tx.update({"w": jnp.ones(3)}, state, params)
        sizes.append(float(jnp.abs(u["w"]).max()))
    return sizes


@pytest.mark.parametrize("steps, warmup", [(600, 0), (1, 0), (1, 50)])
def test_without_a_warm_up_the_first_step_trains_at_the_peak(steps, warmup):
    """warmup_steps=0 acted as 1 (step 0 at rate 0), so a 1-step run trained nothing."""
    first = _update_sizes(make_optimizer(2e-3, steps, warmup, 0.0))[0]
    np.testing.assert_allclose(first, 2e-3, rtol=1e-4)


def test_a_warm_up_rises_linearly_from_zero():
    sizes = _update_sizes(make_optimizer(2e-3, 600, 50, 0.0))
    np.testing.assert_allclose(sizes, [0.0, 2e-3 / 50, 2 * 2e-3 / 50], rtol=1e-4, atol=1e-12)
