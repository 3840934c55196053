"""Labelled requests as numpy arrays: what a training or evaluation set is, whatever made
it (the synthetic world, an examples file, MovieLens). Its arrays are checked to agree in
shape when it is built; values are checked where they are used."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Examples:
    """Labelled requests (numpy). R requests, N candidate slots, T tasks:

    user_id int64 [R], ts int64 [R], req_sparse int32 [R, f_r], req_dense float32 [R, e_r],
    cand_sparse int32 [R, N, f_c], cand_dense float32 [R, N, e_c], cand_mask bool [R, N],
    labels float32 [R, N, T], true_prob float32 [R, N, T] (padded slots: zeros).
    """

    user_id: np.ndarray
    ts: np.ndarray
    req_sparse: np.ndarray
    req_dense: np.ndarray
    cand_sparse: np.ndarray
    cand_dense: np.ndarray
    cand_mask: np.ndarray
    labels: np.ndarray
    true_prob: np.ndarray
    tasks: tuple[str, ...] = ("click", "conversion")

    def __post_init__(self) -> None:
        """ValueError naming the field and the shapes unless the arrays agree: R requests
        on every first axis, N candidate slots, T = len(tasks) labels. Shapes only (it runs
        on every `take`): a request missing from one array was silently dropped by a join,
        or a bare IndexError in its worker. Values are checked where they are used
        (`load_examples`, `save_examples`, the training join)."""
        shape = {f.name: np.shape(getattr(self, f.name)) for f in fields(self)
                 if f.name != "tasks"}
        if len(shape["user_id"]) != 1:
            raise ValueError(f"user_id: expected shape (R,), got {shape['user_id']}")
        r = shape["user_id"][0]
        ranks = {"ts": 1, "req_sparse": 2, "req_dense": 2, "cand_sparse": 3, "cand_dense": 3,
                 "cand_mask": 2, "labels": 3, "true_prob": 3}
        for name, rank in ranks.items():
            if len(shape[name]) != rank or shape[name][0] != r:
                raise ValueError(f"{name}: expected {rank} axes, user_id's {r} requests "
                                 f"first, got shape {shape[name]}")
        n = shape["cand_mask"][1]
        for name in ("cand_sparse", "cand_dense", "labels", "true_prob"):
            if shape[name][1] != n:
                raise ValueError(f"{name}: expected cand_mask's {n} candidate slots, got "
                                 f"shape {shape[name]}")
        if shape["labels"][2] != len(self.tasks):
            raise ValueError(f"labels: expected one per task of tasks={list(self.tasks)}, "
                             f"got shape {shape['labels']}")
        if shape["true_prob"] != shape["labels"]:
            raise ValueError(f"true_prob: expected the shape of labels {shape['labels']}, "
                             f"got {shape['true_prob']}")

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def take(self, idx: np.ndarray) -> "Examples":
        """The requests at `idx` (any numpy index along the request axis)."""
        return Examples(**{f.name: getattr(self, f.name)[idx] for f in fields(self)
                           if f.name != "tasks"}, tasks=self.tasks)


def labels_problem(labels: np.ndarray) -> str | None:
    """Why `labels` cannot be trained on (a one-line message naming them), or None: each
    must be finite and in [0, 1] (a logit or a rating scale read as a label trains
    silently on nonsense). One reduction pass; callers raise their own error type."""
    labels = np.asarray(labels)
    if not labels.size:
        return None
    lo, hi = float(labels.min()), float(labels.max())   # NaN anywhere: both NaN
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "labels: must be finite, got NaN or infinity"
    if lo < 0 or hi > 1:
        return f"labels: must be in [0, 1], got {lo}..{hi}"
    return None


__all__ = ["Examples", "labels_problem"]
