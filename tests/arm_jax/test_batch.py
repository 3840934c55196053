import numpy as np
import pytest

from arm_jax.batch import UNKNOWN_SIDE, BatchError, batch_spec, make_batch


def _fields(b=2, c=3, l=4):
    r = np.random.default_rng(0)
    return dict(
        req_sparse=r.integers(1, 100, (b, 2)), req_dense=r.normal(size=(b, 3)),
        hist_item=r.integers(1, 100, (b, l)), hist_action=r.integers(0, 4, (b, l)),
        hist_gap=r.exponential(10.0, (b, l)), hist_len=np.array([l, 1][:b]),
        cand_sparse=r.integers(1, 100, (b, c, 2)), cand_dense=r.normal(size=(b, c, 1)),
    )


def test_valid_batch_has_expected_dtypes_and_default_mask():
    batch = make_batch(**_fields())
    assert batch.req_sparse.dtype == np.int32 and batch.hist_gap.dtype == np.float32
    assert batch.cand_mask.shape == (2, 3) and batch.cand_mask.all()
    assert (batch.num_requests, batch.num_candidates, batch.history_len) == (2, 3, 4)


def test_truncate_history_keeps_most_recent_events():
    side = np.arange(2 * 4 * 3).reshape(2, 4, 3)
    batch = make_batch(**_fields(), hist_side=side)
    short = batch.truncate_history(2)
    np.testing.assert_array_equal(short.hist_item, batch.hist_item[:, :2])
    np.testing.assert_array_equal(short.hist_side, side[:, :2])
    np.testing.assert_array_equal(short.hist_len, [2, 1])


@pytest.mark.parametrize("field, value, message", [
    ("req_sparse", np.full((2, 2), -5), "req_sparse: ids must be >= 0, got -5"),
    ("cand_sparse", np.ones((2, 3, 2), np.float32), "cand_sparse: expected integer ids, got dtype float32"),
    ("req_dense", np.array([[1.0, np.nan, 0.0], [0, 0, 0]]), "req_dense: values must be finite, got nan at [0, 1]"),
    ("cand_dense", np.full((2, 3, 1), np.inf), "cand_dense: values must be finite, got inf at [0, 0, 0]"),
    ("hist_item", np.ones((2, 5), np.int64), "hist_action: expected shape (2, 5), got (2, 4)"),
    ("cand_dense", np.ones((2, 4, 1)), "cand_dense: expected shape (2, 3, *), got (2, 4, 1)"),
    ("hist_len", np.array([9, 0]), "hist_len: must be <= history length 4, got 9"),
    ("hist_gap", -np.ones((2, 4)), "hist_gap: must be >= 0 seconds, got -1.0"),
    ("req_sparse", np.ones((2,), np.int32), "req_sparse: expected rank 2, got shape (2,)"),
    ("req_sparse", np.array([[2**40, 1], [1, 1]]), "req_sparse: ids must be <= 2147483647"),
])
def test_bad_batches_are_rejected_with_the_field_named(field, value, message):
    fields = _fields()
    fields[field] = value
    with pytest.raises(BatchError) as e:
        make_batch(**fields)
    assert str(e.value).startswith(message)


def test_limits_and_action_range():
    with pytest.raises(BatchError, match=r"cand_sparse: 3 candidates exceed the limit 2"):
        make_batch(**_fields(), expected={"candidates": 2})
    with pytest.raises(BatchError, match=r"hist_action: must be < num_action_types=2, got 3"):
        f = _fields()
        f["hist_action"] = np.full((2, 4), 3)
        make_batch(**f, num_action_types=2)
    with pytest.raises(BatchError, match=r"req_dense: expected 5 columns \(req_dense_features\), got 3"):
        make_batch(**_fields(), expected={"req_dense_features": 5})
    with pytest.raises(BatchError, match=r"cand_mask: expected booleans"):
        make_batch(**_fields(), cand_mask=np.full((2, 3), 7))


