"""`--help` shows every option's default once, as typed, and every argument says what it is."""

from __future__ import annotations

import argparse

from arm_jax.cli.help_format import ArmJaxParser, typed_default
from arm_jax.cli.main import build_parser


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())     # unwrapped: lines break anywhere


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def test_defaults_appended_once_as_typed_and_never_for_flags_or_none():
    p = ArmJaxParser(prog="x")
    p.add_argument("--sizes", default=(16, 64), help="candidates per request")
    p.add_argument("--rate", default=0.5, help="share of 100%% of requests")
    p.add_argument("--deadline", default=None, help="budget in ms")
    p.add_argument("--token", default="t", help="bearer token (default: $TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--bare", default=3)
    text = _help(p)
    assert "candidates per request (default: 16,64)" in text
    assert "share of 100% of requests (default: 0.5)" in text
    assert "budget in ms --token" in text                      # None: nothing appended
    assert text.count("default:") == 3                         # sizes, rate, token's own
    assert "print JSON --bare" in text                         # a flag: nothing appended
    assert typed_default([1, 2]) == "1,2" and typed_default("a") == "a"


def test_defaults_equal_to_true_or_false_are_shown_and_empty_lists_are_not():
    """1 == True and 0.0 == False: a test of `default in (False, True)` hid them."""
    p = ArmJaxParser(prog="x")
    p.add_argument("--repeats", type=int, default=1, help="runs per side")
    p.add_argument("--delay", type=float, default=0.0, help="added delay")
    p.add_argument("--group", action="append", default=[], help="a table group")
    text = _help(p)
    assert "runs per side (default: 1)" in text
    assert "added delay (default: 0.0)" in text
    assert "a table group" in text and "(default: )" not in text


def test_every_command_shows_its_defaults():
    parser = build_parser()
    serve = _help(_subparser(parser, "serve"))
    assert "waiting requests per tier (default: 64)" in serve
    assert serve.count("$ARM_JAX_TOKEN") == 1 and "(default: rules)" in serve
    sharing = _help(_subparser(parser, "bench", "sharing"))
    assert "(default: 32)" in sharing          # --pair-chunk, two levels down


def test_every_option_and_positional_of_every_command_has_help():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    assert isinstance(sub, ArmJaxParser), path + [name]
                    walk(sub, path + [name])
            elif not (a.help or "").strip():
                missing.append(" ".join(path + [(a.option_strings or [a.dest])[-1]]))

    walk(build_parser(), [])
    assert not missing, f"arguments without help: {missing}"
