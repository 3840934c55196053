"""Ahead-of-time compilation per routing tier: buckets, export, artifacts, manifests.

`load` / `ArtifactError` are the serving-side API (no model code is imported);
`arm_jax.compile.export` is the build side (imports the model).
"""

from arm_jax.compile.artifacts import Artifacts, LoadedTier, ScoreResult, load
from arm_jax.compile.errors import ArtifactError, BucketError

__all__ = ["ArtifactError", "Artifacts", "BucketError", "LoadedTier", "ScoreResult", "load"]
