"""Packed request -> unpack (top-K event selection) -> ranker, as one compiled function.

The whole road of the issue's item 4: flat arrays with offsets in, scores out; the history
events are picked in-graph by the top-K dispatcher and the candidates attend over them
through the target-attention dispatcher. Lowered for CUDA, both Pallas kernels appear.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from arm_jax.config import load_tier
from arm_jax.model import Ranker
from arm_jax.packed import pack, unpack


def _requests(features, seed=0, n=3):
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ne, nc = int(r.integers(5, 60)), int(r.integers(1, 7))
        out.append(dict(
            req_sparse=r.integers(1, 10**6, features.req_sparse_fields),
            req_dense=r.normal(size=features.req_dense_features),
            request_ts=200_000, ev_item=r.integers(1, 10**6, ne),
            ev_action=r.integers(0, features.num_action_types, ne),
            ev_ts=np.sort(r.integers(1_000, 250_000, ne)),
            ev_side=r.integers(1, 16, (ne, len(features.history_side_fields))),
            cand_sparse=r.integers(1, 10**6, (nc, features.cand_sparse_fields)),
            cand_dense=r.normal(size=(nc, features.cand_dense_features))))
    return out


@pytest.mark.slow
def test_packed_to_scores_in_one_function_and_kernels_lower_for_cuda(tiny_overrides):
    tier = load_tier("large", tiny_overrides)
    L = tier.model.history_len
    graphdef, params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(3)))
    packed = pack(_requests(tier.features), event_capacity=192, candidate_capacity=24,
                  side_fields=len(tier.features.history_side_fields))

    def score(p, pk):
        batch = unpack(pk, candidates=8, history=L, selection="topk", scan_events=4 * L)
        return nnx.merge(graphdef, p)(batch)

    logits = np.asarray(jax.jit(score)(params, packed))
    batch = jax.jit(lambda pk: unpack(pk, candidates=8, history=L, selection="topk"))(packed)
    want = np.asarray(jax.jit(lambda p, b: nnx.merge(graphdef, p)(b))(params, batch))
    assert logits.shape == (3, 8, len(tier.features.tasks)) and np.isfinite(logits).all()
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    assert int(np.asarray(batch.hist_len).max()) == L  # histories were longer than L

    spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                        (params, packed))
    hlo = jax.jit(score).trace(*spec).lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 8 + 1  # 8 radix-histogram passes + attention
