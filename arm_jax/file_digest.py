"""sha256 and size of every file under a directory, and the first file that no longer matches.

A checkpoint's bytes can change after it was saved (a bit flip, a copy cut short, a file
deleted). Its reader cannot tell: orbax restores whatever the files hold. So a save records
the digest of every file it wrote, beside its commit marker, and a load compares before it
reads. Only hashlib: the serving process checks swapped-in weights with it too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

CHUNK = 1 << 20
PARAMS_DIGEST = "params_files"   # a checkpoint's config.json key: digest_files(params/)


def digest_files(directory: str | Path) -> dict[str, list]:
    """{relative path: [size in bytes, sha256 hex]} of every file under `directory`."""
    root = Path(directory)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
            out[p.relative_to(root).as_posix()] = [p.stat().st_size, h.hexdigest()]
    return out


def first_mismatch(directory: str | Path, expected: Any) -> str | None:
    """What is wrong with the first file of `expected` (a `digest_files` result, as read
    back from JSON) under `directory`: missing, resized or changed; or that `expected` is
    not such a record. None when every file matches."""
    if not isinstance(expected, Mapping) or not all(
            isinstance(v, list) and len(v) == 2 for v in expected.values()):
        return "its file digest is not a {file: [size, sha256]} record"
    actual = digest_files(directory)
    for name, (size, sha) in expected.items():
        if name not in actual:
            return f"file {name} is missing"
        got_size, got_sha = actual[name]
        if got_size != size:
            return f"file {name} is truncated or resized ({got_size} B, expected {size} B)"
        if got_sha != sha:
            return f"file {name} is corrupted (sha256 {got_sha[:12]}.. != {str(sha)[:12]}..)"
    return None


def params_problem(checkpoint: str | Path) -> str | None:
    """What is wrong with a training checkpoint's params/ against the digest its
    config.json records (`first_mismatch`); None when it matches, or when there is no
    digest to check (a checkpoint saved before it was recorded, or no readable config:
    the config's own reader names that)."""
    d = Path(checkpoint)
    try:
        expected = json.loads((d / "config.json").read_text()).get(PARAMS_DIGEST)
    except (OSError, ValueError, AttributeError):
        return None
    return None if expected is None else first_mismatch(d / "params", expected)
