"""The UserLogStore contract of base.py's checks, on both backends: user ids are checked
on every append (an empty one too), and every collection argument refuses a single id."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.store import InvalidEvents


@pytest.mark.parametrize("events", [([1, 2], [0, 1], [10, 11]), ([], [], [])],
                         ids=["events", "no-events"])
def test_append_refuses_a_negative_user_even_with_no_events(store, events):
    """An empty append returned before the user id was looked at: `append(-5, [])` passed
    silently, where `append(-5, [1])` was refused."""
    with pytest.raises(InvalidEvents, match=r"user_id: must be in \[0, 2\^63\), got -5"):
        store.append(-5, *events)
    assert store.num_users() == 0


def test_an_empty_append_is_a_no_op_like_append_many(store):
    """As `append_many`/`append_batch` with no events: nothing written, no error."""
    store.append(5, [], [], [])
    assert store.append_many([], [], [], []) == 0
    assert store.num_users() == 0 and len(store.read(5)) == 0


@pytest.mark.parametrize("call", [
    lambda s: s.read_many(5),
    lambda s: s.delete(5),
    lambda s: s.read_many(np.asarray(5)),
    lambda s: s.delete(np.asarray(5)),
    lambda s: s.read_many_before(np.asarray(5), np.asarray(100)),
], ids=["read_many-int", "delete-int", "read_many-0d", "delete-0d", "read_many_before-0d"])
def test_a_single_id_for_many_users_is_a_typed_error(store, call):
    """A 0-d array is iterable by type: it raised a bare 'iteration over a 0-d array' (or
    'len() of unsized object') TypeError."""
    with pytest.raises(InvalidEvents, match=r"user_ids: expected a sequence of user ids, "
                                            r"got (array\()?5"):
        call(store)


def test_read_many_takes_any_iterable_of_users(store):
    """Redis's read_many called len() on it: a generator was a bare TypeError (LMDB's and
    both delete()s took it)."""
    store.append(3, [7], [1], [100])
    assert [len(e) for e in store.read_many(u for u in (3, 4))] == [1, 0]
    assert store.read_many(iter([])) == []
