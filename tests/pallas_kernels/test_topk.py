"""Top-K: every implementation (XLA, jnp radix, Pallas in interpret mode) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from pallas_kernels.dispatch import KernelError
from pallas_kernels.topk import TopKBlocks, topk

SMALL_BLOCKS = TopKBlocks(block_n=64)  # several blocks per row, ragged last block


def reference(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy: descending, -0.0 below +0.0, ties by index, NaN never, (-inf, -1) fill."""
    lead = x.shape[:-1]
    vals = np.full(lead + (k,), -np.inf, np.float64)
    idx = np.full(lead + (k,), -1, np.int64)
    for r in np.ndindex(lead):
        row = x[r].astype(np.float64)
        ok = np.flatnonzero(~np.isnan(row))
        neg_zero = (np.signbit(row) & (row == 0)).astype(int)
        order = ok[np.lexsort((ok, neg_zero[ok], -row[ok]))][:k]
        vals[r][:len(order)], idx[r][:len(order)] = row[order], order
    return vals, idx


def fresh(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random values with many duplicates, NaN, -inf, +inf and signed zeros."""
    r = np.random.default_rng(seed)
    x = r.integers(-20, 21, shape).astype(np.float32) * r.choice([1.0, 0.5], shape)
    flat = x.reshape(-1)
    for value, count in ((np.nan, 7), (-np.inf, 5), (np.inf, 2), (-0.0, 3)):
        flat[r.integers(0, flat.size, count)] = value
    return x


CASES = [  # (shape, k): N not a multiple of the block, N < k, k = N, k = 1, batched
    ((3, 203), 17),
    ((2, 2, 11), 16),
    ((4, 64), 64),
    ((1, 150), 1),
]


@pytest.mark.parametrize("impl", ["xla", "radix", "pallas"])
def test_matches_reference(impl):
    for i, (shape, k) in enumerate(CASES):
        x = fresh(100 + i, shape)
        x.reshape(-1, shape[-1])[0, : shape[-1] // 2] = np.nan  # a row with few non-NaN
        vals, idx = jax.jit(lambda a: topk(a, k, impl=impl, blocks=SMALL_BLOCKS))(x)
        want_v, want_i = reference(x, k)
        assert vals.shape == idx.shape == shape[:-1] + (k,) and idx.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(idx), want_i, err_msg=f"{impl} {shape} k={k}")
        np.testing.assert_array_equal(np.asarray(vals), want_v.astype(np.float32))
        assert not np.isnan(np.asarray(vals)).any()


def test_unfillable_slots_are_minus_inf_and_minus_one():
    x = np.array([[np.nan, 2.0, np.nan, -np.inf], [np.nan] * 4], np.float32)
    for impl in ("xla", "radix", "pallas"):
        vals, idx = topk(x, 6, impl=impl)
        np.testing.assert_array_equal(np.asarray(idx), [[1, 3, -1, -1, -1, -1], [-1] * 6])
        np.testing.assert_array_equal(np.asarray(vals), [[2.0] + [-np.inf] * 5, [-np.inf] * 6])


def test_int32_bfloat16_and_zero_k():
    r = np.random.default_rng(3)
    xi = r.integers(-2**31, 2**31 - 1, (2, 40), dtype=np.int64).astype(np.int32)
    xi[0, :5] = np.iinfo(np.int32).min
    want_i = np.argsort(-xi.astype(np.int64), axis=1, kind="stable")[:, :12]
    xb = jnp.asarray(fresh(4, (2, 40)), jnp.bfloat16)
    for impl in ("xla", "radix", "pallas"):
        run = jax.jit(lambda a, b: (topk(a, 12, impl=impl)[1], *topk(b, 5, impl=impl),
                                    topk(a, 0, impl=impl)[0]))
        idx_i, vb, ib, empty = run(xi, xb)
        np.testing.assert_array_equal(np.asarray(idx_i), want_i)
        assert vb.dtype == jnp.bfloat16 and empty.shape == (2, 0)
        np.testing.assert_array_equal(np.asarray(ib), reference(np.asarray(xb, np.float32), 5)[1])


def test_auto_on_cpu_is_the_xla_path_and_values_are_differentiable():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 50)), jnp.float32)
    hlo = jax.jit(lambda a: topk(a, 4)).lower(x).as_text()
    assert "triton" not in hlo and "top_k" in hlo
    checked = jax.jit(lambda a: topk(a, 4)).lower(x).compile().as_text()
    assert '"TopK"' in checked and "conditional(" in checked  # the NaN check
    unchecked = jax.jit(lambda a: topk(a, 4, check_nan=False)).lower(x).compile().as_text()
    assert '"TopK"' in unchecked and "conditional(" not in unchecked  # exactly lax.top_k
    grad = jax.grad(lambda a: topk(a, 4)[0].sum())(x)
    _, idx = topk(x, 4)
    want = np.zeros((2, 50), np.float32)
    np.put_along_axis(want, np.asarray(idx), 1.0, axis=1)
    np.testing.assert_array_equal(np.asarray(grad), want)


def test_bad_arguments_name_the_field():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(KernelError, match="impl='gpu': expected one of auto, pallas, xla, radix"):
        topk(x, 2, impl="gpu")
    with pytest.raises(KernelError, match="k=-1: must be a non-negative"):
        topk(x, -1)
    with pytest.raises(KernelError, match="block_n=100: must be a power of two"):
        TopKBlocks(block_n=100)
    with pytest.raises(KernelError, match="x.dtype=int8"):
        topk(x.astype(np.int8), 2, impl="radix")
    for impl in ("auto", "xla", "radix"):   # bool was "Invalid integer data type 'b'"
        with pytest.raises(KernelError, match="x: dtype bool; top-k orders floats and int"):
            topk(x > 0, 2, impl=impl)


def test_pallas_kernel_lowers_and_exports_for_cuda():
    spec = jax.ShapeDtypeStruct((4, 65536), jnp.float32)
    auto = jax.jit(lambda a: topk(a, 256))
    hlo = auto.trace(spec).lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 8  # 32 bits / 4-bit digits = 8 passes
    exp = export.export(auto, platforms=["cuda"], disabled_checks=[
        export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(spec)
    assert exp.platforms == ("cuda",) and exp.out_avals[1].shape == (4, 256)


def test_auto_takes_xla_for_dtypes_the_kernel_cannot_order_on_every_platform():
    """int16 on CUDA: the kernel would raise KernelError; auto lowers lax.top_k instead, as
    it does on CPU, so the same call works on both."""
    spec = jax.ShapeDtypeStruct((2, 300), jnp.int16)
    auto = jax.jit(lambda a: topk(a, 4))
    hlo = auto.trace(spec).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" not in hlo
    x = np.random.default_rng(3).integers(-1000, 1000, (2, 300)).astype(np.int16)
    vals, idx = auto(x)
    want_v, want_i = jax.lax.top_k(jnp.asarray(x), 4)
    assert np.array_equal(vals, want_v) and np.array_equal(idx, want_i)


def test_empty_rows_and_empty_batch():
    """N = 0 (every slot unfillable) and zero rows: every impl answers, none crashes."""
    for impl in ("xla", "radix", "pallas", "auto"):
        vals, idx = topk(np.zeros((2, 0), np.float32), 3, impl=impl)
        np.testing.assert_array_equal(np.asarray(idx), np.full((2, 3), -1))
        np.testing.assert_array_equal(np.asarray(vals), np.full((2, 3), -np.inf))
        vals, idx = topk(np.zeros((0, 5), np.float32), 3, impl=impl)
        assert vals.shape == idx.shape == (0, 3) and idx.dtype == jnp.int32
