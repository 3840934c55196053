"""Export tiers ahead of time: one compiled executable per (batch, candidate) bucket.

For each tier (a training checkpoint) and each bucket (B, N) of its serving config:
  * lower and compile `score(weights, batch) -> (probs, top_indices, top_scores)` with the
    weights as ARGUMENTS (a flat dict of arrays), serialize the executable;
  * export the same function with `jax.export` once per platform (cpu, cuda, ...):
    portable StableHLO, one file per platform because Pallas calls may be single-platform;
  * record XLA's cost analysis (FLOPs, bytes accessed) and memory analysis.
The weights are written once per tier as an orbax checkpoint, then every file is hashed
into the tier manifest, and the tier manifest's hash into the index (see manifest.py).

This module imports the model; the loading side (artifacts.py) never does.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.compile import manifest as mf
from arm_jax.compile import weights as wt
from arm_jax.compile.buckets import BATCH_FIELDS, Bucket, batch_signature, bucket_grid
from arm_jax.compile.cache import ExecutableCache, cache_key, default_cache_dir
from arm_jax.compile.errors import ArtifactError
from arm_jax.data.outputs import check_output_dir

DEFAULT_TOP_K = 16
# Pallas kernels lower to these custom calls; jax.export refuses them by default because
# their ABI is only stable within one jax version. Allowed here and recorded in the
# manifest: a module that uses one must be run by the jax version that exported it.
_KERNEL_TARGETS = ("__gpu$xla.gpu.triton", "mosaic_gpu", "tpu_custom_call")
_KERNEL_CALLS = [jax.export.DisabledSafetyCheck.custom_call(t) for t in _KERNEL_TARGETS]
_USE_DEFAULT = object()
# jax's built-in platforms. jax.export takes any name: a typo ('cdua') wrote a module that
# no device ever loads, and the export still succeeded.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def check_platforms(platforms: Sequence[str], what: str = "platforms") -> tuple[str, ...]:
    """`platforms` as a tuple, or ArtifactError naming `what`, the unknown names and the
    known ones; run before any export work."""
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise ArtifactError(f"{what}: unknown platform{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))} (known: {', '.join(PLATFORMS)})")
    return tuple(platforms)


def scoring_function(graphdef: Any, params: Any, top_k: int) -> tuple[Callable, dict[str, Any]]:
    """-> (score(weights, batch) -> (probs [B,N,T], top_indices [B,K], top_scores [B,K]),
    flat weights). `batch` is a dict of the RequestBatch fields.

    The model is exactly `arm_jax.train.step.make_predict`; top-K ranks the first task's
    probability, K = min(top_k, N). As in `pallas_kernels.topk`, a slot no real candidate
    fills (padded or masked candidates, NaN scores) holds index -1 and score -inf.
    """
    from arm_jax.batch import RequestBatch
    from arm_jax.train.step import make_predict

    predict = make_predict(graphdef)
    flat = wt.flatten(params)
    paths = [wt.flat_key(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    treedef = jax.tree_util.tree_structure(params)

    def score(weights: dict[str, jax.Array], batch: dict[str, jax.Array]):
        p = jax.tree_util.tree_unflatten(treedef, [weights[k] for k in paths])
        rb = RequestBatch(**{f: batch[f] for f in BATCH_FIELDS})
        probs_bct = predict(p, rb)
        p_bc = probs_bct[..., 0]
        key_bc = jnp.where(rb.cand_mask & ~jnp.isnan(p_bc), p_bc, -jnp.inf)
        top_scores, top_idx = jax.lax.top_k(key_bc, min(top_k, key_bc.shape[1]))
        top_idx = jnp.where(jnp.isneginf(top_scores), -1, top_idx)
        return probs_bct, top_idx.astype(jnp.int32), top_scores

    return score, flat


def _specs(sig: Mapping[str, Mapping[str, Any]]) -> dict[str, jax.ShapeDtypeStruct]:
    return {k: jax.ShapeDtypeStruct(tuple(v["shape"]), jnp.dtype(v["dtype"]))
            for k, v in sig.items()}


def _cost(compiled: Any) -> dict[str, float]:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    ca = dict(ca or {})
    return {"flops": float(ca.get("flops", float("nan"))),
            "bytes_accessed": float(ca.get("bytes accessed", float("nan"))),
            "transcendentals": float(ca.get("transcendentals", 0.0))}


def _memory(compiled: Any) -> dict[str, int]:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0))
           for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def _compile(lowered: Any, cache: ExecutableCache | None
             ) -> tuple[bytes, dict[str, float], dict[str, int], float, bool]:
    """-> (serialized executable, cost, memory, compile seconds, cache hit).

    jax's own persistent cache is switched off around the compile: an executable it
    returns cannot be re-serialized on CPU (see cache.py).
    """
    from jax.experimental import serialize_executable

    use = cache is not None and cache.dir is not None
    key = cache_key(lowered.as_text(), jax.local_devices()[0]) if use else ""
    got = cache.get(key) if use else None
    if got is not None:
        blob, meta = got
        return blob, meta["cost"], meta["memory"], 0.0, True
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        t0 = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - t0
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
    blob, _, _ = serialize_executable.serialize(compiled)
    cost, memory = _cost(compiled), _memory(compiled)
    if use:
        cache.put(key, blob, {"cost": cost, "memory": memory, "compile_s": compile_s})
    return blob, cost, memory, compile_s, False


def bucket_stem(bucket: Bucket) -> str:
    return f"b{bucket[0]}_n{bucket[1]}"


def check_bucket_grid(buckets: Sequence[Bucket]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(batch sizes, candidate counts) of `buckets`, which must be their full grid: the
    manifest records the two lists and the server's micro-batcher picks a bucket from them
    (a ragged list was recorded as the grid, and batches grouped for a missing bucket
    failed). Repeats are dropped. ArtifactError names the first missing bucket."""
    got = {(int(b), int(n)) for b, n in buckets}
    if not got:
        raise ArtifactError("buckets: none given")
    bb = tuple(sorted({b for b, _ in got}))
    nn = tuple(sorted({n for _, n in got}))
    missing = [bucket for bucket in bucket_grid(bb, nn) if bucket not in got]
    if missing:
        raise ArtifactError(f"buckets: must be every batch size with every candidate count "
                            f"(batch {list(bb)} x candidates {list(nn)}); missing "
                            f"{missing[0]}" + (f" and {len(missing) - 1} more"
                                               if len(missing) > 1 else ""))
    return bb, nn


