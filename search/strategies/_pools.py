"""Candidate pools too big to list: every cell of a stage, and the specs built from them.

A pool is indexed like a sequence but builds each spec on demand, so a search can
draw a few hundred candidates out of millions (a chain of parents x every next cell)
without materialising them.

Pools hold canonical specs only (`SearchSpace.canonical`): the one-cell pool leaves out
the one-cell hybrids that are early or late specs, and a chain grows from any spec that is
one (a late spec is a one-cell chain on the last taps).

Training settings: a pool builds architectures; an unfolded chain keeps its parent's
settings (`position_pool`), and `sampled_train` / `varied_train` give drawn specs fresh
or nearby settings, so the search explores them as it explores cells.
"""
from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial

from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec, make_tap


class CellTable:
    """Every cell legal in `stage` whose taps are not in `skip`, in a fixed order, built from
    its index (mixed radix)."""

    def __init__(self, space: SearchSpace, stage: str, skip: Collection[tuple[str, ...]] = ()) -> None:
        fixed = space.stage_depths(stage)
        combos = [tuple(fixed.values())] if fixed else list(itertools.product(*(ds for _, ds in space.depths)))
        taps = [tuple(make_tap(m, d) for m, d in zip(space.modalities, c, strict=True)) for c in combos]
        self._taps = [t for t in taps if t not in skip]
        self._settings = [(o.name, args) for o in space.ops for args in o.settings()]
        self._widths, self._acts = space.widths, space.activations

    def __len__(self) -> int:
        return len(self._taps) * len(self._settings) * len(self._widths) * len(self._acts)

    def __getitem__(self, i: int) -> CellSpec:
        if not 0 <= i < len(self):
            raise IndexError(i)
        i, a = divmod(i, len(self._acts))
        i, w = divmod(i, len(self._widths))
        t, s = divmod(i, len(self._settings))
        op, args = self._settings[s]
        return CellSpec(taps=self._taps[t], op=op, width=self._widths[w], activation=self._acts[a], args=args)


class Pool:
    """A concatenation of segments `(length, build(index) -> ArchSpec)`."""

    def __init__(self, segments: Sequence[tuple[int, Callable[[int], ArchSpec]]] = ()) -> None:
        self._segments = [(n, f) for n, f in segments if n > 0]

    def __len__(self) -> int:
        return sum(n for n, _ in self._segments)

    def __getitem__(self, i: int) -> ArchSpec:
        for n, build in self._segments:
            if i < n:
                return build(i)
            i -= n
        raise IndexError(i)

    def draw(self, rng: random.Random, k: int) -> list[ArchSpec]:
        """Up to `k` distinct specs, uniformly without replacement (all of them, shuffled, if k >= len)."""
        specs = (self[i] for i in rng.sample(range(len(self)), min(k, len(self))))
        return list({s.candidate_id: s for s in specs}.values())

    def draw_by_segment(self, rng: random.Random, k: int) -> list[ArchSpec]:
        """Up to `k` distinct specs, each segment (a stage, in `one_cell_pool`) drawn as often as
        the others while it has specs left, uniformly within it: a small stage is covered as
        fully as a big one (what `SearchSpace.sample` does for random search)."""
        return in_turn([map(build, reversed(rng.sample(range(n), min(n, k)))) for n, build in self._segments], k)


def in_turn(groups: Sequence[Iterable[ArchSpec]], k: int) -> list[ArchSpec]:
    """Up to `k` distinct specs (by candidate id), one from each group in turn while it has any
    left (the groups are read lazily, only as far as needed)."""
    picked: dict[str, ArchSpec] = {}
    for row in itertools.zip_longest(*groups):
        for spec in row:
            if spec is not None and len(picked) < k:
                picked.setdefault(spec.candidate_id, spec)
        if len(picked) >= k:
            break
    return list(picked.values())


def one_cell_pool(space: SearchSpace) -> Pool:
    """MFAS level 0: every canonical one-cell spec of every stage (early with each trunk, late,
    one-cell hybrid on taps that are not early's or late's), without training settings (see
    `sampled_train`)."""
    segments: list[tuple[int, Callable[[int], ArchSpec]]] = []
    for stage in space.stages:
        table = CellTable(space, stage, space.folded_taps() if stage == "hybrid" else ())
        heads = space.heads(stage)
        segments.append((len(table) * len(heads), partial(_one_cell, stage, table, heads)))
    return Pool(segments)


