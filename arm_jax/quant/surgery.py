"""Find a model's dense layers by path and swap them for quantized versions in place.

Layer names are nnx graph paths joined by '/', e.g. 'wukong/0/mlp_in' or
'encoder/blocks/1/qkv'. Every `nnx.Linear` of the model is a candidate: the dense
layers of the interaction stack, the heads, the sequence encoder, target attention and
the dense-feature projections. (Embedding tables and the Wukong token-mixing weights
stay float32; see the README.)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
from flax import nnx

from arm_jax.config import QuantConfig
from arm_jax.quant.formats import check_act_scale, non_finite_problem
from arm_jax.quant.layers import QuantizedLinear, SwitchableLinear

DENSE_TYPES = (nnx.Linear, QuantizedLinear, SwitchableLinear)


def layer_name(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path)


def dense_layers(model: nnx.Module) -> dict[str, nnx.Module]:
    """{name: layer} for every dense layer, in graph order."""
    return {layer_name(path): node for path, node in nnx.iter_graph(model)
            if isinstance(node, DENSE_TYPES) and path}


def _parent_and_key(model: nnx.Module, name: str) -> tuple[Any, Any]:
    parent: Any = model
    *head, last = name.split("/")
    for p in head:
        parent = parent[int(p)] if isinstance(parent, nnx.List) else getattr(parent, p)
    return parent, (int(last) if isinstance(parent, nnx.List) else last)


def replace_layers(model: nnx.Module, make: Callable[[str, nnx.Module], nnx.Module | None],
                   names: list[str] | None = None) -> list[str]:
    """Replace each named dense layer by `make(name, layer)` (None keeps it). -> replaced."""
    layers = dense_layers(model)
    unknown = sorted(set(names or ()) - set(layers))
    if unknown:
        raise ValueError(f"quant.layers: unknown layer {unknown[0]!r}; the model's dense "
                         f"layers are {', '.join(layers)}")
    done = []
    for name in (names if names is not None else list(layers)):
        new = make(name, layers[name])
        if new is None:
            continue
        parent, key = _parent_and_key(model, name)
        if isinstance(parent, nnx.List):
            parent[key] = new
        else:
            setattr(parent, key, new)
        done.append(name)
    return done


def _check_finite_kernel(name: str, kernel: jax.Array) -> None:
    """ValueError naming the layer when its (concrete) kernel holds NaN or inf."""
    problem = non_finite_problem(kernel)
    if problem:
        raise ValueError(f"quant.layers: layer {name!r}: its kernel {problem}; weights must "
                         "be finite to be quantized")


def apply_plan(model: nnx.Module, plan: QuantConfig) -> nnx.Module:
    """Quantize, in place, every layer the plan gives a format other than float32.

    The whole plan is checked before any layer is replaced: ValueError naming the layer for
    one listed twice, one already quantized, a float8 one whose act_scale is not finite and
    > 0, or one whose (concrete) weights are not finite."""
    formats: dict[str, str] = {}
    for q in plan.layers:
        if q.layer in formats:
            raise ValueError(f"quant.layers: layer {q.layer!r} is listed twice ({formats[q.layer]}"
                             f" and {q.format}); a plan gives each layer one format")
        formats[q.layer] = q.format
    chosen = {q.layer: q for q in plan.layers if q.format != "float32"}
    layers = dense_layers(model)
    for name, q in chosen.items():
        if not isinstance(layers.get(name), (nnx.Linear, type(None))):
            raise ValueError(f"quant.layers: layer {name!r} is already quantized")
        if q.format == "float8_e4m3fn":
            check_act_scale(q.act_scale, f"quant.layers: layer {name!r} (float8_e4m3fn)")
        if name in layers:
            _check_finite_kernel(name, layers[name].kernel[...])

    def make(name: str, layer: nnx.Module) -> nnx.Module:
        q = chosen[name]
        return QuantizedLinear.from_linear(layer, q.format, q.act_scale)

    replace_layers(model, make, list(chosen))
    return model


def make_switchable(model: nnx.Module) -> list[str]:
    """Wrap every float Linear in a SwitchableLinear (in place) -> their names."""
    return replace_layers(model, lambda name, layer: (SwitchableLinear(layer, name)
                                                      if isinstance(layer, nnx.Linear) else None))


def formats_of(plan: QuantConfig) -> Mapping[str, str]:
    return {q.layer: q.format for q in plan.layers}
