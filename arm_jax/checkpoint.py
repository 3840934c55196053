"""Save and restore a trained model: config.json + orbax params + metrics.json.

Layout of a checkpoint directory:
  config.json   {"kind": "ranker"|"logreg", "tier": TierConfig.to_dict(),
                 "params_files": {file under params/: [size, sha256]}}; written last
  params/       orbax StandardCheckpointer pytree of the model's nnx.Param state
  metrics.json  evaluation figures written at the end of training (optional)

Loading checks params/ against its digest first: a file changed since the save is a
CheckpointError, never weights that differ from the ones trained.

Restoring builds the model abstractly (`nnx.eval_shape`: no allocation), then
lets orbax allocate the arrays directly with the target shardings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax import strict_json
from arm_jax.config import TierConfig, tier_from_dict
from arm_jax.data.outputs import check_output_dir
from arm_jax.file_digest import PARAMS_DIGEST, digest_files, params_problem

# _import_orbax_note: orbax is imported where it is used, never at module level. Importing
# it logs through absl (an ArrayHandler built at import time), and absl's first log call
# runs logging.basicConfig() when the root logger has no handler: `import arm_jax.checkpoint`
# (or arm_jax.train.*, which import it) gave an application a root StreamHandler, after
# which its own logging.basicConfig(level=...) did nothing.


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or does not match the model."""


KINDS = ("ranker", "logreg")   # the models build_model builds


def build_model(kind: str, tier: TierConfig, seed: int = 0) -> nnx.Module:
    """The model a checkpoint's `kind` names, freshly initialised."""
    if kind == "ranker":
        from arm_jax.model import Ranker

        model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(seed))
        if any(q.format != "float32" for q in tier.quant.layers):
            from arm_jax.quant.surgery import apply_plan

            apply_plan(model, tier.quant)  # a quantized tier: its layers as stored
        return model
    if kind == "logreg":
        from arm_jax.baselines.logreg import LogisticRegression

        return LogisticRegression(tier.features, rngs=nnx.Rngs(seed))
    raise CheckpointError(f"unknown model kind '{kind}'; expected one of {KINDS}")


