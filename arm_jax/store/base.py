"""The user-log store interface: append events, read a user's events before a time, batch reads.

One copy of each user's action log lives in a key-value store; training joins and serving
fetch read it with a point-in-time cut (`ts < before`). Backends (LMDB embedded, Redis
shared) implement `UserLogStore`; values are encoded by `arm_jax.store.codec`.
"""

from __future__ import annotations

import abc
import operator
import re
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlsplit

import numpy as np

INT32_MAX = 2**31 - 1
TS_LIMIT = 2**32          # ts are unix seconds in [0, 2^32): up to the year 2106
USER_LIMIT = 2**63        # user ids are non-negative int64


class StoreError(RuntimeError):
    """Base class of every user-log store failure."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened (server down, timeout, missing directory)."""


class InvalidStoreUrl(StoreUnavailable, ValueError):
    """The store URL itself is wrong (unknown scheme, no path): no store is ever behind it."""


class CorruptValue(StoreError):
    """A stored value fails its integrity checks (bad magic/version, truncated, crc mismatch)."""


class ActionOutOfRange(CorruptValue):
    """A stored action has no row in the tier's action table (>= features.num_action_types):
    the log was loaded for another tier, or with a bad action column. Readers refuse it
    before it reaches a model (serving degrades as `store_corrupt`)."""


class InvalidEvents(StoreError, ValueError):
    """Events handed to `append` are malformed (shapes, ranges)."""


@dataclass(frozen=True)
class Events:
    """One user's events, oldest first: item int32 [n], action int32 [n], ts int64 [n]."""

    item: np.ndarray
    action: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def empty(cls) -> "Events":
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64))

    def before(self, ts: int, max_len: int | None = None) -> "Events":
        """Events with ts strictly before `ts`, keeping the `max_len` most recent.

        `ts` must be unix seconds in [0, 2^32] like the stored ones (InvalidEvents
        otherwise): a cut in milliseconds would let every later event through.
        """
        max_len = check_max_len(max_len)
        check_cut_ts(ts)
        return self._cut(ts, max_len)

    def _cut(self, ts: int, max_len: int | None) -> "Events":
        """`before` on a checked `ts` and `max_len` (read_many_before checks them all once)."""
        end = int(np.searchsorted(self.ts, ts, side="left"))
        start = 0 if max_len is None else max(0, end - max_len)
        return Events(self.item[start:end], self.action[start:end], self.ts[start:end])


def _is_integer(dtype: np.dtype) -> bool:
    """Signed or unsigned integers; not timedelta64, which numpy counts as an integer
    (a Parquet duration column, an .npz of timedeltas) but whose min() int() cannot take."""
    return dtype.kind in "iu"


def _as_array(value: object, name: str) -> np.ndarray:
    """np.asarray(value); a ragged list (which numpy refuses with a bare ValueError) is
    InvalidEvents naming `name`."""
    try:
        return np.asarray(value)
    except ValueError as e:
        raise InvalidEvents(f"{name}: expected a 1-d array, got a ragged sequence "
                            f"({e})") from None


