"""Load exported tiers: verify every hash, deserialize executables, score without compiling.

`load(ARTIFACTS)` checks the index and every file's sha256 BEFORE deserializing anything
(serialized executables are trusted input only), refuses a jax/jaxlib or platform
mismatch, restores each tier's weights (orbax, onto one device) and deserializes one
executable per bucket. Nothing here imports the model or training code, and nothing
traces or compiles: `score` pads a batch to its bucket in numpy and calls a loaded
executable. (`portable=True` is the escape hatch for another jax version or platform:
it compiles the `jax.export` modules at load time, still never per request.)
"""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np

from arm_jax.compile import manifest as mf
from arm_jax.compile import weights as wt
from arm_jax.compile.buckets import Bucket, pad_batch, select_bucket
from arm_jax.compile.errors import ArtifactError, BucketError
from arm_jax.config import ConfigError, TierConfig, tier_from_dict
from arm_jax.file_digest import params_problem

__all__ = ["ArtifactError", "BucketError", "Artifacts", "LoadedTier", "ScoreResult", "load"]


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """probs [b, c, T]; top_indices / top_scores [b, K] (K = min(top_k, N) over the padded
    bucket; a slot no real candidate fills holds index -1 and score -inf, after the real
    ones); bucket = (B, N) actually run. Same fields as serving.executor.ScoreResult."""

    probs: np.ndarray
    top_indices: np.ndarray
    top_scores: np.ndarray
    bucket: tuple[int, int]


class LoadedTier:
    """One tier: executables keyed by bucket plus the weights they take as an argument."""

    def __init__(self, name: str, config: TierConfig, manifest: dict[str, Any],
                 executables: dict[Bucket, Any], weights: dict[str, jax.Array], device: Any):
        self.name = name
        self.config = config
        self.manifest = manifest
        self._executables = executables
        self._weights = weights          # replaced by one reference assignment on swap
        self._device = device
        self._by_bucket = {(e["batch"], e["candidates"]): e for e in manifest["buckets"]}
        self._swap_lock = threading.Lock()

    @property
    def buckets(self) -> list[Bucket]:
        """The compiled (B, N) buckets, sorted."""
        return sorted(self._executables)

    @property
    def history_len(self) -> int:
        return self.config.model.history_len

    def select_bucket(self, b: int, n: int) -> Bucket:
        """The smallest compiled bucket holding b requests x n candidates; BucketError
        naming the largest one when none does."""
        return select_bucket(self.buckets, b, n)

    def score(self, batch: Any) -> ScoreResult:
        """Pad to the nearest bucket, run its executable, slice back to [b, c, ...]."""
        b, c = int(batch.num_requests), int(batch.num_candidates)
        bucket = self.select_bucket(b, c)
        inputs = self._check(pad_batch(batch, bucket, self.history_len), bucket)
        weights = self._weights            # read once: a batch never mixes two versions
        probs, top_i, top_s = self._executables[bucket](weights, inputs)
        top_i, top_s = unfilled_slots(np.asarray(top_i)[:b], np.asarray(top_s)[:b], c)
        return ScoreResult(np.asarray(probs)[:b, :c], top_i, top_s, bucket)

    def _check(self, inputs: dict[str, np.ndarray], bucket: Bucket) -> dict[str, np.ndarray]:
        """Shapes must match the compiled signature (a wrong feature width is named here,
        not deep inside XLA); dtypes are cast to it when no value changes (every field is
        checked before any is cast)."""
        sig = self._by_bucket[bucket]["inputs"]["batch"]
        for k, spec in sig.items():
            a = inputs[k]
            if list(a.shape) != list(spec["shape"]):
                raise ArtifactError(f"{k}: shape {list(a.shape)} does not match tier "
                                    f"{self.name!r} bucket {bucket}: {spec['shape']}")
        return {k: _cast(k, inputs[k], np.dtype(spec["dtype"])) for k, spec in sig.items()}

    def warmup(self) -> None:
        """Run every bucket once on empty (fully masked) input: no compile, just first-touch."""
        for bucket, exe in self._executables.items():
            sig = self._by_bucket[bucket]["inputs"]["batch"]
            zeros = {k: np.zeros(v["shape"], np.dtype(v["dtype"])) for k, v in sig.items()}
            jax.block_until_ready(exe(self._weights, zeros))

    def swap_weights(self, directory: str | Path) -> None:
        """Swap in weights of the same signature (a training checkpoint or an orbax tree).

        A training checkpoint's config.json must match the tier's `model` and `features`
        (same shapes can still mean another activation or head split, which the
        executables cannot change); shapes and dtypes are checked before anything is
        allocated. On any error the old weights keep serving. The swap is one reference
        assignment; the old buffers are freed once the last in-flight batch that read
        them returns.
        """
        check_trained_config(directory, self.config)
        new = wt.restore(directory, self.manifest["weights"]["params"], self._device)
        jax.block_until_ready(list(new.values()))
        with self._swap_lock:
            self._weights = new

    def cost_flops(self, bucket: Bucket) -> float:
        """XLA's FLOPs for one call of `bucket` (all B x N slots)."""
        e = self._by_bucket.get(tuple(bucket))
        if e is None:
            raise BucketError(f"bucket {tuple(bucket)} not compiled; have {self.buckets}")
        return float(e["cost"]["flops"])


