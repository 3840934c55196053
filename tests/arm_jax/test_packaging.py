"""A non-editable install (a wheel) carries the bundled configs: load_tier works anywhere."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import arm_jax
from arm_jax.config import default_config_dir

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(arm_jax.__file__).resolve().parent


def test_every_bundled_config_is_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["arm_jax"]
    files = [p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "configs").rglob("*")
             if p.is_file()]
    assert any(f.startswith("tiers/") or "/tiers/" in f for f in files), files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"not shipped in the wheel: {missing}"


def test_default_configs_live_inside_the_package(monkeypatch):
    monkeypatch.delenv("ARM_JAX_CONFIG_DIR", raising=False)
    d = default_config_dir()
    assert d.is_relative_to(PACKAGE) and (d / "features.yaml").is_file()
    # The repository's top-level `configs` (the documented layout) is the same directory.
    assert (ROOT / "configs").resolve() == d.resolve()
