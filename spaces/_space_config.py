"""Reading the `space:` section of a config into resolved, canonical fields.

Canonical means sorted and explicit (every declared operator argument listed with
the values searched), so that equal spaces compare equal and `to_dict` round-trips.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spaces._checks import as_list, is_int, known_keys, mapping, names, no_duplicates, positive_ints
from spaces.args import Arg
from spaces.spec import ACTIVATIONS, PREV, STAGES
from spaces.train_space import parse_train
from spaces.yaml_errors import ConfigError, at

MAX_CELLS = 8
# Used for every key the config leaves out (`ops` defaults to the whole catalogue).
DEFAULTS: dict[str, Any] = {
    "stages": list(STAGES),
    "widths": [16, 32, 64],
    "activations": ["relu", "tanh"],
    "max_cells": 3,
    "trunks": [[], [64]],
}
KEYS = ("stages", "ops", "widths", "activations", "max_cells", "trunks", "depths", "train")


@dataclass(frozen=True)
class OpChoice:
    """An operator of the space and, for each declared argument (sorted by name),
    the values searched; an argument not searched has its default as only value."""

    name: str
    args: tuple[tuple[Arg, tuple[Any, ...]], ...] = ()

    @property
    def size(self) -> int:
        """Number of distinct argument settings."""
        return math.prod(len(values) for _, values in self.args)

    def settings(self) -> Iterator[tuple[tuple[str, Any], ...]]:
        """Every argument setting, as `CellSpec.args` tuples."""
        arg_names = [a.name for a, _ in self.args]
        for combo in itertools.product(*(values for _, values in self.args)):
            yield tuple(zip(arg_names, combo, strict=True))

    def sample(self, rng: random.Random) -> tuple[tuple[str, Any], ...]:
        """One argument setting, each value uniform over its searched values."""
        return tuple((a.name, rng.choice(values)) for a, values in self.args)

    def values(self) -> dict[str, tuple[Any, ...]]:
        """`{argument: searched values}`."""
        return {a.name: values for a, values in self.args}


def _arg_values(arg: Arg, raw: Any, where: str) -> tuple[Any, ...]:
    """Checked, distinct, canonically ordered values of one argument."""
    label = at(where, arg.name)
    items = as_list(raw, label, "values")
    try:
        checked = [arg.check(v, where) for v in items]
    except ValueError as e:
        raise ConfigError(str(e)) from None
    no_duplicates(checked, label)
    if arg.kind == "choice":
        return tuple(c for c in arg.choices if c in checked)
    return tuple(sorted(checked))


def _op_choice(name: str, declared: tuple[Arg, ...], raw: Any, where: str) -> OpChoice:
    given = mapping(raw, where, "a mapping of argument -> list of values ({} for the defaults)")
    known = {a.name: a for a in declared}
    for key in given:
        if key not in known:
            legal = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{at(where, key)}: unknown argument {key!r} of {name}; known: {legal}")
    args = tuple(
        (a, _arg_values(a, given[a.name], where) if a.name in given else (a.default,))
        for a in sorted(declared, key=lambda a: a.name)
    )
    return OpChoice(name, args)


def _ops(raw: Any, catalogue: Mapping[str, tuple[Arg, ...]], where: str) -> tuple[OpChoice, ...]:
    known = ", ".join(sorted(catalogue))
    if raw is None:  # no `ops` key: every operator with its default arguments
        return tuple(_op_choice(n, tuple(catalogue[n]), {}, at(where, n)) for n in sorted(catalogue))
    if isinstance(raw, list):  # `ops: [concat, tensor]`: those operators, default arguments
        for i, n in enumerate(raw):
            if not isinstance(n, str) or n not in catalogue:
                raise ConfigError(f"{at(where, i)}: unknown operator {n!r}; known: {known}")
        no_duplicates(raw, where, "operator")
        raw = {n: {} for n in raw}
    given = mapping(raw, where, "a mapping of operator -> {argument: [values]} or a list of operators")
    for n in given:
        if n not in catalogue:
            raise ConfigError(f"{at(where, n)}: unknown operator {n!r}; known: {known}")
    if not given:
        raise ConfigError(f"{where}: expected at least one operator; known: {known}")
    return tuple(_op_choice(n, tuple(catalogue[n]), given[n], at(where, n)) for n in sorted(given))


def _max_cells(raw: Any, where: str) -> int:
    if not is_int(raw):
        raise ConfigError(f"{where}: expected an integer, got {raw!r}")
    if not 1 <= raw <= MAX_CELLS:
        raise ConfigError(f"{where}: must be between 1 and {MAX_CELLS}, got {raw}")
    return int(raw)


def _trunks(raw: Any, where: str) -> tuple[tuple[int, ...], ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of trunks (lists of hidden widths), got {raw!r}")
    trunks = []
    for i, t in enumerate(raw):
        if not isinstance(t, list):
            raise ConfigError(f"{at(where, i)}: expected a list of hidden widths ([] for none), got {t!r}")
        # a trunk's layer order matters: check the widths one by one, keep their order
        for j, w in enumerate(t):
            if not is_int(w) or w < 1:
                raise ConfigError(f"{at(at(where, i), j)}: expected a positive integer, got {w!r}")
        trunks.append(tuple(t))
    no_duplicates(trunks, where, "trunk")
    return tuple(sorted(trunks, key=lambda t: (len(t), t)))


def check_offered(depths: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """The caller's `{modality: tap depths}`, checked (a programming error raises ValueError)."""
    if not isinstance(depths, Mapping) or len(depths) < 2:
        raise ValueError(f"depths: fusion needs taps of at least 2 modalities, got {depths!r}")
    out = {}
    for m in sorted(depths):
        if not isinstance(m, str) or not m or m == PREV or "@" in m:
            raise ValueError(f"depths: bad modality name {m!r}")
        ds = list(depths[m])
        if not ds or any(not is_int(d) or d < 0 for d in ds) or len(set(ds)) != len(ds):
            raise ValueError(f"depths.{m}: expected distinct non-negative tap depths, got {ds!r}")
        out[m] = tuple(sorted(ds))
    return out


