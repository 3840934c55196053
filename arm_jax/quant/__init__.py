"""Selective post-training quantization: measure each layer, lower precision only where
it is both tolerated (held-out AUC budget) and faster on this backend."""

from arm_jax.quant.formats import (FORMATS, QuantizedWeight, dequantize_weight,
                                   quantize_weight, quantized_matmul)
from arm_jax.quant.layers import QuantizedLinear, SwitchableLinear
from arm_jax.quant.surgery import apply_plan, dense_layers

__all__ = ["FORMATS", "QuantizedWeight", "quantize_weight", "dequantize_weight",
           "quantized_matmul", "QuantizedLinear", "SwitchableLinear", "apply_plan",
           "dense_layers"]
