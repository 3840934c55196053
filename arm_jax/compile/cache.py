"""Persistent compilation cache for the export path: serialized executables on disk.

Why our own and not jax's `jax_compilation_cache_dir`: on CPU (jax 0.10.2), an
executable that jax's persistent cache hands back cannot be re-serialized: the
artifact it produces fails at run time with `NOT_FOUND: Function ... not found`
(reproduced while building this module). So export keeps a content-addressed cache of
the blobs it serialized from FRESH compiles, keyed by the lowered StableHLO text plus
everything that changes the machine code (jax/jaxlib versions, platform, device kind,
XLA_FLAGS). A hit skips the compile; the cached cost and memory analysis come along.
Every failure (unreadable entry, hash mismatch) is a miss. Never used when serving.

Directory: the `cache_dir` argument, else $ARM_JAX_COMPILATION_CACHE, else
~/.cache/arm-jax/executables.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax

from arm_jax.compile.errors import ArtifactError
from arm_jax.data.outputs import check_output_dir


def default_cache_dir() -> Path:
    env = os.environ.get("ARM_JAX_COMPILATION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "arm-jax" / "executables"


def check_cache_dir(directory: str | Path, what: str = "executable cache") -> Path:
    """`directory` (~ expanded), or ArtifactError naming `what` and it when no cache
    directory can be made there (a file, or a path under one). Checked before an export
    creates its --out: a file there was a FileExistsError traceback at the first compile,
    leaving an empty --out behind."""
    return check_output_dir(Path(directory).expanduser(), what, ArtifactError)


def cache_key(lowered_text: str, device: Any) -> str:
    """sha256 over the program and everything that changes its compiled code."""
    import jaxlib

    h = hashlib.sha256()
    for part in (jax.__version__, getattr(jaxlib, "__version__", "?"), device.platform,
                 device.device_kind, os.environ.get("XLA_FLAGS", ""), lowered_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class ExecutableCache:
    """key -> (serialized executable, metadata dict); `directory=None` disables it."""

    def __init__(self, directory: str | Path | None):
        self.dir = check_cache_dir(directory).resolve() if directory is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        if self.dir is None:
            return None
        blob_p, meta_p = self.dir / f"{key}.xla", self.dir / f"{key}.json"
        try:
            meta = json.loads(meta_p.read_text())
            blob = blob_p.read_bytes()
            if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
                raise ValueError("hash mismatch")
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return blob, meta

    def put(self, key: str, blob: bytes, meta: dict[str, Any]) -> None:
        if self.dir is None:
            return
        meta = {**meta, "sha256": hashlib.sha256(blob).hexdigest()}
        for path, data in ((self.dir / f"{key}.xla", blob),
                           (self.dir / f"{key}.json", json.dumps(meta).encode())):
            tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
