"""Shared by the MovieLens bench tests: a tiny MovieLens-format directory, tiny model sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Model sizes only: the MovieLens loader sets the feature schema itself.
TINY_MODEL = ("model.d_model=16", "model.encoder_heads=2", "model.target_heads=2",
              "model.mlp_hidden=32", "model.head_hidden=16", "model.fm_tokens=4",
              "model.lcb_tokens=4", "model.fm_rank=4", "model.summary_tokens=2",
              "features.sparse_hash_size=97",
              "features.item_hash_size=101", "train.batch_size=8", "train.warmup_steps=1")


def tiny_movielens(root: Path, users: int = 24, per_user: int = 40, movies: int = 30) -> Path:
    rng = np.random.default_rng(0)
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance"]
    lines = ["movieId,title,genres"]
    for m in range(1, movies + 1):
        g = "|".join(rng.choice(genres, rng.integers(1, 3), replace=False))
        lines.append(f"{m},Movie {m} ({1980 + m % 30}),{g}")
    (root / "movies.csv").write_text("\n".join(lines) + "\n")
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, users + 1):
        ts = np.sort(rng.integers(1_000_000, 1_000_000 + 365 * 86400, per_user))
        for m, t in zip(rng.integers(1, movies + 1, per_user), ts):
            rows.append(f"{u},{m},{rng.integers(1, 11) / 2},{t}")
    (root / "ratings.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def movielens_dir(tmp_path: Path) -> Path:
    """ratings.csv and movies.csv for 24 users x 40 ratings of 30 movies, in tmp_path."""
    return tiny_movielens(tmp_path)


@pytest.fixture
def movielens_tiny_model() -> tuple[str, ...]:
    return TINY_MODEL
