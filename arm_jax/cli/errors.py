"""Turn expected failures into one clear line and a non-zero exit (no traceback)."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from typing import Callable, Mapping

from arm_jax.config import ConfigError

# MemoryError: numpy's "Unable to allocate 5.96 GiB for an array with shape ..." says what
# a size asked for better than its traceback. ValueError covers BatchError, whose module
# imports jax: importing it here put a second of jax import before any Ctrl-C was handled.
EXPECTED: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError,
                                             NotADirectoryError, PermissionError, ValueError,
                                             MemoryError)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Library error types a user can cause and fix; imported lazily to keep start-up light."""
    extra: list[type[BaseException]] = []
    for mod, name in (("arm_jax.checkpoint", "CheckpointError"),
                      ("arm_jax.compile.artifacts", "ArtifactError"),
                      ("arm_jax.store.base", "StoreError"),
                      ("arm_jax.data.arrow", "PyarrowMissing"),
                      ("serving.serve_bench", "ServeBenchError"),
                      ("serving.loadgen", "LoadgenError"),
                      ("serving.client", "RankError")):
        try:
            module = __import__(mod, fromlist=[name])
            extra.append(getattr(module, name))
        except (ImportError, AttributeError):
            pass
    return EXPECTED + tuple(extra)


def name_options(message: str, options: Mapping[str, str]) -> str:
    """`users=0: must be >= 1` -> `--users 0: must be >= 1` when `users` is the command's
    `--users`: the error names what the user typed. Other messages are left as they are."""
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", message)
    if m is None or m.group(1) not in options:
        return message
    if re.search(r",\s*[A-Za-z_][A-Za-z0-9_]*=", message.split(": ", 1)[0]):
        return message      # a list of arguments (`users=1000, history_median=1e+13: ...`)
    return f"{options[m.group(1)]} {message[m.end():]}"


def interrupted_exit() -> int:
    """Ctrl-C: one line on stderr, exit status 130 (128 + SIGINT), as a shell reports it."""
    print("arm-jax: interrupted", file=sys.stderr)
    return 130


def run_cli(fn: Callable[[], int | None], options: Mapping[str, str] | None = None) -> int:
    """Run a command: expected errors become one line on stderr and exit 2 (`options`,
    {argument name: option}, renames a leading `name=` to the option the user typed).

    Ctrl-C is one line and exit 130, also when the KeyboardInterrupt was swallowed on its
    way (jax's garbage-collection callback prints "Exception ignored" and the command ran
    on to exit 0): the SIGINT is recorded as well as raised."""
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        code = int(fn() or 0)
        if interrupted:
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt:
        return interrupted_exit()
    except BrokenPipeError:
        # the reader went away (`arm-jax store read ... | head`): stop quietly, as a Unix
        # tool killed by SIGPIPE would, and keep Python from complaining at exit as well
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except expected_errors() as e:
        if os.environ.get("ARM_JAX_DEBUG"):
            raise
        print(f"arm-jax: error: {name_options(str(e), options or {})}", file=sys.stderr)
        return 2
    finally:
        if main_thread and previous is not None:     # None: a handler set outside Python
            signal.signal(signal.SIGINT, previous)
