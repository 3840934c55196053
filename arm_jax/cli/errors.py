"""Turn expected failures into one clear line and a non-zero exit (no traceback)."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Mapping

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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a process manager stopping the command), raised like Ctrl-C's
    KeyboardInterrupt so the same clean-up runs (partial files removed, stores closed)."""


def interrupted_exit(signum: int = signal.SIGINT) -> int:
    """Ctrl-C or SIGTERM: one line on stderr, exit status 128 + the signal (130, 143), as a
    shell reports a command the signal ended."""
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    print(f"arm-jax: {word}", file=sys.stderr)
    return 128 + signum


def send_again(signum: int, done: threading.Event, sent: list[int],
               delay_s: float = 0.05) -> None:
    """Send `signum` to the main thread `delay_s` from now (noting it in `sent`, so the
    handler knows it for a re-send, not a new signal), unless `done` is set by then (the
    command ended; its handler is gone, and SIGTERM's default would kill the process).
    To the main thread, where the handler runs: a process-directed signal may be delivered
    to another thread and leave the main one asleep until it wakes."""
    def send() -> None:
        if not done.is_set():
            sent.append(signum)
            signal.pthread_kill(threading.main_thread().ident, signum)

    again = threading.Timer(delay_s, send)
    again.daemon = True
    again.start()


def importing(frame: FrameType | None) -> bool:
    """Whether `frame` runs inside an import (a module's top-level code, under importlib's
    machinery). An exception raised there leaves the module half-initialised, and for
    jaxlib's native modules that could crash the interpreter at exit (exit -11)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


class LateSignalExit:
    """For the process entry point: a Ctrl-C or SIGTERM after the command has returned,
    while the interpreter shuts down (jax's and grain's clean-up), ended the process by
    the signal (exit -2 and a traceback) or printed `Exception ignored ... KeyboardInterrupt`.
    The work is done then, so the process exits at once with the command's code (`code`,
    set when the command returns; before that, the usual one line and 130/143)."""

    def __init__(self) -> None:
        self.code: int | None = None

    def install(self) -> "LateSignalExit":
        """Handle SIGINT and SIGTERM (run_cli's own handlers take over while it runs)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        code = interrupted_exit(signum) if self.code is None else self.code
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):     # closed, or its reader went away
                pass
        os._exit(code)


def run_cli(fn: Callable[[], int | None], options: Mapping[str, str] | None = None) -> int:
    """Run a command: expected errors become one line on stderr and exit 2 (`options`,
    {argument name: option}, renames a leading `name=` to the option the user typed).

    Ctrl-C is one line and exit 130 (SIGTERM: 143). Where Python swallows what the
    handler raises (a garbage-collection callback such as jax's, a weakref callback, a
    finalizer: "Exception ignored in ..."), the command would run on (`serve` went on to
    serve), so the signal is sent again 50 ms later, until it lands in the command's own
    code. The first signal during an import waits for the import to finish the same way
    (jaxlib half-imported could crash the interpreter at exit); a second one does not
    wait. Every signal is recorded, so a command that swallowed it all the same still ends
    130/143. `serve` hands both signals to uvicorn while it serves (a drained SIGTERM
    exits 0 there)."""
    received: list[int] = []        # the signals sent to the process
    resent: list[int] = []          # ours, sent again, not yet handled
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        again = signum in resent
        if again:
            resent.remove(signum)
        else:
            received.append(signum)
        if (again or len(received) == 1) and importing(frame):
            send_again(signum, done, resent)    # after the import; a second signal: now
            return
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def on_unraisable(unraisable: Any) -> None:
        if received and isinstance(unraisable.exc_value, KeyboardInterrupt):
            send_again(received[-1], done, resent)  # ours, swallowed: not printed, sent again
        else:
            previous_hook(unraisable)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = ({sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                if main_thread else {})
    previous_hook = sys.unraisablehook
    if main_thread:
        sys.unraisablehook = on_unraisable
    try:
        code = int(fn() or 0)
        if received:
            raise KeyboardInterrupt
        return code
    except KeyboardInterrupt as e:
        first = received[0] if received else (
            signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        return interrupted_exit(first)
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
        done.set()
        if main_thread:
            sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            if handler is not None:                   # None: a handler set outside Python
                signal.signal(sig, handler)