# dtype kinds each compiled kind takes (integers become floats; nothing becomes an integer
# or a bool that was not one: a float id would be truncated)
_CASTABLE_KINDS = {"i": "iu", "u": "iu", "f": "iuf", "b": "b"}


def _cast(name: str, a: np.ndarray, want: np.dtype) -> np.ndarray:
    """`a` as the compiled dtype `want`, or ArtifactError naming the field when the cast
    would change a value: another kind (float ids truncated) or out of range (an int64 id
    past int32 wraps; a float64 past float32 becomes inf)."""
    if a.dtype == want or a.size == 0:
        return a.astype(want, copy=False)
    if a.dtype.kind not in _CASTABLE_KINDS.get(want.kind, want.kind) and not (
            want.kind == "f" and jax.numpy.issubdtype(a.dtype, jax.numpy.floating)):  # bfloat16
        raise ArtifactError(f"{name}: dtype {a.dtype} cannot be cast to the compiled {want} "
                            "without changing values (ids must be integers)")
    if want.kind in "iu" and not np.can_cast(a.dtype, want):
        lo, hi = np.iinfo(want).min, np.iinfo(want).max
        for bad in (a.min(), a.max()):
            if bad < lo or bad > hi:
                raise ArtifactError(f"{name}: values must be in [{lo}, {hi}] (the compiled "
                                    f"{want}), got {int(bad)}")
    with np.errstate(over="ignore"):     # an overflow is named below, not warned about
        out = a.astype(want)
    if want.kind == "f" and a.dtype.kind == "f" and not np.can_cast(a.dtype, want):
        over = np.isinf(out) & np.isfinite(a)
        if over.any():
            where = np.argwhere(over)[0].tolist()
            raise ArtifactError(f"{name}: value {a[tuple(where)]} at {where} overflows the "
                                f"compiled {want}")
    return out


