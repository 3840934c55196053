"""`arm-jax` entry point: subcommands dispatch to library functions."""

from __future__ import annotations

import argparse
import sys

from arm_jax.cli import bench_cmd, train_cmd
from arm_jax.cli.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arm-jax",
        description="Request-oriented ads ranking in JAX: train, export, serve, benchmark.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train_cmd.register(sub)
    bench_cmd.register(sub)
    for module in _optional_commands():
        module.register(sub)
    return parser


def _optional_commands() -> list:
    """Commands whose modules live beside this one (export, serve, ...), when present."""
    import importlib

    found = []
    for name in ("compile_cmd", "serve_cmd", "parallel_cmd", "quant_cmd", "demo_cmd"):
        try:
            found.append(importlib.import_module(f"arm_jax.cli.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"arm_jax.cli.{name}":
                raise
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
