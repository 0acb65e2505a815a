"""What every `fusion-nas` command module shares: the `UsageError` a user's mistake raises,
and the `COMMANDS` table `main` dispatches through (each command module adds its own with
`@command(name)`). Below both `commands` and `results`, so neither imports the other's errors."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

Command = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, Command] = {}


class UsageError(ValueError):
    """A bad command line: reported as one line, exit code 2."""


def command(name: str) -> Callable[[Command], Command]:
    """Register the decorated function as `fusion-nas NAME`; a name is taken once."""

    def add(fn: Command) -> Command:
        if name in COMMANDS:
            raise ValueError(f"fusion-nas {name}: registered twice ({COMMANDS[name].__qualname__}, {fn.__qualname__})")
        COMMANDS[name] = fn
        return fn

    return add


def usage(err: BaseException) -> NoReturn:
    """`err` (a missing run directory, a damaged export) as the user's mistake: one line, exit 2."""
    raise UsageError(str(err)) from None
