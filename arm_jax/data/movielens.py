"""MovieLens (ml-latest-small) as request-level ranking examples with histories in the store.

Data: `../shared/data/movielens-latest-small/` (ratings.csv, movies.csv); never copied into
the repository. `find_movielens` raises `MovieLensMissing` with a clear message when absent.

Construction (everything point-in-time: a feature of a request at time t only uses ratings
strictly before t):
- Sessions: a user's ratings sorted by time; a new session starts after a gap of more than
  `session_gap_s` or when the global train/test cut is crossed; sessions are split into
  requests of at most `max_candidates` consecutive ratings. The request's timestamp is its
  first rating's; its candidates are the movies rated in it; label = rating >= 4 ("like").
- History (joined from the store, not stored in examples): the user's earlier ratings, item =
  movie id, action = rating bucket ceil(rating) - 1 in [0, 5), gap = seconds before the request.
- Request sparse: user id, hour of day, weekday, log2 bucket of the number of past ratings.
  Request dense: log1p(past ratings), past mean rating - 3.5, past like rate (smoothed),
  log1p(days since the first rating).
- Candidate sparse: movie id, `genre_fields` genre slots (the movie's genres in a fixed order,
  id = genre index + 1, 0 = none: multi-hot hashed into fields), release year // 5.
  History events carry their movie's genre slots and year // 5 too (`catalog`, joined at
  read time), so history matching compares genres across the history.
  Candidate dense: (year - 1990) / 20, log1p(movie's ratings so far), its smoothed mean rating
  - 3.5 and smoothed like rate so far.
- Split: global and temporal; `cut_ts` is the time before which `train_frac` of all ratings
  fall. Requests starting before it train, the rest test.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from arm_jax.data.catalog import ItemCatalog
from arm_jax.data.id_vocabulary import counts_before, map_unknown
from arm_jax.data.int_csv import CsvError, csv_header
from arm_jax.data.synthetic import Examples
from arm_jax.store.events_file import events_digest

if TYPE_CHECKING:
    from arm_jax.store.base import UserLogStore

DEFAULT_DIR = Path("../shared/data/movielens-latest-small")
NUM_ACTIONS = 5
MOVIE_FIELD = 0                     # cand_sparse field holding the movie id
USER_FIELD = 0                      # req_sparse field holding the user id
OOV_ID = 2**31 - 1                  # what ids outside a vocabulary become (`with_id_vocabulary`)
GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
          "Sci-Fi", "Thriller", "War", "Western")
_PRIOR_N = 5.0                      # pseudo-ratings of the smoothing prior


class MovieLensMissing(FileNotFoundError):
    """The MovieLens directory (ratings.csv, movies.csv) is not there."""


class MovieLensFormatError(ValueError):
    """ratings.csv or movies.csv is there but not in the expected format or ranges."""


@dataclass(frozen=True)
class MovieLensSpec:
    """How ratings become requests (see module docstring)."""

    session_gap_s: int = 1800
    max_candidates: int = 16
    genre_fields: int = 3
    train_frac: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 < self.train_frac < 1.0:
            raise ValueError(f"train_frac={self.train_frac} must be in (0, 1)")
        if self.max_candidates < 1 or self.session_gap_s < 0 or self.genre_fields < 1:
            raise ValueError(f"max_candidates={self.max_candidates}, session_gap_s="
                             f"{self.session_gap_s}, genre_fields={self.genre_fields}: need "
                             ">= 1, >= 0, >= 1")


def feature_overrides(spec: MovieLensSpec = MovieLensSpec()) -> tuple[str, ...]:
    """Tier-config overrides giving the MovieLens request schema (one task: like)."""
    return ("features.req_sparse_fields=4", "features.req_dense_features=4",
            f"features.cand_sparse_fields={2 + spec.genre_fields}",
            "features.cand_dense_features=4", f"features.num_action_types={NUM_ACTIONS}",
            "features.tasks=[like]",
            "features.history_side_fields=["
            + ",".join(str(j) for j in range(1, 2 + spec.genre_fields)) + "]")


@dataclass(frozen=True)
class MovieLensData:
    """Train/test requests and the flat event log to load into a user-log store."""

    spec: MovieLensSpec
    train: Examples
    test: Examples
    log_user: np.ndarray      # int64 [E], sorted by (user, ts)
    log_item: np.ndarray      # int64 [E] movie id
    log_action: np.ndarray    # int64 [E] rating bucket
    log_ts: np.ndarray        # int64 [E]
    cut_ts: int
    catalog: ItemCatalog       # movie id -> genre slots and year // 5 (fields 1..g+1)
    stats: dict = field(default_factory=dict)

    def load_into(self, store: "UserLogStore") -> int:
        """Append every rating to `store` once; returns users written, 0 when these very
        ratings were loaded there before (a rerun, or the next seed, on the same store URL).

        Appended again, every past rating would join into the histories twice. A store
        holding any other events is refused (ValueError naming it): they would join into the
        histories too. The load is one batch whose id is the log's content hash."""
        batch_id = f"movielens-{self.log_digest()}"
        if store.batch_applied(batch_id):
            return 0
        users = store.num_users()
        if users:
            raise ValueError(f"store {store.url} already holds the logs of {users} user"
                             f"{'s' if users != 1 else ''} (not these MovieLens ratings): "
                             "they would join into every history; use an empty store")
        store.append_batch(batch_id, self.log_user, self.log_item, self.log_action,
                           self.log_ts)
        return int(np.unique(self.log_user).size)

    def with_id_vocabulary(self, before_ts: int, min_count: int) -> "MovieLensData":
        """The same data with the user-id request field and the movie-id candidate field of
        every request at time t set to OOV_ID where that user or movie has fewer than
        `min_count` ratings before min(t, `before_ts`), `before_ts` being the end of the
        period the models fit on (`arm_jax.data.id_vocabulary`): training then learns the
        OOV rows from users' and movies' first ratings, and test requests read them for
        every id new since training. The log, the histories and the catalogue keep the
        real ids (a history event keeps its movie's genres). `stats["id_vocabulary"]`
        counts what was mapped."""
        if np.isin(OOV_ID, self.log_user) or np.isin(OOV_ID, self.log_item):
            raise ValueError(f"OOV_ID={OOV_ID} is a real user or movie id here")

        def remap(ex: Examples) -> Examples:
            t = np.minimum(ex.ts, before_ts)
            req, cand = ex.req_sparse.copy(), ex.cand_sparse.copy()
            req[:, USER_FIELD] = map_unknown(
                req[:, USER_FIELD], counts_before(self.log_user, self.log_ts, ex.user_id, t),
                min_count, OOV_ID)
            movie = cand[..., MOVIE_FIELD]
            cand[..., MOVIE_FIELD] = map_unknown(
                movie, counts_before(self.log_item, self.log_ts, movie, t[:, None]),
                min_count, OOV_ID, where=ex.cand_mask)
            return dataclasses.replace(ex, req_sparse=req, cand_sparse=cand)

        train, test = remap(self.train), remap(self.test)
        fitted = self.train.ts < before_ts

        def oov(ex: Examples, rows: np.ndarray | slice = slice(None)) -> dict[str, int]:
            cand = (ex.cand_sparse[..., MOVIE_FIELD] == OOV_ID) & ex.cand_mask
            return {"requests": int(ex.cand_mask[rows].any(axis=1).sum()),
                    "oov_user_requests": int((ex.req_sparse[rows, USER_FIELD] == OOV_ID).sum()),
                    "candidates": int(ex.cand_mask[rows].sum()),
                    "oov_movie_candidates": int(cand[rows].sum())}

        stats = {**self.stats, "id_vocabulary": {
            "min_count": min_count, "before_ts": int(before_ts),
            "fitted": oov(train, fitted), "test": oov(test)}}
        return dataclasses.replace(self, train=train, test=test, stats=stats)

    def log_digest(self) -> str:
        """sha256 (40 hex digits) of the event log (users, items, actions, times)."""
        return events_digest({"user_id": self.log_user, "item": self.log_item,
                              "action": self.log_action, "ts": self.log_ts})

    def full_history_len(self, examples: Examples) -> np.ndarray:
        """Ratings strictly before each request (all of them, not truncated), int64 [R]."""
        return counts_before(self.log_user, self.log_ts, examples.user_id, examples.ts)


