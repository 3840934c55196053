"""The executor interface the server talks to, an adapter over AOT tiers, and a fake.

The server never sees a model: it hands a packed `RequestBatch` to a `TierExecutor`
and gets probabilities and a top-K back. `ArtifactExecutor` wraps a loaded AOT tier
(`arm_jax.compile.artifacts.LoadedTier`); `FakeExecutor` computes deterministic numpy
scores so the HTTP layer, batching, admission and hot swap can be tested without
compiling anything (the JetStream habit: an engine behind an interface).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from arm_jax.batch import RequestBatch
from arm_jax.config import TierConfig


class ExecutorError(RuntimeError):
    """The executor cannot run this batch (no bucket fits, not loaded)."""


class IncompatibleWeights(ExecutorError):
    """New weights do not match the compiled shapes; the old weights keep serving."""


class WeightsNotFound(ExecutorError):
    """The weights directory does not exist or is not a checkpoint."""


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """probs [b, c, T]; top_indices / top_scores [b, K]; bucket = (B, N) actually run."""

    probs: np.ndarray
    top_indices: np.ndarray
    top_scores: np.ndarray
    bucket: tuple[int, int]


@runtime_checkable
class TierExecutor(Protocol):
    """What the server needs from a tier. `score` may be called from a worker thread."""

    name: str
    config: TierConfig

    @property
    def buckets(self) -> list[tuple[int, int]]: ...

    def score(self, batch: RequestBatch) -> Any: ...

    def swap_weights(self, directory: str | Path) -> dict[str, Any]: ...

    def cost_flops(self, bucket: tuple[int, int]) -> float: ...

    def warmup(self) -> None: ...


def nearest_bucket(buckets: list[tuple[int, int]], b: int, n: int) -> tuple[int, int]:
    """Smallest (B, N) with B >= b and N >= n, ordered by B*N; ExecutorError if none fits."""
    fits = [(bb, nn) for bb, nn in buckets if bb >= b and nn >= n]
    if not fits:
        raise ExecutorError(f"no compiled bucket holds {b} requests x {n} candidates; "
                            f"buckets: {sorted(buckets)}")
    return min(fits, key=lambda x: (x[0] * x[1], x[1]))


# ---------------------------------------------------------------- real artifacts

class ArtifactExecutor:
    """Adapter over an AOT `LoadedTier`: scoring, swap and cost come from the artifact."""

    def __init__(self, loaded: Any):
        self._tier = loaded
        self.name: str = loaded.name
        self.config: TierConfig = loaded.config
        self._version = 0

    @property
    def buckets(self) -> list[tuple[int, int]]:
        return [tuple(b) for b in self._tier.buckets]

    def score(self, batch: RequestBatch) -> Any:
        return self._tier.score(batch)

    def swap_weights(self, directory: str | Path) -> dict[str, Any]:
        from arm_jax.compile.artifacts import ArtifactError

        d = Path(directory)
        if not d.exists():
            raise WeightsNotFound(f"path: {d} does not exist")
        try:
            self._tier.swap_weights(d)
        except ArtifactError as e:
            raise IncompatibleWeights(str(e)) from None
        except OSError as e:                 # unreadable files: the old weights keep serving
            raise WeightsNotFound(f"path: {d}: cannot be read ({e})") from None
        self._version += 1
        return {"version": self._version}

    def cost_flops(self, bucket: tuple[int, int]) -> float:
        fn = getattr(self._tier, "cost_flops", None)
        if fn is not None:
            return float(fn(tuple(bucket)))
        return float("nan")

    def warmup(self) -> None:
        self._tier.warmup()


def load_artifact_executors(path: str | Path) -> dict[str, ArtifactExecutor]:
    """Every tier of an artifact directory, wrapped (no model code is imported)."""
    from arm_jax.compile.artifacts import load

    artifacts = load(path)
    return {name: ArtifactExecutor(t) for name, t in artifacts.tiers.items()}


# ---------------------------------------------------------------- fake

@dataclasses.dataclass(frozen=True)
class _FakeWeights:
    """Weights of the fake scorer: a shape signature and a per-version scale."""

    shape: tuple[int, ...]
    scale: float
    version: int


def write_fake_weights(directory: str | Path, *, shape: tuple[int, ...], scale: float) -> Path:
    """A weights directory `FakeExecutor.swap_weights` accepts (or refuses, on shape)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "fake_weights.json").write_text(json.dumps({"shape": list(shape), "scale": scale}))
    return d