def _depths(raw: Any, offered: dict[str, tuple[int, ...]], where: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    given = mapping(raw, where, "a mapping of modality -> list of tap depths")
    for m in given:
        if m not in offered:
            raise ConfigError(f"{at(where, m)}: unknown modality {m!r}; known: {', '.join(offered)}")
    out = dict(offered)
    for m, ds in given.items():
        label = at(where, m)
        items = as_list(ds, label, "tap depths")
        for i, d in enumerate(items):
            if not is_int(d) or d not in offered[m]:
                legal = ", ".join(map(str, offered[m]))
                raise ConfigError(f"{at(label, i)}: tap depth {d!r} is not offered by {m}; offered: {legal}")
        no_duplicates(items, label, "tap depth")
        out[m] = tuple(sorted(items))
    return tuple(sorted(out.items()))


def parse_space(
    d: Any, catalogue: Mapping[str, tuple[Arg, ...]], depths: Mapping[str, Sequence[int]], where: str
) -> dict[str, Any]:
    """The `SearchSpace` fields for config section `d` (None = all defaults)."""
    if not catalogue:
        raise ValueError("catalogue: no fusion operators to search")
    offered = check_offered(depths)
    d = mapping(d, where or "(top level)", "a mapping")
    known_keys(d, where, KEYS)

    def get(key: str) -> Any:
        value = d.get(key)
        return DEFAULTS[key] if value is None else value

    return {
        "stages": names(get("stages"), at(where, "stages"), STAGES, "stage"),
        "ops": _ops(d.get("ops"), catalogue, at(where, "ops")),
        "widths": positive_ints(get("widths"), at(where, "widths")),
        "activations": names(get("activations"), at(where, "activations"), ACTIVATIONS, "activation"),
        "max_cells": _max_cells(get("max_cells"), at(where, "max_cells")),
        "trunks": _trunks(get("trunks"), at(where, "trunks")),
        "depths": _depths(d.get("depths"), offered, at(where, "depths")),
        "train": parse_train(d.get("train"), at(where, "train")),
    }
