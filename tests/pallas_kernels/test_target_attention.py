"""Fused target attention: the Pallas kernel (interpret mode) against the jnp reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from arm_jax.model.attention import masked_softmax_attention
from pallas_kernels.dispatch import KernelError
from pallas_kernels.target_attention import (TargetAttentionBlocks, target_attention,
                                             target_attention_reference)

# c=37 over 16-candidate blocks (3 blocks, ragged), L=40 over 16-event steps (3, ragged)
BLOCKS = TargetAttentionBlocks(block_c=16, block_l=16)
TOL = dict(rtol=2e-5, atol=2e-5)


def inputs(seed: int, b=3, c=37, l=40, h=2, dk=8):
    r = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(r.normal(size=s), jnp.float32)
               for s in ((b, c, h, dk), (b, l, h, dk), (b, l, h, dk)))
    lens = np.array([l, 0, 7] + list(r.integers(0, l + 1, b)))[:b]  # full, empty, ragged
    mask = jnp.arange(l)[None, :] < jnp.asarray(lens)[:, None]
    return q, k * 3, v, mask  # scaled keys: peaky softmax, a real test of the running max


def test_kernel_matches_reference_and_model_attention():
    q, k, v, mask = inputs(0)
    out = jax.jit(lambda *a: target_attention(*a, impl="pallas", blocks=BLOCKS))(q, k, v, mask)
    ref = target_attention_reference(q, k, v, mask)
    assert out.shape == q.shape and float(jnp.abs(ref).max()) > 0.1
    np.testing.assert_allclose(out, ref, **TOL)
    np.testing.assert_allclose(ref, masked_softmax_attention(q, k, v, mask), **TOL)
    assert float(jnp.abs(out[1]).max()) == 0.0  # no valid event -> zeros


def test_padded_history_never_matters():
    q, k, v, mask = inputs(1, b=2, c=5, l=21, h=4, dk=12)  # dk padded to 16 in the kernel
    noise = jax.random.normal(jax.random.key(9), k.shape) * 100
    k2 = jnp.where(mask[:, :, None, None], k, noise)
    f = jax.jit(lambda kk: target_attention(q, kk, v, mask, impl="pallas"))
    np.testing.assert_allclose(f(k2), f(k), **TOL)
    np.testing.assert_allclose(f(k), target_attention_reference(q, k, v, mask), **TOL)


def test_gradient_matches_reference_gradient():
    q, k, v, mask = inputs(2, c=19, l=24)
    w = jax.random.normal(jax.random.key(3), q.shape)

    def loss(fn):
        return lambda q_, k_, v_: (fn(q_, k_, v_, mask) * w).sum()

    kern = lambda *a: target_attention(*a, impl="pallas", blocks=BLOCKS)  # noqa: E731
    got = jax.jit(jax.grad(loss(kern), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss(masked_softmax_attention), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(got, want):
        assert float(jnp.abs(r).max()) > 1e-3
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def bias_for(mask, seed: int):
    """A per-key, per-head bias on the scale of a learned recency prior (a few logits)."""
    b, l = mask.shape
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, l, 2)) * 2, jnp.float32)


def test_bias_matches_reference_and_model_attention():
    q, k, v, mask = inputs(6)
    bias = bias_for(mask, 7)
    out = jax.jit(lambda *a: target_attention(*a, impl="pallas", blocks=BLOCKS))(
        q, k, v, mask, bias)
    ref = target_attention_reference(q, k, v, mask, bias)
    np.testing.assert_allclose(out, ref, **TOL)
    np.testing.assert_allclose(ref, masked_softmax_attention(q, k, v, mask, bias), **TOL)
    assert float(jnp.abs(ref - target_attention_reference(q, k, v, mask)).max()) > 0.05
    # A bias constant over keys changes nothing (softmax is shift-invariant per query).
    np.testing.assert_allclose(target_attention_reference(q, k, v, mask, bias * 0 + 3.0),
                               target_attention_reference(q, k, v, mask), **TOL)


def test_gradient_with_bias_matches_reference_gradient():
    q, k, v, mask = inputs(8, c=19, l=24)
    bias = bias_for(mask, 9)
    w = jax.random.normal(jax.random.key(10), q.shape)

    def loss(fn):
        return lambda q_, k_, v_, b_: (fn(q_, k_, v_, mask, b_) * w).sum()

    kern = lambda *a: target_attention(*a, impl="pallas", blocks=BLOCKS)  # noqa: E731
    got = jax.jit(jax.grad(loss(kern), argnums=(0, 1, 2, 3)))(q, k, v, bias)
    want = jax.grad(loss(masked_softmax_attention), argnums=(0, 1, 2, 3))(q, k, v, bias)
    for g, r in zip(got, want):
        assert float(jnp.abs(r).max()) > 1e-3
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(got[3][~mask]).max()) == 0.0  # padded keys get no gradient


def test_auto_on_cpu_is_the_xla_path():
    q, k, v, mask = inputs(4, c=9, l=10)
    hlo = jax.jit(lambda *a: target_attention(*a)).lower(q, k, v, mask).as_text()
    assert "triton" not in hlo
    np.testing.assert_allclose(target_attention(q, k, v, mask),
                               target_attention(q, k, v, mask, impl="xla"), **TOL)


def test_bad_arguments_name_the_field():
    q, k, v, mask = inputs(5, c=4, l=6)
    with pytest.raises(KernelError, match="impl='cuda': expected one of auto, pallas, xla"):
        target_attention(q, k, v, mask, impl="cuda")
    with pytest.raises(KernelError, match=r"mask_bl \(3, 5\): expected \(3, 6\)"):
        target_attention(q, k, v, mask[:, :5])
    with pytest.raises(KernelError, match="k_blhk .*: batch, heads, dk must match"):
        target_attention(q, k[..., :4], v[..., :4], mask)
    with pytest.raises(KernelError, match=r"bias_blh \(3, 6\): expected \(3, 6, 2\)"):
        target_attention(q, k, v, mask, jnp.zeros((3, 6)))
    with pytest.raises(KernelError, match="block_c=48: must be a power of two >= 16"):
        TargetAttentionBlocks(block_c=48)
    for impl in ("xla", "pallas"):    # ints: the kernel kept int32, the reference promoted
        with pytest.raises(KernelError, match="q_bchk: dtype int32; expected a floating"):
            target_attention(q.astype(jnp.int32), k, v, mask, impl=impl)
    out = target_attention(q, k, v, np.asarray(mask).tolist())      # a list mask is fine
    np.testing.assert_allclose(out, target_attention(q, k, v, mask), **TOL)


def test_kernel_lowers_and_exports_for_cuda_at_large_tier_shapes():
    q = jax.ShapeDtypeStruct((4, 1024, 4, 32), jnp.float32)   # d=128, 4 heads, N=1024
    kv = jax.ShapeDtypeStruct((4, 1024, 4, 32), jnp.float32)  # L=1024
    m = jax.ShapeDtypeStruct((4, 1024), jnp.bool_)
    f = jax.jit(lambda *a: target_attention(*a))  # "auto": the kernel when lowered for CUDA
    hlo = f.trace(q, kv, kv, m).lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 1
    grad = jax.jit(jax.grad(lambda *a: (f(*a) ** 2).sum(), argnums=(0, 1, 2)))
    assert "__gpu$xla.gpu.triton" in grad.trace(q, kv, kv, m).lower(
        lowering_platforms=("cuda",)).as_text()
    exp = export.export(f, platforms=["cuda"], disabled_checks=[
        export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(q, kv, kv, m)
    assert exp.out_avals[0].shape == (4, 1024, 4, 32)
    bias = jax.ShapeDtypeStruct((4, 1024, 4), jnp.float32)  # with a recency bias
    assert f.trace(q, kv, kv, m, bias).lower(lowering_platforms=("cuda",)).as_text().count(
        "__gpu$xla.gpu.triton") == 1
    grad_b = jax.jit(jax.grad(lambda *a: (f(*a) ** 2).sum(), argnums=(0, 1, 2, 4)))
    assert "__gpu$xla.gpu.triton" in grad_b.trace(q, kv, kv, m, bias).lower(
        lowering_platforms=("cuda",)).as_text()


def test_empty_operands_give_zeros_on_every_impl():
    """No candidates, no requests, no heads or no history (L = 0: no valid event): zeros."""
    q, k, v, mask = inputs(11, b=2, c=3, l=4, h=2, dk=8)
    for qq, kk, mm in ((q[:, :0], k, mask), (q[:0], k[:0], mask[:0]),
                       (q[:, :, :0], k[:, :, :0], mask), (q, k[:, :0], mask[:, :0])):
        for impl in ("xla", "pallas", "auto"):
            out = target_attention(qq, kk, kk, mm, impl=impl)
            assert out.shape == qq.shape and out.dtype == qq.dtype, impl
            assert float(jnp.abs(out).max(initial=0.0)) == 0.0


def test_mixed_dtypes_give_the_reference_dtype_on_every_impl():
    """bf16 queries over f32 history: the kernel returns the reference's promoted dtype, so
    "auto" (both branches of one platform switch) jits instead of raising TypeError."""
    q, k, v, mask = inputs(12, b=2, c=5, l=6, h=2, dk=8)
    qb = q.astype(jnp.bfloat16)
    ref = target_attention(qb, k, v, mask, impl="xla")
    assert ref.dtype == jnp.float32
    for impl in ("pallas", "auto"):
        out = jax.jit(lambda *a: target_attention(*a, impl=impl))(qb, k, v, mask)
        assert out.dtype == ref.dtype, impl
        np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2)  # ref scales q in bf16


@pytest.mark.parametrize("impl", ["xla", "pallas", "auto"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_keys_and_values_at_masked_events_are_never_read(impl, bad):
    """A NaN or inf value at a masked event (weight 0) used to make 0 * nan = nan in every
    output of its request, on every impl; a NaN key there, the gradient of q."""
    q, k, v, mask = inputs(13, b=3, c=5, l=21, h=2, dk=8)   # request 1: no valid event
    k_bad, v_bad = (jnp.where(mask[:, :, None, None], x, bad) for x in (k, v))
    f = jax.jit(lambda *a: target_attention(*a, mask, impl=impl, blocks=BLOCKS))
    want = target_attention_reference(q, k, v, mask)
    for kk, vv in ((k, v_bad), (k_bad, v_bad)):
        np.testing.assert_allclose(f(q, kk, vv), want, **TOL)
    w = jax.random.normal(jax.random.key(14), q.shape)
    grad = jax.jit(jax.grad(lambda *a: (f(*a) * w).sum(), argnums=(0, 1, 2)))
    for g, g_ref in zip(grad(q, k_bad, v_bad), grad(q, k, v)):
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
