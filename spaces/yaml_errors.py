"""`ConfigError` and YAML reading (public: `search/` and plugins use it), so that every configuration mistake is one line
saying where it is: `<file>: <key path>: <what is wrong>`.

Kept in `spaces` (the bottom of the import arrows) so that `search/` can reuse it.
"""
from __future__ import annotations

import contextlib
import re
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


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (the last would
    silently win) and reads `1e-3` and `1.0e4` as floats (YAML 1.1 wants `1.0e+4`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1's float pattern without its demands for a dot and a signed exponent
_FLOAT = re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """`text` parsed with `StrictLoader` (safe: builds plain data only)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


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
        return parse_yaml(text)
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
