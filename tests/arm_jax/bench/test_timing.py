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


def test_interleaved_rounds_time_every_thunk_in_turn_and_spread_a_capped_one():
    from arm_jax.bench.timing import interleaved_median_ms

    calls = []
    thunks = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "slow")}
    ms = interleaved_median_ms(thunks, 4, repeats_of={"slow": 2})
    # every round times a and b; the capped thunk in the middle of each half of the rounds
    assert calls == ["a", "b", "a", "b", "slow", "a", "b", "a", "b", "slow"]
    assert set(ms) == {"a", "b", "slow"} and all(v >= 0 for v in ms.values())
    calls.clear()
    interleaved_median_ms(thunks, 3, repeats_of={"slow": 1, "b": 9})   # capped at repeats
    assert calls.count("slow") == 1 and calls.count("b") == 3 and calls.index("slow") == 4


def test_a_settled_thunk_is_timed_on_its_own_untimed_call_not_the_one_before():
    """settle_of: after another variant a light one may run cold; the untimed call takes
    that cost, the timed one follows it."""
    import time

    from arm_jax.bench.timing import interleaved_median_ms

    calls = []

    def cold_then_warm():           # every first call after another thunk is slow
        slow = not calls or calls[-1] != "light"
        calls.append("light")
        if slow:
            time.sleep(0.05)

    thunks = {"heavy": lambda: calls.append("heavy"), "light": cold_then_warm}
    ms = interleaved_median_ms(thunks, 3, settle_of={"light": 1})
    assert calls == ["heavy", "light", "light"] * 3
    assert ms["light"] < 25.0, ms
    calls.clear()
    assert interleaved_median_ms(thunks, 3)["light"] >= 50.0    # unsettled: the cold call
