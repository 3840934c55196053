"""The scores file of `bench movielens`: what it holds, and a mismatched model refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from arm_jax.bench.movielens_scores import save_test_scores, scores_path
from arm_jax.data.movielens import MOVIE_FIELD


def _test_requests(r: int = 5, n: int = 3, tasks: int = 2):
    rng = np.random.default_rng(0)
    return SimpleNamespace(user_id=np.arange(r) + 10, ts=np.arange(r) * 100,
                           cand_sparse=rng.integers(0, 50, (r, n, 4)),
                           labels=rng.integers(0, 2, (r, n, tasks)).astype(np.float32),
                           cand_mask=rng.random((r, n)) < 0.8)


def test_scores_file_holds_requests_labels_and_each_models_first_task(tmp_path):
    test = _test_requests()
    past = np.array([0, 3, 40, 300, 7])
    rng = np.random.default_rng(1)
    probs = {"small": rng.random((5, 3, 2)), "logreg": rng.random((5, 3))}
    path = save_test_scores(tmp_path / "sub" / "ml-scores.npz", test, past, probs)
    with np.load(path) as z:
        assert set(z.files) == {"user_id", "ts", "past_ratings", "movie", "label", "cand_mask",
                                "score_small", "score_logreg"}
        np.testing.assert_array_equal(z["user_id"], test.user_id)
        np.testing.assert_array_equal(z["ts"], test.ts)
        np.testing.assert_array_equal(z["past_ratings"], past)
        np.testing.assert_array_equal(z["movie"], test.cand_sparse[..., MOVIE_FIELD])
        np.testing.assert_array_equal(z["label"], test.labels[..., 0])
        np.testing.assert_array_equal(z["cand_mask"], test.cand_mask)
        np.testing.assert_allclose(z["score_small"], probs["small"][..., 0], rtol=1e-6)
        np.testing.assert_allclose(z["score_logreg"], probs["logreg"], rtol=1e-6)


def test_scores_of_another_shape_are_refused_naming_the_model(tmp_path):
    with pytest.raises(ValueError, match=r"probs\['large'\]: shape \(5, 2\), expected \(5, 3\)"):
        save_test_scores(tmp_path / "s.npz", _test_requests(), np.zeros(5),
                         {"large": np.zeros((5, 2))})
    assert not (tmp_path / "s.npz").exists()


def test_scores_path_sits_beside_the_json():
    assert scores_path("bench-results/movielens-seed1.json").as_posix() == \
        "bench-results/movielens-seed1-scores.npz"
