"""Integer tables from CSV files with a header: fast numpy parse, exact error locations.

Event logs and item catalogues arrive as CSV. numpy parses them in C; when it fails (quoted
fields, a bad value, a row whose width is not the header's, or a column that is not
integers), a second pass with the csv module parses the file or finds the first bad row,
so the error names its line (and column) instead of numpy's row index. Every row must have
as many fields as the header: one with more or fewer is refused, never read shifted.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np


ENCODING = "utf-8-sig"      # utf-8, minus the byte order mark spreadsheets write
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


class CsvError(ValueError):
    """The file is not a CSV of integers with the required header columns."""


def _not_utf8(path: Path) -> CsvError:
    """CsvError naming the first line of `path` that is not UTF-8 text, and the byte."""
    with path.open("rb") as f:
        for line, raw in enumerate(f, 1):   # b"\n" never occurs inside a UTF-8 character
            try:
                raw.decode(ENCODING if line == 1 else "utf-8")
            except UnicodeDecodeError as e:
                return CsvError(f"line {line}: not UTF-8 text (byte {raw[e.start]:#04x} at "
                                f"byte {e.start + 1} of the line); save the file as UTF-8")
    return CsvError("not UTF-8 text; save the file as UTF-8")


def csv_header(path: str | Path) -> list[str]:
    """The header's column names, stripped (CsvError if the file is empty or not UTF-8).
    A UTF-8 byte order mark (spreadsheet exports) is not part of the first name."""
    path = Path(path)
    try:
        with path.open(newline="", encoding=ENCODING) as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if not header:
        raise CsvError("empty (expected a header line naming the columns)")
    return [h.strip() for h in header]


def read_int_csv(path: str | Path, columns: list[str] | tuple[str, ...]
                 ) -> dict[str, np.ndarray]:
    """{name: int64 [rows]} for `columns` (any order in the file, other columns ignored;
    blank lines skipped; quoted fields allowed). CsvError names a missing column, the first
    line whose number of fields is not the header's, the line and column of the first
    value that is not an integer or is out of the int64 range, or the first line that is
    not UTF-8 text."""
    path = Path(path)
    try:
        return _read_int_csv(path, columns)
    except UnicodeDecodeError:       # a ValueError: numpy's parse falls back to _read_slow
        raise _not_utf8(path) from None


def _read_int_csv(path: Path, columns: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    names = csv_header(path)
    missing = [c for c in columns if c not in names]
    if missing:
        raise CsvError(f"header lacks {missing}; has {names}")
    usecols = [names.index(c) for c in columns]
    try:
        arr = _read_fast(path, names)[:, usecols]
    except ValueError:    # quotes, a bad value, a row of another width, a non-integer column
        arr = _read_slow(path, names, usecols)
    return {c: np.ascontiguousarray(arr[:, i]) for i, c in enumerate(columns)}


def _read_fast(path: Path, names: list[str]) -> np.ndarray:
    """int64 [rows, len(names)] by numpy, every column parsed: numpy refuses rows of
    differing widths itself, and a width that is not the header's is a ValueError here
    (`usecols` would drop extra fields silently, shifting a row's columns). A file with a
    column that is not integers (a title, say) fails over to `_read_slow`."""
    with warnings.catch_warnings():   # a header and no rows is an empty table, not news
        warnings.simplefilter("ignore", UserWarning)
        arr = np.loadtxt(path, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2,
                         encoding=ENCODING)
    if arr.shape[1] != len(names):
        raise ValueError(f"{arr.shape[1]} columns, the header has {len(names)}")
    return arr


def _read_slow(path: Path, names: list[str], usecols: list[int]) -> np.ndarray:
    """int64 [rows, len(usecols)] by the csv module (quoted fields); CsvError names the
    first line whose number of fields is not the header's, or the line and column of the
    first bad value. Runs only when numpy's fast parse fails."""
    rows: list[list[int]] = []
    with path.open(newline="", encoding=ENCODING) as f:
        reader = csv.reader(f)
        next(reader, None)
        for row in reader:
            if not row or not any(v.strip() for v in row):
                continue
            _check_width(row, len(names), reader.line_num)
            rows.append([_int_value(row, i, names[i], reader.line_num) for i in usecols])
    return np.array(rows, np.int64).reshape(len(rows), len(usecols))


def _check_width(row: list[str], width: int, line: int) -> None:
    """CsvError naming the line unless `row` has `width` fields (the header's): a value
    with a thousands separator (1,700,000,000) or a missing field would otherwise shift
    the columns after it."""
    if len(row) != width:
        hint = " (a comma inside a value must be quoted)" if len(row) > width else ""
        raise CsvError(f"line {line}: {len(row)} fields, the header has {width}{hint}")


def _int_value(row: list[str], i: int, name: str, line: int) -> int:
    """row[i] as an int64, or CsvError naming the line, the column and what is wrong."""
    value = row[i].strip() if i < len(row) else None
    try:
        v = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        got = "no value" if value is None else repr(value)
        raise CsvError(f"line {line}, {name}: expected an integer, got {got}") from None
    if not INT64_MIN <= v <= INT64_MAX:
        raise CsvError(f"line {line}, {name}: {v} is out of the int64 range "
                       f"[-2^63, 2^63 - 1]")
    return v


__all__ = ["CsvError", "csv_header", "read_int_csv"]
