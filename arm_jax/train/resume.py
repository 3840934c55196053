"""Periodic checkpoints of a run's whole training state, so an interrupted `arm-jax train`
continues where it stopped (`--resume`) and ends with bit-identical weights.

Layout, under the run's output directory:
  train_state/run.json            what the run is: model kind, steps, the tier config
  train_state/steps/<n>, digests/ params (+ the moving average) and optimiser state after
                                  n steps (`ShardedCheckpointer`: async, sha256-verified)
  train_state/losses/<n>.json     the logged loss windows up to step n, and the sum and
                                  count of the window still open (so the resumed run logs
                                  the same means)

Everything else a step depends on is a function of the step index (the data order of
each epoch, the dropout / cropping / masking keys), so restoring these and skipping the
first n batches replays the rest of the run exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from arm_jax.checkpoint import CheckpointError
from arm_jax.config import TierConfig
from arm_jax.data.outputs import replaced_when_written
from arm_jax.train.trainer import Trainer

if TYPE_CHECKING:
    from arm_jax.parallel.checkpoint import ShardedCheckpointer

STATE_DIR = "train_state"


class ResumeError(CheckpointError):
    """No training state to resume, or it belongs to a different run."""


def has_saved_state(out_dir: str | Path) -> bool:
    """Whether a run committed a training state under `out_dir` that --resume can read (a
    run interrupted before its first save has written only run.json)."""
    state = Path(out_dir) / STATE_DIR
    return (state / "run.json").exists() and any((state / "digests").glob("*.json"))


def run_identity(kind: str, tier: TierConfig, steps: int,
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What must match for a saved state to continue this run: the model, the steps and,
    for data that is not the tier's own synthetic data, what names the data."""
    identity = {"kind": kind, "steps": steps, "tier": tier.to_dict()}
    if data is not None:
        identity["data"] = data
    return identity


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d is not None:
                return d
        return None
    return None if a == b else f"{path.removeprefix('tier.')}: saved {a!r}, now {b!r}"


def _state_tree(trainer: Trainer) -> dict[str, Any]:
    """The weights a checkpoint holds: the params and, when on, their moving average."""
    tree = {"params": trainer.params}
    if trainer.ema_params is not None:
        tree["ema"] = trainer.ema_params
    return tree


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        tree)


class TrainStateCheckpoints:
    """Save a run's training state every `every` steps; restore the newest verified one."""

    def __init__(self, out_dir: str | Path, identity: dict[str, Any], every: int) -> None:
        if every < 0:
            raise ValueError(f"checkpoint_every: must be >= 0, got {every}")
        self.dir = Path(out_dir).resolve() / STATE_DIR
        self.identity = identity
        self.every = every
        self._ckpt = None

    @property
    def checkpointer(self) -> "ShardedCheckpointer":
        if self._ckpt is None:
            from arm_jax.parallel.checkpoint import ShardedCheckpointer

            self._ckpt = ShardedCheckpointer(self.dir, max_to_keep=2)
        return self._ckpt

    def start_fresh(self) -> bool:
        """A new run replaces the state of an earlier one in the same directory (as its final
        checkpoint will); True if there was one."""
        existed = self.dir.exists()
        if existed:
            shutil.rmtree(self.dir)
        if self.every:
            self.dir.mkdir(parents=True)
            (self.dir / "run.json").write_text(json.dumps(self.identity, indent=1))
        return existed

    def due(self, done: int, steps: int) -> bool:
        """Whether to save after `done` steps (never after the last: the model is saved then)."""
        return self.every > 0 and done % self.every == 0 and done < steps

    def save(self, done: int, trainer: Trainer, losses: list[float]) -> None:
        """Start saving the state after `done` steps; returns once arrays are off the device."""
        (self.dir / "losses").mkdir(exist_ok=True)
        open_sum, open_steps = trainer.loss_window()    # a window the save cuts in two
        with replaced_when_written(self.dir / "losses" / f"{done}.json") as tmp:  # whole
            tmp.write_text(json.dumps({"windows": losses, "open_sum": open_sum,
                                       "open_steps": open_steps}))
        self.checkpointer.save(done, _state_tree(trainer), trainer.opt_state)
        self._prune_losses()

    def _prune_losses(self) -> None:
        """Drop the loss logs of steps orbax no longer keeps (max_to_keep=2); `steps()`
        lists the save in flight too."""
        live = {str(s) for s in self.checkpointer.steps()}
        for f in (self.dir / "losses").glob("*.json"):
            if f.stem not in live:
                f.unlink()

    def restore(self, trainer: Trainer) -> tuple[int, list[float], list[str]]:
        """Load the newest verified state into `trainer` -> (steps done, loss log, refusals of
        newer, damaged states). ResumeError when there is none or it is another run's."""
        run_json = self.dir / "run.json"
        if not run_json.exists():
            raise ResumeError(f"--resume: no training state under {self.dir} (a run saves "
                              "one with --checkpoint-every N)")
        saved = _read_json(run_json, "run record")
        diff = _first_difference(saved, self.identity)
        if diff is not None:
            raise ResumeError(f"--resume: {self.dir} holds another run's state ({diff})")
        if not (self.dir / "steps").is_dir() or not self.checkpointer.steps():
            raise ResumeError(f"--resume: {self.dir} has no saved step yet")
        done, tree, opt_state, refused = self.checkpointer.restore_latest(
            _abstract(_state_tree(trainer)), _abstract(trainer.opt_state))
        for newer in [s for s in self.checkpointer.steps() if s > done]:
            self.checkpointer.discard(newer)    # refused: this run saves those steps again
        trainer.params, trainer.opt_state = tree["params"], opt_state
        if "ema" in tree:
            trainer.ema_params = tree["ema"]
        log_path = self.dir / "losses" / f"{done}.json"
        log = _read_json(log_path, "loss log")
        if isinstance(log, list):               # written before the open window was kept
            log = {"windows": log, "open_sum": 0.0, "open_steps": 0}
        if not (isinstance(log, dict) and isinstance(log.get("windows"), list)
                and {"open_sum", "open_steps"} <= set(log)):
            raise ResumeError(f"--resume: {log_path}: not a loss log (expected windows, "
                              "open_sum and open_steps)")
        trainer.restore_loss_window(log["open_sum"], log["open_steps"])
        return done, log["windows"], refused

    def poll(self) -> None:
        """Commit a finished background save now (cheap; call every step), so a crash
        that skips `close` still leaves the newest completed state restorable."""
        if self._ckpt is not None:
            self._ckpt.poll()

    def close(self) -> None:
        """Wait for the last save (its digest is the commit marker)."""
        if self._ckpt is not None:
            self._ckpt.wait()
            if (self.dir / "losses").is_dir():
                self._prune_losses()
            self._ckpt.close()
            self._ckpt = None


def _read_json(path: Path, what: str) -> Any:
    """The JSON in `path`, or ResumeError naming the file (missing, not UTF-8, not JSON)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:      # UnicodeDecodeError and JSONDecodeError too
        raise ResumeError(f"--resume: {path}: unreadable {what} ({type(e).__name__}: {e}); "
                          "run again without --resume to start over") from None


__all__ = ["TrainStateCheckpoints", "ResumeError", "run_identity", "has_saved_state",
           "STATE_DIR"]
