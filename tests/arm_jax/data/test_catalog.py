"""Item catalogue: lookups, unknown items, files, and the synthetic world's catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.batch import UNKNOWN_SIDE
from arm_jax.config import load_tier
from arm_jax.data.catalog import CatalogError, ItemCatalog, catalog_from_csv, empty_catalog
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
    with pytest.raises(CatalogError, match="catalogue file .*: no such file"):
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


def test_catalog_from_csv_fills_listed_items_and_unknowns(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item,name,advertiser,topic\n3,x,7,2\n0,y,5,1\n\n1,z,5,1\n")
    cat = catalog_from_csv(path, [1, 2], ["advertiser", "topic"])
    assert cat.fields == (1, 2)
    assert cat.side.tolist() == [[5, 1], [5, 1], [UNKNOWN_SIDE] * 2, [7, 2]]
    swapped = catalog_from_csv(path, [2, 1], ["topic", "advertiser"])
    assert swapped.lookup(np.array([3, 2, 99])).tolist() == [[2, 7], [UNKNOWN_SIDE] * 2,
                                                            [UNKNOWN_SIDE] * 2]
    path.write_text("advertiser,item,topic\n4,0,9\n")       # default: every column but item
    assert catalog_from_csv(path, [1, 2]).side.tolist() == [[4, 9]]
    path.write_text("item,advertiser,topic\n")
    assert catalog_from_csv(path, [1, 2]).num_items == 0


def test_catalog_from_csv_reads_quoted_titles_and_a_byte_order_mark(tmp_path):
    """A movies-like table (a quoted title with a comma) from a spreadsheet (BOM)."""
    path = tmp_path / "items.csv"
    path.write_text('\ufeffitem,title,topic\n1,"American President, The (1995)",3\n'
                    "2,Heat (1995),4\n", encoding="utf-8")
    cat = catalog_from_csv(path, [1], ["topic"])
    assert cat.side.tolist() == [[UNKNOWN_SIDE], [3], [4]]


@pytest.mark.parametrize("text,columns,words", [
    ("item,advertiser,topic\n0,5,1\n99999999999999999999,5,1\n", None,
     "line 3, item: 99999999999999999999 is out of the int64 range"),
    ("item,advertiser,topic\n0,5,1\n0,7,2\n", None, "item 0 is listed 2 times"),
    ("item,advertiser,topic\n-1,5,1\n", None, "item ids must be >= 0"),
    ("item,advertiser,topic\n0,5,-1\n", None, "topic ids must be in [0, 2147483647]"),
    ("item,advertiser,topic\n0,5,1\n1,q,1\n", None, "line 3, advertiser: expected an integer"),
    ("item,advertiser\n0,5\n", None, "1 side columns ['advertiser'] for 2 fields"),
    ("item,advertiser,topic\n0,5,1\n", ["advertiser", "genre"], "header lacks ['genre']"),
    ("item,advertiser,topic\n1000,5,1\n", None, "needs 1001 rows, over the limit of 1000"),
    ("", None, "empty"),
])
def test_catalog_from_csv_names_what_is_wrong(tmp_path, text, columns, words):
    path = tmp_path / "items.csv"
    path.write_text(text)
    with pytest.raises(CatalogError, match=str(path)) as e:
        catalog_from_csv(path, [1, 2], columns, max_items=1000)
    assert words in str(e.value)
    with pytest.raises(CatalogError, match="no such file"):
        catalog_from_csv(tmp_path / "nope.csv", [1, 2])


def test_fields_must_be_distinct_non_negative_int32():
    """A catalogue whose fields no config can have is refused when built, not at save
    (np.int32 overflow) or at serve time."""
    for fields in ((2**31, 1), (-1, 2), (1, 1)):
        with pytest.raises(CatalogError, match=r"fields: .* distinct field indices"):
            ItemCatalog(np.zeros((3, 2), np.int32), fields)


@pytest.mark.parametrize("side", [[[1.7, 2.2]], [[np.nan, 2.0]], [[True, False]]],
                         ids=["fraction", "nan", "bool"])
def test_side_ids_must_be_integers(tmp_path, side):
    """Float side ids were truncated (1.7 -> 1) and a NaN one passed the range check (NaN
    compares false) and was stored as -2^31: refused when built, and so when loaded."""
    with pytest.raises(CatalogError, match=r"side: expected integer ids, got dtype"):
        ItemCatalog(np.array(side), (1, 2))
    np.savez(tmp_path / "cat.npz", side=np.array(side), fields=np.array([1, 2]))
    with pytest.raises(CatalogError, match=r"side: expected integer ids"):
        ItemCatalog.load(tmp_path / "cat.npz")
    assert ItemCatalog(np.zeros((0, 2)), (1, 2)).num_items == 0      # empty: no ids to check
    assert ItemCatalog(np.array([[1, 2]], np.uint8), (1, 2)).side.dtype == np.int32


def test_an_item_table_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item,advertiser,topic\n0,1,2\n\xe9,4,5\n")
    with pytest.raises(CatalogError, match=f"item table {path}: line 3: not UTF-8 text"):
        catalog_from_csv(path, [1, 2])


def test_a_directory_is_named_as_one(tmp_path):
    """Was "no such file" / "no such catalogue file" for a path that exists."""
    (tmp_path / "items.csv").mkdir()
    (tmp_path / "catalog.npz").mkdir()
    with pytest.raises(CatalogError, match=f"item table {tmp_path / 'items.csv'}: is a "
                                           "directory"):
        catalog_from_csv(tmp_path / "items.csv", [1, 2])
    with pytest.raises(CatalogError, match=f"{tmp_path / 'catalog.npz'}: is a directory"):
        ItemCatalog.load(tmp_path / "catalog.npz")


@pytest.mark.parametrize("out", ["", "/"])
def test_save_path_that_names_no_file(out):
    """Was pathlib's bare "PosixPath('.') has an empty name"."""
    with pytest.raises(CatalogError, match=f"catalogue file {out!r}: names no file"):
        ItemCatalog.save_path(out)


def test_an_interrupted_save_leaves_the_earlier_catalogue_whole(tmp_path, monkeypatch):
    cat = ItemCatalog(np.arange(12).reshape(6, 2), (1, 2))
    path = cat.save(tmp_path / "catalog.npz")
    before = path.read_bytes()

    def cut_off(f, **arrays):
        f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", cut_off)
    with pytest.raises(KeyboardInterrupt):
        cat.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
