"""Shape checks for values read from a config: each raises ConfigError naming the key path."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spaces.yaml_errors import ConfigError, at


def is_int(value: Any) -> bool:
    """An integer that is not a bool (YAML's `true` is no width)."""
    return isinstance(value, int) and not isinstance(value, bool)


def mapping(value: Any, where: str, what: str = "a mapping") -> Mapping[str, Any]:
    """`value` if it is a mapping with string keys; `None` counts as empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{at(where, str(key))}: keys must be names, got {key!r}")
    return value


def known_keys(d: Mapping[str, Any], where: str, known: Iterable[str]) -> None:
    """Raise on the first key of `d` that is not in `known`."""
    legal = sorted(known)
    for key in d:
        if key not in legal:
            raise ConfigError(f"{at(where, key)}: unknown key; known: {', '.join(legal)}")


def as_list(value: Any, where: str, what: str) -> list[Any]:
    """A non-empty list; a lone scalar is a list of one (`widths: 16`)."""
    if isinstance(value, (str, int, float, bool)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of {what}, got {value!r}")
    return value


def no_duplicates(values: list[Any], where: str, what: str = "value") -> None:
    """Raise naming the first repeated entry: a repeat is a typo, and would skew `size()`."""
    seen: list[Any] = []
    for i, v in enumerate(values):
        if any(v == s and type(v) is type(s) for s in seen):
            raise ConfigError(f"{at(where, i)}: duplicate {what} {v!r}")
        seen.append(v)


def positive_ints(value: Any, where: str) -> tuple[int, ...]:
    """A non-empty list of distinct positive integers, sorted."""
    items = as_list(value, where, "positive integers")
    for i, v in enumerate(items):
        if not is_int(v) or v < 1:
            raise ConfigError(f"{at(where, i)}: expected a positive integer, got {v!r}")
    no_duplicates(items, where)
    return tuple(sorted(items))


def names(value: Any, where: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A list of distinct names from `known`, returned in `known`'s order."""
    items = as_list(value, where, f"{what}s")
    for i, v in enumerate(items):
        if v not in known:
            raise ConfigError(f"{at(where, i)}: unknown {what} {v!r}; known: {', '.join(known)}")
    no_duplicates(items, where, what)
    return tuple(k for k in known if k in items)
