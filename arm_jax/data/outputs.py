"""Paths checked before the work that reads or fills them.

A command that reads a whole store or parses a whole table and then writes one file must
refuse an output it can never write (a directory, a path under a file) first, naming it,
instead of failing with an OSError traceback at the end. An input file that is a
directory or missing is named the same way by every reader (`check_input_file`). A file
that must never be seen half-written (a backup, an examples file, a catalogue) is written
beside its path and moved onto it at the end (`replaced_when_written`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def _file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a directory, else None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _named(path: str | Path, what: str, kind: str, error: type[Exception]) -> Path:
    """`path` as a Path; an empty or blank string (which Path reads as ".", the current
    directory) is `error` naming `what`."""
    if isinstance(path, str) and not path.strip():
        raise error(f"{what} {path!r}: names no {kind}")
    return Path(path)


def check_output_file(path: str | Path, what: str,
                      error: type[Exception] = ValueError) -> Path:
    """`path` as a Path, or `error` naming `what` and `path` if no file can be written
    there: it is empty, a directory, or an ancestor is a file (parents are created later)."""
    path = _named(path, what, "file", error)
    if path.is_dir():
        raise error(f"{what} {path}: is a directory (expected a file name)")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise error(f"{what} {path}: {blocker} is a file, not a directory")
    return path


def check_output_dir(path: str | Path, what: str,
                     error: type[Exception] = ValueError) -> Path:
    """`path` as a Path, or `error` naming `what` and `path` if no directory can be made
    there: it is empty, exists and is no directory, or an ancestor is a file."""
    path = _named(path, what, "directory", error)
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path}: exists and is not a directory")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise error(f"{what} {path}: {blocker} is a file, not a directory")
    return path


def check_input_file(path: str | Path, what: str, error: type[Exception] = ValueError,
                     missing: type[Exception] | None = None) -> Path:
    """`path` as a Path to an existing file, else `error` naming `what` and `path` for a
    directory (reading one fails with an IsADirectoryError far from the argument) and
    `missing` (default `error`) for nothing there."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path}: is a directory, not a file")
    if not path.is_file():
        raise (missing or error)(f"{what} {path}: no such file")
    return path


@contextlib.contextmanager
def replaced_when_written(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same directory: one filesystem) for the block to
    write the whole file to, moved onto `path` with os.replace when the block returns. On
    any failure, KeyboardInterrupt included, the temporary file is removed and `path` (a
    previous backup, say) is left as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["check_output_file", "check_output_dir", "check_input_file", "replaced_when_written"]
