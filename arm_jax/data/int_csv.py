"""Integer tables from CSV files with a header: fast numpy parse, exact error locations.

Event logs and item catalogues arrive as CSV. numpy parses them in C; when it fails, a
second pass with the csv module finds the first bad value so the error names its line and
column instead of numpy's row index.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np


class CsvError(ValueError):
    """The file is not a CSV of integers with the required header columns."""


def csv_header(path: str | Path) -> list[str]:
    """The header's column names, stripped (CsvError if the file is empty)."""
    with Path(path).open(newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise CsvError("empty (expected a header line naming the columns)")
    return [h.strip() for h in header]


def read_int_csv(path: str | Path, columns: list[str] | tuple[str, ...]
                 ) -> dict[str, np.ndarray]:
    """{name: int64 [rows]} for `columns` (any order in the file, other columns ignored;
    blank lines skipped). CsvError names a missing column, or the line and column of the
    first value that is not an integer."""
    path = Path(path)
    names = csv_header(path)
    missing = [c for c in columns if c not in names]
    if missing:
        raise CsvError(f"header lacks {missing}; has {names}")
    usecols = [names.index(c) for c in columns]
    try:
        with warnings.catch_warnings():   # a header and no rows is an empty table, not news
            warnings.simplefilter("ignore", UserWarning)
            arr = np.loadtxt(path, dtype=np.int64, delimiter=",", skiprows=1,
                             usecols=usecols, ndmin=2)
    except ValueError:
        raise CsvError(_first_bad_value(path, names, usecols)) from None
    return {c: np.ascontiguousarray(arr[:, i]) for i, c in enumerate(columns)}


def _first_bad_value(path: Path, names: list[str], usecols: list[int]) -> str:
    """Where numpy's fast parse failed, said by line and column name (a slow second pass)."""
    with path.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if line == 1 or not row:
                continue
            for i in usecols:
                value = row[i].strip() if i < len(row) else None
                try:
                    int(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    got = "no value" if value is None else repr(value)
                    return f"line {line}, {names[i]}: expected an integer, got {got}"
    return "not integers"   # numpy and csv disagree on the format: say no more than that


__all__ = ["CsvError", "csv_header", "read_int_csv"]
