"""`ConfigError` and YAML reading, so that every configuration mistake is one line
saying where it is: `<file>: <key path>: <what is wrong>`.

Kept in `spaces` (the bottom of the import arrows) so that `search/` can reuse it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A mistake in a configuration, as one line: `[file: ]key.path: what is wrong`."""


def at(where: str, key: str | int) -> str:
    """Key path of `key` under `where`: `("space", "ops") -> "space.ops"`, `("space.stages", 1) -> "space.stages[1]"`."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(text.split())


def read_yaml(path: str | Path) -> Any:
    """`yaml.safe_load` of a file; a missing file or bad syntax raises ConfigError naming the file (and line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(one_line(f"{path}: cannot read: {e.strerror or e}")) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(one_line(f"{where}: invalid YAML: {problem}")) from None


@contextlib.contextmanager
def in_file(path: str | Path) -> Iterator[None]:
    """Re-raise a ConfigError raised inside with the file path in front."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(one_line(f"{path}: {e}")) from None
