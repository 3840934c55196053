"""Post-training quantization of a trained tier, end to end.

  1. calibrate: every dense layer's input range over a calibration set (float8 scales);
  2. micro-benchmark: each layer's matmul in each format at its serving shape;
  3. sensitivity: one layer at a time in each format, AUC drop on the calibration set;
  4. select: greedy by time saved, whole-model AUC drop on a held-out set within budget;
     then confirm the plan on the whole compiled model at the serving shape (kept only if
     it is faster than float32 there);
  5. build: the quantized model (weights stored in their formats) and its config, whose
     `quant` section is the plan; saved as a checkpoint that `arm-jax export` compiles
     like any other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jax
from flax import nnx
from tqdm.auto import tqdm

from arm_jax.batch import RequestBatch
from arm_jax.config import LayerQuant, QuantConfig, TierConfig
from arm_jax.quant.formats import LOW_PRECISION, fp8_activation_scale
from arm_jax.quant.microbench import layer_timings, model_latency_ms
from arm_jax.quant.select import MIN_LAYER_MS, MIN_SPEEDUP, Decision, select_formats
from arm_jax.quant.surgery import apply_plan
from arm_jax.quant.sweep import EvalSet, PrecisionSweep, auc_drop


@dataclass
class QuantizeResult:
    tier: TierConfig                      # the input tier with `quant` = the plan
    graphdef: nnx.GraphDef                # the quantized model
    params: Any
    decisions: list[Decision]
    timings_ms: dict[str, dict[str, float]]
    sensitivity: dict[str, dict[str, float]]
    plan_auc_drop: float                  # whole model, held-out set
    amax: dict[str, float]
    sweep: PrecisionSweep                 # reusable for further what-ifs (benchmarks)

    def summary(self) -> list[dict[str, Any]]:
        return [{"layer": d.layer, "format": d.format, "sensitivity": d.sensitivity,
                 "speedup": d.speedup, "reason": d.reason} for d in self.decisions]


def check_float32_compute(tier: TierConfig) -> None:
    """ValueError unless the tier computes in float32 (`model.dtype`). The sweep measures
    every layer against float32 compute; a layer the plan keeps "float32" stays the
    model's own Linear, which in a bfloat16-compute tier runs in bfloat16, so the served
    model would not be the one measured (scores 3e-3 apart on a tiny tier, where the same
    arithmetic agrees to 2e-5)."""
    if tier.model.dtype != "float32":
        raise ValueError(f"tier {tier.name!r}: model.dtype={tier.model.dtype}: quantize "
                         "measures layers against float32 compute; quantize a model.dtype="
                         "float32 checkpoint")


def build_quantized(graphdef: nnx.GraphDef, params: Any, tier: TierConfig, plan: QuantConfig
                    ) -> tuple[TierConfig, nnx.GraphDef, Any]:
    """The float model -> (tier with the plan, quantized graphdef, quantized params)."""
    model = nnx.merge(graphdef, params)
    apply_plan(model, plan)
    gd, p = nnx.split(model)
    return dataclasses.replace(tier, quant=plan), gd, p


def plan_from_formats(formats: Mapping[str, str], amax: Mapping[str, float],
                      **quant: Any) -> QuantConfig:
    """A plan giving each named layer its format (float8 scales from calibrated amax)."""
    return QuantConfig(layers=tuple(
        LayerQuant(layer=k, format=f, act_scale=float(fp8_activation_scale(amax[k])))
        for k, f in formats.items()), **quant)


def quantize(graphdef: nnx.GraphDef, params: Any, tier: TierConfig, *, calib: EvalSet,
             holdout: EvalSet, serving_batch: RequestBatch, budget_auc: float = 0.001,
             formats: Sequence[str] = LOW_PRECISION, min_speedup: float = MIN_SPEEDUP,
             sweep_all: bool = False, min_layer_ms: float = MIN_LAYER_MS,
             confirm_repeats: int = 7, progress: bool = True) -> QuantizeResult:
    """Measure, select and build. `serving_batch` fixes the shapes the layers are timed at
    (e.g. one request with the largest candidate bucket). Sensitivity is measured for the
    formats that gain speed here (all formats with `sweep_all`)."""
    if not calib or not holdout:
        raise ValueError("quantize: the calibration and held-out sets must not be empty")
    if any(q.format != "float32" for q in tier.quant.layers):
        raise ValueError(f"tier {tier.name!r} is already quantized; start from its float model")
    check_float32_compute(tier)
    sweep = PrecisionSweep(graphdef, params, tier.features.tasks)
    layers = sweep.layers
    with tqdm(total=3, desc="quantize: calibrate", disable=not progress, unit="stage") as bar:
        amax = sweep.calibrate(calib)
        bar.update(1)
        shapes = sweep.input_shapes(serving_batch)
        bar.update(1)
        reference = sweep.quality({}, calib)
        bar.update(1)
    kernels = sweep.kernels()
    with tqdm(total=len(layers), desc="quantize: time layers", disable=not progress,
              unit="layer") as bar:
        timings = layer_timings(kernels, shapes, ("float32", *formats), amax, progress=bar)

    def gains(name: str, fmt: str) -> bool:
        t = timings.get(name)
        return (bool(t) and t["float32"] >= min_layer_ms
                and t["float32"] / max(t[fmt], 1e-9) >= min_speedup)

    todo = [(k, f) for k in layers for f in formats if sweep_all or gains(k, f)]
    sensitivity: dict[str, dict[str, float]] = {k: {} for k in layers}
    for name, fmt in tqdm(todo, desc="quantize: sensitivity", disable=not progress,
                          unit="variant"):
        sensitivity[name][fmt] = auc_drop(reference, sweep.quality({name: fmt}, calib))

    held_ref = sweep.quality({}, holdout)
    checks = tqdm(desc="quantize: select", disable=not progress, unit="check")

    def whole_model_drop(assign: dict[str, str]) -> float:
        checks.update(1)
        return auc_drop(held_ref, sweep.quality(assign, holdout))

    decisions, drop = select_formats(layers, timings, sensitivity, whole_model_drop,
                                     budget_auc, min_speedup, min_layer_ms)
    checks.close()
    def make_plan(decisions: list[Decision], model_speedup: float = 1.0) -> QuantConfig:
        return QuantConfig(
            layers=tuple(d.as_plan(float(fp8_activation_scale(amax[d.layer])))
                         for d in decisions),
            budget_auc=budget_auc, backend=jax.default_backend(), holdout_auc_drop=drop,
            model_speedup=model_speedup)

    plan = make_plan(decisions)
    tier_q, gd_q, params_q = build_quantized(graphdef, params, tier, plan)
    if any(d.format != "float32" for d in decisions):
        # Confirm on the whole compiled model: layer timings need not add up (fusion).
        ms = model_latency_ms({"f32": (graphdef, params), "plan": (gd_q, params_q)},
                              serving_batch, repeats=confirm_repeats)
        speedup = ms["f32"] / max(ms["plan"], 1e-9)
        if speedup >= 1.0:
            tier_q = dataclasses.replace(tier, quant=make_plan(decisions, speedup))
        else:
            decisions = [Decision(d.layer, "float32", d.sensitivity, 1.0,
                                  f"plan slower than float32 as a whole ({speedup:.2f}x)")
                         for d in decisions]
            drop = 0.0
            tier_q, gd_q, params_q = build_quantized(graphdef, params, tier,
                                                     make_plan(decisions))
    return QuantizeResult(tier_q, gd_q, params_q, decisions, timings, sensitivity, drop, amax,
                          sweep)
