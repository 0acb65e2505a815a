"""Neighbours of a spec: change exactly one choice and stay inside the space.

Each move returns a different, valid spec, or None when it cannot apply (e.g. only
one width is offered). `mutate` tries the moves in random order, so every applicable
kind of change is equally likely whatever the number of places it could apply to.
A space that searches training settings adds one more kind: change one setting.

Twins (see `SearchSpace.canonical`): every neighbour is canonical and another model than
`spec`'s. A one-cell spec without a trunk is also a one-cell chain, so when the space
searches hybrid chains it moves as one (another depth of a tap, a cell added); a move to
another stage that would only rename the same model is not a move.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from spaces.spec import ArchSpec, CellSpec, make_tap

if TYPE_CHECKING:
    from spaces.space import SearchSpace

Move = Callable[["SearchSpace", ArchSpec, random.Random], "ArchSpec | None"]


def _other(rng: random.Random, options: tuple[Any, ...] | list[Any], current: Any) -> Any:
    """A uniform choice among `options` other than `current` (callers ensure one exists)."""
    return rng.choice([o for o in options if o != current])


def _with_cell(spec: ArchSpec, i: int, cell: CellSpec) -> ArchSpec:
    return replace(spec, cells=spec.cells[:i] + (cell,) + spec.cells[i + 1 :])


def _chain(space: SearchSpace, spec: ArchSpec) -> ArchSpec | None:
    """`spec` as a hybrid chain of this space (a one-cell spec without a trunk is one), or None."""
    return space.as_chain(spec) if "hybrid" in space.stages else None


def change_stage(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Move to another stage, keeping the first cell's operator, width and activation, and
    becoming another model (a stage that would only rename this one is not offered)."""
    here = space.canonical(spec)
    options: dict[str, list[ArchSpec]] = {}
    for stage in space.stages:
        if stage == spec.stage:
            continue
        first = spec.cells[0]
        fixed = space.stage_depths(stage)
        if fixed is not None:  # early/late taps are offered depths, so a hybrid keeps them as they are
            first = replace(first, taps=tuple(make_tap(m, d) for m, d in fixed.items()))
        specs = [space.canonical(ArchSpec(stage, (first,), head, spec.train)) for head in space.heads(stage)]
        specs = [s for s in specs if s.stage == stage and s != here]
        if specs:
            options[stage] = specs
    if not options:
        return None
    return rng.choice(options[rng.choice(list(options))])


def change_depth(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Move one tap of one hybrid cell (a one-cell spec without a trunk: its cell) to another
    offered depth."""
    offered = space.depth_map
    sites = [(i, m) for i in range(len(spec.cells)) for m in space.modalities if len(offered[m]) > 1]
    chain = _chain(space, spec)
    if chain is None or not sites:
        return None
    spec = chain
    i, m = rng.choice(sites)
    depths = spec.cells[i].depths
    depths[m] = _other(rng, offered[m], depths[m])
    return _with_cell(spec, i, replace(spec.cells[i], taps=tuple(make_tap(k, d) for k, d in depths.items())))


def change_op(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Give one cell another operator (with random searched arguments)."""
    if len(space.ops) < 2:
        return None
    i = rng.randrange(len(spec.cells))
    op = _other(rng, space.ops, space.op_map[spec.cells[i].op])
    return _with_cell(spec, i, replace(spec.cells[i], op=op.name, args=op.sample(rng)))


def change_arg(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Change one searched argument of one cell's operator."""
    ops = space.op_map
    sites = [
        (i, name, values)
        for i, cell in enumerate(spec.cells)
        for name, values in ops[cell.op].values().items()
        if len(values) > 1
    ]
    if not sites:
        return None
    i, name, values = rng.choice(sites)
    args = spec.cells[i].op_args
    args[name] = _other(rng, values, args[name])
    return _with_cell(spec, i, replace(spec.cells[i], args=tuple(args.items())))


def _change_field(field: str, options: Callable[[SearchSpace], tuple[Any, ...]]) -> Move:
    def move(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
        if len(options(space)) < 2:
            return None
        i = rng.randrange(len(spec.cells))
        value = _other(rng, options(space), getattr(spec.cells[i], field))
        return _with_cell(spec, i, replace(spec.cells[i], **{field: value}))

    move.__doc__ = f"Change the {field} of one cell."
    return move


def add_cell(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Insert a random cell anywhere in a hybrid chain (a one-cell spec without a trunk is
    one) that is not yet at `max_cells`."""
    chain = _chain(space, spec)
    if chain is None or len(chain.cells) >= space.max_cells:
        return None
    spec = chain
    i = rng.randint(0, len(spec.cells))
    return replace(spec, cells=spec.cells[:i] + (space.random_cell(rng, "hybrid"),) + spec.cells[i:])


def remove_cell(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Drop one cell of a hybrid chain of two or more."""
    if spec.stage != "hybrid" or len(spec.cells) < 2:
        return None
    i = rng.randrange(len(spec.cells))
    return replace(spec, cells=spec.cells[:i] + spec.cells[i + 1 :])


def change_trunk(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Give an early spec another trunk."""
    if spec.stage != "early" or len(space.trunks) < 2:
        return None
    return replace(spec, head=_other(rng, space.trunks, spec.head))


def change_train(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec | None:
    """Change one searched training setting: another choice, or a step within its range."""
    searched = [c for c in space.train if c.searched]
    if not searched:
        return None
    choice = rng.choice(searched)
    settings = spec.train_settings
    settings[choice.name] = choice.neighbour(settings[choice.name], rng)
    return spec.with_train(settings)


MOVES: tuple[Move, ...] = (
    change_stage,
    change_depth,
    change_op,
    change_arg,
    _change_field("width", lambda s: s.widths),
    _change_field("activation", lambda s: s.activations),
    add_cell,
    remove_cell,
    change_trunk,
)


def mutate(space: SearchSpace, spec: ArchSpec, rng: random.Random) -> ArchSpec:
    """A valid canonical spec of `space`, another model than `spec`'s (which must be valid),
    that differs from it in one choice."""
    space.validate(spec)
    here = space.canonical(spec)
    moves = list(MOVES) + ([change_train] if space.train else [])  # unchanged shuffle without settings
    rng.shuffle(moves)
    for move in moves:
        new = move(space, spec, rng)
        if new is not None and (new := space.canonical(new)) != here:
            return new
    # every choice has one option: the space is this one spec
    raise ValueError(f"cannot mutate: the space has only one spec (size() = {space.size()}), {spec.describe()}")