def test_batch_spec_matches_make_batch():
    batch = make_batch(**_fields())
    spec = batch_spec(batch=2, candidates=3, history=4, req_sparse_fields=2, req_dense_features=3,
                      cand_sparse_fields=2, cand_dense_features=1)
    for name in ("req_sparse", "hist_gap", "cand_dense", "cand_mask"):
        assert getattr(spec, name).shape == getattr(batch, name).shape
        assert getattr(spec, name).dtype == getattr(batch, name).dtype


def test_hist_side_defaults_to_unknown_and_is_checked():
    batch = make_batch(**_fields(), expected={"history_side_fields": 2})
    assert batch.hist_side.shape == (2, 4, 2) and (batch.hist_side == UNKNOWN_SIDE).all()
    with pytest.raises(BatchError, match=r"hist_side: expected 2 columns \(history_side_fields\), "
                                         r"got 3"):
        make_batch(**_fields(), hist_side=np.zeros((2, 4, 3), np.int64), expected={"history_side_fields": 2})
    with pytest.raises(BatchError, match=r"hist_side: expected shape \(2, 4, \*\), got \(2, 5, 2\)"):
        make_batch(**_fields(), hist_side=np.zeros((2, 5, 2), np.int64))
    with pytest.raises(BatchError, match=r"hist_side: ids must be >= 0, got -1"):
        make_batch(**_fields(), hist_side=-np.ones((2, 4, 2), np.int64))


def test_expected_widths_pins_actions_of_valid_events_only():
    from types import SimpleNamespace

    from arm_jax.batch import expected_widths

    f = SimpleNamespace(req_sparse_fields=2, req_dense_features=3, cand_sparse_fields=2,
                        cand_dense_features=1, history_side_fields=(), max_history=8,
                        max_candidates=8, num_action_types=4)
    expected = expected_widths(f)
    assert expected["num_action_types"] == 4
    fields = _fields()                        # hist_len [4, 1]
    fields["hist_action"] = np.zeros((2, 4), np.int64)
    fields["hist_action"][1, 3] = 9           # padded event: never read, accepted
    assert make_batch(**fields, expected=expected).hist_action[1, 3] == 9
    fields["hist_action"][1, 0] = 4           # valid event: out of the action table
    with pytest.raises(BatchError, match=r"hist_action: must be < num_action_types=4, got 4"):
        make_batch(**fields, expected=expected)


def test_an_empty_history_axis_becomes_one_masked_event():
    fields = _fields(l=0)
    fields["hist_len"] = np.zeros(2, np.int64)
    batch = make_batch(**fields, expected={"history_side_fields": 2})
    assert batch.hist_item.shape == (2, 1) and batch.hist_side.shape == (2, 1, 2)
    assert (batch.hist_len == 0).all() and (batch.hist_side == UNKNOWN_SIDE).all()
    fields["hist_len"] = np.array([1, 0])
    with pytest.raises(BatchError, match=r"hist_len: must be <= history length 0, got 1"):
        make_batch(**fields)


def test_zero_candidates_are_refused():
    with pytest.raises(BatchError, match=r"cand_sparse: a request needs at least 1 candidate"):
        make_batch(**_fields(c=0))


def test_ragged_lists_name_the_field_and_the_fix():
    fields = dict(req_sparse=[[1, 2], [3, 4]], req_dense=[[0.0] * 3] * 2,
                  hist_item=[[1, 2, 3], [4]], hist_action=[[0, 1, 0], [1]],
                  hist_gap=[[1.0, 2.0, 3.0], [5.0]], hist_len=[3, 1],
                  cand_sparse=[[[1, 2]]] * 2, cand_dense=[[[0.0]]] * 2)
    with pytest.raises(BatchError, match=r"^hist_item: not a rectangular array.*set hist_len"):
        make_batch(**fields)
    fields.update(hist_item=[[1, 2, 3], [4, 0, 0]], hist_action=[[0, 1, 0], [1, 0, 0]])
    with pytest.raises(BatchError, match=r"^hist_gap: not a rectangular array"):
        make_batch(**fields)
    fields.update(hist_gap=[[1.0, 2.0, 3.0], [5.0, 0.0, 0.0]])
    with pytest.raises(BatchError, match=r"^hist_side: not a rectangular array"):
        make_batch(**fields, hist_side=[[[1]] * 3, [[1]]])
    with pytest.raises(BatchError, match=r"^cand_mask: not a rectangular array"):
        make_batch(**fields, cand_mask=[[True], []])
    assert make_batch(**fields).hist_item.shape == (2, 3)