def find_movielens(data_dir: str | Path | None = None) -> Path:
    """The MovieLens directory, or MovieLensMissing naming the path and what is missing."""
    d = Path(data_dir) if data_dir is not None else DEFAULT_DIR
    missing = [n for n in ("ratings.csv", "movies.csv") if not (d / n).is_file()]
    if missing:
        raise MovieLensMissing(
            f"MovieLens data not found at {d} ({', '.join(missing)} missing): download "
            "ml-latest-small from https://grouplens.org/datasets/movielens/ and pass --data DIR")
    return d


def _read_movies(path: Path, genre_fields: int) -> dict[int, tuple[int, tuple[int, ...]]]:
    """movieId -> (year or 0, genre ids + 1 in GENRES order, at most genre_fields)."""
    index = {g: i + 1 for i, g in enumerate(GENRES)}
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as f:   # a BOM is not in "movieId"
        reader = csv.DictReader(f)
        columns = ("movieId", "title", "genres")
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise MovieLensFormatError(f"{path}: missing columns {missing} (has "
                                       f"{reader.fieldnames})")
        for row in reader:
            if any(row[c] is None for c in columns):
                raise MovieLensFormatError(f"{path}: expected movieId,title,genres on line "
                                           f"{reader.line_num}")
            m = row["movieId"].strip()
            # a negative id would index the catalogue from its end
            if not (m.isascii() and m.isdigit() and int(m) < 2**31):
                raise MovieLensFormatError(
                    f"{path}: movieId must be an integer in [0, {2**31}), got {m!r} on line "
                    f"{reader.line_num}")
            if int(m) in out:         # the last row would silently win
                raise MovieLensFormatError(f"{path}: movieId {m} listed twice (again on line "
                                           f"{reader.line_num})")
            years = re.findall(r"\((\d{4})\)", row["title"])
            g = sorted(index[x] for x in row["genres"].split("|") if x in index)
            out[int(m)] = (int(years[-1]) if years else 0, tuple(g[:genre_fields]))
    return out