def save_checkpoint(directory: str | Path, *, kind: str, tier: TierConfig, params: Any,
                    metrics: dict[str, Any] | None = None,
                    allow_nonfinite: bool = False) -> Path:
    """Write config, params and metrics; refuses to overwrite another kind of directory
    (`check_save_target`). Bad input (an unknown `kind`, metrics JSON cannot hold, params
    that are not the state of the model `kind` and `tier` build, params orbax cannot
    write, a directory that cannot be created) is refused before an earlier checkpoint
    there is touched.

    Params holding a NaN or an infinity (a diverged training) are refused too, naming the
    first such parameter: they load fine and score NaN everywhere. `allow_nonfinite=True`
    saves them anyway (e.g. to inspect a divergence)."""
    import orbax.checkpoint as ocp  # here, not at import: see _import_orbax_note

    if kind not in KINDS:
        raise CheckpointError(f"kind={kind!r}: unknown model kind; expected one of {KINDS}")
    try:
        metrics_text = None if metrics is None else strict_json.dumps(metrics, indent=2)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"metrics: cannot be written as JSON ({e})") from None
    _check_params_fit(kind, tier, params)
    if not allow_nonfinite:
        check_finite_params(params, "params")
    d = check_save_target(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:      # permission denied, a read-only or virtual filesystem
        raise CheckpointError(f"checkpoint directory {d}: cannot create it "
                              f"({e.strerror or e})") from None
    new, old = d / _PARAMS_NEW, d / _PARAMS_OLD
    with ocp.StandardCheckpointer() as ckptr:   # beside the old params until it is whole
        ckptr.save(new, params, force=True)
    # config.json is the commit marker, written last: a save that fails from here on
    # leaves no config (read_config refuses the directory), never a new config beside old
    # params
    (d / "config.json").unlink(missing_ok=True)
    (d / "metrics.json").unlink(missing_ok=True)
    if (d / "params").exists():
        shutil.rmtree(old, ignore_errors=True)
        (d / "params").rename(old)
    new.rename(d / "params")
    shutil.rmtree(old, ignore_errors=True)
    if metrics_text is not None:
        (d / "metrics.json").write_text(metrics_text)
    tmp = d / "config.json.tmp"
    # the digest of params/ rides in the commit marker: a load checks it before orbax reads
    tmp.write_text(json.dumps({"kind": kind, "tier": tier.to_dict(),
                               PARAMS_DIGEST: digest_files(d / "params")}, indent=2))
    tmp.replace(d / "config.json")
    return d


def _abstract_model(kind: str, tier: TierConfig) -> tuple[nnx.GraphDef, Any]:
    """(graphdef, abstract params) of the model `kind` and `tier` build: shapes and dtypes
    only (`nnx.eval_shape`), nothing allocated or initialised."""
    return nnx.split(nnx.eval_shape(lambda: build_model(kind, tier)))


def _check_params_fit(kind: str, tier: TierConfig, params: Any) -> None:
    """CheckpointError naming the first parameter of `params` whose path, shape or dtype
    differs from the model `kind` and `tier` build, which load_checkpoint would refuse:
    another tier's params (or the nnx Module itself, whose tree orbax stores under other
    paths) were written over an earlier checkpoint, leaving a directory that never loads."""
    from arm_jax.compile.errors import ArtifactError
    from arm_jax.compile.weights import flatten

    if isinstance(params, nnx.Module):
        raise CheckpointError(f"params: an nnx Module ({type(params).__name__}), not its state: "
                              "pass nnx.split(model)[1] (or nnx.state(model))")
    try:
        flat = flatten(params)
    except ArtifactError as e:      # two leaves under one path
        raise CheckpointError(f"params: {e}") from None
    for key, leaf in flat.items():
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise CheckpointError(f"params: parameter {key!r} is a {type(leaf).__name__}, "
                                  "not an array")
    _, abstract_params = _abstract_model(kind, tier)
    check_stored(params, abstract_params, "params",
                 expected=f"the {kind} of tier {tier.name!r} has")


# what a save, an interrupted save or a training run (`arm_jax.train.resume`) leaves
_PARAMS_NEW, _PARAMS_OLD = "params.saving", "params.replaced"
_OWN_ENTRIES = {"config.json", "config.json.tmp", "params", "metrics.json", "train_state",
                _PARAMS_NEW, _PARAMS_OLD}
_ORBAX_TMP = "params.orbax-checkpoint-tmp"


def check_save_target(directory: str | Path, what: str = "checkpoint directory") -> Path:
    """The resolved `directory` if a checkpoint may be saved there: absent, empty, or an
    arm-jax checkpoint (or what an interrupted save or training run left). Otherwise
    CheckpointError (naming `what` when no directory can be made there at all: a file, or
    a path under one): a save deletes config.json, metrics.json and params/, so another
    program's directory (its own config.json, or files and no params/) is not written
    into. Training checks its output directory with this before its first step."""
    d = check_output_dir(directory, what, CheckpointError).resolve()
    if not d.exists():
        return d
    cfg = d / "config.json"
    if cfg.exists():
        try:
            raw = json.loads(cfg.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raw = None
        if not (isinstance(raw, dict) and "kind" in raw and "tier" in raw):
            raise CheckpointError(f"{d}: refusing to save a checkpoint here: its config.json "
                                  "is not an arm-jax checkpoint's (no 'kind' and 'tier')")
        return d
    foreign = sorted(p.name for p in d.iterdir()
                     if p.name not in _OWN_ENTRIES
                     and not p.name.startswith((_ORBAX_TMP, _PARAMS_NEW)))
    if foreign and not (d / "params").is_dir():
        raise CheckpointError(f"{d}: refusing to save a checkpoint into a non-empty directory "
                              f"that is not one (no config.json, no params/; holds "
                              f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})")
    return d


def read_config(directory: str | Path) -> tuple[str, TierConfig]:
    """(tier name, TierConfig) saved beside a checkpoint; CheckpointError if absent or bad."""
    d = Path(directory)
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{d}: not a checkpoint (config.json missing)")
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:      # a directory, bytes that are not UTF-8, bad JSON
        raise CheckpointError(f"{cfg_path}: unreadable checkpoint config ({e})") from None
    if not isinstance(raw, dict):           # raw["kind"] on a list or string: a TypeError
        raise CheckpointError(f"{cfg_path}: not a checkpoint config (expected a JSON object "
                              f"with 'kind' and 'tier', got {type(raw).__name__})")
    try:
        return raw["kind"], tier_from_dict(raw["tier"])
    except KeyError as e:
        raise CheckpointError(f"{cfg_path}: unreadable checkpoint config ({e})") from None


def check_params_digest(directory: str | Path) -> None:
    """CheckpointError naming the first file of params/ that is missing, resized or changed
    since the save (a bit flip, a copy cut short), which orbax would restore as it is.
    Checkpoints saved before the digest was recorded are not checked."""
    d = Path(directory)
    problem = params_problem(d)
    if problem is not None:
        raise CheckpointError(f"{d / 'params'}: {problem} since it was saved; this "
                              "checkpoint cannot be trusted (train again, or restore a copy)")


def load_checkpoint(directory: str | Path, shardings: Any = None
                    ) -> tuple[str, TierConfig, nnx.GraphDef, Any]:
    """-> (kind, tier, graphdef, params). `shardings`: optional pytree matching params."""
    import orbax.checkpoint as ocp  # here, not at import: see _import_orbax_note

    d = Path(directory).resolve()
    kind, tier = read_config(d)
    graphdef, abstract_params = _abstract_model(kind, tier)
    if shardings is not None:
        abstract_params = place_abstract(abstract_params, shardings, str(d),
                                         "the checkpoint's params")
    if not (d / "params").exists():
        raise CheckpointError(f"{d}: params/ missing")
    check_params_digest(d)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            _check_stored_shapes(ckptr, d / "params", abstract_params)
            params = ckptr.restore(d / "params", abstract_params)
    except CheckpointError:
        raise
    except Exception as e:  # orbax raises many types; surface one clear error
        raise CheckpointError(f"{d / 'params'}: cannot restore ({type(e).__name__}: {e})") from None
    return kind, tier, graphdef, params


def check_finite_params(params: Any, where: str) -> None:
    """CheckpointError naming the first floating-point leaf of `params` that holds a NaN
    or an infinity, and how many values do: one reduction per leaf, on the host
    (`compile.weights.first_non_finite`). A leaf spread over several processes, which no
    host holds whole, is counted on its devices instead (every process gets the same
    count, so all of them refuse or none)."""
    from arm_jax.compile.errors import ArtifactError
    from arm_jax.compile.weights import first_non_finite, flatten

    try:
        flat = {k: v for k, v in flatten(params).items() if hasattr(v, "dtype")}
    except ArtifactError as e:      # two leaves under one path
        raise CheckpointError(f"{where}: {e}") from None
    local = {k: v for k, v in flat.items() if getattr(v, "is_fully_addressable", True)}
    found = first_non_finite(local)
    spread = [(k, v) for k, v in flat.items()
              if k not in local and jnp.issubdtype(v.dtype, jnp.floating)]
    for k, v in spread if found is None else []:
        bad = int(jnp.count_nonzero(~jnp.isfinite(v)))
        if bad:
            found = k, bad, int(v.size)
            break
    if found is not None:
        name, bad, size = found
        raise CheckpointError(f"{where}: parameter {name!r} holds {bad} non-finite values "
                              f"(NaN or inf) of {size}: a diverged training? Refusing to save "
                              "it (weights must be finite; allow_nonfinite=True saves anyway)")


def place_abstract(tree: Any, shardings: Any, where: str, what: str) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or abstract) placed by `shardings`, a pytree of
    the same structure; else CheckpointError saying so, naming the first path that differs
    (jax's own error is a multi-line ValueError about "prefix pytrees")."""
    try:
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            tree, shardings)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: shardings: the tree does not match {what} "
                              f"({_tree_difference(tree, shardings, e)})") from None


