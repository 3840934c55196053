"""bench coldstart's table: the load breakdown summarises every run, as load_s does."""

from __future__ import annotations

from arm_jax.bench.coldstart import format_table, load_breakdown


def _run(imports_s: float, load_s: float, first_score_s: float, compiles: int) -> dict:
    return {"imports_s": imports_s, "load_s": load_s, "first_score_s": first_score_s,
            "compiles": compiles, "total_s": imports_s + load_s + first_score_s}


def test_the_breakdown_is_the_median_of_the_runs_not_the_first():
    runs = [_run(9.0, 5.0, 3.0, 0), _run(1.0, 2.0, 0.5, 0), _run(1.2, 2.2, 0.7, 1)]
    assert load_breakdown(runs) == {"imports_s": 1.2, "load_s": 2.2, "first_score_s": 0.7,
                                    "compiles": 1}
    result = {"tiers": [{"tier": "small", "buckets": [[1, 16]], "load_s": 4.1,
                         "compile_s": 41.0, "ratio": 10.0, "load_runs": runs}],
              "target": {"met": None}}
    row = format_table(result).splitlines()[1]
    assert "1.20/2.20/0.70" in row and row.split()[-1] == "1", row
