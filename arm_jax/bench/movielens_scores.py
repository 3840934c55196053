"""The test requests' scores of `arm-jax bench movielens`, saved beside its JSON.

The JSON holds the figures the bench chose to compute; questions it did not ask
(calibration per segment, AUC per user, another split of the candidates, a new metric)
need every test candidate's label and every model's score. `save_test_scores` writes them
as one .npz, one row per test request, so such an analysis is a `np.load` away and needs
no retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from arm_jax.data.movielens import MOVIE_FIELD
from arm_jax.data.synthetic import Examples

SCORE_PREFIX = "score_"


def scores_path(out_json: str | Path) -> Path:
    """Where the scores of the run writing `out_json` go: `<stem>-scores.npz` beside it."""
    out = Path(out_json)
    return out.with_name(f"{out.stem}-scores.npz")


def save_test_scores(path: str | Path, test: Examples, past_ratings: np.ndarray,
                     probs: Mapping[str, np.ndarray]) -> Path:
    """Write the test requests and every model's probabilities (first task) -> path.

    Arrays, R test requests of up to N candidates: `user_id` [R], `ts` [R] (the request's
    time, seconds), `past_ratings` [R] (the user's ratings before it), `movie` [R, N] (as
    the models read it: under `--id-min-count`, the mapped id),
    `label` [R, N] (1.0 = liked), `cand_mask` [R, N] (False on padding) and
    `score_<model>` [R, N] for each model in `probs` ([R, N] or [R, N, tasks]).
    """
    r, n = np.asarray(test.cand_mask).shape
    arrays = {"user_id": np.asarray(test.user_id), "ts": np.asarray(test.ts),
              "past_ratings": np.asarray(past_ratings),
              "movie": np.asarray(test.cand_sparse)[..., MOVIE_FIELD],
              "label": np.asarray(test.labels)[..., 0], "cand_mask": np.asarray(test.cand_mask)}
    for name, p in probs.items():
        p = np.asarray(p)
        p = p[..., 0] if p.ndim == 3 else p
        if p.shape != (r, n):
            raise ValueError(f"probs[{name!r}]: shape {p.shape}, expected ({r}, {n}) "
                             f"(one score per test candidate)")
        arrays[SCORE_PREFIX + name] = p.astype(np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


__all__ = ["save_test_scores", "scores_path", "SCORE_PREFIX"]
