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


def tier_name_problem(name: Any) -> str | None:
    """Why `name` cannot name a tier directory under an artifact root, or None: it must be
    a non-empty string without path separators, not hidden (export's own `.partial` and
    `.old` directories are), and not a name export writes beside the tiers."""
    if not isinstance(name, str) or not name:
        return f"bad tier name {name!r}: must be a non-empty string"
    if "/" in name or "\\" in name or name.startswith("."):
        return f"bad tier name {name!r}: no '/', no leading '.'"
    if name == INDEX or name.endswith(".tmp"):
        return f"bad tier name {name!r}: reserved for the index ({INDEX}, *.tmp)"
    return None


def read_index(path: Path) -> dict[str, Any]:
    """The top-level index at `path`, checked: an arm-jax manifest whose `tiers` maps valid
    tier names to objects with a `sha256` string. A tier manifest (what a tier directory
    holds) is refused naming the directory to use instead."""
    data = read_json(path)
    tiers = data.get("tiers")
    if "buckets" in data and tiers is None:
        raise ArtifactError(f"{path}: a tier manifest, not an artifact index; use the "
                            f"artifact directory above it, {path.parent.parent}")
    if not isinstance(tiers, dict):
        raise ArtifactError(f"{path}: field 'tiers' must be an object (tier name -> "
                            f"{{manifest, sha256}}), got {type(tiers).__name__}")
    for name, entry in tiers.items():
        problem = tier_name_problem(name)
        if problem is not None:
            raise ArtifactError(f"{path}: tiers: {problem}")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ArtifactError(f"{path}: tiers.{name}: expected an object with a 'sha256' "
                                f"string, got {str(entry)[:80]!r}")
    return data


def verify(root: str | Path) -> list[str]:
    """Every problem with an artifact directory's files, one line each (empty: all good).

    Checks the index, each tier manifest's hash, and each file's hash; names the file.
    """
    root = Path(root)
    try:
        index = read_index(root / INDEX)
    except ArtifactError as e:
        return [str(e)]
    if not index["tiers"]:
        return [f"{root / INDEX}: the index lists no tiers"]
    problems: list[str] = []
    for name, entry in sorted(index["tiers"].items()):
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
        files = tier.get("files", {})
        if not isinstance(files, dict):
            problems.append(f"{mpath}: field 'files' must be an object (path -> sha256)")
            continue
        problems += file_problems(tier_dir, files)
    return problems


def file_problems(tier_dir: Path, files: dict[str, str], under: str = "") -> list[str]:
    """Files of `tier_dir` (only those under the subdirectory `under`, if given) that are
    missing, changed or not listed in `files` (a tier manifest's path -> sha256)."""
    prefix = f"{under}/" if under else ""
    problems = []
    listed = {rel: digest for rel, digest in files.items() if rel.startswith(prefix)}
    for rel, digest in sorted(listed.items()):
        p = tier_dir / rel
        if not p.is_file():
            problems.append(f"missing file: {p}")
        elif sha256_file(p) != digest:
            problems.append(f"hash mismatch: {p}")
    for p in sorted((tier_dir / under).rglob("*")):
        rel = p.relative_to(tier_dir).as_posix()
        if p.is_file() and rel not in listed and rel != INDEX:
            problems.append(f"unexpected file (not in the manifest): {p}")
    return problems


def require_verified(root: str | Path) -> None:
    """Raise ArtifactError listing every bad or missing file."""
    problems = verify(root)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"refusing to load {root}: {problems[0]}{more}")
