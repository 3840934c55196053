"""Argument checks shared across the library (what counts as a count or a size)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool (True is an int to Python) and not a whole
    float: a row count, a size, a length. A float slipped through as floats downstream
    (float offsets, `rows=320.0`) or failed far from its cause."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
