"""arm-jax: request-oriented ads ranking in JAX (see README.md)."""

from importlib.metadata import PackageNotFoundError, version as _dist_version


def _package_version() -> str:
    """The installed distribution's version; a source tree run without installing has none."""
    try:
        return _dist_version("arm-jax")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _package_version()


def stack_versions() -> dict[str, str | None]:
    """Versions of arm-jax and the libraries whose versions decide numerics and artifacts.

    Read from package metadata (no jax import), so `arm-jax --version` stays instant; a
    library that is not installed is None.
    """
    out: dict[str, str | None] = {"arm-jax": __version__}
    for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
        try:
            out[dist] = _dist_version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
