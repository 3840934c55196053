"""Item catalogue: lookups, unknown items, files, and the synthetic world's catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.batch import UNKNOWN_SIDE
from arm_jax.config import load_tier
from arm_jax.data.catalog import CatalogError, ItemCatalog, empty_catalog
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld


def test_lookup_known_and_unknown_items():
    cat = ItemCatalog(np.array([[1, 10], [2, 20], [3, 30]]), (1, 2))
    got = cat.lookup(np.array([[2, 0], [3, -1]]))
    assert got.dtype == np.int32 and got.shape == (2, 2, 2)
    np.testing.assert_array_equal(got[0], [[3, 30], [1, 10]])
    np.testing.assert_array_equal(got[1], [[UNKNOWN_SIDE] * 2] * 2)
    assert (empty_catalog((1, 2)).lookup(np.array([0, 5])) == UNKNOWN_SIDE).all()


def test_save_load_round_trip_and_errors(tmp_path):
    cat = ItemCatalog(np.arange(12).reshape(6, 2), (1, 2))
    back = ItemCatalog.load(cat.save(tmp_path / "cat"))
    np.testing.assert_array_equal(back.side, cat.side)
    assert back.fields == (1, 2)
    back.check_fields((1, 2))
    with pytest.raises(CatalogError, match=r"catalogue holds candidate fields \[1, 2\], but "
                                           r"features.history_side_fields is \[2\]"):
        back.check_fields((2,))
    with pytest.raises(CatalogError, match="no such catalogue file"):
        ItemCatalog.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CatalogError, match="not a catalogue .npz"):
        ItemCatalog.load(tmp_path / "bad.npz")
    with pytest.raises(CatalogError, match=r"side: expected shape \(num_items, 2\)"):
        ItemCatalog(np.zeros((3, 1)), (1, 2))


def test_synthetic_catalogue_is_the_ads_advertiser_and_topic(tiny_overrides):
    tier = load_tier("small", tiny_overrides)
    world = SyntheticWorld.generate(SyntheticSpec(num_users=50, num_items=300,
                                                  num_advertisers=40, num_topics=8),
                                    tier.features)
    cat = world.catalog()
    assert cat.fields == (1, 2)
    np.testing.assert_array_equal(cat.side[:, 0], world.item_advertiser)
    np.testing.assert_array_equal(cat.side[:, 1], world.item_topic)
    h = world.join_history(np.arange(50), np.full(50, world.log_ts.max() + 1), 16)
    valid = np.arange(16)[None] < h["hist_len"][:, None]
    np.testing.assert_array_equal(h["hist_side"][valid], cat.lookup(h["hist_item"][valid]))
    bad = load_tier("small", [*tiny_overrides, "features.cand_sparse_fields=6",
                              "features.history_side_fields=[4]"])
    with pytest.raises(ValueError, match=r"attributes only for candidate fields 0..3"):
        SyntheticWorld.generate(SyntheticSpec(num_users=5, num_items=300, num_advertisers=40,
                                              num_topics=8), bad.features).catalog()
