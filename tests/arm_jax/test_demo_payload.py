"""`arm_jax.demo.batch_to_payload`: a synthetic request becomes a /v1/rank body the server
turns back into the same batch, side ids included."""

from __future__ import annotations

import numpy as np

from arm_jax.config import FeaturesConfig
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld, iterate_batches
from arm_jax.demo import batch_to_payload

FEATURES = FeaturesConfig(req_sparse_fields=3, req_dense_features=2, cand_sparse_fields=6,
                          cand_dense_features=3, max_history=32, max_candidates=16)


def test_payload_round_trips_through_the_request_schema():
    from serving.schema import RankRequest, parse_model, to_batch

    world = SyntheticWorld.generate(SyntheticSpec(num_users=200, num_items=500, seed=1),
                                    FEATURES)
    examples = world.sample_examples(8, 6, seed=2, min_candidates=2)
    batch, _ = next(iterate_batches(world, examples, 8, FEATURES.max_history, shuffle=False,
                                    seed=0, drop_remainder=False))
    catalog = world.catalog()
    seen_history = False
    for i in range(batch.num_requests):
        body = batch_to_payload(batch, i)
        h = int(batch.hist_len[i])
        seen_history |= h > 0
        assert len(body["hist_side"]) == h
        np.testing.assert_array_equal(np.reshape(body["hist_side"], (h, 2)),
                                      catalog.lookup(np.asarray(body["hist_item"], np.int64)))
        served = to_batch(parse_model(RankRequest, body), FEATURES, FEATURES.max_candidates)
        n = len(body["cand_sparse"])
        np.testing.assert_array_equal(served.hist_side[0], np.asarray(batch.hist_side[i, :h]))
        np.testing.assert_array_equal(served.cand_sparse[0], np.asarray(batch.cand_sparse[i, :n]))
        # without hist_side, the server's catalogue gives the same rows
        bare = {k: v for k, v in body.items() if k != "hist_side"}
        filled = to_batch(parse_model(RankRequest, bare), FEATURES, FEATURES.max_candidates,
                          catalog)
        np.testing.assert_array_equal(filled.hist_side, served.hist_side)
    assert seen_history
