"""`arm-jax` entry point: subcommands dispatch to library functions."""

from __future__ import annotations

import argparse
import platform
import sys
import threading
from pathlib import Path

from arm_jax import stack_versions
from arm_jax.cli import bench_cmd, train_cmd
from arm_jax.cli.errors import LateSignalExit, interrupted_exit, run_cli
from arm_jax.cli.help_format import ArmJaxParser


OPTIONAL_COMMANDS = ("compile_cmd", "serve_cmd", "kernels_cmd", "store_cmd", "log_store_cmd",
                     "embeddings_cmd", "quant_cmd", "data_cmd", "demo_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = ArmJaxParser(
        prog="arm-jax",
        description="Request-oriented ads ranking in JAX: train, export, serve, benchmark.")
    parser.add_argument("--version", action=_PrintVersion,
                        help="print the versions of arm-jax and its numeric stack, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    optional = _optional_commands()
    train_cmd.register(sub)
    bench_cmd.register(sub, [m for m in optional if hasattr(m, "register_bench")])
    for module in optional:
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def version_line() -> str:
    """`arm-jax 0.1.0 (jax 0.7.1, jaxlib 0.7.1, ..., python 3.12.3)`: what a bug report needs."""
    versions = stack_versions()
    own = versions.pop("arm-jax")
    libs = ", ".join(f"{name} {v or 'not installed'}" for name, v in versions.items())
    return f"arm-jax {own} ({libs}, python {platform.python_version()})"


class _PrintVersion(argparse.Action):
    """Like argparse's `version` action, without re-wrapping the line at the terminal width."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def _optional_commands() -> list:
    """Command modules beside this one (export, serve, store, ...), when present.

    Each may define `register(sub)` for top-level commands and `register_bench(bsub)`
    for `arm-jax bench NAME` subcommands, so every capability owns its CLI file.
    """
    import importlib

    found = []
    for name in OPTIONAL_COMMANDS:
        try:
            found.append(importlib.import_module(f"arm_jax.cli.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"arm_jax.cli.{name}":
                raise
    return found


def parse_args(argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse a command line; `key=value` overrides may also follow options.

    argparse fills a `nargs="*"` positional from one unbroken run of arguments, so in
    `train model.d_model=64 --steps 5 train.seed=1` the second override would be an
    "unrecognized argument"; here it joins the command's overrides. Anything else left
    over is still an error, and so is an override given to a command that takes none.
    """
    parser = parser or build_parser()
    args, extra = parser.parse_known_args(argv)
    takes = isinstance(getattr(args, "overrides", None), list)
    if extra:
        if not takes or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if takes:
        _overrides_out_of_positionals(_command_parser(parser, args), args)
    return args


def _overrides_out_of_positionals(command: argparse.ArgumentParser,
                                  args: argparse.Namespace) -> None:
    """argparse hands the first words to the positionals: in `data check key=value FILE`
    FILE got the override and the file went among the overrides, and in `serve --fake
    small key=value` the optional artifact directory took it. A positional holding
    `key=value` that names no existing path goes back to the overrides; a required one
    takes the one override that is no `key=value`."""
    for action in command._actions:
        value = getattr(args, action.dest, None)
        if (action.option_strings or action.dest == "overrides" or not isinstance(value, str)
                or "=" not in value or Path(value).exists()):
            continue
        plain = [o for o in args.overrides if "=" not in o]
        if action.nargs == "?":
            args.overrides = [value, *args.overrides]
            setattr(args, action.dest, None)
        elif len(plain) == 1:
            args.overrides = [value, *(o for o in args.overrides if o != plain[0])]
            setattr(args, action.dest, plain[0])


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` was parsed for (`bench store`, `data check`)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def command_options(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> dict[str, str]:
    """{dest: option} of the (sub)command `args` was parsed for, e.g. {"users": "--users"}:
    the library names its arguments (`users=0: must be >= 1`), the CLI user typed options."""
    return {a.dest: max(a.option_strings, key=len)
            for a in _command_parser(parser, args)._actions
            if a.option_strings and a.dest != "help"}


def main(argv: list[str] | None = None) -> int:
    """The `arm-jax` command (argv None: the process's own, and a signal after the command
    returned exits with its code at once, see LateSignalExit)."""
    late = (LateSignalExit().install()
            if argv is None and threading.current_thread() is threading.main_thread() else None)
    try:
        parser = build_parser()
        args = parse_args(argv, parser)
    except KeyboardInterrupt:       # while parsing, before run_cli handles it
        return interrupted_exit()
    code = run_cli(lambda: args.func(args), options=command_options(parser, args))
    if late is not None:
        late.code = code
    return code


if __name__ == "__main__":
    sys.exit(main())
