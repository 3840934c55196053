"""What `arm-jax inspect` prints: one row per tier and bucket, straight from the manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arm_jax.compile import manifest as mf
from arm_jax.compile.errors import ArtifactError


def summary_rows(root: str | Path) -> list[dict[str, Any]]:
    """Per tier and bucket: FLOPs per call / request / candidate, bytes accessed, memory."""
    root = Path(root)
    index = mf.read_index(root / mf.INDEX)
    rows = []
    for name in index["tiers"]:
        path = root / name / mf.INDEX
        m = mf.read_json(path)
        try:
            rows += _tier_rows(name, m)
        except (KeyError, TypeError, ValueError, AttributeError) as e:   # a hand-edited file
            raise ArtifactError(f"{path}: malformed tier manifest ({type(e).__name__}: {e}); "
                                "`arm-jax inspect --verify` checks it against the index"
                                ) from None
    return rows


def _tier_rows(name: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in m["buckets"]:
        B, N = e["batch"], e["candidates"]
        flops = float(e["cost"]["flops"])
        rows.append({
            "tier": name, "bucket": f"{B}x{N}", "batch": B, "candidates": N,
            "history": e["history"], "flops": flops, "flops_per_request": flops / B,
            "flops_per_candidate": flops / (B * N),
            "bytes_accessed": float(e["cost"]["bytes_accessed"]),
            "peak_bytes": int(e["memory"].get("peak", 0)),
            "weights_bytes": int(m["weights"]["bytes"]),
            "exported": ",".join(sorted(e["exported"])),
            "errors": "; ".join(f"{k}: {v}" for k, v in e.get("export_errors", {}).items()),
        })
    return rows


def _si(x: float, unit: str = "") -> str:
    for div, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{p}{unit}"
    return f"{x:.0f}{unit}"


def _bytes(x: float) -> str:
    for div, p in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if x >= div:
            return f"{x / div:.2f} {p}"
    return f"{x:.0f} B"


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("tier", "bucket BxN", "L", "FLOPs/req", "FLOPs/cand", "bytes accessed", "peak mem",
            "exported")
    body = [(r["tier"], r["bucket"], str(r["history"]), _si(r["flops_per_request"]),
             _si(r["flops_per_candidate"]), _bytes(r["bytes_accessed"]), _bytes(r["peak_bytes"]),
             r["exported"]) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    errors = [f"  {r['tier']} {r['bucket']}: export failed for {r['errors']}"
              for r in rows if r["errors"]]
    return "\n".join(lines + errors)
