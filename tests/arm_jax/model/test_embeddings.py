"""HashedEmbedding: one table, per-field slices; ids must match the field count."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from arm_jax.model.embeddings import HashedEmbedding


@pytest.fixture(scope="module")
def emb():
    return HashedEmbedding(3, 16, 4, rngs=nnx.Rngs(0))


def test_each_field_hashes_into_its_own_slice(emb):
    rows = np.asarray(emb.rows(jnp.asarray([[5, 5, 5], [7, 8, 9]], jnp.int32)))
    assert rows.shape == (2, 3)
    assert all(16 * f <= r < 16 * (f + 1) for row in rows for f, r in enumerate(row))
    picked = np.asarray(emb.rows(jnp.asarray([[8, 9]], jnp.int32), (1, 2)))
    np.testing.assert_array_equal(picked, rows[1:, 1:])


@pytest.mark.parametrize("ids, fields", [(np.zeros((4, 1)), None), (np.zeros((4, 5)), None),
                                         (np.zeros((4, 3)), (0, 1)), (np.zeros(()), None)])
def test_ids_of_another_field_count_are_refused(emb, ids, fields):
    """[b, 1] ids broadcast against the 3 salts: every id looked up in every field."""
    with pytest.raises(ValueError, match=r"last dim must be"):
        emb(jnp.asarray(ids, jnp.int32), fields)
