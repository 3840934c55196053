"""The split (request part + candidate part) form of a Wukong layer equals the plain form."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from arm_jax.config import ModelConfig
from arm_jax.model.wukong import ACTIVATIONS, WukongLayer


@pytest.mark.parametrize("fm_tokens, lcb_tokens, activation",
                         [(3, 4, "relu"), (5, 4, "relu"), (3, 4, "gelu")])  # projected / identity residual
def test_split_form_matches_plain_form(fm_tokens, lcb_tokens, activation):
    t_r, t_c, d = 4, 5, 8
    layer = WukongLayer(t_r + t_c, d, fm_tokens=fm_tokens, lcb_tokens=lcb_tokens, fm_rank=3,
                        mlp_hidden=16, use_bias=True, activation=activation, rngs=nnx.Rngs(0))
    k1, k2 = jax.random.split(jax.random.key(1))
    r_btd = jax.random.normal(k1, (2, t_r, d))
    c_bctd = jax.random.normal(k2, (2, 6, t_c, d))
    x = jnp.concatenate([jnp.broadcast_to(r_btd[:, None], (2, 6, t_r, d)), c_bctd], axis=2)
    plain = layer(x)
    split = layer.candidate_part(r_btd, c_bctd, layer.request_part(r_btd))
    assert plain.shape == (2, 6, fm_tokens + lcb_tokens, d)
    np.testing.assert_allclose(split, plain, rtol=1e-5, atol=1e-5)


def test_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="activation='tanh': allowed values are relu, gelu, silu"):
        WukongLayer(4, 8, fm_tokens=2, lcb_tokens=2, fm_rank=2, mlp_hidden=4, use_bias=False,
                    activation="tanh", rngs=nnx.Rngs(0))


def test_config_offers_exactly_the_activations_the_model_has():
    """`model.activation`'s allowed values (config, no jax import) match `ACTIVATIONS`."""
    field = {f.name: f for f in dataclasses.fields(ModelConfig)}["activation"]
    assert field.metadata["choices"] == tuple(ACTIVATIONS)
