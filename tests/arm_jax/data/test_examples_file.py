"""Examples files: a round trip keeps every array; a bad file is refused naming file and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arm_jax.config import load_tier
from arm_jax.data.examples_file import (ExamplesFileError, holdout_latest, load_examples,
                                        save_examples)
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld


@pytest.fixture(scope="module")
def setup(tiny_overrides):
    tier = load_tier("small", tiny_overrides)
    world = SyntheticWorld.generate(SyntheticSpec(num_users=30, seed=3), tier.features)
    return tier.features, world.sample_examples(24, 5, seed=4)


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_round_trip_keeps_every_array(setup, tmp_path):
    features, ex = setup
    back = load_examples(save_examples(ex, tmp_path / "sub" / "ex.npz"), features)
    for name in ("user_id", "ts", "req_sparse", "req_dense", "cand_sparse", "cand_dense",
                 "cand_mask", "labels", "true_prob"):
        a, b = getattr(ex, name), getattr(back, name)
        assert np.array_equal(a, b), name
    assert back.tasks == ex.tasks


def test_a_file_without_truth_loads_with_nan_true_prob(setup, tmp_path):
    features, ex = setup
    path = save_examples(ex, tmp_path / "ex.npz")
    arrays = _arrays(path)
    del arrays["true_prob"], arrays["tasks"], arrays["format_version"]
    np.savez(path, **arrays)                 # what a user's own export holds
    back = load_examples(path, features)
    assert np.isnan(back.true_prob).all() and np.array_equal(back.labels, ex.labels)


def _edit(key, fn):
    def apply(a):
        a[key] = fn(a[key])
    return apply


def _drop(key):
    def apply(a):
        del a[key]
    return apply


BAD = [
    (_drop("labels"), "missing arrays ['labels']"),
    (_edit("req_dense", lambda x: x[:, :-1]), "req_dense"),
    (_edit("cand_sparse", lambda x: x[..., :-1]), "cand_sparse"),
    (_edit("user_id", lambda x: x - 100), "user_id: must be >= 0"),
    (_edit("ts", lambda x: x.astype(np.float64)), "ts: expected integers"),
    (_edit("ts", lambda x: x[:-1]), "ts: expected shape"),
    (_edit("ts", lambda x: x * 1000), "unix seconds expected (milliseconds?)"),
    (_edit("labels", lambda x: x * 3), "labels: must be in [0, 1]"),
    (_edit("labels", lambda x: x[..., :1]), "labels: expected shape"),
    (_edit("cand_dense", lambda x: np.where(x > 0, np.inf, x)),
     "cand_dense: values must be finite"),
    (_edit("cand_mask", lambda x: x.astype(np.int32) * 2), "cand_mask"),
    (_edit("cand_mask", np.zeros_like), "cand_mask: no request has a real candidate"),
    (_edit("tasks", lambda x: np.asarray(["like"])), "tasks:"),
    (_edit("format_version", lambda x: np.int64(9)), "format_version=9"),
    (_edit("format_version", lambda x: np.array([1, 1])), "format_version: expected one integer"),
    (_edit("format_version", lambda x: np.array("x")), "format_version: expected one integer"),
    (_edit("tasks", lambda x: np.asarray(x[0])), "tasks: expected a list of task names"),
    (_edit("true_prob", lambda x: np.where(x == x.max(), 1.5, x)), "true_prob: must be in [0, 1]"),
    (_edit("true_prob", lambda x: np.where(x == x.max(), np.nan, x)),
     "true_prob: must be in [0, 1]"),
    (lambda a: a.update({k: v[:0] for k, v in a.items() if v.ndim and k != "tasks"}),
     "no requests"),
]


@pytest.mark.parametrize("spoil,needle", BAD, ids=[n for _, n in BAD])
def test_a_bad_file_names_the_file_and_the_field(setup, tmp_path, spoil, needle):
    features, ex = setup
    path = save_examples(ex, tmp_path / "ex.npz")
    arrays = _arrays(path)
    spoil(arrays)
    np.savez(path, **arrays)
    with pytest.raises(ExamplesFileError) as e:
        load_examples(path, features)
    assert str(e.value).startswith(str(path)) and needle in str(e.value)


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
@pytest.mark.parametrize("field,spoil,needle", [
    ("labels", lambda x: np.where(x > 0, np.nan, x), "labels: must be finite"),
    ("labels", lambda x: x * 3, "labels: must be in [0, 1]"),
    ("ts", lambda x: x * 1000, "unix seconds expected (milliseconds?)"),
    ("true_prob", lambda x: np.where(x == x.max(), 1.5, x), "true_prob: must be in [0, 1]"),
    ("cand_dense", lambda x: np.where(x > 0, np.inf, x), "cand_dense: values must be finite"),
    ("cand_mask", np.zeros_like, "cand_mask: no request has a real candidate"),
], ids=["nan_labels", "labels_range", "ts_ms", "true_prob", "cand_dense", "cand_mask"])
def test_save_refuses_what_load_would_refuse_and_keeps_the_earlier_file(
        setup, tmp_path, suffix, field, spoil, needle):
    """save_examples wrote files its own load_examples refuses (NaN labels, a millisecond
    ts), over an earlier good file: the checks ran on read only."""
    import dataclasses

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    features, ex = setup
    path = save_examples(ex, tmp_path / f"ex{suffix}")
    before = path.read_bytes()
    bad = dataclasses.replace(ex, **{field: spoil(getattr(ex, field))})
    with pytest.raises(ExamplesFileError) as e:
        save_examples(bad, path)
    assert str(e.value).startswith(str(path)) and needle in str(e.value)
    with pytest.raises(ExamplesFileError):
        save_examples(bad, tmp_path / "new" / f"ex{suffix}")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert len(load_examples(path, features)) == len(ex)


def test_too_many_candidates_for_the_config(setup, tiny_overrides, tmp_path):
    _, ex = setup
    path = save_examples(ex, tmp_path / "ex.npz")       # 5 candidate slots
    narrow = load_tier("small", [*tiny_overrides, "features.max_candidates=4"]).features
    with pytest.raises(ExamplesFileError, match="5 candidates exceed the limit 4"):
        load_examples(path, narrow)


@pytest.mark.parametrize("content", [b"", b"not a zip"])
def test_not_an_npz(setup, tmp_path, content):
    features, _ = setup
    path = tmp_path / "ex.npz"
    path.write_bytes(content)
    with pytest.raises(ExamplesFileError, match="not a readable .npz"):
        load_examples(path, features)
    with pytest.raises(ExamplesFileError, match="examples file .*: no such file"):
        load_examples(tmp_path / "missing.npz", features)


def test_holdout_keeps_the_latest_requests_for_evaluation(setup):
    _, ex = setup
    train, test = holdout_latest(ex, 0.25)
    assert len(test) == 6 and len(train) == 18
    assert train.ts.max() <= test.ts.min()
    assert sorted(np.concatenate([train.ts, test.ts]).tolist()) == sorted(ex.ts.tolist())
    with pytest.raises(ExamplesFileError, match="too few"):
        holdout_latest(ex.take(np.arange(3)), 0.1)


def test_a_directory_is_named_as_one(setup, tmp_path):
    """Was "no such examples file" for a path that exists."""
    features, _ = setup
    (tmp_path / "ex.npz").mkdir()
    with pytest.raises(ExamplesFileError, match=f"{tmp_path / 'ex.npz'}: is a directory"):
        load_examples(tmp_path / "ex.npz", features)


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_an_interrupted_save_leaves_the_earlier_file_whole(setup, tmp_path, monkeypatch, suffix):
    """An examples file is written beside its path and moved there whole: a save cut off
    part way (Ctrl-C, a full disk) left a truncated file over the earlier one."""
    import arm_jax.data.examples_file as examples_file

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    features, ex = setup
    path = save_examples(ex, tmp_path / f"ex{suffix}")
    before = path.read_bytes()

    def cut_off(target, *args, **kwargs):
        (target if isinstance(target, Path) else Path(target.name)).write_bytes(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(examples_file, "write_examples_parquet",
                        lambda arrays, tasks, version, target: cut_off(target))
    monkeypatch.setattr(np, "savez", cut_off)
    with pytest.raises(KeyboardInterrupt):
        save_examples(ex, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_examples(path, features).user_id.shape == ex.user_id.shape