def unfilled_slots(top_i: np.ndarray, top_s: np.ndarray, c: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Top-K slots that hold no real candidate (score -inf or NaN, or an index past the
    caller's `c` candidates) -> index -1, score -inf: the package's top-K rule. Executables
    exported before that rule returned the padded candidates' own indices."""
    bad = ~np.isfinite(top_s) | (top_i < 0) | (top_i >= c)
    return np.where(bad, -1, top_i).astype(np.int32), np.where(bad, -np.inf, top_s
                                                                ).astype(top_s.dtype)


# Config fields that change neither the parameters nor what the compiled function computes
# with them: a checkpoint may differ from the artifact in these.
_RELOAD_IGNORED = frozenset({"model.dropout", "model.kernel_impl"})


def _config_beside(directory: str | Path) -> Path | None:
    """config.json of a training checkpoint `directory` (or of the checkpoint whose params/
    `directory` is); None for a bare orbax tree."""
    d = Path(directory)
    for cand in (d / "config.json", d.parent / "config.json" if d.name == "params" else None):
        if cand is not None and cand.is_file():
            return cand
    return None


def _exported_tier_beside(directory: str | Path) -> Path | None:
    """The tier manifest of an exported tier, when `directory` is that tier's directory or
    its weights/; None otherwise."""
    d = Path(directory)
    for tier_dir in (d, d.parent if d.name == "weights" else None):
        if (tier_dir is not None and (tier_dir / mf.INDEX).is_file()
                and (tier_dir / "weights").is_dir()):
            return tier_dir / mf.INDEX
    return None


def _check_exported_weights(manifest_path: Path) -> TierConfig:
    """The config an exported tier's weights were exported with, after checking every
    weights/ file against the tier manifest's sha256 (what `inspect --verify` checks)."""
    m = mf.read_json(manifest_path)
    try:
        kind, config, files = m["kind"], tier_from_dict(m["config"]), dict(m["files"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(f"{manifest_path}: unreadable tier manifest ({e})") from None
    if kind != "ranker":
        raise ArtifactError(f"{manifest_path}: kind {kind!r}, the artifact serves a 'ranker'")
    problems = mf.file_problems(manifest_path.parent, files, under="weights")
    if problems:
        raise ArtifactError(f"{problems[0]}; refusing these weights")
    return config


def check_trained_config(directory: str | Path, compiled: TierConfig) -> None:
    """ArtifactError naming the first `model` / `features` field where the checkpoint's
    config.json differs from the config the executables were compiled with (weights of
    equal shapes can still be trained for another activation, head split or hashing).

    The weights of another export (its tier directory or weights/) are checked the same
    way, against the config in their tier manifest, after their files' hashes."""
    exported = _exported_tier_beside(directory)
    if exported is not None:
        _compare_configs(exported, _check_exported_weights(exported), compiled, "exported")
        return
    path = _config_beside(directory)
    if path is None:
        if (Path(directory) / "params").is_dir():   # a training checkpoint without its config
            raise ArtifactError(f"{directory}: config.json missing (a save that never "
                                "finished?); refusing weights of unknown config")
        return
    try:
        raw = json.loads(path.read_text())
        kind, trained = raw["kind"], tier_from_dict(raw["tier"])
    except (OSError, ValueError, KeyError, TypeError) as e:  # ConfigError is a ValueError
        raise ArtifactError(f"{path}: unreadable checkpoint config ({e})") from None
    if kind != "ranker":
        raise ArtifactError(f"{path}: checkpoint kind {kind!r}, the artifact serves a 'ranker'")
    problem = params_problem(path.parent)     # before orbax reads a byte of it
    if problem is not None:
        raise ArtifactError(f"{path.parent / 'params'}: {problem} since it was saved; "
                            "refusing these weights")
    _compare_configs(path, trained, compiled, "checkpoint trained")


def _compare_configs(path: Path, given: TierConfig, compiled: TierConfig, how: str) -> None:
    """ArtifactError naming the first `model` / `features` field where they differ."""
    want, got = compiled.to_dict(), given.to_dict()
    for section in ("model", "features"):
        for key, value in want[section].items():
            name = f"{section}.{key}"
            if name not in _RELOAD_IGNORED and got[section].get(key) != value:
                raise ArtifactError(
                    f"{path}: {name}: artifact compiled with {value!r}, {how} "
                    f"with {got[section].get(key)!r}")


@dataclasses.dataclass
class Artifacts:
    root: Path
    index: dict[str, Any]
    tiers: dict[str, LoadedTier]


def load(path: str | Path, *, tiers: list[str] | None = None, portable: bool = False,
         device: Any | None = None) -> Artifacts:
    """Verify and load an artifact directory (see manifest.py for the layout).

    `tiers` restricts loading to some tiers. Raises ArtifactError naming the file on
    any hash mismatch or missing file, and on a jax/jaxlib/platform mismatch.
    """
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"artifacts: {root} is not a directory")
    mf.require_verified(root)
    index = mf.read_index(root / mf.INDEX)
    names = list(index["tiers"])
    if tiers is not None:
        unknown = [t for t in tiers if t not in names]
        if unknown:
            raise ArtifactError(f"artifacts {root}: no tier {unknown[0]!r}; have {names}")
        names = list(tiers)
    if not names:
        raise ArtifactError(f"artifacts {root}: the index lists no tiers")
    device = device or jax.local_devices()[0]
    loaded = {n: _load_tier(root / n, n, portable, device, index["tiers"][n]["sha256"])
              for n in names}
    return Artifacts(root, index, loaded)


def _load_tier(tier_dir: Path, name: str, portable: bool, device: Any,
               manifest_sha256: str) -> LoadedTier:
    if mf.sha256_file(tier_dir / mf.INDEX) != manifest_sha256:
        raise ArtifactError(f"hash mismatch: {tier_dir / mf.INDEX}")
    m = mf.read_json(tier_dir / mf.INDEX)
    try:
        config = tier_from_dict(m["config"])
    except (ConfigError, KeyError) as e:
        raise ArtifactError(f"{tier_dir / mf.INDEX}: bad config ({e})") from None
    platform = device.platform
    if not portable:
        _check_runtime(m, tier_dir, platform)
    # orbax restores in C++ threads (tensorstore); overlap it with deserialization
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(wt.restore, tier_dir / m["weights"]["dir"],
                              m["weights"]["params"], device)
        executables = {}
        try:
            for e in m["buckets"]:
                bucket = (int(e["batch"]), int(e["candidates"]))
                if portable:
                    executables[bucket] = _compile_exported(tier_dir, e, platform,
                                                            m["weights"]["params"], m["files"])
                else:
                    executables[bucket] = _deserialize(tier_dir, e, platform, device,
                                                       sorted(m["weights"]["params"]),
                                                       m["files"])
        finally:
            weights = pending.result()
    return LoadedTier(name, config, m, executables, weights, device)


def _check_runtime(m: dict[str, Any], tier_dir: Path, platform: str) -> None:
    import jaxlib

    here = (jax.__version__, getattr(jaxlib, "__version__", "unknown"))
    built = (m.get("jax"), m.get("jaxlib"))
    if here != built:
        raise ArtifactError(
            f"{tier_dir}: executables were built with jax {built[0]} / jaxlib {built[1]}, "
            f"this process runs jax {here[0]} / jaxlib {here[1]}; re-export, or load with "
            "portable=True (compiles the jax.export modules at load)")
    if m.get("platform") != platform:
        raise ArtifactError(f"{tier_dir}: executables are for platform {m.get('platform')!r}, "
                            f"this device is {platform!r}")


def _read_verified(tier_dir: Path, rel: str, files: dict[str, str]) -> bytes:
    """The file's bytes, hashed again as read: what is deserialized is what was verified
    (no window between the check and the read)."""
    import hashlib

    path = tier_dir / rel
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    data = path.read_bytes()
    if rel not in files or hashlib.sha256(data).hexdigest() != files[rel]:
        raise ArtifactError(f"hash mismatch: {path}")
    return data


def _deserialize(tier_dir: Path, e: dict[str, Any], platform: str, device: Any,
                 weight_keys: list[str], files: dict[str, str]) -> Any:
    from jax.experimental.serialize_executable import deserialize_and_load

    rel = e["executable"].get(platform)
    if rel is None:
        raise ArtifactError(f"{tier_dir}: bucket b{e['batch']}_n{e['candidates']} has no "
                            f"executable for {platform!r}")
    blob = _read_verified(tier_dir, rel, files)
    weights_tree = {k: 0 for k in weight_keys}
    batch_tree = {k: 0 for k in e["inputs"]["batch"]}
    in_tree = jax.tree_util.tree_structure(((weights_tree, batch_tree), {}))
    out_tree = jax.tree_util.tree_structure((0, 0, 0))
    try:
        return deserialize_and_load(blob, in_tree, out_tree, backend=device.client,
                                    execution_devices=[device])
    except Exception as ex:  # noqa: BLE001 - corrupt or foreign executable
        raise ArtifactError(f"{tier_dir / rel}: cannot deserialize ({type(ex).__name__}: "
                            f"{str(ex).splitlines()[0] if str(ex) else ''})") from None


def _compile_exported(tier_dir: Path, e: dict[str, Any], platform: str,
                      wspec: dict[str, Any], files: dict[str, str]) -> Any:
    rel = e["exported"].get(platform)
    if rel is None:
        raise ArtifactError(f"{tier_dir}: bucket b{e['batch']}_n{e['candidates']} has no "
                            f"jax.export module for {platform!r} (have {sorted(e['exported'])})")
    exp = jax.export.deserialize(bytearray(_read_verified(tier_dir, rel, files)))
    batch = {k: jax.ShapeDtypeStruct(tuple(v["shape"]), np.dtype(v["dtype"]))
             for k, v in e["inputs"]["batch"].items()}
    w = {k: jax.ShapeDtypeStruct(tuple(v["shape"]), np.dtype(v["dtype"]))
         for k, v in wspec.items()}
    return jax.jit(exp.call).lower(w, batch).compile()
