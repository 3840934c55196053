"""Bench helpers: results are written as strict JSON."""

from __future__ import annotations

import json

import numpy as np

from arm_jax.bench.timing import write_json


def test_write_json_turns_non_finite_numbers_into_null(tmp_path):
    payload = {"auc": float("nan"), "t": np.float32(np.inf), "rows": [1.5, -np.inf, "x"],
               "pair": (np.float64(np.nan), 2), "nested": {"ok": np.float64(0.25), "n": 3}}
    path = write_json(tmp_path / "out" / "r.json", payload)

    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    got = json.loads(path.read_text(), parse_constant=refuse)
    assert got == {"auc": None, "t": None, "rows": [1.5, None, "x"], "pair": [None, 2],
                   "nested": {"ok": 0.25, "n": 3}}
    assert write_json(None, payload) is None
