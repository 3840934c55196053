"""`arm-jax --version` and `python -m arm_jax`: the first lines of a bug report."""

from __future__ import annotations

import platform
import subprocess
import sys

import jax
import pytest

import arm_jax
from arm_jax.cli.main import main


def test_version_names_the_stack_on_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1          # not re-wrapped at the terminal width
    assert out.startswith(f"arm-jax {arm_jax.__version__} (")
    assert f"jax {jax.__version__}," in out and f"python {platform.python_version()})" in out


def test_the_package_version_is_the_distribution_version():
    from importlib.metadata import version

    assert arm_jax.__version__ == version("arm-jax")
    assert arm_jax.stack_versions()["jax"] == jax.__version__


def test_python_dash_m_runs_the_cli():
    run = subprocess.run([sys.executable, "-m", "arm_jax", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("arm-jax ")