class FakeExecutor:
    """Deterministic numpy scores with the real executor's contract.

    probs[b, c, t] = sigmoid(scale * (hash(req, cand) feature sum) + t offset); padded to
    the nearest bucket like the real thing, so padding bugs show. `delay_ms` (plus
    `delay_per_request_ms` per real request) simulates compute time; `flops_per_pair`
    sets the cost model.
    """

    def __init__(self, config: TierConfig, *, delay_ms: float = 0.0,
                 delay_per_request_ms: float = 0.0, flops_per_pair: float = 1e6,
                 top_k: int = 16, name: str | None = None, warmup_delay_s: float = 0.0):
        self.name = name or config.name
        self.config = config
        self.delay_ms = delay_ms
        self.delay_per_request_ms = delay_per_request_ms
        self.flops_per_pair = flops_per_pair
        self.top_k = top_k
        self.warmup_delay_s = warmup_delay_s
        self.calls = 0
        self.warmed = False
        self._lock = threading.Lock()
        self._weights = _FakeWeights(self.weight_shape, 1.0, 0)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        f = self.config.features
        return (f.req_sparse_fields + f.cand_sparse_fields, self.config.model.d_model)

    @property
    def buckets(self) -> list[tuple[int, int]]:
        s = self.config.serving
        return [(b, n) for b in s.batch_buckets for n in s.candidate_buckets]

    @property
    def version(self) -> int:
        return self._weights.version

    def score(self, batch: RequestBatch) -> ScoreResult:
        w = self._weights  # read once: a batch never sees two weight versions
        b, c = batch.num_requests, batch.num_candidates
        bucket = nearest_bucket(self.buckets, b, c)
        delay = self.delay_ms + self.delay_per_request_ms * b
        if delay > 0:
            time.sleep(delay / 1e3)
        probs = fake_probs(batch, w.scale, len(self.config.features.tasks),
                           self.config.model.history_len)
        k = min(self.top_k, bucket[1])
        key = np.where(np.asarray(batch.cand_mask), probs[..., 0], -np.inf)
        if key.shape[1] < k:  # the real executor ranks over the padded bucket
            key = np.pad(key, ((0, 0), (0, k - key.shape[1])), constant_values=-np.inf)
        top = np.argsort(-key, axis=1, kind="stable")[:, :k]
        with self._lock:
            self.calls += 1
        return ScoreResult(probs, top, np.take_along_axis(key, top, axis=1), bucket)

    def swap_weights(self, directory: str | Path) -> dict[str, Any]:
        p = Path(directory) / "fake_weights.json"
        if not p.exists():
            raise WeightsNotFound(f"path: {directory} has no fake_weights.json")
        try:
            raw = json.loads(p.read_text())
            shape, scale = tuple(int(d) for d in raw["shape"]), float(raw["scale"])
        except (ValueError, TypeError, KeyError) as e:   # JSONDecodeError is a ValueError
            raise IncompatibleWeights(f"{p}: not a fake weights file ({type(e).__name__}: "
                                      f"{e})") from None
        if shape != self.weight_shape:
            raise IncompatibleWeights(
                f"weights shape {list(shape)} does not match the compiled shape "
                f"{list(self.weight_shape)}")
        with self._lock:
            self._weights = _FakeWeights(shape, scale, self._weights.version + 1)
        return {"version": self._weights.version}

    def cost_flops(self, bucket: tuple[int, int]) -> float:
        return float(self.flops_per_pair * bucket[0] * bucket[1])

    def warmup(self) -> None:
        if self.warmup_delay_s:
            time.sleep(self.warmup_delay_s)
        self.warmed = True


def fake_probs(batch: RequestBatch, scale: float, tasks: int, history_len: int) -> np.ndarray:
    """The fake scorer's formula, exposed so tests can recompute expected scores."""
    req = np.asarray(batch.req_sparse, np.int64)
    cand = np.asarray(batch.cand_sparse, np.int64)
    dense = np.asarray(batch.cand_dense, np.float64)
    hl = np.minimum(np.asarray(batch.hist_len, np.float64), history_len)
    mix = ((cand * 2654435761 + req.sum(axis=1)[:, None, None] * 40503) % 1000).sum(-1)
    logit_bc = (mix / (500.0 * cand.shape[-1]) - 1.0) * 3.0 + 0.1 * dense.sum(-1)
    logit_bc = logit_bc + 0.01 * hl[:, None]
    offs = np.arange(tasks, dtype=np.float64)[None, None, :]
    logits = scale * logit_bc[..., None] - offs
    # clipped so huge (but float32-finite) dense features saturate without an overflow warning
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -500.0, 500.0)))).astype(np.float32)

