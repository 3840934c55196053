"""argparse `type=` callables for counts, sizes and durations.

A bad value stops the command in argparse with one line naming the option
("argument --repeats: expected a positive integer, got '0'"), before any work starts.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable


def _bounded(kind: type, what: str, ok: Callable[[float], bool]) -> Callable[[str], Any]:
    """An argparse type: `text` parsed as a finite `kind` ('1e3' is an int) satisfying `ok`."""
    def parse(text: str) -> Any:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or (kind is int and v != int(v)) or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        return kind(v)

    parse.__doc__ = f"{what[0].upper()}{what[1:]} (finite)."
    return parse


positive_int = _bounded(int, "a positive integer", lambda v: v >= 1)
non_negative_int = _bounded(int, "an integer >= 0", lambda v: v >= 0)
positive_float = _bounded(float, "a number > 0", lambda v: v > 0)
non_negative_float = _bounded(float, "a number >= 0", lambda v: v >= 0)


def positive_ints(text: str) -> tuple[int, ...]:
    """A comma list of integers >= 1, e.g. '16,64,256'."""
    try:
        vals = tuple(positive_int(v) for v in text.split(",") if v.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return vals


def fractions(text: str) -> tuple[float, ...]:
    """A comma list of numbers in (0, 1], e.g. '0.2,0.5'."""
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        vals = ()
    if not vals or not all(0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1], "
                                         f"got '{text}'")
    return vals
