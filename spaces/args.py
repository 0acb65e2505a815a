"""Declared arguments of a fusion operator: name, type, default and legal range.

Pure Python so that both `fusion_ops` (which checks arguments at construction)
and `spaces` (which enumerates the values to search) share one declaration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arg:
    """One operator argument.

    `kind` is "int", "float", "choice" or "bool". `low`/`high` bound numbers
    (inclusive); `choices` lists the legal values of a "choice".
    """

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    doc: str = ""

    def check(self, value: Any, where: str = "") -> Any:
        """Return `value` if legal for this argument, else raise ValueError naming it."""
        label = f"{where}.{self.name}" if where else self.name
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{label}: expected true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                legal = ", ".join(map(str, self.choices))
                raise ValueError(f"{label}: expected one of {legal}, got {value!r}")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{label}: expected an integer, got {value!r}")
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{label}: expected a number, got {value!r}")
            value = float(value)
        else:  # a declaration bug, not a user error
            raise TypeError(f"{label}: unknown argument kind {self.kind!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{label}: must be >= {self.low:g}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{label}: must be <= {self.high:g}, got {value!r}")
        return value

    def describe(self) -> str:
        """One line for `fusion-nas ops`: type, range and default."""
        if self.kind == "choice":
            legal = "{" + ", ".join(map(str, self.choices)) + "}"
        elif self.kind == "bool":
            legal = "bool"
        else:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            legal = f"{self.kind} in [{lo}, {hi}]"
        return f"{self.name}: {legal}, default {self.default!r}" + (f"  ({self.doc})" if self.doc else "")


def resolve_args(declared: tuple[Arg, ...], given: dict[str, Any], where: str) -> dict[str, Any]:
    """Defaults filled in and every given value checked; unknown names raise ValueError."""
    known = {a.name: a for a in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        legal = ", ".join(sorted(known)) or "none"
        raise ValueError(f"{where}: unknown argument {unknown[0]!r}; known: {legal}")
    return {name: a.check(given.get(name, a.default), where) for name, a in known.items()}
