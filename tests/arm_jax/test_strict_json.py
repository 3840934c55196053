"""Strict JSON: every non-finite float becomes null, nested anywhere, numpy or Python."""

from __future__ import annotations

import json

import numpy as np

from arm_jax.strict_json import dumps, finite_or_null, fixed


def _refuse(constant: str) -> None:
    raise ValueError(f"non-strict JSON constant {constant}")


def test_non_finite_floats_become_null_at_any_depth():
    x = {"auc": float("nan"), "t": np.float32(np.inf), "ok": np.float64(0.5),
         "curve": [(1, -np.inf), (2, 0.7)], "n": 3, "name": "large", "flag": True}
    assert finite_or_null(x) == {"auc": None, "t": None, "ok": 0.5,
                                 "curve": [[1, None], [2, 0.7]], "n": 3, "name": "large",
                                 "flag": True}
    text = dumps(x, indent=1)
    assert json.loads(text, parse_constant=_refuse)["curve"] == [[1, None], [2, 0.7]]


def test_tables_print_a_dash_where_the_json_has_null():
    assert [fixed(x) for x in (None, float("nan"), np.float32(np.inf))] == ["-", "-", "-"]
    assert fixed(np.float64(0.79623), 3) == "0.796" and fixed(12.25, 1) == "12.2"
