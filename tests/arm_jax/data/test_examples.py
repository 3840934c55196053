"""`Examples` checks that its arrays agree in shape when it is built."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.data.examples import Examples, labels_problem


def _fields(r=3, n=2, t=2):
    return dict(user_id=np.arange(r), ts=np.full(r, 100), req_sparse=np.ones((r, 3), np.int32),
                req_dense=np.zeros((r, 4), np.float32), cand_sparse=np.ones((r, n, 3), np.int32),
                cand_dense=np.zeros((r, n, 2), np.float32), cand_mask=np.ones((r, n), bool),
                labels=np.zeros((r, n, t), np.float32), true_prob=np.zeros((r, n, t), np.float32))


@pytest.mark.parametrize("name,value,words", [
    ("user_id", np.arange(2), r"ts: expected 1 axes, user_id's 2 requests first, got "
                              r"shape \(3,\)"),
    ("ts", np.full(2, 100), r"ts: expected 1 axes, user_id's 3 requests first"),
    ("user_id", np.zeros((3, 1), int), r"user_id: expected shape \(R,\), got \(3, 1\)"),
    ("req_dense", np.zeros((4, 4)), r"req_dense: .* user_id's 3 requests first, got shape \(4, 4\)"),
    ("cand_sparse", np.ones((3, 3, 3), int), r"cand_sparse: expected cand_mask's 2 candidate"),
    ("labels", np.zeros((3, 2)), r"labels: expected 3 axes"),
    ("labels", np.zeros((3, 2, 1)), r"labels: expected one per task of tasks=\['click', "
                                    r"'conversion'\], got shape \(3, 2, 1\)"),
    ("true_prob", np.zeros((3, 2, 3)), r"true_prob: expected the shape of labels"),
], ids=["short_user_id", "short_ts", "user_id_2d", "long_req_dense", "cand_slots",
        "labels_rank", "labels_tasks", "true_prob"])
def test_examples_whose_arrays_disagree_are_refused_naming_the_field(name, value, words):
    """Examples built in Python were never checked: user_id for 2 requests and the rest
    for 3 made a join drop the third silently; a short ts was a bare IndexError in a join
    worker; a label count that is not the tasks' reached training."""
    with pytest.raises(ValueError, match=words):
        Examples(**{**_fields(), name: value})
    ex = Examples(**_fields(t=1), tasks=("like",))
    assert len(ex) == 3 and len(ex.take(np.array([2, 0]))) == 2 and len(ex.take(slice(0, 0))) == 0


@pytest.mark.parametrize("labels, words", [
    (np.array([[[0.0, 1.0]], [[np.nan, 0.0]]]), "finite"),
    (np.array([[[0.0, np.inf]]]), "finite"),
    (np.array([[[-0.5, 1.0]]]), "[0, 1], got -0.5..1.0"),
    (np.array([[[0.0, 4.0]]]), "[0, 1], got 0.0..4.0"),
])
def test_labels_problem_names_labels_and_the_range(labels, words):
    problem = labels_problem(labels)
    assert problem is not None and problem.startswith("labels: ") and words in problem


@pytest.mark.parametrize("labels", [np.zeros((0, 3, 2)), np.array([[[0.0, 1.0]], [[0.5, 1.0]]])])
def test_labels_problem_passes_labels_that_train(labels):
    assert labels_problem(labels) is None
