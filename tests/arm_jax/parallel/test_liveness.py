"""The planner's activation estimate: liveness over a jaxpr, with the fusion rule."""

import jax
import jax.numpy as jnp
import pytest

from arm_jax.cli.main import build_parser
from arm_jax.parallel.liveness import jaxpr_peak_bytes, peak_temp_bytes

X = jax.ShapeDtypeStruct((256, 64), jnp.float32)      # 64 KiB
W = jax.ShapeDtypeStruct((64, 64), jnp.float32)


def test_chain_of_matmuls_holds_one_intermediate_at_a_time():
    def f(x, w):
        a = x @ w          # temp 64 KiB
        b = a @ w          # a dies here
        return (b @ w).sum()
    assert peak_temp_bytes(f, X, W) == 2 * 256 * 64 * 4


def test_elementwise_chain_fuses_but_a_value_read_twice_is_materialised():
    fused = peak_temp_bytes(lambda x: jnp.exp(jnp.tanh(x) * 2.0).sum(), X)
    assert fused == 0
    twice = peak_temp_bytes(lambda x: (jnp.tanh(x) @ jnp.tanh(x).T).sum(), X)
    assert twice >= 256 * 64 * 4


def test_local_divisor_counts_sharded_values_at_their_slice():
    def f(x, w):
        return ((x @ w) @ w).sum()
    jaxpr = jax.make_jaxpr(f)(X, W).jaxpr
    assert jaxpr_peak_bytes(jaxpr, local=lambda aval: 4) == jaxpr_peak_bytes(jaxpr) // 4
    assert jaxpr_peak_bytes(jaxpr, fusion=False) >= jaxpr_peak_bytes(jaxpr)


def test_bench_embeddings_is_registered():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["bench", "embeddings", "--help"])
    assert e.value.code == 0
