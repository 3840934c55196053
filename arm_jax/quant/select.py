"""Choose per layer the format with the largest measured speed gain within a quality budget.

Greedy over layers by milliseconds saved (largest first): try the layer's formats from
fastest to slowest, keep the first whose WHOLE-model held-out AUC drop (with every layer
accepted so far) stays within the budget. Formats that do not beat float32 on this
backend by `min_speedup` are never tried, nor layers whose float32 time is under
`min_layer_ms` (a tiny matmul's standalone timing is dominated by call overhead, so its
"speed-up" is noise), nor formats whose one-layer sensitivity alone exceeds the budget:
float32 stays wherever nothing measurably pays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from arm_jax.config import LayerQuant

MIN_SPEEDUP = 1.05
MIN_LAYER_MS = 0.1   # below this a standalone layer timing is call overhead, not matmul


@dataclass(frozen=True)
class Decision:
    layer: str
    format: str
    sensitivity: float | None  # one-layer AUC drop of the chosen format (fastest measured
                               # candidate if float32; None: nothing was measured)
    speedup: float       # measured speed-up of the chosen format (1.0 for float32)
    reason: str          # why: chosen / no gain on this backend / over budget ...

    def as_plan(self, act_scale: float = 1.0) -> LayerQuant:
        sens = 0.0 if self.sensitivity is None else max(-1.0, min(1.0, self.sensitivity))
        reason = self.reason + (" (sensitivity not measured)" if self.sensitivity is None else "")
        return LayerQuant(layer=self.layer, format=self.format, sensitivity=float(sens),
                          speedup=float(self.speedup), act_scale=float(act_scale), reason=reason)


def select_formats(layers: list[str],
                   timings_ms: Mapping[str, Mapping[str, float]],
                   sensitivity: Mapping[str, Mapping[str, float]],
                   whole_model_drop: Callable[[dict[str, str]], float],
                   budget_auc: float, min_speedup: float = MIN_SPEEDUP,
                   min_layer_ms: float = MIN_LAYER_MS) -> tuple[list[Decision], float]:
    """-> (a decision per layer in `layers` order, the accepted plan's whole-model AUC drop)."""
    speed = {k: {f: v["float32"] / max(ms, 1e-9) for f, ms in v.items()}
             for k, v in timings_ms.items()}
    options: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for name in layers:
        fast = [f for f, s in speed.get(name, {}).items()
                if f != "float32" and s >= min_speedup]
        if name in timings_ms and timings_ms[name]["float32"] < min_layer_ms:
            reasons[name] = f"too small to time (< {min_layer_ms} ms)"
            continue
        if not fast:
            reasons[name] = "no gain on this backend" if name in speed else "not timed"
            continue
        ok = [f for f in fast if sensitivity.get(name, {}).get(f, float("inf")) <= budget_auc]
        if not ok:
            reasons[name] = "alone over budget"
            continue
        options[name] = sorted(ok, key=lambda f: -speed[name][f])

    def saved(name: str) -> float:
        return timings_ms[name]["float32"] - timings_ms[name][options[name][0]]

    accepted: dict[str, str] = {}
    drop = 0.0
    for name in sorted(options, key=saved, reverse=True):
        for fmt in options[name]:
            trial_drop = whole_model_drop({**accepted, name: fmt})
            if trial_drop <= budget_auc:
                accepted[name], drop = fmt, trial_drop
                reasons[name] = "chosen"
                break
        else:
            reasons[name] = "over budget with the layers chosen before it"

    decisions = []
    for name in layers:
        fmt = accepted.get(name, "float32")
        sens = sensitivity.get(name, {})
        if fmt == "float32":
            cands = [f for f in sens if f != "float32"]
            best = max(cands, key=lambda f: speed.get(name, {}).get(f, 0.0), default=None)
            s = float(sens[best]) if best else None
            decisions.append(Decision(name, "float32", s, 1.0, reasons[name]))
        else:
            decisions.append(Decision(name, fmt, float(sens.get(fmt, 0.0)),
                                      float(speed[name][fmt]), "chosen"))
    return decisions, drop


def decision_table(rows: list[dict]) -> str:
    """The per-layer decision as a text table (rows: `QuantizeResult.summary()`)."""
    lines = [f"{'layer':28s} {'format':14s} {'sensitivity':>11s} {'speedup':>8s}  reason"]
    for r in rows:
        sens = "-" if r["sensitivity"] is None else f"{r['sensitivity']:.5f}"
        lines.append(f"{r['layer']:28s} {r['format']:14s} {sens:>11s} {r['speedup']:8.2f}  "
                     f"{r['reason']}")
    return "\n".join(lines)
