"""The selection on planted cases: a fragile layer, a layer with no gain, a tight budget."""

from arm_jax.quant.select import select_formats

LAYERS = ["a", "fragile", "slow", "tiny"]
TIMINGS = {  # ms per format at serving shapes
    "a": {"float32": 10.0, "bfloat16": 5.0, "int8": 8.0},
    "fragile": {"float32": 20.0, "bfloat16": 9.0, "int8": 15.0},
    "slow": {"float32": 4.0, "bfloat16": 4.4, "int8": 4.1},    # no format gains here
    "tiny": {"float32": 0.02, "bfloat16": 0.005, "int8": 0.01},  # call overhead only
}


def additive(sens):
    def drop(assign):
        return sum(sens[k][f] for k, f in assign.items())
    return drop


def test_fragile_layer_stays_float32_and_budget_holds():
    sens = {"a": {"bfloat16": 0.0002, "int8": 0.0003},
            "fragile": {"bfloat16": 0.01, "int8": 0.02},
            "slow": {"bfloat16": 0.0, "int8": 0.0}, "tiny": {"bfloat16": 0.0, "int8": 0.0}}
    calls = []

    def drop(assign):
        calls.append(dict(assign))
        return additive(sens)(assign)

    decisions, total = select_formats(LAYERS, TIMINGS, sens, drop, budget_auc=0.001)
    by = {d.layer: d for d in decisions}
    assert [d.layer for d in decisions] == LAYERS
    assert by["a"].format == "bfloat16" and by["a"].speedup == 2.0
    assert by["fragile"].format == "float32" and by["fragile"].reason == "alone over budget"
    assert by["slow"].format == "float32" and "no gain" in by["slow"].reason
    assert by["tiny"].format == "float32" and "too small" in by["tiny"].reason
    assert total <= 0.001 and calls == [{"a": "bfloat16"}]


def test_interaction_falls_back_to_slower_format_then_float32():
    # Each alone fits, but together they do not: the layer saving more time goes first,
    # the second tries its other format and then stays float32.
    sens = {"a": {"bfloat16": 0.0006, "int8": 0.0009},
            "fragile": {"bfloat16": 0.0007, "int8": 0.0008},
            "slow": {}, "tiny": {}}
    decisions, total = select_formats(LAYERS, TIMINGS, sens, additive(sens), budget_auc=0.001)
    by = {d.layer: d for d in decisions}
    assert by["fragile"].format == "bfloat16"          # saves 11 ms: chosen first
    assert by["a"].format == "float32" and "over budget" in by["a"].reason
    assert abs(total - 0.0007) < 1e-12


def test_zero_budget_keeps_everything_float32_unless_lossless():
    sens = {"a": {"bfloat16": 0.0, "int8": 0.001}, "fragile": {"bfloat16": 1e-5, "int8": 0.0},
            "slow": {}, "tiny": {}}
    decisions, total = select_formats(LAYERS, TIMINGS, sens, additive(sens), budget_auc=0.0)
    by = {d.layer: d.format for d in decisions}
    assert by == {"a": "bfloat16", "fragile": "int8", "slow": "float32", "tiny": "float32"}
    assert total == 0.0
