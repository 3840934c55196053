"""Unified tables: layout arithmetic, equivalence with HashedEmbedding, independent learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from arm_jax.embeddings.unified import FieldEmbedding, LayoutError, TableLayout
from arm_jax.model.embeddings import HashedEmbedding
from arm_jax.model.preprocess import hash_ids


def test_layout_groups_share_a_slice_and_pad():
    lay = TableLayout.build([10, 20, 30, 40], groups=[[1, 3]], pad_to=8)
    assert lay.offsets == (0, 10, 70, 10) and lay.sizes == (10, 60, 30, 60)
    assert lay.used_rows == 100 and lay.total_rows == 104
    with pytest.raises(LayoutError, match="more than one group"):
        TableLayout.build([1, 2, 3], groups=[[0, 1], [1, 2]])
    with pytest.raises(LayoutError, match="out of range"):
        TableLayout.build([1, 2], groups=[[0, 5]])


def test_uniform_layout_reproduces_hashed_embedding_exactly():
    old = HashedEmbedding(3, 97, 8, salt_base=1 << 10, rngs=nnx.Rngs(0))
    new = FieldEmbedding(TableLayout.uniform(3, 97), 8, salt_base=1 << 10, rngs=nnx.Rngs(1))
    new.table[...] = old.table[...]
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 10**6, (5, 7, 3)), jnp.int32)
    assert np.array_equal(np.asarray(old(ids)), np.asarray(new(ids)))


def _fit(emb: FieldEmbedding, ids: jax.Array, target: jax.Array, steps: int = 300) -> float:
    """Regress the first coordinate of each field's vector onto a per-(field, id) target."""
    graphdef, params = nnx.split(emb)
    tx = optax.adam(0.05)
    opt = tx.init(params)

    @jax.jit
    def step(p, o):
        loss, g = jax.value_and_grad(
            lambda q: jnp.mean((nnx.merge(graphdef, q)(ids)[..., 0] - target) ** 2))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    for _ in range(steps):
        params, opt, loss = step(params, opt)
    return float(loss)


def test_two_features_in_one_table_learn_independently():
    """Both fields see the same raw ids with opposite targets. With per-field salts (the
    unified table) both are learned; with one salt for both (systematic collisions) the
    shared rows must compromise and the loss stays near the target variance."""
    r = np.random.default_rng(0)
    raw = r.integers(0, 40, size=(512,))
    ids = jnp.asarray(np.stack([raw, raw], -1), jnp.int32)       # [n, 2 fields]
    val = r.normal(size=40)
    target = jnp.asarray(np.stack([val[raw], -val[raw]], -1), jnp.float32)
    layout = TableLayout.build([2048, 2048], groups=[[0, 1]])
    salted = FieldEmbedding(layout, 4, rngs=nnx.Rngs(0))
    loss_salted = _fit(salted, ids, target)

    class OneSalt(FieldEmbedding):
        def rows(self, ids_xf):
            return hash_ids(ids_xf, 0, self.layout.sizes[0]) + self.layout.offsets[0]

    loss_shared = _fit(OneSalt(layout, 4, rngs=nnx.Rngs(0)), ids, target)
    rows = np.asarray(salted.rows(ids))
    assert (rows[:, 0] != rows[:, 1]).all()        # same raw id, different rows
    assert loss_salted < 1e-3
    assert loss_shared > 0.3                       # ~ var(val): the two targets cancel


@pytest.mark.parametrize("pad_to", [0, -8])
def test_a_pad_to_below_one_is_a_layout_error(pad_to):
    """0 was a ZeroDivisionError; -8 built a table one row smaller than the rows it
    addresses, so the last field's lookups fell outside it."""
    with pytest.raises(LayoutError, match=f"pad_to={pad_to}: must be >= 1"):
        TableLayout.build([3, 5], pad_to=pad_to)


@pytest.mark.parametrize("rows,pad_to,total", [([2**30] * 3, 1, 3 * 2**30),
                                               ([5, 7], 2**40, 2**40)])
