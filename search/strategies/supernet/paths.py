"""Where a supernet's weights sit in the space, and which paths train them, fairly.

Positions: position 0 takes every cell the space allows first (every hybrid cell, which
includes the early and late ones; or the early and late cells when there is no hybrid
stage); position p >= 1 of a hybrid chain takes every hybrid cell, once per width of the
cell before it (that width decides the module's input shape). One training step runs one
chain of `max_cells` cells, one choice per position, and every head that can sit on one of
its prefixes (the one-cell hybrid, early with each trunk, late, the longer hybrid chains).

Fairness (FairNAS-style strict fairness, per position): position 0 walks through a fresh
random permutation of its choices every round (a round is as many steps as it has
choices), and position p >= 1 walks through a permutation of the choices that fit the
previous cell's width. After any whole number of rounds every position-0 choice has
trained equally often; every later choice has once each width group's cycle closes.
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from fusion_ops.supernet import CellKey, HeadKey, path_keys
from search.strategies._pools import CellTable
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec


def stage_cells(space: SearchSpace, stage: str) -> list[CellSpec]:
    """Every cell legal in `stage`, in the space's fixed order."""
    table = CellTable(space, stage)
    return [table[i] for i in range(len(table))]


def n_positions(space: SearchSpace) -> int:
    """Cell positions a chain has at most."""
    return space.max_cells if "hybrid" in space.stages else 1


def first_cells(space: SearchSpace) -> list[CellSpec]:
    """Every cell position 0 can take, in the space's order, without repeats."""
    stages = ("hybrid",) if "hybrid" in space.stages else space.stages
    return list(dict.fromkeys(c for s in stages for c in stage_cells(space, s)))


def later_cells(space: SearchSpace) -> list[CellSpec]:
    """Every cell a position p >= 1 can take (before the previous width is fixed)."""
    return stage_cells(space, "hybrid") if n_positions(space) > 1 else []


def n_choices(space: SearchSpace) -> int:
    """The most cells any position offers: the steps of one fairness round."""
    return max(len(first_cells(space)), len(later_cells(space)))


def prefix_specs(space: SearchSpace, cells: Sequence[CellSpec]) -> list[ArchSpec]:
    """The specs of the space whose cells are exactly `cells` (a chain from position 0)."""
    out = []
    if "hybrid" in space.stages:
        out.append(ArchSpec("hybrid", tuple(cells)))
    if len(cells) == 1:
        taps = cells[0].depths
        if "early" in space.stages and taps == space.stage_depths("early"):
            out += [ArchSpec("early", (cells[0],), t) for t in space.trunks]
        if "late" in space.stages and taps == space.stage_depths("late"):
            out.append(ArchSpec("late", (cells[0],)))
    return out


@dataclass(frozen=True)
class Path:
    """One training step: the chain (as a hybrid spec, for its cell keys) and, after cell i,
    the heads of every spec of the space that ends there (`heads[i]`, without repeats)."""

    chain: ArchSpec
    heads: dict[int, list[HeadKey]] = field(default_factory=dict)

    @property
    def cells(self) -> list[CellKey]:
        return path_keys(self.chain)[0]


def make_path(space: SearchSpace, cells: Sequence[CellSpec]) -> Path:
    heads = {i: list(dict.fromkeys(path_keys(s)[1] for s in prefix_specs(space, cells[: i + 1])))
             for i in range(len(cells))}
    return Path(ArchSpec("hybrid", tuple(cells)), heads)


def fair_paths(space: SearchSpace, rng: random.Random) -> Iterator[Path]:
    """Endless training paths, fair per position (see the module docstring)."""
    first, later = first_cells(space), later_cells(space)
    cycles: dict[tuple[int, int], list[CellSpec]] = {}  # (position, previous width) -> choices left in its cycle
    while True:
        for c0 in rng.sample(first, len(first)):
            cells = [c0]
            for p in range(1, n_positions(space)):
                group = (p, cells[-1].width)
                if not cycles.get(group):
                    cycles[group] = rng.sample(later, len(later))
                cells.append(cycles[group].pop())
            yield make_path(space, cells)


def covering_specs(space: SearchSpace) -> list[ArchSpec]:
    """Specs whose paths hold every module a spec of the space needs: every one-cell spec, and
    for each later position every cell after a cell of each width."""
    out = [s for c in first_cells(space) for s in prefix_specs(space, [c])]
    later = later_cells(space)
    for p in range(1, n_positions(space)):
        for width in space.widths:
            base = later[0]
            filler = tuple(CellSpec(base.taps, base.op, width, base.activation, base.args) for _ in range(p))
            out += [ArchSpec("hybrid", (*filler, c)) for c in later]
    return out
