"""argparse `type=` callables for counts, sizes and durations.

A bad value stops the command in argparse with one line naming the option
("argument --repeats: expected a positive integer, got '0'"), before any work starts.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
    if not math.isfinite(v) or (kind is int and v != int(v)):
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1 ('1e3' is accepted)."""
    v = _number(text, int, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(v)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    v = _number(text, int, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'")
    return int(v)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = _number(text, float, "a number > 0")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got '{text}'")
    return v


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    v = _number(text, float, "a number >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'")
    return v


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
