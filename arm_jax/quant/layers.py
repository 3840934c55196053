"""Quantized replacements for `nnx.Linear`.

`QuantizedLinear` is what a quantized tier serves: weights stored in the chosen format
(parameters of the checkpoint and arguments of the exported executables, like any
weight). `SwitchableLinear` keeps the float32 weights and picks the format from a traced
index, so the sensitivity sweep evaluates every (layer, format) choice with ONE compiled
model; both call `quantized_matmul`, so they compute the same numbers.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.quant.formats import (FORMATS, QuantizedWeight, check_act_scale, check_format,
                                   fp8_activation_scale, quantize_weight, quantized_matmul)


class QuantChoice(nnx.Variable):
    """Index into FORMATS chosen for a SwitchableLinear (a traced input, not a constant)."""


class Calibration(nnx.Variable):
    """Running absolute maximum of a layer's input over the calibration set."""


_SHAPE_PROBE: dict[str, tuple[int, ...]] | None = None


@contextlib.contextmanager
def shape_probe() -> Iterator[dict[str, tuple[int, ...]]]:
    """Record each SwitchableLinear's 2-D input shape [rows, in] while a model is traced."""
    global _SHAPE_PROBE
    _SHAPE_PROBE = {}
    try:
        yield _SHAPE_PROBE
    finally:
        _SHAPE_PROBE = None


def _flat(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    return x.reshape(-1, x.shape[-1]), x.shape[:-1]


class QuantizedLinear(nnx.Module):
    """y = x W + b with W stored in `fmt` (f32 accumulation, f32 output)."""

    def __init__(self, kernel: QuantizedWeight, bias: jax.Array | None, fmt: str,
                 act_scale: float = 1.0):
        self.format = check_format(fmt)
        if fmt == "float8_e4m3fn":
            check_act_scale(act_scale, "QuantizedLinear (float8_e4m3fn):")
        self.in_features, self.out_features = kernel.values.shape
        self.kernel = nnx.Param(kernel.values)
        # bf16 needs no scale: store none, so its checkpoint is exactly half the f32 one.
        self.scale = nnx.Param(kernel.scale) if fmt in ("int8", "float8_e4m3fn") else None
        self.act_scale = (nnx.Param(jnp.asarray(act_scale, jnp.float32))
                          if fmt == "float8_e4m3fn" else None)
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias, jnp.float32))

    @classmethod
    def from_linear(cls, linear: nnx.Linear, fmt: str, act_scale: float = 1.0
                    ) -> "QuantizedLinear":
        bias = None if linear.bias is None else linear.bias[...]
        return cls(quantize_weight(linear.kernel[...], fmt), bias, fmt, act_scale)

    def weight(self) -> QuantizedWeight:
        scale = (self.scale[...] if self.scale is not None
                 else jnp.ones(self.out_features, jnp.float32))
        return QuantizedWeight(self.kernel[...], scale)

    def __call__(self, x: jax.Array) -> jax.Array:
        x2, lead = _flat(x)
        s = self.act_scale[...] if self.act_scale is not None else 1.0
        y = quantized_matmul(x2, self.weight(), self.format, s)
        if self.bias is not None:
            y = y + self.bias[...]
        return y.reshape(lead + (self.out_features,))


class SwitchableLinear(nnx.Module):
    """A Linear whose format is a runtime index into FORMATS (for the sweep only).

    With `record_amax` set (a Python flag: its own compile), each call folds the input's
    absolute maximum into `amax` -- the float8 calibration pass.
    """

    def __init__(self, linear: nnx.Linear, name: str):
        self.name = name
        self.kernel = nnx.Param(jnp.asarray(linear.kernel[...], jnp.float32))
        self.bias = (None if linear.bias is None
                     else nnx.Param(jnp.asarray(linear.bias[...], jnp.float32)))
        self.out_features = self.kernel.shape[1]
        self.choice = QuantChoice(jnp.zeros((), jnp.int32))
        self.amax = Calibration(jnp.zeros((), jnp.float32))
        self.record_amax = False

    def set_format(self, fmt: str) -> None:
        self.choice[...] = jnp.asarray(FORMATS.index(check_format(fmt)), jnp.int32)

    def __call__(self, x: jax.Array) -> jax.Array:
        x2, lead = _flat(x)
        if _SHAPE_PROBE is not None:
            _SHAPE_PROBE[self.name] = tuple(x2.shape)
        if self.record_amax:
            self.amax[...] = jnp.maximum(self.amax[...], jnp.max(jnp.abs(x2)))
        scale = fp8_activation_scale(self.amax[...])

        def branch(fmt: str):
            return lambda x2, k: quantized_matmul(x2, quantize_weight(k, fmt), fmt, scale)

        y = jax.lax.switch(self.choice[...], [branch(f) for f in FORMATS], x2, self.kernel[...])
        if self.bias is not None:
            y = y + self.bias[...]
        return y.reshape(lead + (self.out_features,))
