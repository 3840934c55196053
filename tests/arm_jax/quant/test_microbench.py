"""The micro-benchmark times every format at the given shapes and reports positive medians."""

import jax

from arm_jax.quant.microbench import layer_timings, speedups


def test_layer_timings_cover_formats_and_skip_unshaped_layers():
    k = jax.random.normal(jax.random.key(0), (32, 48))
    t = layer_timings({"a": k, "b": k}, {"a": (64, 32)}, ("float32", "bfloat16", "int8"))
    assert set(t) == {"a"} and set(t["a"]) == {"float32", "bfloat16", "int8"}
    assert all(ms > 0 for ms in t["a"].values())
    s = speedups(t)
    assert s["a"]["float32"] == 1.0 and s["a"]["int8"] == t["a"]["float32"] / t["a"]["int8"]
