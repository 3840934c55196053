"""Importing the library changes nothing global: no root log handler, no jax config, no
output (STYLE habit 15). Fresh interpreters: a module imported earlier in the session
would hide what its import does."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import logging, sys
import jax
before = {k: getattr(jax.config, k) for k in ("jax_enable_x64", "jax_compilation_cache_dir",
                                              "jax_default_matmul_precision", "jax_platforms")}
import {module}
after = {k: getattr(jax.config, k) for k in before}
assert not logging.getLogger().handlers, logging.getLogger().handlers
assert before == after, (before, after)
print("orbax" in {m.split(".")[0] for m in sys.modules})
"""


# arm_jax.checkpoint (imported by every training module) and parallel.checkpoint imported
# orbax at module level; orbax logs through absl at import, and absl's first log call runs
# logging.basicConfig(): the application's own basicConfig(level=...) then did nothing
@pytest.mark.parametrize("module", ["arm_jax.checkpoint", "arm_jax.parallel.checkpoint",
                                    "arm_jax.train.loop"])
def test_importing_configures_no_logging_and_no_jax_flag(module):
    out = subprocess.run([sys.executable, "-c", _PROBE.replace("{module}", module)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "False\n", out.stdout     # orbax waits until a checkpoint is used
