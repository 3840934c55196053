"""The command line's parsing: overrides anywhere after the command, nothing else stray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from arm_jax.cli.main import parse_args


def test_overrides_may_follow_options():
    args = parse_args(["train", "model.d_model=64", "--steps", "5", "train.seed=1",
                       "--tier", "medium", "train.batch_size=8"])
    assert args.overrides == ["model.d_model=64", "train.seed=1", "train.batch_size=8"]
    assert (args.steps, args.tier) == (5, "medium")
    args = parse_args(["data", "check", "d1/train.npz", "--tier", "small", "train.seed=1"])
    assert args.overrides == ["train.seed=1"]


def test_overrides_may_come_before_a_positional():
    """argparse gives the first word to the positional; it goes back to the overrides."""
    args = parse_args(["data", "check", "features.tasks=[like]", "a.npz", "train.seed=1"])
    assert args.file == "a.npz" and args.overrides == ["features.tasks=[like]", "train.seed=1"]
    args = parse_args(["serve", "--fake", "small", "model.d_model=64"])    # optional one
    assert args.artifacts is None and args.overrides == ["model.d_model=64"]
    args = parse_args(["serve", "art=1", "--fake", "small"])
    assert args.artifacts is None and args.overrides == ["art=1"]


@pytest.mark.parametrize("argv, stray", [
    (["train", "model.d_model=64", "--steps", "5", "oops"], "oops"),
    (["train", "--steps", "5", "--stepz=6"], "--stepz=6"),
    (["inspect", "artifacts", "model.d_model=64"], "model.d_model=64"),   # takes none
])
def test_anything_else_left_over_is_still_an_error(argv, stray, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert f"unrecognized arguments: {stray}" in capsys.readouterr().err


def test_the_command_line_starts_without_importing_jax():
    """`cli.errors` imported arm_jax.batch, and so jax and flax (~1 s), before any Ctrl-C
    was handled or any command ran: `--help` and a mistyped option paid for it too."""
    code = "import sys, arm_jax.cli.main; print('jax' in sys.modules, 'flax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[3], timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


def test_a_ctrl_c_swallowed_on_its_way_still_ends_the_command_with_130(capsys):
    """jax's garbage-collection callback swallows a KeyboardInterrupt raised inside it
    ("Exception ignored ..."), and the command ran on to exit 0; the SIGINT is recorded."""
    from arm_jax.cli.errors import run_cli

    def swallowed() -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)                # the handler runs here
        except KeyboardInterrupt:
            pass                          # as the gc callback does
        return 0

    before = signal.getsignal(signal.SIGINT)
    assert run_cli(swallowed) == 130
    assert capsys.readouterr().err == "arm-jax: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is before       # put back


def test_sigterm_ends_the_command_with_143_after_its_clean_up(capsys):
    """A process manager's SIGTERM (before, it killed the command outright: exit -15 and no
    `finally` ran) is one line and 128 + 15, and the command's clean-up runs first."""
    from arm_jax.cli.errors import run_cli

    cleaned: list[bool] = []

    def stopped_by_a_process_manager() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)                # the handler runs here
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert run_cli(stopped_by_a_process_manager) == 143
    assert capsys.readouterr().err == "arm-jax: terminated\n"
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before       # put back


class _SlowFinalizer:
    def __del__(self):
        time.sleep(0.5)                   # the signal arrives in here


class _Referent:
    pass