def _tree_difference(want: Any, got: Any, error: Exception) -> str:
    """The first parameter paths `got` lacks or adds against `want`; with the same paths,
    the container types that differ, else the first line of jax's `error`."""
    from arm_jax.compile.weights import flat_key

    def keys(tree: Any) -> list[str]:
        return [flat_key(p) or "(the root)"     # a single leaf where a tree belongs
                for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]

    want_keys, got_keys = keys(want), keys(got)
    want_set, got_set = set(want_keys), set(got_keys)
    missing = [k for k in want_keys if k not in got_set]
    extra = [k for k in got_keys if k not in want_set]
    if missing or extra:
        return f"missing {missing[:3]}, unexpected {extra[:3]}"
    if type(want) is not type(got):
        return f"the same paths, but a {type(got).__name__}, not a {type(want).__name__}"
    return str(error).strip().splitlines()[0]


def _check_stored_shapes(ckptr: Any, path: Path, abstract_params: Any) -> None:
    """Compare stored shapes and dtypes with the model config.json builds, before restoring:
    a mismatch is one clear error (orbax's own failure also leaves tracebacks at exit)."""
    from arm_jax.compile.weights import stored_tree

    check_stored(stored_tree(ckptr, path), abstract_params, str(path),
                 expected="the model built from config.json expects",
                 hint=" (was the checkpoint written by another arm-jax version "
                      "or with other config overrides?)")


def check_stored(stored: Any, target: Any, where: str, *, expected: str,
                 hint: str = "") -> None:
    """Same leaf paths, shapes and dtypes in `stored` (orbax metadata of a saved tree, read
    without reading arrays) as in the restore `target`, or CheckpointError naming the first
    difference. Run before every restore: orbax casts a stored array to the target's dtype
    without a word (float32 -> bfloat16 loses bits), and restores are promised bit-exact."""
    from arm_jax.compile.errors import ArtifactError
    from arm_jax.compile.weights import check_spec, flatten, spec_of

    try:
        check_spec(spec_of(flatten(stored)), spec_of(flatten(target)), where,
                   expected=expected)
    except ArtifactError as e:
        raise CheckpointError(f"{e}{hint}") from None


def read_metrics(directory: str | Path) -> dict[str, Any] | None:
    """The held-out metrics training wrote beside a checkpoint, or None; CheckpointError
    naming the file if it is damaged (not UTF-8, not JSON, not a JSON object)."""
    p = Path(directory) / "metrics.json"
    if not p.exists():
        return None
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:      # a directory, bytes that are not UTF-8, bad JSON
        raise CheckpointError(f"{p}: unreadable metrics ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{p}: not metrics (expected a JSON object, got "
                              f"{type(raw).__name__})")
    return raw
