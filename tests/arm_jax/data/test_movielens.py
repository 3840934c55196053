"""MovieLens loader: sessions -> requests, point-in-time features, temporal split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arm_jax.data.movielens import (DEFAULT_DIR, MOVIE_FIELD, OOV_ID, USER_FIELD,
                                    MovieLensFormatError, MovieLensMissing, MovieLensSpec,
                                    feature_overrides, find_movielens, load_movielens)

REAL = Path(__file__).resolve().parents[3] / DEFAULT_DIR


def _write(tmp_path: Path, rows: list[tuple]) -> Path:
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2,"Heat, The (1995)",Action|Crime|Thriller\n'
        "3,No Year,(no genres listed)\n")
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in rows))
    return tmp_path


def test_sessions_features_and_split(tmp_path):
    rows = [(1, 1, 5.0, 1000), (1, 2, 3.0, 1010), (1, 3, 4.0, 1020),   # session A (3 ratings)
            (1, 2, 4.5, 9000),                                          # session B, gap > 30 min
            (2, 1, 1.0, 1005), (2, 3, 4.0, 20000), (2, 2, 2.0, 20001),
            (3, 1, 4.0, 30000), (3, 2, 4.0, 30001), (3, 3, 0.5, 30002)]
    d = load_movielens(_write(tmp_path, rows), MovieLensSpec(max_candidates=2, train_frac=0.6))
    ex_all = [d.train, d.test]
    assert sum(int(e.cand_mask.sum()) for e in ex_all) == len(rows)     # every rating once
    assert d.cut_ts > d.train.ts.max() and d.test.ts.min() >= d.cut_ts
    # user 1 session A splits into requests of 2 and 1 candidates (max_candidates=2)
    u1 = d.train.user_id == 1
    assert sorted(d.train.cand_mask[u1].sum(1).tolist()) == [1, 1, 2]
    first = np.flatnonzero(u1 & (d.train.ts == 1000))[0]
    assert d.train.labels[first, :2, 0].tolist() == [1.0, 0.0]          # 5.0 liked, 3.0 not
    assert d.train.cand_sparse[first, 0].tolist() == [1, 2, 3, 4, 399]  # movie, genres, 1995//5
    assert d.train.req_dense[first, 0] == 0.0                           # nothing before it
    # the second request of session A (ts 1020) sees exactly 2 earlier ratings (1000, 1010)
    second = np.flatnonzero(u1 & (d.train.ts == 1020))[0]
    assert np.isclose(d.train.req_dense[second, 0], np.log1p(2))
    assert d.full_history_len(d.train)[second] == 2
    # movie 3 at the request of ts 20000: one earlier rating (4.0 at t=1020); the session's
    # next rating (t=20001) crosses the cut and so starts a test request
    r = np.flatnonzero((d.train.user_id == 2) & (d.train.ts == 20000))[0]
    assert d.train.cand_mask[r].sum() == 1 and d.train.cand_sparse[r, 0, 0] == 3
    assert np.isclose(d.train.cand_dense[r, 0, 1], np.log1p(1))
    assert np.isclose(d.train.cand_dense[r, 0, 3], (1 + 0.5 * 5) / (1 + 5))   # smoothed like rate
    assert (d.test.user_id == 2).sum() == 1 and d.test.ts[d.test.user_id == 2][0] == 20001
    # history actions are rating buckets in [0, 5)
    assert d.log_action.min() >= 0 and d.log_action.max() <= 4 and d.log_action[
        (d.log_user == 3) & (d.log_ts == 30002)][0] == 0


def test_id_vocabulary_maps_ids_new_at_a_request_to_one_oov_id(tmp_path):
    """At a training request an id is unknown until rated before it; at a test request (and
    any after `before_ts`) until rated before `before_ts`. The log keeps the real ids."""
    rows = [(1, 1, 5.0, 1000), (1, 2, 3.0, 1010),        # user 1, movies 1 and 2, new
            (2, 1, 4.0, 5000), (2, 3, 4.0, 5001),        # user 2 new; movie 1 known, 3 new
            (1, 3, 4.0, 9000),                           # user 1 known, movie 3 known
            (3, 3, 2.0, 20000), (3, 1, 4.0, 20001),      # test: user 3 new; both movies known
            (1, 2, 4.0, 20002)]                          # (same session: test, user 1)
    d = load_movielens(_write(tmp_path, rows), MovieLensSpec(max_candidates=4, train_frac=0.6))
    v = d.with_id_vocabulary(before_ts=9000, min_count=1)

    def ids(ex, t):
        r = np.flatnonzero(ex.ts == t)[0]
        return (int(ex.req_sparse[r, USER_FIELD]),
                ex.cand_sparse[r, :, MOVIE_FIELD][ex.cand_mask[r]].tolist())

    assert ids(v.train, 1000) == (OOV_ID, [OOV_ID, OOV_ID])
    assert ids(v.train, 5000) == (OOV_ID, [1, OOV_ID])
    assert ids(v.train, 9000) == (1, [3])           # rated 5001 < 9000: known
    assert ids(v.test, 20000) == (OOV_ID, [3, 1])
    assert ids(v.test, 20002) == (1, [2])
    assert np.array_equal(v.log_item, d.log_item) and np.array_equal(v.test.ts, d.test.ts)
    assert v.stats["id_vocabulary"]["test"] == {"requests": 2, "oov_user_requests": 1,
                                                "candidates": 3, "oov_movie_candidates": 0}
    # with min_count=2 movie 1 (rated at 1000, 5000) is known only after two ratings
    v2 = d.with_id_vocabulary(before_ts=9000, min_count=2)
    assert ids(v2.test, 20000) == (OOV_ID, [OOV_ID, 1])
    assert d.train.req_sparse[0, USER_FIELD] != OOV_ID      # the original is untouched


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(MovieLensMissing, match="ratings.csv"):
        find_movielens(tmp_path / "nope")
    with pytest.raises(ValueError, match="train_frac"):
        MovieLensSpec(train_frac=1.5)


@pytest.mark.parametrize("row,words", [
    ((1, 1, 4.0, 1_000_000_000_000), "timestamp must be an integer in [0, 4294967296) (unix "
                                     "seconds expected, not milliseconds), got 1000000000000"),
    ((1, 1, 4.0, -5), "timestamp must be an integer in [0, 4294967296)"),
    ((2**31, 1, 4.0, 100), "userId must be an integer in [0, 2147483648), got 2147483648"),
    ((1, -1, 4.0, 100), "movieId must be an integer in [0, 2147483648)"),
])
def test_ratings_out_of_range_are_refused(tmp_path, row, words):
    """Features key ratings by id * 2^32 + ts: a millisecond timestamp used to spill one
    user's ratings into the next user's counts silently."""
    d = _write(tmp_path, [(1, 2, 3.0, 50), (2, 2, 4.0, 60), row])
    with pytest.raises(MovieLensFormatError) as e:
        load_movielens(d)
    assert str(d / "ratings.csv") in str(e.value) and words in str(e.value)
    assert "data row 3" in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("rating", ["nan", "inf", "-1.0", "10.0"])
def test_ratings_outside_zero_to_five_are_refused(tmp_path, rating):
    """A nan rating used to pass: every later request of that user and every later
    candidate of that movie got a nan mean rating (and it was never a like)."""
    d = _write(tmp_path, [(1, 2, 3.0, 50), (2, 2, 4.0, 60), (1, 1, rating, 70)])
    with pytest.raises(MovieLensFormatError, match=r"rating must be in \[0, 5\].*data row 3"):
        load_movielens(d)


def test_movies_csv_with_a_byte_order_mark_loads(tmp_path):
    d = _write(tmp_path, [(1, 1, 4.0, 100), (1, 2, 3.0, 5000)])
    text = (d / "movies.csv").read_text()
    (d / "movies.csv").write_text("\ufeff" + text, encoding="utf-8")
    data = load_movielens(d)
    assert data.stats["ratings"] == 2 and data.catalog.num_items == 4
    assert data.catalog.lookup(np.array([2]))[0, -1] == 1995 // 5


@pytest.mark.parametrize("text,words", [
    ("movieId,name,genres\n1,Toy Story (1995),Comedy\n", "missing columns ['title']"),
    ("movieId,title,genres\n1,Toy Story (1995),Comedy\nx,Heat (1995),Action\n",
     "movieId must be an integer in [0, 2147483648), got 'x' on line 3"),
    ("movieId,title,genres\n1,Toy Story (1995),Comedy\n-3,Heat (1995),Action\n",
     "movieId must be an integer in [0, 2147483648), got '-3' on line 3"),
    ("movieId,title,genres\n1,Toy Story (1995)\n", "expected movieId,title,genres on line 2"),
    ("movieId,title,genres\n1,Toy Story (1995),Comedy\n1,Heat (1995),Action\n",
     "movieId 1 listed twice (again on line 3)"),
])
def test_a_bad_movies_csv_names_the_file_column_and_line(tmp_path, text, words):
    """Was a bare KeyError or TypeError (a traceback from the CLI), a ValueError naming no
    file, or, for a negative id, another movie's genres silently overwritten."""
    d = _write(tmp_path, [(1, 1, 4.0, 100), (1, 2, 3.0, 5000)])
    (d / "movies.csv").write_text(text)
    with pytest.raises(MovieLensFormatError) as e:
        load_movielens(d)
    assert str(e.value).startswith(f"{d / 'movies.csv'}: ") and words in str(e.value)