def test_zero_requests_are_refused():
    """The model has no empty-batch path (attention reshapes by b): refused like 0
    candidates, and like select_bucket refuses it."""
    with pytest.raises(BatchError, match=r"^req_sparse: a batch needs at least 1 request, got 0"):
        make_batch(**_fields(b=0))


def test_unknown_expected_keys_are_refused():
    """A typo ('candidate') used to be ignored, so the limit asked for was never checked."""
    with pytest.raises(BatchError, match=r"^expected: unknown key 'candidate'; the keys are "
                                         r".*\bcandidates\b.*num_action_types"):
        make_batch(**_fields(), expected={"candidates": 8, "candidate": 1})


@pytest.mark.parametrize("max_len", [-1, 2.5, True])
def test_truncate_history_refuses_what_is_no_length(max_len):
    """-1 used to slice [:, :-1] (dropping the OLDEST event) and set hist_len to -1."""
    batch = make_batch(**_fields())
    with pytest.raises(BatchError, match=r"^max_len: must be an integer >= 0, got "):
        batch.truncate_history(max_len)
    assert batch.truncate_history(np.int64(0)).hist_item.shape == (2, 0)


def _features(**kw):
    from types import SimpleNamespace

    return SimpleNamespace(**{**dict(req_sparse_fields=2, req_dense_features=3,
                                     cand_sparse_fields=2, cand_dense_features=1,
                                     history_side_fields=(), max_history=8, max_candidates=8,
                                     num_action_types=4), **kw})


@pytest.mark.parametrize("field, value, message", [
    ("req_sparse", lambda a: a + 0.5, "req_sparse: expected integer ids, got dtype float64"),
    ("hist_len", lambda a: a.astype(np.float32), "hist_len: expected integer ids, got dtype float32"),
    ("cand_sparse", lambda a: a > 0, "cand_sparse: expected integer ids, got dtype bool"),
    ("hist_gap", lambda a: a.astype(np.complex64), "hist_gap: expected real numbers, got dtype complex64"),
    ("cand_dense", lambda a: a[:, :2], r"cand_dense: expected shape (2, 3, *), got (2, 2, 1)"),
    ("hist_action", lambda a: a[:, :3], "hist_action: expected shape (2, 4), got (2, 3)"),
    ("hist_len", lambda a: a[:1], "hist_len: expected shape (2,), got (1,)"),
    ("cand_mask", lambda a: a[:, :2], "cand_mask: expected shape (2, 3), got (2, 2)"),
    ("hist_side", lambda a: a[0], "hist_side: expected rank 3, got shape (4, 0)"),
    ("req_sparse", lambda a: a[:0], "req_sparse: a batch needs at least 1 request, got 0"),
])
def test_check_feature_widths_names_float_ids_and_axes_that_disagree(field, value, message):
    """Static dtypes and shapes only (free under jit): a float id was truncated when hashed,
    and paired arrays of other lengths failed deep in jax, naming no field."""
    from arm_jax.batch import check_feature_widths

    batch = make_batch(**_fields())
    check_feature_widths(batch, _features())
    bad = batch.replace(**{field: value(np.asarray(getattr(batch, field)))})
    with pytest.raises(BatchError) as e:
        check_feature_widths(bad, _features())
    assert str(e.value).startswith(message)
