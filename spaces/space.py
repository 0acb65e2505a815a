"""`SearchSpace`: which fusion architectures (`ArchSpec`s) a search may propose.

A space lists the stages, operators (with the argument values to search), widths,
activations, the longest hybrid chain, the early-fusion trunks and the tap depths
of each modality. `spaces` cannot import `fusion_ops`, so the caller passes the
operator catalogue (`{name: declared Args}`) and the backbones' tap depths in.

Stages: `early` is one cell on the lowest offered tap of every modality plus a trunk
from `trunks` as `head`; `late` is one cell on the highest (last) taps, head `()`;
`hybrid` is a chain of 1..`max_cells` cells on any offered taps, head `()`.
Every cell lists all its operator's declared arguments (an argument not searched
has its default), so equal architectures always have equal `arch_id`s.

Twins: a one-cell spec without a trunk is the same model whatever its stage (the
stage only decides which taps a cell may read and whether cells chain; one cell has
nothing to chain): an early spec with trunk `[]` builds the same `FusionHead` as the
one-cell hybrid on the lowest taps, and a late spec the same as the one-cell hybrid on
the last taps. The space gives each such model one spec, `canonical(spec)`: late, else
early, else hybrid, the first stage the space searches that can hold it. `size`,
`enumerate`, `sample`, `sample_uniform` and `mutate` give canonical specs only; the
non-canonical twin still validates (runs recorded before the fold still load) and is
encoded as its canonical form.

Training settings (`train`, see `spaces.train_space`): when the space searches some,
every spec it produces carries one value of each; `size()` and `enumerate()` count a
range as its `grid` points. A space that searches none gives specs with `train == ()`.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spaces import _mutate, _validate, encode
from spaces._space_config import OpChoice, parse_space
from spaces.args import Arg
from spaces.spec import STAGES, ArchSpec, CellSpec, make_tap
from spaces.train_space import TrainChoice
from spaces.yaml_errors import ConfigError, in_file, read_yaml

__all__ = ["ConfigError", "OpChoice", "SearchSpace", "TrainChoice"]

FOLD_ORDER = ("late", "early", "hybrid")  # which stage names a bare one-cell model, first the space has


def _weighted_index(rng: random.Random, weights: Sequence[int]) -> int:
    """Index `i` with probability `weights[i] / sum(weights)`, exact for huge integers."""
    r = rng.randrange(sum(weights))
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    raise AssertionError("unreachable: r < sum(weights)")


@dataclass(frozen=True)
class SearchSpace:
    """A resolved, canonical search space; build it with `from_dict` or `from_yaml`."""

    stages: tuple[str, ...]
    ops: tuple[OpChoice, ...]
    widths: tuple[int, ...]
    activations: tuple[str, ...]
    max_cells: int
    trunks: tuple[tuple[int, ...], ...]
    depths: tuple[tuple[str, tuple[int, ...]], ...]
    train: tuple[TrainChoice, ...] = ()  # searched training settings, sorted by name

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any] | None,
        *,
        catalogue: Mapping[str, tuple[Arg, ...]],
        depths: Mapping[str, Sequence[int]],
        where: str = "space",
    ) -> SearchSpace:
        """The space a config section describes; a mistake raises ConfigError naming its key path."""
        return cls(**parse_space(d, catalogue, depths, where))

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        *,
        catalogue: Mapping[str, tuple[Arg, ...]],
        depths: Mapping[str, Sequence[int]],
        key: str | None = "space",
    ) -> SearchSpace:
        """The space in section `key` of a YAML file (the whole file if `key` is None;
        a file without that section gets every default). Errors start with the path."""
        data = read_yaml(path)
        with in_file(path):
            if key is not None:
                if data is not None and not isinstance(data, Mapping):
                    raise ConfigError(f"expected a mapping at the top level, got {data!r}")
                data = (data or {}).get(key)
            return cls.from_dict(data, catalogue=catalogue, depths=depths, where=key or "")

    def to_dict(self) -> dict[str, Any]:
        """The resolved space as plain data: `from_dict(to_dict())` gives it back."""
        train = {"train": {c.name: c.to_dict() for c in self.train}} if self.train else {}
        return {
            "stages": list(self.stages),
            "ops": {o.name: {a.name: list(v) for a, v in o.args} for o in self.ops},
            "widths": list(self.widths),
            "activations": list(self.activations),
            "max_cells": self.max_cells,
            "trunks": [list(t) for t in self.trunks],
            "depths": {m: list(ds) for m, ds in self.depths},
            **train,
        }

    # ---- lookups ------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.depths)

    @property
    def depth_map(self) -> dict[str, tuple[int, ...]]:
        """`{modality: offered tap depths, ascending}`."""
        return dict(self.depths)

    @property
    def op_map(self) -> dict[str, OpChoice]:
        return {o.name: o for o in self.ops}

    def stage_depths(self, stage: str) -> dict[str, int] | None:
        """The fixed tap depth of each modality in `stage` (None for hybrid: any offered depth)."""
        pick = {"early": min, "late": max}.get(stage)
        return None if pick is None else {m: pick(ds) for m, ds in self.depths}

    # ---- twins --------------------------------------------------------------------
    def bare_stage(self, depths: Mapping[str, int]) -> str | None:
        """The stage whose spec names the one-cell, trunk-free model on taps at `depths`
        (`{modality: depth}`): late, else early (with trunk `[]`), else hybrid, the first this
        space searches whose taps allow it; None if none does."""
        for stage in FOLD_ORDER:
            if stage not in self.stages or (stage == "early" and () not in self.trunks):
                continue
            fixed = self.stage_depths(stage)
            if fixed is None or fixed == dict(depths):
                return stage
        return None

    def canonical(self, spec: ArchSpec) -> ArchSpec:
        """The spec this space uses for `spec`'s model: a one-cell spec without a trunk gets
        the stage `bare_stage` names (training settings kept); any other spec is its own."""
        if len(spec.cells) != 1 or spec.head or spec.stage not in STAGES:
            return spec
        stage = self.bare_stage(spec.cells[0].depths)
        return spec if stage is None or stage == spec.stage else ArchSpec(stage, spec.cells, (), spec.train)

    def is_canonical(self, spec: ArchSpec) -> bool:
        """Whether `spec` is the spec this space uses for its model (see `canonical`)."""
        return self.canonical(spec) == spec

    def as_chain(self, spec: ArchSpec) -> ArchSpec | None:
        """`spec` as a hybrid chain (a twin, for a one-cell spec without a trunk; the spec
        itself if hybrid), or None for a spec with a trunk: what a chain grows from."""
        if spec.stage == "hybrid":
            return spec
        if len(spec.cells) != 1 or spec.head:
            return None
        return ArchSpec("hybrid", spec.cells, (), spec.train)

    def folded_taps(self) -> frozenset[tuple[str, ...]]:
        """The tap tuples (sorted by modality) whose one-cell hybrid is an early or late spec
        here: the one-cell hybrids `enumerate` and `sample` leave out."""
        if "hybrid" not in self.stages:
            return frozenset()
        fixed = [self.stage_depths(s) for s in ("early", "late")]
        return frozenset(tuple(make_tap(m, d) for m, d in f.items())
                         for f in fixed if f is not None and self.bare_stage(f) != "hybrid")

    def heads(self, stage: str) -> tuple[tuple[int, ...], ...]:
        """The heads of `stage`'s canonical specs: early, the trunks (less `[]` when the bare
        early model is a late spec here); late and hybrid, `()` only."""
        if stage != "early":
            return ((),)
        fixed = self.stage_depths("early")
        assert fixed is not None
        bare = self.bare_stage(fixed) in (None, "early")
        return tuple(t for t in self.trunks if t or bare)

    # ---- counting -----------------------------------------------------------------
    def _cell_count(self, stage: str) -> int:
        """Number of distinct cells legal in `stage`."""
        taps = 1 if self.stage_depths(stage) else math.prod(len(ds) for _, ds in self.depths)
        return sum(o.size for o in self.ops) * len(self.widths) * len(self.activations) * taps

    def _chain_count(self, n: int) -> int:
        """Number of canonical hybrid chains of `n` cells (one-cell twins of early/late left out)."""
        per_cell = self._cell_count("hybrid")
        if n > 1:
            return per_cell**n
        per_taps = per_cell // math.prod(len(ds) for _, ds in self.depths)
        return per_cell - per_taps * len(self.folded_taps())

    def stage_size(self, stage: str) -> int:
        """Number of distinct canonical specs of `stage` (0 if the space does not search it),
        each architecture counted once per point of the training settings' grid."""
        if stage not in self.stages:
            return 0
        if stage == "hybrid":
            return sum(self._chain_count(n) for n in range(1, self.max_cells + 1)) * self.train_size()
        return self._cell_count(stage) * len(self.heads(stage)) * self.train_size()

    def train_size(self) -> int:
        """Number of points of the training settings' grid (1 when none is searched)."""
        return math.prod(len(c.grid) for c in self.train)

    def size(self) -> int:
        """Exact number of distinct canonical specs in the space (closed form, no enumeration):
        each distinct model once per point of the training settings' grid."""
        return sum(self.stage_size(s) for s in self.stages)

    # ---- sampling -----------------------------------------------------------------
    def random_cell(self, rng: random.Random, stage: str, *, uniform: bool = False) -> CellSpec:
        """A random cell legal in `stage`; `uniform` weights operators by their number of settings."""
        fixed = self.stage_depths(stage)
        depths = fixed or {m: rng.choice(ds) for m, ds in self.depths}
        ops = self.ops
        op = ops[_weighted_index(rng, [o.size for o in ops])] if uniform else rng.choice(ops)
        return CellSpec(
            taps=tuple(make_tap(m, d) for m, d in depths.items()),
            op=op.name,
            width=rng.choice(self.widths),
            activation=rng.choice(self.activations),
            args=op.sample(rng),
        )

    def _sample_stage(self, stage: str, rng: random.Random, uniform: bool) -> ArchSpec:
        if stage != "hybrid":
            head = rng.choice(self.heads(stage)) if stage == "early" else ()
            return ArchSpec(stage, (self.random_cell(rng, stage, uniform=uniform),), head)
        lengths = [n for n in range(1, self.max_cells + 1) if self._chain_count(n)]
        if uniform:
            n = lengths[_weighted_index(rng, [self._chain_count(k) for k in lengths])]
        else:
            n = rng.choice(lengths)
        cells = tuple(self.random_cell(rng, "hybrid", uniform=uniform) for _ in range(n))
        folded = self.folded_taps() if n == 1 else ()
        while cells[0].taps in folded:  # a twin of an early/late spec: draw the cell again
            cells = (self.random_cell(rng, "hybrid", uniform=uniform),)
        return ArchSpec("hybrid", cells)

    def _stages(self) -> list[str]:
        """The stages with at least one canonical spec (a stage can be all twins of another)."""
        return [s for s in self.stages if self.stage_size(s)]

    def sample(self, rng: random.Random) -> ArchSpec:
        """A random canonical spec: the stage uniformly, then (hybrid) the chain length
        uniformly, then each choice uniformly (a one-cell hybrid on folded taps is drawn
        again), then the training settings (`sample_train`). Not uniform over specs (stages
        with few specs are drawn as often as big ones): use `sample_uniform` for that."""
        return self.with_sampled_train(self._sample_stage(rng.choice(self._stages()), rng, uniform=False), rng)

    def sample_uniform(self, rng: random.Random) -> ArchSpec:
        """A spec drawn uniformly over all `size()` canonical architectures of the space, with
        training settings from `sample_train`."""
        stage = self.stages[_weighted_index(rng, [self.stage_size(s) for s in self.stages])]
        return self.with_sampled_train(self._sample_stage(stage, rng, uniform=True), rng)

    def sample_train(self, rng: random.Random) -> dict[str, Any]:
        """One value of each searched training setting: a choice uniformly, a range's value
        uniformly (log-uniformly when `log`), rounded to 3 significant digits."""
        return {c.name: c.sample(rng) for c in self.train}

    def with_sampled_train(self, spec: ArchSpec, rng: random.Random) -> ArchSpec:
        """`spec`'s architecture with sampled training settings (`spec` itself, drawing
        nothing, when the space searches none)."""
        return spec.with_train(self.sample_train(rng)) if self.train else spec

    # ---- enumeration --------------------------------------------------------------
    def _cells(self, stage: str) -> Iterator[CellSpec]:
        fixed = self.stage_depths(stage)
        tap_sets = [fixed] if fixed else [
            dict(zip(self.modalities, combo, strict=True)) for combo in itertools.product(*(ds for _, ds in self.depths))
        ]
        for depths in tap_sets:
            taps = tuple(make_tap(m, d) for m, d in depths.items())
            for op in self.ops:
                for args in op.settings():
                    for width in self.widths:
                        for act in self.activations:
                            yield CellSpec(taps=taps, op=op.name, width=width, activation=act, args=args)

    def train_grid(self) -> Iterator[dict[str, Any]]:
        """Every point of the training settings' grid (one empty point when none is searched)."""
        names = [c.name for c in self.train]
        for combo in itertools.product(*(c.grid for c in self.train)):
            yield dict(zip(names, combo, strict=True))

    def _all_specs(self) -> Iterator[ArchSpec]:
        if not self.train:
            yield from self._all_archs()
            return
        grid = list(self.train_grid())
        for spec in self._all_archs():
            for settings in grid:
                yield spec.with_train(settings)

    def _all_archs(self) -> Iterator[ArchSpec]:
        for stage in self.stages:
            if stage == "hybrid":
                cells = list(self._cells("hybrid"))
                folded = self.folded_taps()
                yield from (ArchSpec("hybrid", (c,)) for c in cells if c.taps not in folded)
                for n in range(2, self.max_cells + 1):
                    for chain in itertools.product(cells, repeat=n):
                        yield ArchSpec("hybrid", chain)
            else:
                heads = self.heads(stage)
                for cell in self._cells(stage):
                    for head in heads:
                        yield ArchSpec(stage, (cell,), head)

    def enumerate(self, limit: int = 100_000) -> Iterator[ArchSpec]:
        """Every canonical spec of the space once; refuses (ValueError) a space of more than
        `limit` specs."""
        n = self.size()
        if n > limit:
            raise ValueError(
                f"the space has size() = {n} specs, more than limit={limit}: sample it, or pass a larger limit"
            )
        return self._all_specs()

    # ---- checking, neighbours, features ------------------------------------------
    def validate(self, spec: ArchSpec) -> None:
        """Raise ValueError saying what is wrong if `spec` is not in this space (a
        non-canonical twin of one of its specs is in it: see `canonical`)."""
        _validate.validate_spec(self, spec)

    def contains(self, spec: ArchSpec) -> bool:
        """Whether `spec` is one of this space's specs."""
        try:
            self.validate(spec)
        except ValueError:
            return False
        return True

    def mutate(self, spec: ArchSpec, rng: random.Random) -> ArchSpec:
        """A valid canonical neighbour, another model than `spec`'s, that differs from it in
        one choice (see `spaces._mutate`)."""
        return _mutate.mutate(self, spec, rng)

    def mutate_train(self, spec: ArchSpec, rng: random.Random) -> ArchSpec:
        """`spec` with one searched training setting changed (another choice, or a step within
        the range); `spec` itself when the space searches no setting with two or more values."""
        return _mutate.change_train(self, spec, rng) or spec

    @property
    def encode_length(self) -> int:
        """Length of every `encode` vector of this space."""
        return len(self.feature_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per `encode` entry, documenting the layout (see `spaces.encode`)."""
        return encode.feature_names(self)

    def encode(self, spec: ArchSpec) -> np.ndarray:
        """A fixed-length float vector describing `spec`, for surrogate models (twins: that of
        the canonical spec, so a surrogate sees one model as one point)."""
        return encode.encode(self, self.canonical(spec))