# Features key ratings by group * 2^32 + ts in int64: ids below 2^31, ts in [0, 2^32) seconds.
_RATING_LIMITS = ((0, "userId", 2**31), (1, "movieId", 2**31), (3, "timestamp", 2**32))


RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")


def _read_ratings(path: Path) -> tuple[np.ndarray, ...]:
    """(user, movie, rating, ts) columns, found by the header's names: by position, a file
    with its columns in another order (or no header at all) loaded silently wrong."""
    try:
        names = csv_header(path)
    except CsvError as e:
        raise MovieLensFormatError(f"{path}: {e}") from None
    missing = [c for c in RATING_COLUMNS if c not in names]
    if missing:
        raise MovieLensFormatError(f"{path}: header lacks {missing} (has {names}; expected "
                                   f"{','.join(RATING_COLUMNS)})")
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2,
                         usecols=[names.index(c) for c in RATING_COLUMNS])
    except ValueError as e:
        raise MovieLensFormatError(
            f"{path}: expected userId,movieId,rating,timestamp rows ({e})") from None
    if raw.shape[0] == 0:
        raise MovieLensFormatError(f"{path}: no ratings (a header and no rows)")
    for col, name, limit in _RATING_LIMITS:
        _check_int_column(path, name, raw[:, col], limit)
    # a nan would spread into every later mean rating of its user and its movie
    bad = ~((raw[:, 2] >= 0.0) & (raw[:, 2] <= 5.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MovieLensFormatError(f"{path}: rating must be in [0, 5], got {raw[i, 2]:.17g} "
                                   f"on data row {i + 1}")
    return (raw[:, 0].astype(np.int64), raw[:, 1].astype(np.int64), raw[:, 2],
            raw[:, 3].astype(np.int64))


def _check_int_column(path: Path, name: str, values: np.ndarray, limit: int) -> None:
    """MovieLensFormatError naming the file, column and first bad row unless every value is
    an integer in [0, limit): a larger one (a timestamp in milliseconds) would shift one
    user's keys into the next user's and leak ratings across users."""
    bad = (values < 0) | (values >= limit) | (values != np.floor(values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        hint = " (unix seconds expected, not milliseconds)" if name == "timestamp" else ""
        raise MovieLensFormatError(
            f"{path}: {name} must be an integer in [0, {limit}){hint}, got {values[i]:.17g} "
            f"on data row {i + 1}")


def _prior_stats(group: np.ndarray, ts: np.ndarray, rating: np.ndarray,
                 q_group: np.ndarray, q_ts: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each query (group, t): count, rating sum and like count of the group's ratings
    strictly before t. One sort plus searchsorted over cumulative sums."""
    order = np.lexsort((ts, group))
    key = group[order] * 2**32 + ts[order]
    c_rating = np.r_[0.0, np.cumsum(rating[order])]
    c_like = np.r_[0.0, np.cumsum(rating[order] >= 4.0)]
    end = np.searchsorted(key, q_group * 2**32 + q_ts, side="left")
    start = np.searchsorted(key, q_group * 2**32, side="left")
    return (end - start).astype(np.float64), c_rating[end] - c_rating[start], \
        c_like[end] - c_like[start]


def load_movielens(data_dir: str | Path | None = None,
                   spec: MovieLensSpec = MovieLensSpec()) -> MovieLensData:
    """Parse ratings and movies, build requests, features and the temporal split."""
    d = find_movielens(data_dir)
    user, movie, rating, ts = _read_ratings(d / "ratings.csv")
    movies = _read_movies(d / "movies.csv", spec.genre_fields)
    order = np.lexsort((movie, ts, user))
    user, movie, rating, ts = user[order], movie[order], rating[order], ts[order]
    action = np.clip(np.ceil(rating) - 1, 0, NUM_ACTIONS - 1).astype(np.int64)
    cut_ts = int(np.quantile(ts, spec.train_frac, method="lower")) + 1

    # sessions -> requests of <= max_candidates consecutive ratings
    n = user.size
    new_sess = np.ones(n, bool)
    same_user = user[1:] == user[:-1]
    new_sess[1:] = ~same_user | (ts[1:] - ts[:-1] > spec.session_gap_s) | (
        (ts[:-1] < cut_ts) & (ts[1:] >= cut_ts))
    sess_id = np.cumsum(new_sess) - 1
    sess_start = np.flatnonzero(new_sess)
    pos_in_sess = np.arange(n) - sess_start[sess_id]
    new_req = new_sess | (pos_in_sess % spec.max_candidates == 0)
    req_id = np.cumsum(new_req) - 1
    req_start = np.flatnonzero(new_req)
    r_n, c_n = req_start.size, spec.max_candidates
    slot = np.arange(n) - req_start[req_id]
    r_user, r_ts = user[req_start], ts[req_start]

    # request features (user's ratings strictly before the request)
    cnt, s_rating, s_like = _prior_stats(user, ts, rating, r_user, r_ts)
    first_ts = ts[np.searchsorted(user, r_user, side="left")]
    days = np.maximum(r_ts - first_ts, 0) / 86400.0
    req_sparse = np.stack([r_user, (r_ts // 3600) % 24, (r_ts // 86400 + 3) % 7,
                           np.floor(np.log2(cnt + 1)).astype(np.int64)], 1)
    req_dense = np.stack([np.log1p(cnt), np.where(cnt > 0, s_rating / np.maximum(cnt, 1), 3.5)
                          - 3.5, (s_like + 0.5 * _PRIOR_N) / (cnt + _PRIOR_N),
                          np.log1p(days)], 1)

    # candidate features (movie's ratings strictly before the request)
    q_ts = r_ts[req_id]
    m_cnt, m_rating, m_like = _prior_stats(movie, ts, rating, movie, q_ts)
    year = np.array([movies.get(int(m), (0, ()))[0] for m in movie], np.int64)
    genre = np.zeros((n, spec.genre_fields), np.int64)
    for i, m in enumerate(movie):
        g = movies.get(int(m), (0, ()))[1]
        genre[i, :len(g)] = g
    cand = np.concatenate([movie[:, None], genre, (year // 5)[:, None]], 1)   # MOVIE_FIELD first
    cand_d = np.stack([np.where(year > 0, (year - 1990) / 20.0, 0.0), np.log1p(m_cnt),
                       (m_rating + 3.5 * _PRIOR_N) / (m_cnt + _PRIOR_N) - 3.5,
                       (m_like + 0.5 * _PRIOR_N) / (m_cnt + _PRIOR_N)], 1)

    cand_sparse = np.zeros((r_n, c_n, cand.shape[1]), np.int32)
    cand_dense = np.zeros((r_n, c_n, cand_d.shape[1]), np.float32)
    mask = np.zeros((r_n, c_n), bool)
    labels = np.zeros((r_n, c_n, 1), np.float32)
    cand_sparse[req_id, slot] = cand
    cand_dense[req_id, slot] = cand_d
    mask[req_id, slot] = True
    labels[req_id, slot, 0] = rating >= 4.0
    ex = Examples(user_id=r_user, ts=r_ts, req_sparse=req_sparse.astype(np.int32),
                  req_dense=req_dense.astype(np.float32), cand_sparse=cand_sparse,
                  cand_dense=cand_dense, cand_mask=mask, labels=labels,
                  true_prob=np.full(labels.shape, np.nan, np.float32), tasks=("like",))
    is_train = r_ts < cut_ts
    train, test = ex.take(np.flatnonzero(is_train)), ex.take(np.flatnonzero(~is_train))
    stats = {"ratings": int(n), "users": int(np.unique(user).size),
             "movies": int(np.unique(movie).size), "requests": int(r_n),
             "train_requests": len(train), "test_requests": len(test),
             "train_candidates": int(train.cand_mask.sum()),
             "test_candidates": int(test.cand_mask.sum()),
             "like_rate": float((rating >= 4.0).mean()), "cut_ts": cut_ts}
    return MovieLensData(spec=spec, train=train, test=test, log_user=user, log_item=movie,
                         log_action=action, log_ts=ts, cut_ts=cut_ts,
                         catalog=_catalog(movies, spec.genre_fields, int(movie.max())),
                         stats=stats)


def _catalog(movies: dict[int, tuple[int, tuple[int, ...]]], genre_fields: int,
             max_rated: int = -1) -> ItemCatalog:
    """movie id -> (genre slots, year // 5): the candidate fields 1..genre_fields + 1.
    It covers every rated movie too: one missing from movies.csv has 0s in every slot,
    as it has as a candidate (past the catalogue's end, its history events would read
    UNKNOWN_SIDE instead)."""
    rows = max(max(movies, default=-1), max_rated) + 1
    side = np.zeros((rows, genre_fields + 1), np.int64)
    for m, (year, genres) in movies.items():
        side[m, :len(genres)] = genres
        side[m, genre_fields] = year // 5
    return ItemCatalog(side, tuple(range(1, 2 + genre_fields)))


__all__ = ["MovieLensSpec", "MovieLensData", "MovieLensMissing", "MovieLensFormatError",
           "load_movielens", "find_movielens", "feature_overrides", "DEFAULT_DIR", "GENRES"]
