"""`--help` that shows every option's default, so an operator need not read the code.

argparse's own `ArgumentDefaultsHelpFormatter` appends `(default: ...)` to every option,
also where the help already says what the default is (`default: $ARM_JAX_TOKEN`, `default:
the routed tier's serving.deadline_ms`), prints a tuple default as Python's `(16, 64)` where
the option takes `16,64`, and shows flags' `False`. This one appends the default only where
the help names none, as the option is typed, and never for flags or unset (None) values.
"""

from __future__ import annotations

import argparse
from typing import Any


def typed_default(value: Any) -> str:
    """A default as the user would type it: (16, 64) -> '16,64'."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = action.default
        if (not text or not action.option_strings or "default" in text.lower()
                or default is None or isinstance(default, bool)   # not `in (False, True)`:
                or default is argparse.SUPPRESS or action.nargs == 0  # 1 == True, 0.0 == False
                or (isinstance(default, (tuple, list)) and not default)):
            return text
        shown = typed_default(action.default).replace("%", "%%")   # help is %-formatted
        return f"{text} (default: {shown})"


class ArmJaxParser(argparse.ArgumentParser):
    """The CLI's parser class: subcommand parsers inherit it (argparse makes them with
    `type(parent)`), so every command's help shows its defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
