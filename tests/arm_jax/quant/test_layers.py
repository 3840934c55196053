"""QuantizedLinear (what serves) and SwitchableLinear (what the sweep runs) agree exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from arm_jax.quant.formats import FORMATS, fp8_activation_scale
from arm_jax.quant.layers import QuantizedLinear, SwitchableLinear


@pytest.fixture(scope="module")
def linear():
    return nnx.Linear(24, 10, use_bias=True, rngs=nnx.Rngs(4))


@pytest.mark.parametrize("fmt", FORMATS)
def test_switchable_equals_quantized_bit_for_bit(linear, fmt):
    x = jax.random.normal(jax.random.key(1), (3, 5, 24))
    sw = SwitchableLinear(linear, "layer")
    sw.amax[...] = jnp.max(jnp.abs(x))
    sw.set_format(fmt)
    q = QuantizedLinear.from_linear(linear, fmt, float(fp8_activation_scale(jnp.max(jnp.abs(x)))))
    a, b = np.asarray(sw(x)), np.asarray(q(x))
    assert a.shape == (3, 5, 10)
    assert np.array_equal(a, b)
    assert np.allclose(a, np.asarray(linear(x)), rtol=0.1, atol=0.1)


def test_stored_dtypes_and_bias(linear):
    dtypes = {f: QuantizedLinear.from_linear(linear, f).kernel[...].dtype for f in FORMATS}
    assert dtypes == {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "int8": jnp.int8,
                      "float8_e4m3fn": jnp.float8_e4m3fn}
    assert QuantizedLinear.from_linear(linear, "bfloat16").scale is None
    assert QuantizedLinear.from_linear(linear, "int8").scale[...].shape == (10,)
    q = QuantizedLinear.from_linear(linear, "float32")
    x = jnp.ones((2, 24))
    assert np.allclose(np.asarray(q(x)), np.asarray(linear(x)), rtol=1e-6, atol=1e-6)


def test_switching_format_does_not_recompile(linear):
    sw = SwitchableLinear(linear, "layer")
    gd, _ = nnx.split(sw)
    f = jax.jit(lambda state, x: nnx.merge(gd, state)(x))
    x = jax.random.normal(jax.random.key(2), (4, 24))
    outs = []
    for fmt in FORMATS:
        sw.set_format(fmt)
        outs.append(np.asarray(f(nnx.state(sw), x)))
    assert f._cache_size() == 1
    assert len({o.tobytes() for o in outs}) == len(FORMATS)  # every format really differs


@pytest.mark.parametrize("act_scale", [0.0, -1.0, float("nan"), float("inf")])
def test_float8_layer_refuses_an_input_scale_that_is_not_finite_and_positive(linear, act_scale):
    """0 made every output zero, NaN every output NaN (apply_plan refused only the first)."""
    with pytest.raises(ValueError, match=r"^QuantizedLinear \(float8_e4m3fn\): act_scale="
                                         rf"{act_scale}: must be > 0 and finite"):
        QuantizedLinear.from_linear(linear, "float8_e4m3fn", act_scale)
    QuantizedLinear.from_linear(linear, "int8", act_scale)      # int8 does not use it
