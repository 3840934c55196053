"""apply_plan: refuses plans that would serve NaN."""

import pytest
from flax import nnx

from arm_jax.config import LayerQuant, QuantConfig
from arm_jax.quant.surgery import apply_plan, dense_layers


class _Two(nnx.Module):
    def __init__(self):
        self.a = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        self.b = nnx.Linear(3, 2, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("act_scale", [0.0])
def test_float8_layer_with_no_input_scale_is_refused(act_scale):
    """A plan's act_scale of 0 (the config accepts it) made every float8 input x / 0: the
    layer returned NaN for any row holding a zero, hence NaN scores, without a word."""
    model = _Two()
    plan = QuantConfig(layers=(LayerQuant(layer="b", format="float8_e4m3fn",
                                          act_scale=act_scale),))
    with pytest.raises(ValueError, match=r"layer 'b' \(float8_e4m3fn\) act_scale=.*must be > 0"):
        apply_plan(model, plan)
    assert isinstance(dense_layers(model)["b"], nnx.Linear)     # nothing replaced


def test_float8_layer_with_a_nan_input_scale_is_never_planned():
    """A NaN act_scale (calibration on NaN activations) is refused when the plan is built,
    naming the layer, before any surgery (the config's range check; it was the surgery's)."""
    from arm_jax.config import ConfigError

    with pytest.raises(ConfigError, match=r"quant.layers\['b'\].act_scale=nan is out of range"):
        LayerQuant(layer="b", format="float8_e4m3fn", act_scale=float("nan"))


def test_plan_with_input_scales_applies():
    model = apply_plan(_Two(), QuantConfig(layers=(
        LayerQuant(layer="a", format="int8", act_scale=0.0),       # unused by int8
        LayerQuant(layer="b", format="float8_e4m3fn", act_scale=0.01))))
    assert {k: type(v).__name__ for k, v in dense_layers(model).items()} == {
        "a": "QuantizedLinear", "b": "QuantizedLinear"}


@pytest.mark.parametrize("second", ["bfloat16", "float32", "int8"])
def test_a_layer_listed_twice_is_refused(second):
    """It used to get the last entry's format, without a word."""
    model = _Two()
    plan = QuantConfig(layers=(LayerQuant(layer="a", format="int8"),
                               LayerQuant(layer="b", format="bfloat16"),
                               LayerQuant(layer="a", format=second)))
    with pytest.raises(ValueError, match=rf"^quant.layers: layer 'a' is listed twice \(int8 and "
                                         rf"{second}\); a plan gives each layer one format$"):
        apply_plan(model, plan)
    assert all(isinstance(v, nnx.Linear) for v in dense_layers(model).values())


def test_a_layer_with_non_finite_weights_is_refused_before_any_surgery():
    import jax.numpy as jnp

    model = _Two()
    model.b.kernel[...] = model.b.kernel[...].at[1, 0].set(jnp.nan)
    plan = QuantConfig(layers=(LayerQuant(layer="a", format="int8"),
                               LayerQuant(layer="b", format="int8")))
    with pytest.raises(ValueError, match=r"^quant.layers: layer 'b': its kernel holds nan at "
                                         r"\[1, 0\]; weights must be finite to be quantized$"):
        apply_plan(model, plan)
    assert all(isinstance(v, nnx.Linear) for v in dense_layers(model).values())


def test_an_abstract_model_is_planned_without_reading_its_weights():
    """Checkpoint restore applies the plan under nnx.eval_shape: nothing concrete to check."""
    plan = QuantConfig(layers=(LayerQuant(layer="a", format="int8"),
                               LayerQuant(layer="b", format="float8_e4m3fn", act_scale=0.01)))
    model = nnx.eval_shape(lambda: apply_plan(_Two(), plan))
    assert {k: type(v).__name__ for k, v in dense_layers(model).items()} == {
        "a": "QuantizedLinear", "b": "QuantizedLinear"}
