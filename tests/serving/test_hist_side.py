"""hist_side through the server: inline rows, catalogue fill (inline and store histories),
unknown ids without a catalogue, bad rows, and a catalogue that does not fit the features."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from arm_jax.batch import UNKNOWN_SIDE
from arm_jax.data.catalog import CatalogError, ItemCatalog
from arm_jax.store.lmdb_store import LmdbStore
from serving.app import create_app
from serving.executor import FakeExecutor
from serving.settings import ServerSettings

T0 = 1_700_000_000


class RecordingExecutor(FakeExecutor):
    """A fake that keeps every batch it scores: the batch the server built."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list = []
        self._record_lock = threading.Lock()

    def score(self, batch):
        with self._record_lock:
            self.batches.append(batch)
        return super().score(batch)

    def last_side(self) -> np.ndarray:
        """hist_side of the one request of the last scored batch, valid events only."""
        b = self.batches[-1]
        return np.asarray(b.hist_side)[0, :int(np.asarray(b.hist_len)[0])]


@pytest.fixture
def recording(tiny_tiers):
    """One recording `large` tier (L=12): every request lands there."""
    return {"large": RecordingExecutor(tiny_tiers["large"])}


@pytest.fixture
def catalog(tiny_tiers):
    """Side ids of items 0..999 for the tiers' side fields: (i // 10, i % 7)."""
    items = np.arange(1000)
    return ItemCatalog(np.stack([items // 10, items % 7], -1),
                       tiny_tiers["large"].features.history_side_fields)


def _without_side(p):
    return {k: v for k, v in p.items() if k != "hist_side"}


def _post(url, body):
    r = httpx.post(url + "/v1/rank", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_inline_hist_side_is_scored_as_sent(serve, recording, payload, tiny_tiers, expected,
                                            catalog):
    url = serve(recording, catalog=catalog)     # inline rows win over the catalogue
    p = payload(candidates=5, history=15, seed=4)     # L=12: the server keeps the newest 12
    assert np.shape(p["hist_side"]) == (15, 2)
    out = _post(url, p)
    assert out["history_source"] == "inline"
    np.testing.assert_allclose(out["scores"], expected(tiny_tiers["large"], p), rtol=1e-6)
    assert np.asarray(recording["large"].batches[-1].hist_side).shape == (1, 12, 2)
    np.testing.assert_array_equal(recording["large"].last_side(),
                                  np.asarray(p["hist_side"])[:12])
    # UNKNOWN_SIDE is a valid id to send
    q = {**p, "hist_side": [[UNKNOWN_SIDE, 3]] * 15}
    _post(url, q)
    np.testing.assert_array_equal(recording["large"].last_side(), [[UNKNOWN_SIDE, 3]] * 12)


def test_missing_hist_side_comes_from_the_catalogue(serve, recording, payload, catalog,
                                                    tmp_path):
    path = catalog.save(tmp_path / "catalog.npz")
    url = serve(recording, ServerSettings(catalog=str(path)))
    p = _without_side(payload(candidates=4, history=6, seed=5))
    p["hist_item"] = [3, 999, 1000, 42, 5_000_000, 0]   # 1000 and 5M are not in the catalogue
    _post(url, p)
    np.testing.assert_array_equal(recording["large"].last_side(),
                                  catalog.lookup(np.asarray(p["hist_item"])))
    assert recording["large"].last_side()[2].tolist() == [UNKNOWN_SIDE] * 2
    info = httpx.get(url + "/v1/info", timeout=10).json()
    assert info["catalog"] == {"items": 1000, "fields": [1, 2]}


def test_missing_hist_side_without_catalogue_is_unknown(serve, recording, payload):
    url = serve(recording)
    p = _without_side(payload(candidates=4, history=6, seed=6))
    _post(url, p)
    np.testing.assert_array_equal(recording["large"].last_side(),
                                  np.full((6, 2), UNKNOWN_SIDE))
    assert httpx.get(url + "/v1/info", timeout=10).json()["catalog"] is None


def test_store_history_gets_the_catalogue_side_ids(serve, recording, payload, catalog,
                                                   tmp_path):
    logs = LmdbStore(tmp_path / "logs", map_size=1 << 24)
    try:
        logs.append(7, np.arange(990, 1010), np.arange(20) % 4, T0 - 200 + 10 * np.arange(20))
        url = serve(recording, ServerSettings(history_store=f"lmdb://{logs.path}"),
                    catalog=catalog)
        body = {k: v for k, v in payload(seed=7).items() if not k.startswith("hist_")}
        out = _post(url, {**body, "user_id": 7, "ts": T0})
        assert out["history_source"] == "store" and not out["degraded"]
        items = np.arange(1009, 997, -1)   # all 20 are before T0; newest 12 (L); >= 1000 unknown
        np.testing.assert_array_equal(np.asarray(recording["large"].batches[-1].hist_item)[0],
                                      items)
        np.testing.assert_array_equal(recording["large"].last_side(), catalog.lookup(items))
    finally:
        logs.close()


@pytest.mark.parametrize("change,field,words", [
    (lambda p: {**p, "hist_side": p["hist_side"][:-1]}, "hist_side", ["6 rows", "got 5"]),
    (lambda p: {**p, "hist_side": [r[:1] for r in p["hist_side"]]}, "hist_side[0]",
     ["expected 2 values", "history_side_fields"]),
    (lambda p: {**p, "hist_side": [r + [1] for r in p["hist_side"]]}, "hist_side[0]",
     ["expected 2 values", "got 3"]),
    (lambda p: {**p, "hist_side": [[-1, 1]] + p["hist_side"][1:]}, "hist_side[0][0]",
     ["greater than or equal to 0"]),
    (lambda p: {**p, "hist_side": [[1, 2**31]] + p["hist_side"][1:]}, "hist_side[0][1]",
     [str(2**31 - 1)]),
    (lambda p: {**p, "hist_side": [1] * 6}, "hist_side[0]", ["array"]),
], ids=["too_few_rows", "too_narrow", "too_wide", "negative", "over_int32", "flat"])
def test_bad_hist_side_is_4xx_naming_it(serve, recording, payload, change, field, words):
    url = serve(recording)
    warm_calls = len(recording["large"].batches)
    r = httpx.post(url + "/v1/rank", json=change(payload(candidates=3, history=6)), timeout=10)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    for w in words:
        assert w in err["message"], err
    assert len(recording["large"].batches) == warm_calls     # nothing was scored


def test_catalogue_with_other_fields_is_refused(recording, tiny_tiers, tmp_path):
    wrong = ItemCatalog(np.zeros((5, 1), np.int32), (2,))
    with pytest.raises(CatalogError, match=r"history_side_fields is \[1, 2\]"):
        create_app(recording, catalog=wrong)
    path = wrong.save(tmp_path / "wrong.npz")
    with pytest.raises(CatalogError, match="wrong.npz"):
        create_app(recording, ServerSettings(catalog=str(path)))
    with pytest.raises(CatalogError, match="catalogue file .*: no such file"):
        create_app(recording, ServerSettings(catalog=str(tmp_path / "missing.npz")))
