"""Manifests: what an artifact directory holds, what each bucket costs, and file hashes.

Layout written by `arm-jax export`:

    ARTIFACTS/manifest.json            index: format, jax/jaxlib, tiers -> sha256 of each
                                       tier manifest (a chain of trust down to every file)
    ARTIFACTS/<tier>/manifest.json     config, weights signature, per bucket: input/output
                                       signature, cost and memory analysis, file names;
                                       `files`: sha256 of every other file of the tier
    ARTIFACTS/<tier>/weights/          orbax checkpoint (a flat-keyed dict of arrays)
    ARTIFACTS/<tier>/executables/      b{B}_n{N}.{platform}.xla   serialized compiled executable
    ARTIFACTS/<tier>/exported/         b{B}_n{N}.{platform}.jaxexport   jax.export (StableHLO)

Verification never deserializes anything; it only reads JSON and hashes bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from arm_jax.compile.errors import ArtifactError

FORMAT = "arm-jax-artifacts/1"
INDEX = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: Path, exclude: tuple[str, ...] = (INDEX,)) -> dict[str, str]:
    """relative path -> sha256 for every file under `root` (sorted, posix paths)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = sha256_file(p)
    return out


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an arm-jax manifest (format must be {FORMAT!r}, "
                            f"got {data.get('format') if isinstance(data, dict) else None!r})")
    return data


def verify(root: str | Path) -> list[str]:
    """Every problem with an artifact directory's files, one line each (empty: all good).

    Checks the index, each tier manifest's hash, and each file's hash; names the file.
    """
    root = Path(root)
    try:
        index = read_json(root / INDEX)
    except ArtifactError as e:
        return [str(e)]
    problems: list[str] = []
    for name, entry in sorted(index.get("tiers", {}).items()):
        tier_dir = root / name
        mpath = tier_dir / INDEX
        if not mpath.is_file():
            problems.append(f"missing file: {mpath}")
            continue
        if sha256_file(mpath) != entry.get("sha256"):
            problems.append(f"hash mismatch: {mpath} (tier manifest changed after export)")
            continue
        try:
            tier = read_json(mpath)
        except ArtifactError as e:
            problems.append(str(e))
            continue
        files: dict[str, str] = tier.get("files", {})
        for rel, digest in sorted(files.items()):
            p = tier_dir / rel
            if not p.is_file():
                problems.append(f"missing file: {p}")
            elif sha256_file(p) != digest:
                problems.append(f"hash mismatch: {p}")
        listed = set(files) | {INDEX}
        for p in sorted(tier_dir.rglob("*")):
            rel = p.relative_to(tier_dir).as_posix()
            if p.is_file() and rel not in listed:
                problems.append(f"unexpected file (not in the manifest): {p}")
    return problems


def require_verified(root: str | Path) -> None:
    """Raise ArtifactError listing every bad or missing file."""
    problems = verify(root)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"refusing to load {root}: {problems[0]}{more}")
