"""Peak live bytes of a traced function: the planner's activation estimate, on paper.

Walks the jaxpr in program order and keeps a running sum of values that are alive
(produced and still to be read). XLA fuses elementwise chains, so an elementwise value
with a single reader that is itself elementwise or a reduction is assumed fused into
that reader and never materialised; everything else (matmul, gather and scatter
outputs and inputs, values read twice) counts. Inputs and
outputs are not temporaries and are excluded (the caller counts them as arguments and
results). Sub-jaxprs (pjit, custom_vjp, ...) add their own peak while they run.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.extend import core as jcore

_FUSIBLE = frozenset({
    "add", "add_any", "mul", "sub", "div", "neg", "exp", "exp2", "log", "log1p", "max", "min",
    "select_n", "convert_element_type", "integer_pow", "sqrt", "rsqrt", "pow", "abs", "sign",
    "tanh", "logistic", "ne", "eq", "lt", "gt", "le", "ge", "and", "or", "not", "xor",
    "shift_right_logical", "shift_left", "shift_right_arithmetic", "broadcast_in_dim",
    "reshape", "squeeze", "expand_dims", "square", "rem", "floor", "ceil", "round", "clamp",
    "erf", "is_finite", "stop_gradient", "copy", "copy_p",
})
# Consumers that absorb a fused producer (loop fusion into elementwise / reductions).
_ABSORBS = _FUSIBLE | {"reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin",
                       "reduce_prod", "cumsum"}
_SUBJAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _nbytes(aval: Any, local: Callable[[Any], int] | None) -> int:
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        n = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys): negligible
        return 0
    return n // local(aval) if local is not None else n


def jaxpr_peak_bytes(jaxpr: jcore.Jaxpr, local: Callable[[Any], int] | None = None,
                     fusion: bool = True) -> int:
    """Peak bytes of temporaries alive at once while `jaxpr` runs (see module doc).

    `local(aval)`, when given, is the number of devices a value is split over: its
    bytes are divided by it (e.g. the gradient of a row-sharded table).
    """
    last: dict[Any, int] = {}
    uses: dict[Any, int] = {}
    reader: dict[Any, str] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jcore.Var):
                last[v] = i
                uses[v] = uses.get(v, 0) + 1
                reader[v] = eqn.primitive.name
    outs = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    alive: dict[Any, int] = {}
    live = peak = 0
    for i, eqn in enumerate(jaxpr.eqns):
        inner = 0
        for name in _SUBJAXPR_PARAMS:
            sub = eqn.params.get(name)
            if sub is not None:
                inner = max(inner, jaxpr_peak_bytes(getattr(sub, "jaxpr", sub), local,
                                                         fusion))
        fused = fusion and eqn.primitive.name in _FUSIBLE
        for v in eqn.outvars:
            absorbed = fused and uses.get(v, 0) <= 1 and reader.get(v, "add") in _ABSORBS
            if isinstance(v, jcore.Var) and v not in outs and not absorbed:
                alive[v] = _nbytes(v.aval, local)
                live += alive[v]
        peak = max(peak, live + inner)
        for v in list(eqn.invars) + list(eqn.outvars):
            if isinstance(v, jcore.Var) and v in alive and last.get(v, -1) <= i:
                live -= alive.pop(v)
    return peak


def peak_temp_bytes(fn: Callable, *abstract_args: Any,
                    local: Callable[[Any], int] | None = None) -> int:
    """Peak temporary bytes of `fn(*abstract_args)`; args may be ShapeDtypeStructs."""
    return jaxpr_peak_bytes(jax.make_jaxpr(fn)(*abstract_args).jaxpr, local)
