"""Parquet examples files: the same arrays as .npz, ragged candidate lists padded and masked,
structural problems named by column and row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys

import numpy as np
import pytest

from arm_jax.config import load_tier
from arm_jax.data.examples_file import ExamplesFileError, load_examples, save_examples
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def setup(tiny_overrides):
    tier = load_tier("small", tiny_overrides)
    world = SyntheticWorld.generate(SyntheticSpec(num_users=30, seed=3), tier.features)
    ex = world.sample_examples(23, 5, seed=4)
    assert not ex.cand_mask.all()       # masked slots exist, so the round trip covers them
    return tier.features, ex


def test_parquet_round_trip_equals_npz_bit_for_bit(setup, tmp_path):
    features, ex = setup
    a = load_examples(save_examples(ex, tmp_path / "ex.parquet"), features)
    b = load_examples(save_examples(ex, tmp_path / "ex.npz"), features)
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), field.name
        else:
            assert x == y, field.name


def _rows(features, counts, *, rng=None):
    """A user's own export: one dict per request, a varying number of candidates."""
    rng = rng or np.random.default_rng(0)
    f = features
    return [{"user_id": i, "ts": 1_700_000_000 + 60 * i,
             "req_sparse": rng.integers(0, 50, f.req_sparse_fields).tolist(),
             "req_dense": rng.normal(size=f.req_dense_features).tolist(),
             "cand_sparse": rng.integers(0, 50, (k, f.cand_sparse_fields)).tolist(),
             "cand_dense": rng.normal(size=(k, f.cand_dense_features)).tolist(),
             "labels": rng.integers(0, 2, (k, len(f.tasks))).astype(float).tolist()}
            for i, k in enumerate(counts)]


def test_ragged_candidate_lists_are_padded_and_masked(setup, tmp_path):
    features, _ = setup
    rows = _rows(features, [1, 4, 2])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "own.parquet")
    ex = load_examples(tmp_path / "own.parquet", features)
    assert ex.cand_mask.tolist() == [[True, False, False, False], [True] * 4,
                                     [True, True, False, False]]
    assert ex.cand_sparse.dtype == np.int32 and ex.labels.dtype == np.float32
    for r, row in enumerate(rows):
        k = len(row["cand_sparse"])
        assert ex.cand_sparse[r, :k].tolist() == row["cand_sparse"]
        np.testing.assert_allclose(ex.cand_dense[r, :k], row["cand_dense"], rtol=1e-6)
        assert not ex.cand_sparse[r, k:].any() and not ex.labels[r, k:].any()
    assert np.isnan(ex.true_prob).all() and ex.tasks == tuple(features.tasks)


def test_a_timestamp_column_is_read_as_unix_seconds(setup, tmp_path):
    features, _ = setup
    rows = _rows(features, [2, 1])
    table = pa.Table.from_pylist(rows)
    ms = pa.array([r["ts"] * 1000 + 999 for r in rows], pa.timestamp("ms", tz="UTC"))
    table = table.set_column(table.column_names.index("ts"), "ts", ms)
    pq.write_table(table, tmp_path / "own.parquet")
    ex = load_examples(tmp_path / "own.parquet", features)
    assert ex.ts.tolist() == [r["ts"] for r in rows]           # sub-second part dropped
    dates = pa.array([dt.date(2024, 1, 1)] * 2)
    pq.write_table(table.set_column(table.column_names.index("ts"), "ts", dates),
                   tmp_path / "dates.parquet")
    with pytest.raises(ExamplesFileError, match="ts: expected unix seconds or a timestamp"):
        load_examples(tmp_path / "dates.parquet", features)


def test_an_explicit_mask_hides_listed_candidates(setup, tmp_path):
    features, _ = setup
    rows = _rows(features, [3, 2])
    rows[0]["cand_mask"], rows[1]["cand_mask"] = [True, False, True], [False, True]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "own.parquet")
    ex = load_examples(tmp_path / "own.parquet", features)
    assert ex.cand_mask.tolist() == [[True, False, True], [False, True, False]]


def _spoil_width(rows):
    rows[1]["cand_sparse"][2] = rows[1]["cand_sparse"][2][:-1]


def _spoil_count(rows):
    rows[2]["labels"] = rows[2]["labels"][:1]


def _spoil_mask(rows):
    for r in rows:
        r["cand_mask"] = [True] * len(r["cand_sparse"])
    rows[1]["cand_mask"] = [True]


def _spoil_null(rows):
    rows[2]["cand_dense"] = None


def _spoil_labels(rows):
    rows[0]["labels"][0][0] = 2.0