def test_tables_int32_row_ids_cannot_address_are_a_layout_error(rows, pad_to, total):
    """These built, and the first lookup failed later with a raw OverflowError."""
    with pytest.raises(LayoutError, match=rf"total_rows={total} .*exceeds 2\*\*31 - 1"):
        TableLayout.build(rows, pad_to=pad_to)
    assert TableLayout.build([2**31 - 1]).total_rows == 2**31 - 1      # the limit itself


def test_field_embedding_refuses_ids_of_the_wrong_field_count_unless_fields_select():
    """[b, 1] ids on a 3-field layout broadcast to [b, 3, d] silently."""
    old = HashedEmbedding(3, 97, 4, rngs=nnx.Rngs(0))
    emb = FieldEmbedding(TableLayout.uniform(3, 97), 4, rngs=nnx.Rngs(1))
    emb.table[...] = old.table[...]
    one = jnp.asarray([[11], [12]], jnp.int32)
    with pytest.raises(LayoutError, match=r"ids of shape \(2, 1\): last dim must be 3"):
        emb(one)
    with pytest.raises(LayoutError, match=r"last dim must be 2 .*fields=\[0, 2\]"):
        emb(one, (0, 2))
    with pytest.raises(LayoutError, match=r"\[3\] out of range 0..2"):
        emb(one, (3,))
    # `fields` selects fields as HashedEmbedding's does (the Ranker's history-side lookups)
    two = jnp.asarray([[11, 5], [12, 6]], jnp.int32)
    assert emb(two, (2, 0)).shape == (2, 2, 4)
    assert np.array_equal(np.asarray(emb(two, (2, 0))), np.asarray(old(two, (2, 0))))
    full = jnp.asarray([[5, 0, 11], [6, 0, 12]], jnp.int32)
    assert np.array_equal(np.asarray(emb(one, (2,)))[:, 0], np.asarray(emb(full))[:, 2])


def test_from_plan_reads_the_embeddings_plan_yaml_section_as_written(tmp_path):
    """Its docstring pointed at the `embeddings` section, whose features are dicts with
    'rows' (int() of them was a TypeError); plain ints still work."""
    import yaml

    from arm_jax.embeddings.sizing import plan_sizes, stats_from_columns, write_plan_yaml

    r = np.random.default_rng(0)
    cols = {n: r.integers(0, k, 2000) for n, k in (("a", 50), ("b", 300), ("c", 20))}
    plan = plan_sizes(stats_from_columns(cols), 20_000, dim=8)
    write_plan_yaml(plan, str(tmp_path / "plan.yaml"), [["a", "c"]])
    doc = yaml.safe_load((tmp_path / "plan.yaml").read_text())["embeddings"]
    lay = TableLayout.from_plan(doc["features"], ["a", "b", "c"], doc["groups"], pad_to=8)
    assert lay == TableLayout.from_plan(plan.rows(), ["a", "b", "c"], [["a", "c"]], pad_to=8)
    assert lay.offsets[0] == lay.offsets[2] and lay.sizes[1] == plan.rows()["b"]
    with pytest.raises(LayoutError, match="planned feature 'a': entry .* has no 'rows'"):
        TableLayout.from_plan({"a": {"head": 3}}, ["a"])


@pytest.mark.parametrize("rows, pad_to, message", [
    ([10.5, 3], 1, r"field_rows=\[10.5, 3\]: need >= 1 field, each an integer >= 1 row; "
                   r"field 0 has 10.5"),
    ([4, 2.0], 1, r"field_rows=\[4, 2.0\]: .*each an integer >= 1 row; field 1 has 2.0"),
    ([4, 2], 2.5, r"pad_to=2.5: must be >= 1, an integer"),
])
def test_float_rows_and_pad_to_are_a_layout_error(rows, pad_to, message):
    """Float rows built a layout of float offsets and a float total_rows."""
    with pytest.raises(LayoutError, match="^" + message):
        TableLayout.build(rows, pad_to=pad_to)
    layout = TableLayout.build([np.int64(4), np.int32(2)], pad_to=np.int64(4))   # numpy ints
    assert (layout.sizes, layout.total_rows) == ((4, 2), 8)
