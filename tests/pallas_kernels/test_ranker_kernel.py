"""The ranker with the fused kernel equals the ranker on the reference path (and trains)."""

import jax
import numpy as np
import pytest
from flax import nnx

from arm_jax.config import load_tier
from arm_jax.data.random_batch import random_batch
from arm_jax.model import Ranker


@pytest.fixture(scope="module", params=[0.0, 0.5], ids=["no-age-bias", "age-bias"])
def models(request, tiny_overrides):
    """One tiny large-tier ranker's params under each attention impl's graph (with and
    without the recency bias, which the kernel adds to its scores)."""
    out, params = {}, None
    for impl in ("xla", "pallas"):
        tier = load_tier("large", tiny_overrides + (f"model.kernel_impl={impl}",
                                                    f"model.age_bias_slope={request.param}"))
        assert tier.model.target_attention
        if params is None:
            graphdef, params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(7)))
        else:  # same parameters, only the graph (its config) differs: build it abstractly
            graphdef, _ = nnx.split(nnx.eval_shape(
                lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(7))))
        out[impl] = graphdef, params
    batch = random_batch(tier.features, batch=2, candidates=9, history=16, seed=1,
                         valid_candidates=7)
    return out, batch


def test_ranker_kernel_path_equals_reference_path(models):
    models, batch = models
    logits = {impl: np.asarray(jax.jit(lambda p, b: nnx.merge(g, p)(b))(p, batch))
              for impl, (g, p) in models.items()}
    assert np.abs(logits["xla"]).max() > 1e-3
    np.testing.assert_allclose(logits["pallas"], logits["xla"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_ranker_trains_through_the_kernel(models):
    models, batch = models
    grads = {}
    for impl, (g, p) in models.items():
        grads[impl] = jax.jit(jax.grad(lambda p_, b: (nnx.merge(g, p_)(b) ** 2).mean()))(p, batch)
    flat_x, flat_p = jax.tree.leaves(grads["xla"]), jax.tree.leaves(grads["pallas"])
    assert len(flat_x) == len(flat_p) and max(float(abs(x).max()) for x in flat_x) > 1e-4
    for gx, gp in zip(flat_x, flat_p):
        np.testing.assert_allclose(gp, gx, rtol=1e-4, atol=1e-6)


def test_kernels_package_imports_neither_arm_jax_nor_serving():
    import ast
    import pathlib

    import pallas_kernels

    for path in pathlib.Path(pallas_kernels.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("arm_jax", "serving"), f"{path.name}: {name}"