def test_feature_overrides_load(tmp_path):
    from arm_jax.config import load_tier

    t = load_tier("small", feature_overrides())
    assert t.features.tasks == ("like",) and t.features.cand_sparse_fields == 5


@pytest.mark.skipif(not (REAL / "ratings.csv").exists(),
                    reason=f"MovieLens not found at {REAL} (ml-latest-small): skipped")
def test_real_movielens_split_is_temporal():
    d = load_movielens(REAL)
    s = d.stats
    assert s["ratings"] == s["train_candidates"] + s["test_candidates"] > 100_000 - 1000
    assert d.train.ts.max() < d.cut_ts <= d.test.ts.min()
    assert 0.7 < s["train_candidates"] / s["ratings"] < 0.9
    assert 0.4 < s["like_rate"] < 0.6


def test_loading_into_a_store_twice_leaves_every_history_as_it_was(tmp_path):
    """`bench movielens --store URL` run again, or with --seeds, loads the same ratings into
    the same store: appended a second time, every past rating appeared twice in the joined
    histories. A second load of the same ratings is a no-op; other events are refused."""
    from arm_jax.data.catalog import empty_catalog
    from arm_jax.data.join import join_histories
    from arm_jax.store.lmdb_store import LmdbStore

    rows = [(1, 1, 5.0, 1000), (1, 2, 3.0, 1000), (1, 3, 4.0, 5000), (2, 1, 1.0, 1005),
            (2, 3, 4.0, 9000)]
    d = load_movielens(_write(tmp_path, rows), MovieLensSpec(train_frac=0.6))
    ex = d.test
    with LmdbStore(tmp_path / "logs") as store:
        assert d.load_into(store) == 2
        first = join_histories(store, ex.user_id, ex.ts, 8, empty_catalog((1,)))
        assert d.load_into(store) == 0                   # the same ratings: already there
        again = join_histories(store, ex.user_id, ex.ts, 8, empty_catalog((1,)))
    assert first["hist_len"].tolist() == d.full_history_len(ex).tolist() == [2, 1]
    assert again["hist_len"].tolist() == first["hist_len"].tolist()
    with LmdbStore(tmp_path / "other") as store:
        store.append(7, [1], [0], [100])
        with pytest.raises(ValueError, match="already holds the logs of 1 user"):
            d.load_into(store)