def check_events(item: object, action: object, ts: object) -> tuple[np.ndarray, ...]:
    """Validate append input once: equal 1-d lengths, ids in [0, 2^31), action in [0, 255],
    ts in [0, 2^32) unix seconds (what the codec stores; milliseconds are refused here, not
    half-way through a load). Scalars are one event (`store.append(42, item, action, ts)`)."""
    arrays = []
    for name, value in (("item", item), ("action", action), ("ts", ts)):
        arr = _as_array(value, name)
        arr = arr.reshape(1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise InvalidEvents(f"{name}: expected a 1-d array, got shape {arr.shape}")
        if arr.size and not _is_integer(arr.dtype):
            raise InvalidEvents(f"{name}: expected integers, got dtype {arr.dtype}")
        arrays.append(arr)
    it, ac, t = arrays
    if not (it.size == ac.size == t.size):
        raise InvalidEvents(f"item/action/ts lengths differ: {it.size}, {ac.size}, {t.size}")
    if not t.size:
        return tuple(a.astype(np.int64) for a in arrays)
    # ranges on the input dtype (python ints): a uint64 never wraps before it is checked
    (it_lo, it_hi), (ac_lo, ac_hi), (t_lo, t_hi) = ((int(a.min()), int(a.max())) for a in arrays)
    if it_lo < 0 or it_hi > INT32_MAX:
        raise InvalidEvents(f"item: ids must be in [0, {INT32_MAX}], got {it_lo}..{it_hi}")
    if ac_lo < 0 or ac_hi > 255:
        raise InvalidEvents(f"action: must be in [0, 255], got {ac_lo}..{ac_hi}")
    if t_lo < 0 or t_hi >= TS_LIMIT:
        raise InvalidEvents(_ts_message(t_lo if t_lo < 0 else t_hi))
    return tuple(a.astype(np.int64) for a in arrays)


def _ts_message(bad: int, name: str = "ts", upper: str = ")") -> str:
    """Why `bad` is no ts, with a hint when it looks like milli- or microseconds."""
    msg = f"{name}={bad}: must be in [0, 2^32 = {TS_LIMIT}{upper}: unix seconds expected"
    if TS_LIMIT < bad < TS_LIMIT * 1000:
        msg += " (milliseconds?)"
    elif TS_LIMIT * 1000 <= bad < TS_LIMIT * 1_000_000:
        msg += " (microseconds?)"
    return msg


def _as_int(value: object, name: str) -> int:
    """`value` as an int (InvalidEvents naming `name` otherwise). A float with a fraction
    is refused, not truncated: user 1.5 is not user 1, nor a cut at 100.5 one at 100.
    Text ("1", b"1") and booleans are refused too, though int() takes them: user "1" is a
    caller's unparsed input, and True no user id."""
    if isinstance(value, (str, bytes, bytearray, bool, np.bool_)):
        raise InvalidEvents(f"{name}: expected an integer, got {value!r}")
    try:
        v = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):      # OverflowError: float infinity
        raise InvalidEvents(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(value, (float, np.floating)) and v != value:
        raise InvalidEvents(f"{name}: expected an integer, got {float(value)!r}")
    return v


def check_cut_ts(ts: object, name: str = "ts") -> int:
    """A point-in-time cut as int unix seconds in [0, 2^32] (TS_LIMIT itself: "all events").

    The check that keeps a millisecond request time from joining events after it."""
    t = _as_int(ts, name)
    if t < 0 or t > TS_LIMIT:
        raise InvalidEvents(_ts_message(t, name=name, upper="]"))
    return t


def check_stored_actions(url: str, user_id: int, action: np.ndarray,
                         num_action_types: int) -> None:
    """ActionOutOfRange naming the store, the user, the value and the limit unless every
    action of this user's `action` [n] read from the store at `url` is < num_action_types."""
    if action.size and (top := int(action.max())) >= num_action_types:
        raise ActionOutOfRange(
            f"{url}: user {user_id}: stored action {top} >= features.num_action_types="
            f"{num_action_types} (actions must be in [0, {num_action_types}): a log loaded "
            f"for another tier? `arm-jax store load --tier` refuses such events)")


def check_positive_int(value: object, name: str) -> int:
    """`value` as an int >= 1, or ValueError naming `name`: a store setting (a size, a
    count) where a float such as 1e3 is refused, not truncated (a part size recorded in
    Redis as "1000.0" no later load could read), and so are a bool and text."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1") from None
    if n < 1:
        raise ValueError(f"{name}={n}: must be >= 1")
    return n


def check_max_len(max_len: object) -> int | None:
    """A history length limit: None (no limit) or an integer >= 0 (ValueError naming
    max_len otherwise: a fraction or a bool is no number of events)."""
    if max_len is None:
        return None
    try:
        if isinstance(max_len, (bool, np.bool_)):
            raise TypeError
        n = operator.index(max_len)       # int, numpy integers; not 1.5, "4"
    except TypeError:
        raise ValueError(f"max_len={max_len!r}: must be an integer >= 0 (or None: no "
                         "limit)") from None
    if n < 0:
        raise ValueError(f"max_len={n}: must be >= 0 (or None: no limit)")
    return n


def check_user_sequence(user_ids: object, name: str = "user_ids") -> None:
    """InvalidEvents naming `name` unless `user_ids` is a collection of user ids: a str or
    bytes would be read as its characters ("12": users 1 and 2; b"12": users 49 and 50),
    and a single id is no sequence (`read(user)` reads one), nor is a 0-d array
    (`np.asarray(5)`: iterable by type, a bare TypeError once iterated)."""
    if isinstance(user_ids, (str, bytes, bytearray)) or not hasattr(user_ids, "__iter__") \
            or getattr(user_ids, "ndim", 1) == 0:
        raise InvalidEvents(f"{name}: expected a sequence of user ids, got {user_ids!r}")


def check_cuts(user_ids: Sequence[int], before_ts: Sequence[int],
               max_len: int | None) -> list[int]:
    """The cuts of `read_many_before`, checked before any read: one per user, each unix
    seconds in [0, 2^32] (InvalidEvents), and `max_len` an integer >= 0 or None
    (ValueError)."""
    check_user_sequence(user_ids)
    check_user_sequence(before_ts, "before_ts")
    if len(user_ids) != len(before_ts):
        raise InvalidEvents(f"user_ids and before_ts differ in length: "
                            f"{len(user_ids)} vs {len(before_ts)}")
    check_max_len(max_len)
    return [check_cut_ts(t) for t in before_ts]


# "scheme://user:" and everything up to the last "@": the password, even one holding an
# unescaped "/", "?", "#" or "@" (which end urlsplit's authority early: it finds none)
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:).*@")


def redact_url(url: str) -> str:
    """`url` as messages and logs show it: a password, in the user part or a `password=`
    query argument, becomes `***` (redis://:***@host:6379/0). Errs towards hiding: a URL
    with no password but an "@" after its port shows that stretch as `***` too."""
    try:
        urlsplit(url)
    except ValueError:          # unparseable: show the scheme only
        return url.partition("://")[0] + "://(unparseable URL)"
    url = _USERINFO_PASSWORD.sub(r"\1***@", url, count=1)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def check_user(user_id: object) -> int:
    """A user id as a non-negative int (InvalidEvents otherwise)."""
    u = _as_int(user_id, "user_id")
    if u < 0 or u >= USER_LIMIT:
        raise InvalidEvents(f"user_id: must be in [0, 2^63), got {u}")
    return u


def check_user_ids(user_id: object) -> np.ndarray:
    """A 1-d array of user ids as int64, each in [0, 2^63) (InvalidEvents otherwise: a
    uint64 id >= 2^63 would otherwise wrap to a negative key)."""
    u = _as_array(user_id, "user_id")
    if u.ndim != 1:
        raise InvalidEvents(f"user_id: expected a 1-d array, got shape {u.shape}")
    if not u.size:
        return u.astype(np.int64)
    if not _is_integer(u.dtype):
        raise InvalidEvents(f"user_id: expected integers, got dtype {u.dtype}")
    lo, hi = int(u.min()), int(u.max())
    if lo < 0 or hi >= USER_LIMIT:
        raise InvalidEvents(f"user_id: must be in [0, 2^63), got {lo}..{hi}")
    return u.astype(np.int64)


class UserLogStore(abc.ABC):
    """Append-only per-user event logs with point-in-time reads.

    Appends are atomic per call (readers never see half an append); events may be
    appended in any time order (reads sort by ts). Implementations are safe for many
    reader threads while one writer appends, and reopen themselves when unpickled in
    another process (LMDB: not in a forked child whose parent holds the store open; see
    lmdb_store.py).
    """

    url: str

    @abc.abstractmethod
    def append(self, user_id: int, item: object, action: object, ts: object) -> None:
        """Append events for one user: equal-length arrays, or scalars for one event."""

    @abc.abstractmethod
    def append_many(self, user_id: object, item: object, action: object, ts: object) -> int:
        """Bulk-append flat event arrays (any user order); returns the number of users written."""

    @abc.abstractmethod
    def append_batch(self, batch_id: str, user_id: object, item: object, action: object,
                     ts: object) -> bool:
        """`append_many` at most once per `batch_id`: True if written now, False if a
        batch with this id was applied before (nothing is written). The id is recorded in
        the same transaction as the events, so a retry after a timeout, a crash or a second
        run of the same load can never store the events twice. LMDB writes a batch all or
        nothing; Redis writes a batch of many users in parts (`RedisStore.multi_users`),
        each recorded with its own id, so a failure can leave it half-written until a retry
        completes it."""

    @abc.abstractmethod
    def batch_applied(self, batch_id: str) -> bool:
        """Whether `append_batch` has applied a batch with this id."""

    @abc.abstractmethod
    def read_many(self, user_ids: Sequence[int]) -> list[Events]:
        """Every stored event of each user (oldest first); unknown users give empty Events."""

    @abc.abstractmethod
    def user_ids(self) -> Iterator[int]:
        """Every user with a stored log, once each (LMDB: ascending; Redis: SCAN order)."""

    @abc.abstractmethod
    def delete(self, user_ids: Sequence[int]) -> int:
        """Remove these users' logs (a deletion request); returns how many existed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections / file handles (idempotent)."""

    @abc.abstractmethod
    def num_users(self) -> int:
        """Users with a stored log."""

    @abc.abstractmethod
    def size(self) -> tuple[int, str]:
        """(bytes the store occupies, where: "on disk" / "in Redis memory")."""

    def check(self) -> str:
        """Raise StoreUnavailable unless the store answers; else a few words on it (what a
        server prints at start-up). Backends override this when counting users is slow."""
        return f"{self.num_users()} users"

    @abc.abstractmethod
    def compact(self) -> int:
        """Rewrite every multi-chunk value as one chunk (a read decodes every chunk, one per
        append); returns how many values were rewritten."""

    def read(self, user_id: int) -> Events:
        """All of one user's events, oldest first."""
        return self.read_many([user_id])[0]

    def read_before(self, user_id: int, before_ts: int, max_len: int | None = None) -> Events:
        """The user's `max_len` most recent events with ts < before_ts, oldest first."""
        return self.read_many_before([user_id], [before_ts], max_len)[0]

    def read_many_before(self, user_ids: Sequence[int], before_ts: Sequence[int],
                         max_len: int | None = None) -> list[Events]:
        """`read_before` for many (user, time) pairs in one round trip."""
        cuts = check_cuts(user_ids, before_ts, max_len)
        logs = self.read_many(user_ids)
        max_len = check_max_len(max_len)
        return [log._cut(t, max_len) for log, t in zip(logs, cuts)]

    def __enter__(self) -> "UserLogStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BATCH_ID_LIMIT = 200


def check_batch_id(batch_id: object) -> str:
    """A batch id: 1..200 printable ASCII characters, no spaces (InvalidEvents otherwise)."""
    if not isinstance(batch_id, str) or not batch_id:
        raise InvalidEvents(f"batch_id: expected a non-empty string, got {batch_id!r}")
    if len(batch_id) > BATCH_ID_LIMIT:
        raise InvalidEvents(f"batch_id: at most {BATCH_ID_LIMIT} characters, got "
                            f"{len(batch_id)}")
    if not all(33 <= ord(c) < 127 for c in batch_id):
        raise InvalidEvents(f"batch_id: printable ASCII without spaces only, got {batch_id!r}")
    return batch_id


def group_by_user(user_id: object, item: object, action: object, ts: object
                  ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Flat event arrays -> [(user, item, action, ts)] with each user's events sorted by ts."""
    u = check_user_ids(user_id)
    it, ac, t = check_events(item, action, ts)
    if u.size != t.size:
        raise InvalidEvents(f"user_id has {u.size} entries, events {t.size}")
    order = np.lexsort((t, u))
    u, it, ac, t = u[order], it[order], ac[order], t[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if u.size else np.zeros(0, int)
    ends = np.r_[starts[1:], u.size]
    return [(int(u[s]), it[s:e], ac[s:e], t[s:e]) for s, e in zip(starts, ends)]


__all__ = ["StoreError", "StoreUnavailable", "CorruptValue", "ActionOutOfRange",
           "InvalidEvents", "Events", "check_stored_actions",
           "UserLogStore", "check_events", "check_user", "check_user_ids", "group_by_user",
           "check_batch_id", "check_cut_ts", "check_cuts", "check_max_len",
           "check_user_sequence", "check_positive_int", "redact_url", "BATCH_ID_LIMIT",
           "TS_LIMIT"]
