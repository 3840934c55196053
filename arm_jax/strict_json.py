"""Undefined figures (an AUC over one class, a t statistic with no spread): null in JSON
that every parser reads, "-" in printed tables. Python's `json` writes them as bare `NaN`,
which strict parsers (JavaScript's JSON.parse, Go's encoding/json, Rust's serde_json) refuse."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def finite_or_null(x: Any) -> Any:
    """`x` with every non-finite float (Python or numpy) inside dicts, lists and tuples
    replaced by None, and numpy scalars as the Python numbers json writes (a count summed
    with numpy is an np.int64, which json refuses)."""
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def dumps(x: Any, **kwargs: Any) -> str:
    """`json.dumps` of `finite_or_null(x)`, refusing any non-finite value left over."""
    return json.dumps(finite_or_null(x), allow_nan=False, **kwargs)


def fixed(x: float | None, digits: int = 4) -> str:
    """`x` to `digits` places; "-" where undefined (None, as `finite_or_null` writes it, NaN
    or an infinity): the table's counterpart of the JSON's null."""
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"
