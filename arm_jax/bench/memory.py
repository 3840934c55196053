"""Refuse a bench whose sizes cannot fit in this machine's memory, before any work.

A bench given sizes far beyond the machine (`bench store --history-median 1e13`) would
otherwise run for minutes and end in a MemoryError or the OOM killer. Each bench states a
floor of the bytes its sizes make it hold at once (arrays it must allocate, whatever XLA
fuses), and the floor is checked against physical memory first.
"""

from __future__ import annotations

import os

GIB = float(1 << 30)


def physical_memory_bytes() -> int | None:
    """Installed memory (POSIX sysconf), or None where the platform does not say."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page if pages > 0 and page > 0 else None


def check_fits_in_memory(need_bytes: float, sizes: str, *,
                         available_bytes: int | None = None) -> None:
    """ValueError naming `sizes` when `need_bytes` exceed physical memory.

    `available_bytes` defaults to `physical_memory_bytes()`; where that is unknown,
    nothing is checked."""
    total = physical_memory_bytes() if available_bytes is None else available_bytes
    if total is not None and need_bytes > total:
        raise ValueError(f"{sizes}: needs at least {need_bytes / GIB:,.1f} GiB of memory, "
                         f"more than this machine's {total / GIB:,.1f} GiB")
