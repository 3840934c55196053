"""The export's executable cache: a directory that cannot be made is one typed error."""

from __future__ import annotations

import pytest

from arm_jax.compile import ArtifactError
from arm_jax.compile.cache import ExecutableCache


def test_a_cache_directory_that_is_a_file_is_an_artifact_error(tmp_path):
    """mkdir raised FileExistsError (a traceback from `arm-jax export --cache-dir FILE`)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ArtifactError, match=f"executable cache {afile}: exists and is not a "
                                            "directory"):
        ExecutableCache(afile)
    with pytest.raises(ArtifactError, match=f"{afile} is a file, not a directory"):
        ExecutableCache(afile / "sub")
    assert ExecutableCache(tmp_path / "cache").dir.is_dir()
