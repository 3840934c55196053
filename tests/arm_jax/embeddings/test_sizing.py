"""Hash sizing by sparsity: stats, budget, monotonicity, errors, CLI."""

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.embeddings.sizing import (IdStats, SizingError, collision_rate, plan_sizes,
                                       stats_from_columns)


def _zipf_ids(n_ids: int, size: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_ids + 1)
    return r.choice(n_ids, size=size, p=p / p.sum())


def test_stats_count_head_and_tail():
    s = IdStats.from_ids("f", np.array([1, 1, 2, 3, 3, 3, 4]), min_count=2)
    assert (s.lookups, s.distinct, s.head, s.singletons) == (7, 4, 2, 2)


def test_collision_rate_matches_simulation():
    r = np.random.default_rng(0)
    n, m = 500, 2000
    rows = r.integers(0, m, size=(200, n))
    sim = np.mean([(np.bincount(x, minlength=m)[x] > 1).mean() for x in rows])
    assert collision_rate(n, m) == pytest.approx(sim, abs=0.01)
    assert collision_rate(1, 8) == 0.0 and collision_rate(100, 1) == 1.0


def test_plan_respects_budget_and_gives_more_rows_to_larger_features():
    cols = {"small": _zipf_ids(50, 20_000, 0), "mid": _zipf_ids(2_000, 50_000, 1),
            "big": _zipf_ids(40_000, 200_000, 2)}
    stats = stats_from_columns(cols)
    budget = 30_000 * 16
    plan = plan_sizes(stats, budget, dim=16, row_multiple=8)
    rows = plan.rows()
    assert plan.used_params <= budget and plan.used_params > 0.95 * budget
    assert all(r % 8 == 0 for r in rows.values())
    assert rows["small"] < rows["mid"] < rows["big"]
    # more budget never makes a feature's collisions worse
    bigger = plan_sizes(stats, 4 * budget, dim=16)
    for a, b in zip(plan.features, bigger.features):
        assert b.rows >= a.rows and b.collision_rate <= a.collision_rate + 1e-12


def test_budget_below_minimum_is_refused_with_the_numbers():
    stats = [IdStats.from_ids("a", np.arange(10)), IdStats.from_ids("b", np.arange(10))]
    with pytest.raises(SizingError, match=r"budget_params=100 is below the minimum 256"):
        plan_sizes(stats, 100, dim=16, row_multiple=8)


def test_cli_plan_from_npz_writes_overrides(tmp_path, capsys):
    np.savez(tmp_path / "ids.npz", req_0=_zipf_ids(100, 5000, 0), item=_zipf_ids(3000, 20000, 1))
    out = tmp_path / "plan.yaml"
    np.savez(tmp_path / "ids.npz", req_0=_zipf_ids(100, 5000, 0), req_1=_zipf_ids(30, 5000, 2),
             item=_zipf_ids(3000, 20000, 1))
    rc = main(["embeddings", "plan", "--data", str(tmp_path / "ids.npz"),
               "--budget-params", "200000", "--dim", "16", "--group", "req_0,req_1",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "req_0" in text and "item" in text and "collide" in text
    import yaml

    doc = yaml.safe_load(out.read_text())
    assert doc["embeddings"]["used_params"] <= 200000
    assert any(o.startswith("features.item_hash_size=") for o in doc["overrides"])
    # the written plan configures a unified table: req_0 and req_1 share one slice
    from arm_jax.embeddings.unified import TableLayout

    rows = {k: v["rows"] for k, v in doc["embeddings"]["features"].items()}
    lay = TableLayout.from_plan(rows, ["req_0", "req_1", "item"], doc["embeddings"]["groups"])
    assert lay.offsets[0] == lay.offsets[1] and lay.sizes[0] == rows["req_0"] + rows["req_1"]
    assert lay.offsets[2] == lay.sizes[0] and lay.total_rows == lay.sizes[0] + rows["item"]


def test_cli_rejects_float_ids(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", f=np.array([0.5, 1.5]))
    rc = main(["embeddings", "plan", "--data", str(tmp_path / "bad.npz"),
               "--budget-params", "1000"])
    assert rc == 2 and "ids must be ints" in capsys.readouterr().err


def test_cli_refuses_a_feature_in_two_groups_before_writing(tmp_path, capsys):
    """--group req_0,req_1 --group req_1,item wrote a plan that TableLayout.from_plan then
    refused (field in more than one group) when the plan was used, not when it was made."""
    np.savez(tmp_path / "ids.npz", req_0=_zipf_ids(100, 5000, 0), req_1=_zipf_ids(30, 5000, 2),
             item=_zipf_ids(3000, 20000, 1))
    out = tmp_path / "plan.yaml"
    rc = main(["embeddings", "plan", "--data", str(tmp_path / "ids.npz"),
               "--budget-params", "200000", "--dim", "16", "--group", "req_0,req_1",
               "--group", "req_1,item", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "req_1" in err and "at most one --group" in err
    assert not out.exists()


@pytest.mark.parametrize("seed", range(4))
def test_a_plan_never_spends_more_than_its_budget(seed):
    """Tight budgets, many features of every size: the minimum rows per table once pushed
    the plan up to a quarter over the budget."""
    r = np.random.default_rng(seed)
    sizes = [10] * 12 + [int(n) for n in r.integers(2, 3_000, 4)] + [8_000]
    stats = [IdStats.from_ids(f"f{i}", _zipf_ids(n, 20_000, seed * 100 + i))
             for i, n in enumerate(sizes)]
    dim, q = 32, 8
    floor = len(stats) * q * dim
    for budget in (floor, floor + 1, 10_000, 20_000, 100_000, int(r.integers(floor, 10**6))):
        plan = plan_sizes(stats, budget, dim=dim, row_multiple=q)
        assert plan.used_params <= budget, (budget, plan.used_params)
        assert all(f.rows >= q and f.rows % q == 0 for f in plan.features)


@pytest.mark.parametrize("kw, message", [(dict(row_multiple=2.5), "row_multiple=2.5"),
                                         (dict(row_multiple=0), "row_multiple=0"),
                                         (dict(dim=16.0), "dim=16.0")])
def test_a_float_or_zero_row_multiple_or_dim_is_refused(kw, message):
    """row_multiple=2.5 planned float rows (320.0) that no table can have."""
    stats = [IdStats.from_ids("a", np.arange(100) % 40), IdStats.from_ids("b", np.arange(20))]
    with pytest.raises(SizingError, match=f"^{message}: must be an integer >= 1$"):
        plan_sizes(stats, 10_000, **{"dim": 4, **kw})
    plan = plan_sizes(stats, 10_000, dim=np.int64(4), row_multiple=np.int64(8))  # numpy ints
    assert all(r % 8 == 0 for r in plan.rows().values())