BAD = [
    (_spoil_width, "cand_sparse: every list must hold"),
    (_spoil_count, "labels: request 2 lists 1 candidates, cand_sparse lists 2"),
    (_spoil_mask, "cand_mask: request 1 has 1 entries for 3 candidates"),
    (_spoil_null, "cand_dense: 1 null lists (none allowed; the first at index 2)"),
    (_spoil_labels, "labels: must be in [0, 1]"),    # the value checks .npz files get
    (lambda rows: [r.pop("ts") for r in rows], "missing columns ['ts']"),
]


@pytest.mark.parametrize("spoil,needle", BAD, ids=[n.split(":")[0] for _, n in BAD])
def test_a_bad_parquet_file_names_the_file_and_the_column(setup, tmp_path, spoil, needle):
    features, _ = setup
    rows = _rows(features, [1, 3, 2])
    spoil(rows)
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(ExamplesFileError) as e:
        load_examples(path, features)
    assert str(e.value).startswith(str(path)) and needle in str(e.value)
    if spoil is _spoil_width:
        short = features.cand_sparse_fields - 1
        assert f"(as the first does); row 1, candidate 2 holds {short}" in str(e.value)


def test_other_tasks_in_the_metadata_are_refused(setup, tiny_overrides, tmp_path):
    _, ex = setup
    path = save_examples(ex, tmp_path / "ex.parquet")
    other = load_tier("small", [*tiny_overrides, "features.tasks=[like]"]).features
    with pytest.raises(ExamplesFileError, match="tasks: the file's"):
        load_examples(path, other)


def test_not_parquet_and_unknown_suffix(setup, tmp_path):
    features, ex = setup
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ExamplesFileError, match="junk.parquet: "):
        load_examples(tmp_path / "junk.parquet", features)
    (tmp_path / "ex.csv").write_text("user_id\n1\n")
    with pytest.raises(ExamplesFileError, match="expected a .npz or .parquet"):
        load_examples(tmp_path / "ex.csv", features)
    with pytest.raises(ExamplesFileError, match="must end in .npz or .parquet"):
        save_examples(ex, tmp_path / "ex.feather")


def test_without_pyarrow_the_error_says_what_to_install(setup, tmp_path, monkeypatch):
    features, ex = setup
    path = save_examples(ex, tmp_path / "ex.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)          # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ExamplesFileError, match=r"need pyarrow: pip install 'arm-jax\[parquet\]'"):
        load_examples(path, features)


def test_columns_the_file_format_does_not_name_are_never_read(setup, tmp_path, monkeypatch):
    features, _ = setup
    table = pa.Table.from_pylist(_rows(features, [2, 1]))
    pq.write_table(table.append_column("payload", pa.array(["x" * 1000] * 2)),
                   tmp_path / "wide.parquet")
    read, real = [], pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: read.append(real(*a, **k)) or read[-1])
    assert len(load_examples(tmp_path / "wide.parquet", features)) == 2
    assert [sorted(t.column_names) for t in read] == [sorted(table.column_names)]
    pq.write_table(pa.table({"userid": [1], "ts": [5]}), tmp_path / "typo.parquet")
    with pytest.raises(ExamplesFileError, match=r"missing columns \['user_id', .*\(has \['ts', "
                                                r"'userid'\]\)"):
        load_examples(tmp_path / "typo.parquet", features)


def test_too_many_candidates_is_refused_by_row_before_padding(setup, tmp_path):
    """One such row used to pad every request to its length first: a 200k-request file
    with one 2,000-candidate row took 9.7 GB and ended in a MemoryError reported as
    'not a readable .parquet'."""
    features, _ = setup
    limit = features.max_candidates
    pq.write_table(pa.Table.from_pylist(_rows(features, [2, limit + 1, 1])),
                   tmp_path / "many.parquet")
    with pytest.raises(ExamplesFileError, match=rf"cand_sparse: {limit + 1} candidates exceed "
                                                rf"the limit {limit} \(request 1\)"):
        load_examples(tmp_path / "many.parquet", features)


@pytest.mark.parametrize("key,value", [(b"arm_jax.format_version", b"x"),
                                       (b"arm_jax.tasks", b'{"click": 1}'),
                                       (b"arm_jax.tasks", b'[["click"], "x"]'),
                                       (b"arm_jax.tasks", b"[not json")])
def test_bad_schema_metadata_is_named(setup, tmp_path, key, value):
    """A dict of tasks was a bare TypeError; a bad version or nested tasks a numpy message
    that named neither the metadata key nor what was expected."""
    features, ex = setup
    table = pq.read_table(save_examples(ex, tmp_path / "ex.parquet"))
    path = tmp_path / "bad.parquet"
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, key: value}), path)
    with pytest.raises(ExamplesFileError) as e:
        load_examples(path, features)
    assert str(e.value).startswith(f"{path}: schema metadata {key.decode()}: expected")
