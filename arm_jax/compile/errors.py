"""The one typed error of the artifact layer."""

from __future__ import annotations


class ArtifactError(RuntimeError):
    """An artifact is missing, tampered with, built for another jax/platform, or cannot
    run the request (no bucket fits, weights of the wrong shape). The message names the
    file, field or limit."""


class BucketError(ArtifactError, ValueError):
    """A request is larger than the tier's largest compiled bucket (never compiled on the fly)."""
