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


def test_a_library_argument_in_an_error_is_named_as_the_option_typed(capsys):
    """The library says `users=0: must be >= 1`; the CLI user typed `--users 0`."""
    from arm_jax.cli.errors import name_options
    from arm_jax.cli.main import main

    options = {"users": "--users", "batch_window_ms": "--batch-window-ms"}
    assert name_options("users=0: must be >= 1", options) == "--users 0: must be >= 1"
    assert name_options("batch_window_ms=5000.0: must be in [0, 1000]", options) == (
        "--batch-window-ms 5000.0: must be in [0, 1000]")
    for untouched in ("history=3: must be >= 1", "train.seed=x is not an int",
                      "--users: bad", "no name here: users=0",
                      "users=1000, history_median=1e+13: needs 2 GiB"):
        assert name_options(untouched, options) == untouched
    assert main(["bench", "store", "--users", "0"]) == 2
    assert capsys.readouterr().err == "arm-jax: error: --users 0: must be >= 1\n"
