"""Training settings a search may vary with the architecture (`space.train`), declared once.

`SETTINGS` is the table of what may be searched: each setting's type and legal bounds.
A config's `space.train` picks some of them, each as a list of choices or a range:

    space:
      train:
        lr: {low: 1.0e-4, high: 1.0e-1, log: true}   # log optional, default false
        weight_decay: [0.0, 1.0e-4, 1.0e-2]
        batch_size: [64, 128]

A value drawn from a range is rounded to 3 significant digits (an int setting's to the
nearest integer), so a trial's settings stay readable. Counting and grid search see a range
as `GRID_POINTS` points: low, high and evenly spaced between (log-spaced when `log`).
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from spaces._checks import as_list, is_int, known_keys, mapping, no_duplicates
from spaces.yaml_errors import ConfigError, at

GRID_POINTS = 3  # a range's points for size() and grid search: low, middle, high
SIGNIFICANT = 3  # digits kept of a value drawn from a float range
STEP = 0.2  # a mutation's step: std of a gaussian over the range scaled to [0, 1]


@dataclass(frozen=True)
class Setting:
    """One searchable training setting: `kind` "int" or "float", legal values in
    `low`..`high` (`None`: unbounded), each bound excluded when its `*_open` is set."""

    name: str
    kind: str
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    doc: str = ""

    def check(self, value: Any, where: str) -> int | float:
        """`value` as this setting's type (a float setting's 1 becomes 1.0), or ConfigError naming `where`."""
        if self.kind == "int" and not is_int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = f" (YAML reads {value} as text: write {_with_point(value)})" if _looks_numeric(value) else ""
            raise ConfigError(f"{where}: expected a number, got {value!r}{hint}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if value < self.low or (self.low_open and value == self.low):
            raise ConfigError(f"{where}: must be {'>' if self.low_open else '>='} {self.low:g}, got {value!r}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise ConfigError(f"{where}: must be {'<' if self.high_open else '<='} {self.high:g}, got {value!r}")
        return int(value) if self.kind == "int" else float(value)

    def describe(self) -> str:
        """`lr: float > 0 (Adam's learning rate)`."""
        bounds = f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            bounds += f" and {'<' if self.high_open else '<='} {self.high:g}"
        return f"{self.name}: {self.kind} {bounds}" + (f" ({self.doc})" if self.doc else "")


def _reflect(t: float) -> float:
    """`t` folded back into [0, 1] at the ends, so that steps do not pile up on the bounds."""
    t = -t if t < 0 else t
    t = 2.0 - t if t > 1 else t
    return min(max(t, 0.0), 1.0)


def _with_point(text: str) -> str:
    """`"1e-3" -> "1.0e-3"`: how YAML 1.1 reads a number in scientific notation."""
    mantissa, e, exponent = text.lower().partition("e")
    return f"{mantissa}.0{e}{exponent}" if e and "." not in mantissa else text


def _looks_numeric(value: Any) -> TypeGuard[str]:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("batch_size", "int", 1, doc="samples per optimiser step"),
        Setting("dropout", "float", 0.0, 1.0, high_open=True, doc="dropout rate in the fusion cells and head"),
        Setting("lr", "float", 0.0, low_open=True, doc="peak learning rate"),
        Setting("weight_decay", "float", 0.0, doc="weight decay, applied as train.optimizer says (adam: coupled L2; adamw: decoupled)"),
    )
}


@dataclass(frozen=True)
class TrainChoice:
    """What one setting may be in a space: `choices` (sorted), or a range `low..high`
    (`choices` empty) sampled uniformly, or log-uniformly when `log`."""

    name: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    @property
    def is_range(self) -> bool:
        return not self.choices

    @property
    def is_int(self) -> bool:
        return SETTINGS[self.name].kind == "int"

    @property
    def searched(self) -> bool:
        """Whether the setting can take two or more values."""
        return self.is_range or len(self.choices) > 1

    @property
    def grid(self) -> tuple[Any, ...]:
        """The values counted by `size()` and listed by `enumerate()`: the choices, or
        `GRID_POINTS` points of the range (fewer for a narrow int range)."""
        if not self.is_range:
            return self.choices
        points = [self.from_unit(i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)]
        return tuple(dict.fromkeys(points))

    def settle(self, x: float) -> Any:
        """`x` rounded (3 significant digits, or to an int) and kept within low..high."""
        v = int(round(x)) if self.is_int else float(f"{x:.{SIGNIFICANT}g}")
        return min(max(v, self.low), self.high)

    def unit(self, value: float) -> float:
        """A range's value mapped to [0, 1] (in log space when `log`)."""
        f = math.log if self.log else float
        return (f(value) - f(self.low)) / (f(self.high) - f(self.low))

    def from_unit(self, t: float) -> Any:
        """The settled value at position `t` in [0, 1] of the range (the inverse of `unit`)."""
        if t <= 0 or t >= 1:
            return self.low if t <= 0 else self.high
        if self.log:
            return self.settle(math.exp(math.log(self.low) + t * (math.log(self.high) - math.log(self.low))))
        return self.settle(self.low + t * (self.high - self.low))

    def sample(self, rng: random.Random) -> Any:
        """A choice uniformly, or a range's value uniformly (log-uniformly when `log`)."""
        if not self.is_range:
            return rng.choice(self.choices)
        if self.is_int and not self.log:
            return rng.randint(int(self.low), int(self.high))
        return self.from_unit(rng.random())

    def neighbour(self, value: Any, rng: random.Random) -> Any:
        """A value other than `value`: another choice, or a gaussian step within the range
        (log scale when `log`). The caller makes sure the setting is `searched`."""
        if not self.is_range:
            return rng.choice([c for c in self.choices if c != value])
        for _ in range(10):
            new = self.from_unit(_reflect(self.unit(value) + rng.gauss(0.0, STEP)))
            if new != value:
                return new
        return rng.choice([g for g in (self.low, self.high) if g != value])

    def check(self, value: Any, where: str) -> None:
        """Raise ValueError naming `where` unless `value` is one this choice can produce."""
        int_ok = is_int(value) if self.is_int else type(value) is float
        if not int_ok:
            raise ValueError(f"{where}: expected {'an integer' if self.is_int else 'a float'}, got {value!r}")
        if not self.is_range and value not in self.choices:
            raise ValueError(f"{where}: {value!r} is not searched; choices: {', '.join(map(str, self.choices))}")
        if self.is_range and not self.low <= value <= self.high:
            raise ValueError(f"{where}: {value!r} is outside the searched range [{self.low:g}, {self.high:g}]")

    def to_dict(self) -> Any:
        """As written in a config: a list of choices or `{low, high, log}`."""
        return {"low": self.low, "high": self.high, "log": self.log} if self.is_range else list(self.choices)

    def describe(self) -> str:
        """`lr: 0.0001..0.1 (log; grid 0.0001, 0.00316, 0.1)` or `batch_size: 64, 128`."""
        if not self.is_range:
            return f"{self.name}: {', '.join(f'{c:g}' for c in self.choices)}"
        kind = "log; " if self.log else ""
        return f"{self.name}: {self.low:g}..{self.high:g} ({kind}grid {', '.join(f'{g:g}' for g in self.grid)})"


