"""Sharded, asynchronous orbax checkpoints of params + optimizer state, with integrity.

Layout of a checkpoint root:
  steps/<step>/params, steps/<step>/opt_state   orbax CheckpointManager items (each
                                                 device writes its own shards)
  digests/<step>.json                           sha256 + size of every file of a step

`save` returns as soon as the arrays are copied off the devices (orbax writes in a
background thread), so training continues. The digest is written when the save is
known complete (at the next `save`, `wait` or `close`): it is our commit marker. A
step without a digest, or whose files no longer match it (truncated, corrupted), is
refused with `CorruptCheckpointError`; `restore_latest` then falls back to the newest
step that verifies.

Restoring takes abstract targets (`jax.ShapeDtypeStruct` with `sharding=`), so a
checkpoint written on one mesh is read straight into another (8 -> 4 -> 1 devices):
each device reads only the slices it owns.
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import jax

from arm_jax.checkpoint import (CheckpointError, check_finite_params, check_stored,
                                place_abstract)
from arm_jax.data.outputs import check_output_dir
from arm_jax.file_digest import digest_files, first_mismatch


class CorruptCheckpointError(CheckpointError):
    """A checkpoint step is incomplete, truncated or its bytes changed since it was saved."""


def _integer(value: Any) -> int | None:
    """`value` as a Python int (numpy and jax integers too: json.dumps refuses them), or
    None for a bool or anything that is no integer (2.5, "3")."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def abstract_with(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or abstract) placed by `shardings`: a pytree of
    the same structure, else a CheckpointError naming the first path that differs."""
    return place_abstract(tree, shardings, "abstract_with", "the tree it places")


class ShardedCheckpointer:
    """Async sharded save / verified restore of {params, opt_state} by step."""

    def __init__(self, directory: str | Path, *, max_to_keep: int | None = 3,
                 async_save: bool = True, read_only: bool = False):
        """`read_only=True` (for restoring) creates nothing: a root holding no sharded
        checkpoint is a CheckpointError, where a writer would start a new one there (a
        mistyped path used to become an empty checkpoint and "no restorable step").
        `max_to_keep`: None keeps every step, else at least 1 (0 made orbax delete every
        step it saved). An empty path (the current directory), a path at or under a file,
        or one that cannot be created is a CheckpointError naming it."""
        import orbax.checkpoint as ocp  # not at import (arm_jax.checkpoint: _import_orbax_note)

        if max_to_keep is not None:
            keep = _integer(max_to_keep)
            if keep is None or keep < 1:
                raise CheckpointError(f"max_to_keep={max_to_keep!r}: must be None (keep every "
                                      f"step) or an integer >= 1")
            max_to_keep = keep
        self.root = check_output_dir(directory, "checkpoint root", CheckpointError).resolve()
        self.digests = self.root / "digests"
        self.read_only = read_only
        self._closed = False
        if read_only:
            if not (self.root / "steps").is_dir():
                raise CheckpointError(f"checkpoint {self.root}: no sharded checkpoint there "
                                      f"(no steps/ directory)")
        else:
            try:
                self.digests.mkdir(parents=True, exist_ok=True)
            except OSError as e:      # permission denied, a read-only or virtual filesystem
                raise CheckpointError(f"checkpoint root {self.root}: cannot create it "
                                      f"({e.strerror or e})") from None
        self._primary = jax.process_index() == 0
        self.manager = ocp.CheckpointManager(
            self.root / "steps", item_names=("params", "opt_state"),
            options=ocp.CheckpointManagerOptions(
                # read-only: what orbax would reset itself, with a warning each
                max_to_keep=None if read_only else max_to_keep,
                save_interval_steps=0 if read_only else 1,
                enable_async_checkpointing=async_save, create=not read_only,
                read_only=read_only))
        self._pending: int | None = None

    def _check_open(self, what: str) -> None:
        """After close() orbax's manager is shut: a save there returned normally, left a
        tmp directory and started threads that held the interpreter's exit for minutes."""
        if self._closed:
            raise CheckpointError(f"checkpoint {self.root}: closed, cannot {what}")

    def _check_writable(self, what: str) -> None:
        self._check_open(what)
        if self.read_only:
            raise CheckpointError(f"checkpoint {self.root}: opened read_only, cannot {what}")

    # ------------------------------------------------------------------ save
    def save(self, step: int, params: Any, opt_state: Any = None, *,
             allow_nonfinite: bool = False) -> None:
        """Start saving `step` (an integer >= 0; numpy and jax integers too); returns once
        device buffers are copied (not written). Params holding a NaN or an infinity are
        refused (CheckpointError naming the first such leaf: a resume would restore a
        diverged state) unless `allow_nonfinite=True`."""
        import orbax.checkpoint as ocp  # not at import (arm_jax.checkpoint: _import_orbax_note)

        self._check_writable(f"save step {step}")
        number = _integer(step)
        if number is None or number < 0:   # -1 is invisible to steps(), 2.5 never restorable
            raise CheckpointError(f"checkpoint {self.root}: step={step!r}: must be an integer "
                                  f">= 0")
        step = number
        if not allow_nonfinite:
            check_finite_params(params, f"checkpoint {self.root}: step {step}: params")
        self._finalize()
        items = {"params": ocp.args.StandardSave(params)}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardSave(opt_state)
        if not self.manager.save(step, args=ocp.args.Composite(**items)):
            raise CheckpointError(
                f"checkpoint {self.root}: step {step} was not saved (orbax saves only steps "
                f"after its newest, {self.manager.latest_step()}; `discard` newer ones first)")
        self._pending = step

    def wait(self) -> None:
        """Block until the pending save is on disk and its digest written."""
        self._finalize()

    def poll(self) -> bool:
        """Commit the pending save (write its digest) if orbax has finished writing it,
        without blocking; True once nothing is pending. A training loop calls this every
        step so that a crash (no `close`) loses at most the save still being written."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self._finalize()
        return self._pending is None

    def close(self) -> None:
        """Commit the pending save, then close orbax's manager (also when that save failed:
        its error is raised after the manager's threads are stopped). Once closed, save,
        discard and restore are a CheckpointError; closing again does nothing."""
        if self._closed:
            return
        try:
            self._finalize()
        finally:
            self._closed = True
            self.manager.close()

    def __enter__(self) -> "ShardedCheckpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _finalize(self) -> None:
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:   # a failed write raises once; it gets no digest
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax's own error types, named in the message
            raise CheckpointError(f"checkpoint {self.root}: step {step} was not saved: "
                                  f"{type(e).__name__}: {e}") from e
        if self._primary:
            payload = {"step": step, "files": digest_files(self._step_dir(step))}
            tmp = self.digests / f"{step}.json.tmp"
            tmp.write_text(json.dumps(payload))
            tmp.replace(self.digests / f"{step}.json")
            live = {str(s) for s in self.manager.all_steps()}
            for d in self.digests.glob("*.json"):
                if d.stem not in live:
                    d.unlink()

    def discard(self, step: int) -> None:
        """Delete `step` and its digest (a damaged step a resumed run will save again)."""
        self._check_writable(f"discard step {step}")
        self._finalize()
        if step in self.manager.all_steps():
            self.manager.delete(step)
        (self.digests / f"{step}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ verify
    def _step_dir(self, step: int) -> Path:
        return self.root / "steps" / str(step)

    def steps(self) -> list[int]:
        """Steps orbax committed (verified or not), oldest first, and the one being saved.
        Re-reads the directory only when no save is in flight: a reload during an async
        save loses orbax's record of it, so old steps are never deleted (max_to_keep) and
        the digests of the kept ones are dropped."""
        if self._pending is None:
            self.manager.reload()
        return sorted(self.manager.all_steps())

    def verify(self, step: int) -> None:
        """Raise CorruptCheckpointError unless every file of `step` matches its digest."""
        where = f"checkpoint {self.root} step {step}"
        dpath = self.digests / f"{step}.json"
        if not self._step_dir(step).is_dir():
            raise CorruptCheckpointError(f"{where}: no such step (have {self.steps()})")
        if not dpath.exists():
            raise CorruptCheckpointError(f"{where}: no digest: the save never completed")
        try:
            expected = json.loads(dpath.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:   # bytes, JSON, shape
            raise CorruptCheckpointError(f"{where}: unreadable digest {dpath} "
                                         f"({type(e).__name__}: {e})") from None
        problem = first_mismatch(self._step_dir(step), expected)
        if problem is not None:
            raise CorruptCheckpointError(f"{where}: {problem}")

    # ------------------------------------------------------------------ restore
    def restore(self, step: int, abstract_params: Any, abstract_opt: Any = None
                ) -> tuple[Any, Any]:
        """(params, opt_state) of a verified `step`, placed as the abstract targets say.

        The targets' leaf paths, shapes and dtypes must be those saved (any mesh): a
        difference is a CheckpointError naming the leaf, never a silent cast. Cast after
        restoring if another dtype is wanted."""
        import orbax.checkpoint as ocp  # not at import (arm_jax.checkpoint: _import_orbax_note)

        from arm_jax.compile.weights import stored_tree

        self._check_open(f"restore step {step}")
        self._finalize()
        self.verify(step)
        targets = {"params": abstract_params}
        if abstract_opt is not None:
            targets["opt_state"] = abstract_opt
        where = f"checkpoint {self.root} step {step}"
        try:
            handler = ocp.StandardCheckpointHandler()   # reads metadata only, no arrays
            try:
                stored = {name: stored_tree(handler, self._step_dir(step) / name)
                          for name in targets}
            finally:
                handler.close()
            check_stored(stored, targets, where, expected="the restore target asks for")
            out = self.manager.restore(step, args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(t) for name, t in targets.items()}))
        except CheckpointError:
            raise
        except Exception as e:  # orbax raises many types; surface one clear error
            raise CheckpointError(f"{where}: cannot restore ({type(e).__name__}: {e})") from None
        return out["params"], out.get("opt_state") if abstract_opt is not None else None

    def restore_latest(self, abstract_params: Any, abstract_opt: Any = None
                       ) -> tuple[int, Any, Any, list[str]]:
        """Newest step that verifies -> (step, params, opt_state, refusals of newer steps)."""
        self._check_open("restore")
        self._finalize()
        refused: list[str] = []
        for step in reversed(self.steps()):
            try:
                params, opt = self.restore(step, abstract_params, abstract_opt)
            except CorruptCheckpointError as e:
                refused.append(str(e))
                continue
            return step, params, opt, refused
        raise CorruptCheckpointError(f"checkpoint {self.root}: no restorable step"
                                     + ("; " + "; ".join(refused) if refused else ""))
