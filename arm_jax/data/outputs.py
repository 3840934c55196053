"""Output paths checked before the work that fills them.

A command that reads a whole store or parses a whole table and then writes one file must
refuse an output it can never write (a directory, a path under a file) first, naming it,
instead of failing with an OSError traceback at the end.
"""

from __future__ import annotations

from pathlib import Path


def _file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a directory, else None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: str | Path, what: str,
                      error: type[Exception] = ValueError) -> Path:
    """`path` as a Path, or `error` naming `what` and `path` if no file can be written
    there: it is a directory, or an ancestor is a file (parents are created later)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path}: is a directory (expected a file name)")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise error(f"{what} {path}: {blocker} is a file, not a directory")
    return path


def check_output_dir(path: str | Path, what: str,
                     error: type[Exception] = ValueError) -> Path:
    """`path` as a Path, or `error` naming `what` and `path` if no directory can be made
    there: it exists and is no directory, or an ancestor is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path}: exists and is not a directory")
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise error(f"{what} {path}: {blocker} is a file, not a directory")
    return path


__all__ = ["check_output_file", "check_output_dir"]
