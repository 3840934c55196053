"""Evaluate any per-layer format assignment of one model without recompiling it.

The model's dense layers become SwitchableLinear; their format indices and calibrated
float8 input ranges are traced inputs of a single compiled predict function, so the
sensitivity sweep (one layer at a time, every format) and the budget checks of the
selection cost one compile, not one per variant.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from arm_jax.batch import RequestBatch
from arm_jax.metrics import evaluate
from arm_jax.quant.layers import Calibration, SwitchableLinear, shape_probe
from arm_jax.quant.surgery import dense_layers, make_switchable

EvalSet = Sequence[tuple[RequestBatch, np.ndarray]]  # (batch, labels [b, c, tasks]), one shape


def auc_drop(reference: Mapping[str, Any], other: Mapping[str, Any]) -> float:
    """Largest AUC loss over tasks (positive = worse than the reference).

    A task whose reference AUC is nan (one class in this set, e.g. no conversion among a
    few calibration requests) cannot be measured and is left out; a nan AUC of `other`
    where the reference has one (it scored nan) is an infinite loss. ValueError when no
    task can be measured. (Python's max() over nans keeps or drops them by position.)"""
    drops = [math.inf if math.isnan(other[t]["auc"]) else reference[t]["auc"] - other[t]["auc"]
             for t in reference if not math.isnan(reference[t]["auc"])]
    if not drops:
        raise ValueError(f"AUC drop: no task has both classes in this set ({', '.join(reference)}"
                         "): use more calibration / held-out requests")
    return max(drops)


def mean_logloss(quality: Mapping[str, Any]) -> float:
    return float(np.mean([q["logloss"] for q in quality.values()]))


class PrecisionSweep:
    """One compiled copy of a model whose dense layers switch format at run time."""

    def __init__(self, graphdef: nnx.GraphDef, params: Any, tasks: Sequence[str]):
        self.tasks = tuple(tasks)
        self.model = nnx.merge(graphdef, params)
        self.layers = make_switchable(self.model)
        if not self.layers:
            raise ValueError("the model has no float dense layers to quantize")
        self._mods: dict[str, SwitchableLinear] = {
            k: v for k, v in dense_layers(self.model).items() if k in self.layers}
        gd, _ = nnx.split(self.model)
        self._predict = jax.jit(lambda state, batch: jax.nn.sigmoid(nnx.merge(gd, state)(batch)))

    # ------------------------------------------------------------ set-up
    def calibrate(self, data: EvalSet) -> dict[str, float]:
        """Fold every layer's input absolute maximum over `data` (float8 scales)."""
        for m in self._mods.values():
            m.record_amax = True
        gd, _ = nnx.split(self.model)

        @jax.jit
        def step(state, batch):
            model = nnx.merge(gd, state)
            model(batch)
            return nnx.state(model, Calibration)

        try:
            for batch, _ in data:
                nnx.update(self.model, step(nnx.state(self.model), batch))
        finally:
            for m in self._mods.values():
                m.record_amax = False
        return {k: float(m.amax[...]) for k, m in self._mods.items()}

    def input_shapes(self, batch: RequestBatch) -> dict[str, tuple[int, int]]:
        """Each layer's 2-D input shape [rows, in] when the model scores `batch`."""
        gd, state = nnx.split(self.model)
        with shape_probe() as shapes:
            jax.eval_shape(lambda s, b: nnx.merge(gd, s)(b), state, batch)
        return {k: shapes[k] for k in self.layers if k in shapes}

    # ------------------------------------------------------------ evaluation
    def set_formats(self, formats: Mapping[str, str]) -> None:
        """Layers named in `formats` take that format; every other layer float32."""
        unknown = sorted(set(formats) - set(self._mods))
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r}; layers: {', '.join(self.layers)}")
        for name, m in self._mods.items():
            m.set_format(formats.get(name, "float32"))

    def predict(self, formats: Mapping[str, str], data: EvalSet) -> np.ndarray:
        self.set_formats(formats)
        state = nnx.state(self.model)
        return np.concatenate([np.asarray(self._predict(state, b)) for b, _ in data])

    def quality(self, formats: Mapping[str, str], data: EvalSet) -> dict[str, Any]:
        """AUC / log loss / NE per task of the model with `formats`, over `data`."""
        probs = self.predict(formats, data)
        labels = np.concatenate([y for _, y in data])
        mask = np.concatenate([np.asarray(b.cand_mask) for b, _ in data])
        return evaluate(labels, probs, mask, self.tasks)

    def kernels(self) -> dict[str, jax.Array]:
        """Each layer's float32 weight [in, out]."""
        return {k: m.kernel[...] for k, m in self._mods.items()}
