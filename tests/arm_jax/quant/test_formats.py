"""Round trips and matmuls of every format against float32, on fresh ragged inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.quant.formats import (FORMATS, ROUND_TRIP_RTOL, dequantize_weight,
                                   fp8_activation_scale, quantize_weight, quantized_matmul)

SHAPES = [(7, 13), (33, 5), (128, 96)]
# Relative Frobenius error of a matmul, per format (weights and activations both rounded).
MATMUL_RTOL = {"float32": 1e-6, "bfloat16": 1e-2, "int8": 3e-2, "float8_e4m3fn": 8e-2}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_weight_round_trip_within_format_error(fmt, shape):
    w = jax.random.normal(jax.random.key(shape[0] * 31 + shape[1]), shape) * 0.3
    q = quantize_weight(w, fmt)
    back = np.asarray(dequantize_weight(q))
    w = np.asarray(w)
    assert q.values.shape == w.shape and q.scale.shape == (shape[1],)
    # Per element: within half a step of the channel's scale (int8) or half an ulp of the
    # value (floats); flush-to-subnormal tails are covered by the per-channel bound.
    chan_amax = np.abs(w).max(axis=0)
    bound = ROUND_TRIP_RTOL[fmt] * np.maximum(np.abs(w), chan_amax / 64) + 1e-7
    if fmt == "int8":
        bound = ROUND_TRIP_RTOL[fmt] * chan_amax + 1e-7
    assert np.all(np.abs(back - w) <= bound)


def test_round_trip_is_exact_for_float32_and_zero_channels():
    w = np.zeros((4, 3), np.float32)
    w[:, 1] = [1.0, -2.0, 0.5, 3.0]
    for fmt in FORMATS:
        back = np.asarray(dequantize_weight(quantize_weight(jnp.asarray(w), fmt)))
        assert np.all(back[:, [0, 2]] == 0), fmt     # an all-zero channel stays zero, no NaN
        assert np.isfinite(back).all()
    assert np.array_equal(np.asarray(dequantize_weight(quantize_weight(jnp.asarray(w),
                                                                       "float32"))), w)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantized_matmul_close_to_float32(fmt):
    kx, kw = jax.random.split(jax.random.key(7))
    x = jax.random.normal(kx, (37, 45))
    w = jax.random.normal(kw, (45, 19)) * 0.2
    ref = np.asarray(x @ w)
    scale = fp8_activation_scale(jnp.max(jnp.abs(x)))
    got = np.asarray(quantized_matmul(x, quantize_weight(w, fmt), fmt, scale))
    assert got.dtype == np.float32 and got.shape == ref.shape
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel <= MATMUL_RTOL[fmt], (fmt, rel)
    if fmt != "float32":
        assert rel > 0  # really lower precision, not a silent float32 path


def test_int8_rows_with_zeros_and_unknown_format():
    x = jnp.zeros((3, 8)).at[1].set(1.0)
    w = jnp.ones((8, 2))
    y = np.asarray(quantized_matmul(x, quantize_weight(w, "int8"), "int8"))
    assert np.isfinite(y).all() and np.allclose(y[1], 8.0, rtol=1e-2) and np.all(y[0] == 0)
    with pytest.raises(ValueError, match="int4"):
        quantize_weight(w, "int4")


def test_int8_fan_in_past_the_int32_accumulator_is_refused():
    """127 x 127 x K overflows int32 past K = INT8_MAX_FAN_IN: refused, never wrapped."""
    from arm_jax.quant.formats import INT8_MAX_FAN_IN

    ok = jax.ShapeDtypeStruct((1, INT8_MAX_FAN_IN), jnp.float32)
    big = jax.ShapeDtypeStruct((1, INT8_MAX_FAN_IN + 1), jnp.float32)

    def matmul(x):
        k = x.shape[-1]
        return quantized_matmul(x, quantize_weight(jnp.ones((k, 1)), "int8"), "int8")

    assert jax.eval_shape(matmul, ok).shape == (1, 1)      # traced only: nothing allocated
    with pytest.raises(ValueError, match=f"at most {INT8_MAX_FAN_IN} fit"):
        jax.eval_shape(matmul, big)
    assert 127 * 127 * INT8_MAX_FAN_IN <= 2 ** 31 - 1 < 127 * 127 * (INT8_MAX_FAN_IN + 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_weight_is_refused_not_hidden(fmt, bad):
    """int8 used to give its channel the scale 1 (NaN > 0 is False), turn the NaN into 0
    and round the channel's other weights to integers: finite garbage no later check sees."""
    w = jax.random.normal(jax.random.key(0), (8, 4)).at[2, 1].set(bad)
    with pytest.raises(ValueError, match=rf"^quantize_weight: w_io holds {bad} at \[2, 1\]: "
                                         r"weights must be finite$"):
        quantize_weight(w, fmt)


@pytest.mark.parametrize("fmt", ["int8", "float8_e4m3fn"])
def test_a_non_finite_weight_quantized_in_graph_comes_out_nan(fmt):
    """Traced (the sweep quantizes in-graph) it cannot be refused: its channel is NaN."""
    w = jax.random.normal(jax.random.key(0), (8, 4)).at[2, 1].set(jnp.nan)
    back = np.asarray(jax.jit(lambda w: dequantize_weight(quantize_weight(w, fmt)))(w))
    assert np.isnan(back[:, 1]).all()
    assert np.isfinite(back[:, [0, 2, 3]]).all()


def test_int8_matmul_of_a_non_finite_input_row_is_nan():
    """The row's scale used to become 1 and NaN cast to int8: a finite, wrong row."""
    x = jnp.ones((3, 8)).at[1, 2].set(jnp.nan).at[2, 5].set(jnp.inf)
    y = np.asarray(quantized_matmul(x, quantize_weight(jnp.ones((8, 2)), "int8"), "int8"))
    assert np.isnan(y[1:]).all() and np.allclose(y[0], 8.0, rtol=1e-2)