def handmade_specs(space: SearchSpace) -> list[ArchSpec]:
    """The one-cell models a user writes first, as far as `space` holds them: each operator at
    its default arguments (the first searched value where the default is not searched), on the
    raw inputs (early, no trunk where the space allows it) and on the embeddings (late), at the
    middle width and the first activation; canonical, without training settings (see
    `sampled_train`): the early ones in operator order, then the late ones."""
    fixed = {stage: space.stage_depths(stage) for stage in ("early", "late")
             if stage in space.stages or "hybrid" in space.stages}
    width, act = sorted(space.widths)[len(space.widths) // 2], space.activations[0]
    head = () if () in space.trunks else min(space.trunks, key=lambda t: (len(t), sum(t)))
    specs: dict[str, ArchSpec] = {}
    for stage, depths in fixed.items():
        assert depths is not None  # early and late fix their taps' depths
        for op in space.ops:
            args = tuple((a.name, a.default if a.default in values else values[0]) for a, values in op.args)
            cell = CellSpec(taps=tuple(make_tap(m, d) for m, d in depths.items()), op=op.name, width=width,
                            activation=act, args=args)
            built = ArchSpec(stage if stage in space.stages else "hybrid", (cell,), head if stage == "early" else ())
            spec = space.canonical(built)
            if space.contains(spec):
                specs.setdefault(spec.candidate_id, spec)
    return list(specs.values())


def one_cell_neighbours(space: SearchSpace, spec: ArchSpec) -> list[ArchSpec]:
    """The specs that differ from the one-cell `spec` only in its width, in one argument of its
    operator, or (early) in its trunk: what a user tries next with a model that works, each
    canonical and in `space`, with `spec`'s training settings."""
    cell, out = spec.cells[0], []
    out += [dataclasses.replace(cell, width=w) for w in space.widths if w != cell.width]
    for name, values in space.op_map[cell.op].values().items():
        out += [dataclasses.replace(cell, args=tuple({**cell.op_args, name: v}.items()))
                for v in values if v != cell.op_args.get(name)]
    specs = [ArchSpec(spec.stage, (c,), spec.head, spec.train) for c in out]
    if spec.stage == "early":
        specs += [ArchSpec("early", spec.cells, h, spec.train) for h in space.heads("early") if h != spec.head]
    return [s for s in map(space.canonical, specs) if space.contains(s)]


def _one_cell(stage: str, table: CellTable, heads: tuple[tuple[int, ...], ...], i: int) -> ArchSpec:
    c, h = divmod(i, len(heads))
    return ArchSpec(stage, (table[c],), heads[h])


def position_pool(space: SearchSpace, parents: Sequence[ArchSpec], position: int) -> Pool:
    """MFAS unfolding at level `position`: each parent that is a chain (`SearchSpace.as_chain`:
    a hybrid, or a one-cell spec without a trunk) with cell `position` set to every possible
    cell (appended when the parent has exactly `position` cells), with the parent's training
    settings; each result canonical."""
    chains = [c for p in parents if (c := space.as_chain(p)) is not None and len(c.cells) >= position]
    if "hybrid" not in space.stages or position >= space.max_cells or not chains:
        return Pool()
    table = CellTable(space, "hybrid")
    return Pool([(len(chains) * len(table), partial(_unfold, space, table, chains, position))])


def _unfold(space: SearchSpace, table: CellTable, parents: Sequence[ArchSpec], position: int, i: int) -> ArchSpec:
    p, c = divmod(i, len(table))
    cells = parents[p].cells
    # only a one-cell result (cell 0 of a one-cell parent re-chosen) can be a twin
    return space.canonical(ArchSpec("hybrid", cells[:position] + (table[c],) + cells[position + 1 :], (),
                                    parents[p].train))


def sampled_train(space: SearchSpace, specs: list[ArchSpec], rng: random.Random) -> list[ArchSpec]:
    """Each spec with training settings drawn from the space (nothing drawn if it searches none)."""
    return [space.with_sampled_train(s, rng) for s in specs]


def varied_train(space: SearchSpace, specs: list[ArchSpec], rng: random.Random, p: float = 0.5) -> list[ArchSpec]:
    """Each spec, or with probability `p` its neighbour in one training setting: children try
    settings near their parent's (nothing drawn if the space searches none)."""
    if not space.train:
        return specs
    return [space.mutate_train(s, rng) if rng.random() < p else s for s in specs]
