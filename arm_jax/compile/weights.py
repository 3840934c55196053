"""Weights as a flat dict of arrays keyed by parameter path ('wukong/0/fm/kernel').

The executables take this dict as an argument (weights are never baked-in constants),
so swapping weights is restoring a new dict of the same signature. Reads both the
artifact's own `weights/` checkpoint and a training checkpoint's `params/` (an nnx
state saved by orbax), without importing any model code: the tree is read from orbax
metadata, checked against the expected signature, then restored onto one device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from arm_jax.compile.errors import ArtifactError

Spec = dict[str, dict[str, Any]]  # key -> {"shape": [...], "dtype": "float32"}


def flat_key(path: tuple) -> str:
    """'a/b/0/kernel' from a jax key path; a trailing nnx 'value' level is dropped."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    if len(parts) > 1 and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


def flatten(tree: Any) -> dict[str, Any]:
    """pytree (nnx State, nested dict) -> {flat_key: leaf}; refuses duplicate keys."""
    out: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = flat_key(path)
        if key in out:
            raise ArtifactError(f"weights: two parameters map to the key {key!r}")
        out[key] = leaf
    return out


def spec_of(flat: dict[str, Any]) -> Spec:
    """{path: {shape, dtype}} of flat weights: what a swap must match."""
    return {k: {"shape": [int(s) for s in v.shape], "dtype": str(np.dtype(v.dtype))}
            for k, v in sorted(flat.items())}


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, v in flat.items():
        node = root
        *head, last = key.split("/")
        for p in head:
            node = node.setdefault(p, {})
        node[last] = v
    return root


def save(directory: Path, flat: dict[str, Any]) -> None:
    """Write the flat dict as an orbax checkpoint (nested by key path)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(Path(directory).resolve(), _nest(flat), force=True)


def params_dir(directory: str | Path) -> Path:
    """A training checkpoint's `params/`, an exported tier's `weights/`, or the directory
    itself if it is an orbax tree."""
    d = Path(directory).resolve()
    if (d / "params").is_dir():
        return d / "params"
    if (d / "weights").is_dir() and (d / "manifest.json").is_file():
        return d / "weights"
    if (d / "_CHECKPOINT_METADATA").exists() or (d / "_METADATA").exists():
        return d
    raise ArtifactError(f"{d}: not a weights checkpoint (no params/ and no orbax metadata)")


def check_spec(got: Spec, want: Spec, where: str,
               expected: str = "the executables were compiled for") -> None:
    """Same keys, shapes and dtypes, or ArtifactError naming the first difference."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise ArtifactError(f"{where}: parameters differ from what {expected}: "
                            f"missing {missing[:3]}, unexpected {extra[:3]}")
    for k in sorted(want):
        if list(got[k]["shape"]) != list(want[k]["shape"]) or got[k]["dtype"] != want[k]["dtype"]:
            raise ArtifactError(
                f"{where}: parameter {k!r} has shape {list(got[k]['shape'])} {got[k]['dtype']}, "
                f"{expected} {list(want[k]['shape'])} {want[k]['dtype']}")


def stored_tree(ckptr: Any, path: Path) -> Any:
    """The pytree of array metadata (shape, dtype) of an orbax checkpoint, nothing read."""
    meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


def restore(directory: str | Path, want: Spec, device: Any | None = None) -> dict[str, jax.Array]:
    """Restore weights onto `device` after checking their signature against `want`.

    Raises ArtifactError (and allocates nothing) when keys, shapes or dtypes differ.
    """
    import orbax.checkpoint as ocp

    d = params_dir(directory)
    device = device or jax.local_devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = stored_tree(ckptr, d)
            check_spec(spec_of(flatten(tree)), want, str(d))
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)
            restored = ckptr.restore(d, target)
    except ArtifactError:
        raise
    except Exception as e:  # orbax raises many types; surface one clear error
        raise ArtifactError(f"{d}: cannot restore weights ({type(e).__name__}: {e})") from None
    flat = flatten(restored)
    check_finite(flat, str(d))
    return flat


def first_non_finite(weights: dict[str, Any]) -> tuple[str, int, int] | None:
    """(name, non-finite count, size) of the first floating-point weight holding a NaN or
    an infinity, or None. On the host, one weight at a time (numpy: a jnp reduction would
    compile, and a loaded artifact compiles nothing)."""
    import jax.numpy as jnp

    for name, w in weights.items():
        if jnp.issubdtype(w.dtype, jnp.floating):      # bfloat16 and float8 too
            bad = int(w.size - np.count_nonzero(np.isfinite(np.asarray(w, np.float32))))
            if bad:
                return name, bad, int(w.size)
    return None


def check_finite(weights: dict[str, Any], where: str) -> None:
    """Raise ArtifactError naming the first weight that holds a NaN or an infinity: such
    weights (a training that diverged) score NaN, which no response can carry, so they are
    refused before they serve (a swap keeps the old weights)."""
    found = first_non_finite(weights)
    if found is not None:
        name, bad, size = found
        raise ArtifactError(f"{where}: weight {name} holds {bad} non-finite values "
                            f"(NaN or inf) of {size}: a diverged training? refusing it")