@pytest.mark.parametrize("header,words", [
    ("movieId,userId,rating,timestamp", None),                     # another order: by name
    ("userId,movieId,rating,timestamp,source", None),              # an extra column
    ("user,item,score,time", "header lacks ['userId', 'movieId', 'rating', 'timestamp']"),
    ("1,1,4.0,100", "header lacks"),                               # no header line at all
])
def test_ratings_columns_are_found_by_the_headers_names(tmp_path, header, words):
    """Columns were taken by position and the header skipped unread: swapped columns
    loaded users as movies, and a file without a header lost its first rating."""
    rows = [(1, 1, 4.0, 100), (1, 2, 3.0, 5000), (1, 3, 5.0, 6000)]   # 1 user, 3 movies
    d = _write(tmp_path, rows)
    names = header.split(",")
    if words is None:
        by_name = [dict(zip(("userId", "movieId", "rating", "timestamp"), r)) for r in rows]
        lines = [",".join(str(r.get(n, 7)) for n in names) for r in by_name]
        (d / "ratings.csv").write_text("\n".join([header, *lines]) + "\n")
        data = load_movielens(d)
        assert data.stats["ratings"] == 3 and data.stats["users"] == 1   # swapped: 3
    else:
        (d / "ratings.csv").write_text("\n".join([header, "1,2,3.0,5000", "2,2,5.0,6000"]) + "\n")
        with pytest.raises(MovieLensFormatError) as e:
            load_movielens(d)
        assert str(e.value).startswith(f"{d / 'ratings.csv'}: ") and words in str(e.value)


def test_a_rated_movie_missing_from_movies_csv_reads_alike_as_candidate_and_history(tmp_path):
    """Movie 7 is rated but not listed: as a candidate its side slots were 0s, as a
    history event (past the catalogue's end) UNKNOWN_SIDE."""
    d = _write(tmp_path, [(1, 1, 4.0, 100), (1, 7, 3.0, 5000), (2, 7, 5.0, 6000)])
    data = load_movielens(d)
    side = data.catalog.lookup(np.array([[7]]))[0, 0]
    assert side.tolist() == [0] * len(side)
    for ex in (data.train, data.test):     # the candidate's side slots: the same ids
        is_7 = ex.cand_mask & (ex.cand_sparse[..., MOVIE_FIELD] == 7)
        for row in ex.cand_sparse[is_7]:
            assert row[1:].tolist() == side.tolist()
    assert sum(int((e.cand_mask & (e.cand_sparse[..., MOVIE_FIELD] == 7)).sum())
               for e in (data.train, data.test)) == 2