def parse_train(raw: Any, where: str) -> tuple[TrainChoice, ...]:
    """The `space.train` section (None: nothing searched), checked, sorted by setting name."""
    given = mapping(raw, where, "a mapping of training setting -> list of choices or {low, high, log}")
    for name in given:
        if name not in SETTINGS:
            raise ConfigError(f"{at(where, name)}: unknown training setting {name!r}; known: {', '.join(SETTINGS)}")
    return tuple(_choice(SETTINGS[name], given[name], at(where, name)) for name in sorted(given))


def _choice(setting: Setting, raw: Any, where: str) -> TrainChoice:
    if isinstance(raw, Mapping):
        return _range(setting, raw, where)
    items = as_list(raw, where, "choices (or a range {low, high, log})")
    values = [setting.check(v, at(where, i)) for i, v in enumerate(items)]
    no_duplicates(values, where, "choice")
    return TrainChoice(setting.name, tuple(sorted(values)))


def _range(setting: Setting, raw: Mapping[str, Any], where: str) -> TrainChoice:
    known_keys(mapping(raw, where), where, ("low", "high", "log"))
    for key in ("low", "high"):
        if key not in raw:
            raise ConfigError(f"{at(where, key)}: missing (a range needs low and high)")
    low = setting.check(raw["low"], at(where, "low"))
    high = setting.check(raw["high"], at(where, "high"))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{at(where, 'log')}: expected true or false, got {log!r}")
    if high <= low:
        raise ConfigError(f"{at(where, 'high')}: must be > low ({low:g}), got {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{at(where, 'low')}: must be > 0 for a log range, got {low!r}")
    return TrainChoice(setting.name, (), low, high, log)
