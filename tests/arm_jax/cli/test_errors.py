"""run_cli: how a command ends when something a user caused goes wrong."""

from __future__ import annotations

import subprocess
import sys

PRINT_FOREVER = """
import sys
from arm_jax.cli.errors import run_cli

def endless():
    i = 0
    while True:
        print(i)
        i += 1

sys.exit(run_cli(endless))
"""


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`arm-jax store read ... | head`: no BrokenPipeError traceback, SIGPIPE's exit code."""
    proc = subprocess.Popen([sys.executable, "-c", PRINT_FOREVER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "0\n"
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == ""


def test_an_allocation_too_large_is_one_line(capsys):
    """`bench sharing --candidates 100000000` and the like: numpy's MemoryError says how
    much was asked for; it was a traceback."""
    import numpy as np

    from arm_jax.cli.errors import run_cli

    def allocate():
        np.empty(1 << 47, np.float64)          # 1 PiB

    assert run_cli(allocate) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("arm-jax: error: Unable to allocate") and "\n" not in err, err
