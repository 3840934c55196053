"""`auc_drop`, the quality figure every quantization decision is made on."""

import math

import pytest

from arm_jax.quant.sweep import auc_drop

NAN = float("nan")


def q(**aucs):
    return {t: {"auc": a, "logloss": 0.5, "ne": 0.9} for t, a in aucs.items()}


@pytest.mark.parametrize("order", [("conversion", "click"), ("click", "conversion")])
def test_a_task_without_auc_in_the_set_is_left_out_whatever_its_place(order):
    """A small calibration set may hold no conversion at all: that task's AUC is nan in the
    reference and every variant. Python's max() kept or dropped the nan by task order, so
    with tasks=[conversion, click] every sensitivity was nan and no layer was ever
    quantized ('alone over budget')."""
    ref = {t: q(click=0.80, conversion=NAN)[t] for t in order}
    other = {t: q(click=0.79, conversion=NAN)[t] for t in order}
    assert auc_drop(ref, other) == pytest.approx(0.01)


@pytest.mark.parametrize("order", [("conversion", "click"), ("click", "conversion")])
def test_a_variant_that_loses_a_measurable_auc_is_infinitely_worse(order):
    """nan AUC where the reference has one (the variant scored nan): over any budget."""
    ref = {t: q(click=0.80, conversion=0.70)[t] for t in order}
    other = {t: q(click=0.80, conversion=NAN)[t] for t in order}
    assert auc_drop(ref, other) == math.inf


def test_no_measurable_task_is_an_error_not_a_nan_drop():
    with pytest.raises(ValueError, match="no task has both classes"):
        auc_drop(q(click=NAN), q(click=NAN))
