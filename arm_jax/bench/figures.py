"""Matplotlib for the benchmarks' PNGs: the headless backend, and one way to write a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, png: Path) -> Path:
    """Write `fig` to `png` (its directory made if needed) at 120 dpi and close it."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    pyplot().close(fig)
    return png


__all__ = ["pyplot", "save_png"]