def _in_gc_callback() -> None:
    import gc

    def slow_callback(phase, info):
        if phase == "start":
            time.sleep(0.5)               # the signal arrives in here

    gc.callbacks.append(slow_callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(slow_callback)


def _in_weakref_callback() -> None:
    import weakref

    obj = _Referent()
    ref = weakref.ref(obj, lambda _: time.sleep(0.5))   # the signal arrives in here
    del obj
    assert ref() is None


def _in_finalizer() -> None:
    obj = _SlowFinalizer()
    del obj


@pytest.mark.parametrize("swallowing", [_in_gc_callback, _in_weakref_callback, _in_finalizer])
def test_a_signal_python_swallows_is_sent_again_and_stops_the_command(swallowing, capsys):
    """Python swallows what a signal handler raises inside a gc callback (jax's), a weakref
    callback or a finalizer ("Exception ignored in ..."): `serve` went on to serve after a
    SIGTERM while its tiers loaded, and a CI run saw the signal sent again land in a
    WeakKeyDictionary's callback and the command run to its end. Each swallowed signal
    is sent again until it stops the command where it next runs."""
    from arm_jax.cli.errors import run_cli

    finished: list[bool] = []

    def command() -> int:
        threading.Timer(0.1, signal.pthread_kill,
                        (threading.main_thread().ident, signal.SIGTERM)).start()
        swallowing()
        time.sleep(3)                     # the signal, sent again, stops the command here
        finished.append(True)
        return 0

    hook = sys.unraisablehook
    t0 = time.monotonic()
    assert run_cli(command) == 143
    assert time.monotonic() - t0 < 2.5 and not finished
    assert sys.unraisablehook is hook       # put back
    assert capsys.readouterr().err == "arm-jax: terminated\n"  # no "Exception ignored"


_LATE_SIGNAL = """
import atexit, os, signal, sys, time
{setup}
sys.argv = ["arm-jax", "inspect", {missing!r}]
from arm_jax.cli.main import main
code = main()
{after}
sys.exit(code)
"""


@pytest.mark.parametrize("setup, after", [
    # while the interpreter shuts down (registered first: runs after every other hook)
    ("atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(10)))", ""),
    # between the command's return and the exit (was: exit -2 and a traceback)
    ("", "os.kill(os.getpid(), signal.SIGINT); time.sleep(10)"),
])
def test_a_signal_after_the_command_returned_exits_with_its_code_at_once(tmp_path, setup,
                                                                          after):
    """The command already failed with its one line (exit 2); a Ctrl-C then must neither
    turn that into -2 nor print a KeyboardInterrupt traceback, nor wait out the clean-up."""
    script = _LATE_SIGNAL.format(setup=setup, after=after, missing=str(tmp_path / "none"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    elapsed = time.perf_counter() - start
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "is not a directory" in done.stderr
    assert "KeyboardInterrupt" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert elapsed < 8, elapsed    # the 10 s sleep was cut short (imports take ~2 s)


_SLOW_MODULE = """
import time
time.sleep(0.5)                           # the signal arrives in here
COMPLETE = True
"""


@pytest.mark.parametrize("second_signal", [False, True], ids=["one-signal", "two-signals"])
def test_a_signal_during_an_import_waits_for_it_unless_sent_twice(tmp_path, monkeypatch,
                                                                  second_signal):
    """A KeyboardInterrupt raised inside a module's top-level code left it half-imported:
    for jaxlib's native modules a Ctrl-C in a command's first second could crash the
    interpreter at exit (-11). The first signal now waits for the import to finish, then
    stops the command; a second one stops it at once (an import that hangs)."""
    from arm_jax.cli.errors import run_cli

    name = f"slow_module_{int(second_signal)}"
    (tmp_path / f"{name}.py").write_text(_SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    finished: list[bool] = []

    def command() -> int:
        main = threading.main_thread().ident
        threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT)).start()
        if second_signal:   # another kind: two SIGINTs close together can merge into one
            threading.Timer(0.25, signal.pthread_kill, (main, signal.SIGTERM)).start()
        __import__(name)
        time.sleep(3)                     # the deferred signal stops the command here
        finished.append(True)
        return 0

    try:
        assert run_cli(command) == 130 and not finished
        # whole after one signal; cut short (so never imported) after two
        assert (getattr(sys.modules.get(name), "COMPLETE", False)) is not second_signal
    finally:
        sys.modules.pop(name, None)