def export_tier(checkpoint: str | Path, out_dir: str | Path, *, name: str | None = None,
                platforms: Sequence[str] = ("cpu",), buckets: Sequence[Bucket] | None = None,
                top_k: int = DEFAULT_TOP_K, cache: ExecutableCache | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Export one tier into `out_dir` (replaced if present); returns its manifest.

    `buckets` defaults to the checkpoint config's serving.batch_buckets x candidate_buckets;
    `cache` skips compiles whose lowered program was compiled before.
    """
    from tqdm.auto import tqdm

    from arm_jax.checkpoint import load_checkpoint

    if top_k < 1:
        raise ArtifactError(f"top_k={top_k}: must be >= 1")
    kind, tier, graphdef, params = load_checkpoint(checkpoint)
    if kind != "ranker":
        raise ArtifactError(f"{checkpoint}: kind {kind!r} cannot be exported (only 'ranker')")
    wt.check_finite(wt.flatten(params), str(checkpoint))   # refused here, not at serve time
    name = name or tier.name
    if buckets is not None:
        bb, nn = check_bucket_grid(buckets)
        tier = dataclasses.replace(tier, serving=dataclasses.replace(
            tier.serving, batch_buckets=bb, candidate_buckets=nn))
    grid = bucket_grid(tier.serving.batch_buckets, tier.serving.candidate_buckets)
    L, T = tier.model.history_len, len(tier.features.tasks)

    final = Path(out_dir)
    if final.exists() and any(final.iterdir()) and not (final / mf.INDEX).exists():
        raise ArtifactError(f"export: {final} exists and is not a tier export; refusing to "
                            "replace it")
    # Written beside the tier and swapped in only when complete: a failed export leaves
    # the previous tier (which the index pins) intact.
    out = final.with_name(f".{final.name}.partial")
    if out.exists():
        shutil.rmtree(out)
    (out / "executables").mkdir(parents=True)
    (out / "exported").mkdir()
    score, flat = scoring_function(graphdef, params, top_k)
    wspec = wt.spec_of(flat)
    wt.save(out / "weights", flat)
    w_abstract = _specs(wspec)
    jitted = jax.jit(score)
    backend = jax.default_backend()
    entries = []
    bar = tqdm(grid, desc=f"export {name}", unit="bucket", disable=not progress)
    for bucket in bar:
        B, N = bucket
        K = min(top_k, N)
        bar.set_postfix_str(f"B={B} N={N}")
        sig = batch_signature(bucket, L, tier.features)
        lowered = jitted.lower(w_abstract, _specs(sig))
        blob, cost, memory, compile_s, hit = _compile(lowered, cache)
        exe_rel = f"executables/{bucket_stem(bucket)}.{backend}.xla"
        (out / exe_rel).write_bytes(blob)
        exported, errors, kernel_calls = {}, {}, {}
        for plat in platforms:
            rel = f"exported/{bucket_stem(bucket)}.{plat}.jaxexport"
            try:
                exp = jax.export.export(jitted, platforms=(plat,), disabled_checks=_KERNEL_CALLS)(
                    w_abstract, _specs(sig))
            except Exception as e:  # noqa: BLE001 - recorded, shown by `inspect`
                errors[plat] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                continue
            (out / rel).write_bytes(exp.serialize())
            exported[plat] = rel
            text = exp.mlir_module()
            pinned = sorted(t for t in _KERNEL_TARGETS if f"@{t}" in text or f'"{t}"' in text)
            if pinned:
                kernel_calls[plat] = pinned
        entries.append({
            "batch": B, "candidates": N, "history": L, "top_k": K,
            "executable": {backend: exe_rel}, "exported": exported, "export_errors": errors,
            "exported_kernel_calls": kernel_calls,
            "inputs": {"weights": "see weights.params", "batch": sig},
            "outputs": {"probs": {"shape": [B, N, T], "dtype": "float32"},
                        "top_indices": {"shape": [B, K], "dtype": "int32"},
                        "top_scores": {"shape": [B, K], "dtype": "float32"}},
            "cost": cost, "memory": memory, "compile_s": round(compile_s, 3),
            "compile_cache": "hit" if hit else ("miss" if cache and cache.dir else "off"),
        })
    dev = jax.local_devices()[0]
    manifest = {
        "format": mf.FORMAT, "tier": name, "kind": kind, "config": tier.to_dict(),
        "source_checkpoint": str(Path(checkpoint).resolve()),
        "jax": jax.__version__, "jaxlib": _jaxlib_version(), "platform": backend,
        "device_kind": dev.device_kind, "top_k": top_k, "created": time.time(),
        "weights": {"dir": "weights", "params": wspec,
                    "param_count": int(sum(np.prod(v["shape"]) for v in wspec.values())),
                    "bytes": int(sum(np.prod(v["shape"]) * np.dtype(v["dtype"]).itemsize
                                     for v in wspec.values()))},
        "buckets": entries,
    }
    manifest["files"] = mf.hash_tree(out)
    mf.write_json(out / mf.INDEX, manifest)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    out.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def export_tiers(checkpoints: Mapping[str, str | Path], out_dir: str | Path,
                 platforms: Sequence[str] = ("cpu",), *, buckets: Sequence[Bucket] | None = None,
                 top_k: int = DEFAULT_TOP_K, cache_dir: Any = _USE_DEFAULT,
                 progress: bool = True) -> Path:
    """Export every named tier (name -> checkpoint dir) under `out_dir`; returns out_dir.

    Tiers already in `out_dir` but not named here are kept in the index. `cache_dir`:
    persistent executable cache (default: `default_cache_dir()`; None disables it).
    """
    if not checkpoints:
        raise ArtifactError("export: no tiers given")
    for tier_name in checkpoints:
        problem = mf.tier_name_problem(tier_name)
        if problem is not None:
            raise ArtifactError(f"export: {problem}")
    platforms = check_platforms(platforms)
    if buckets is not None:
        check_bucket_grid(buckets)
    root = check_output_dir(out_dir, "--out", ArtifactError)
    index = _read_index(root)     # before any work: a foreign or damaged index stops it
    root.mkdir(parents=True, exist_ok=True)
    cache = ExecutableCache(default_cache_dir() if cache_dir is _USE_DEFAULT else cache_dir)
    for tier_name, ckpt in checkpoints.items():
        export_tier(ckpt, root / tier_name, name=tier_name, platforms=platforms,
                    buckets=buckets, top_k=top_k, cache=cache, progress=progress)
        index["tiers"][tier_name] = {"manifest": f"{tier_name}/{mf.INDEX}",
                                         "sha256": mf.sha256_file(root / tier_name / mf.INDEX)}
        # the index pins each tier as soon as it is replaced: a later tier that fails
        # leaves every tier exported so far loadable
        index["tiers"] = {k: v for k, v in sorted(index["tiers"].items())
                          if (root / k / mf.INDEX).exists()}
        index.update(jax=jax.__version__, jaxlib=_jaxlib_version(), created=time.time())
        mf.write_json(root / mf.INDEX, index)
    return root


def _read_index(root: Path) -> dict[str, Any]:
    """The index of an artifact directory to export into, or a new one. An index that is
    not ours (another tool's manifest.json, a tier's own manifest) or is damaged stops the
    export: replacing it would drop the tiers it lists, or break the directory around it."""
    if not (root / mf.INDEX).exists():
        return {"format": mf.FORMAT, "tiers": {}}
    try:
        return mf.read_index(root / mf.INDEX)
    except ArtifactError as e:
        raise ArtifactError(f"export: --out {root}: {e}; refusing to replace it") from None


def _jaxlib_version() -> str:
    import jaxlib

    return getattr(jaxlib, "__version__", "unknown")


def resolve_checkpoints(spec: Iterable[str], tiers: Sequence[str] | None) -> dict[str, Path]:
    """CLI helper: `--checkpoint` values -> {tier: checkpoint dir}.

    Each value is `NAME=DIR` (one tier), or DIR: a checkpoint itself (config.json; the
    tier is named by its config), or a directory holding one sub-checkpoint per tier
    (DIR/small, DIR/medium, ...: `arm-jax train`'s runs/; non-ranker checkpoints are
    skipped). `tiers` picks and orders the tiers to export.
    """
    from arm_jax.checkpoint import read_config

    found: dict[str, Path] = {}
    for item in spec:
        if "=" in item:
            n, _, d = item.partition("=")
            found[n.strip()] = Path(d)
            continue
        d = Path(item)
        if (d / "config.json").exists():
            found[read_config(d)[1].name] = d
        elif d.is_dir():
            for sub in sorted(p for p in d.iterdir() if (p / "config.json").exists()):
                if read_config(sub)[0] == "ranker":  # skip baselines (runs/small-logreg)
                    found[sub.name] = sub
        else:
            raise FileNotFoundError(f"--checkpoint {item}: no such directory")
    if tiers:
        missing = [t for t in tiers if t not in found]
        if missing:
            raise ArtifactError(f"--tiers {','.join(missing)}: no checkpoint found "
                                f"(have: {', '.join(sorted(found)) or 'none'})")
        found = {t: found[t] for t in tiers}
    if not found:
        raise ArtifactError("--checkpoint: no checkpoints found")
    return found
