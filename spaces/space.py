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
from spaces.spec import ArchSpec, CellSpec, make_tap
from spaces.train_space import TrainChoice
from spaces.yaml_errors import ConfigError, in_file, read_yaml

__all__ = ["ConfigError", "OpChoice", "SearchSpace", "TrainChoice"]


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

    # ---- counting -----------------------------------------------------------------
    def _cell_count(self, stage: str) -> int:
        """Number of distinct cells legal in `stage`."""
        taps = 1 if self.stage_depths(stage) else math.prod(len(ds) for _, ds in self.depths)
        return sum(o.size for o in self.ops) * len(self.widths) * len(self.activations) * taps

    def stage_size(self, stage: str) -> int:
        """Number of distinct specs of `stage` (0 if the space does not search it), each
        architecture counted once per point of the training settings' grid."""
        if stage not in self.stages:
            return 0
        if stage == "hybrid":
            per_cell = self._cell_count(stage)
            return sum(per_cell**n for n in range(1, self.max_cells + 1)) * self.train_size()
        return self._cell_count(stage) * (len(self.trunks) if stage == "early" else 1) * self.train_size()

    def train_size(self) -> int:
        """Number of points of the training settings' grid (1 when none is searched)."""
        return math.prod(len(c.grid) for c in self.train)

    def size(self) -> int:
        """Exact number of distinct specs in the space (closed form, no enumeration)."""
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
            head = rng.choice(self.trunks) if stage == "early" else ()
            return ArchSpec(stage, (self.random_cell(rng, stage, uniform=uniform),), head)
        lengths = range(1, self.max_cells + 1)
        if uniform:
            per_cell = self._cell_count(stage)
            n = lengths[_weighted_index(rng, [per_cell**k for k in lengths])]
        else:
            n = rng.choice(lengths)
        return ArchSpec("hybrid", tuple(self.random_cell(rng, "hybrid", uniform=uniform) for _ in range(n)))

    def sample(self, rng: random.Random) -> ArchSpec:
        """A random spec: the stage uniformly, then (hybrid) the chain length uniformly,
        then each choice uniformly, then the training settings (`sample_train`). Not uniform
        over specs (stages with few specs are drawn as often as big ones): use
        `sample_uniform` for that."""
        return self.with_sampled_train(self._sample_stage(rng.choice(self.stages), rng, uniform=False), rng)

    def sample_uniform(self, rng: random.Random) -> ArchSpec:
        """A spec drawn uniformly over all `size()` architectures of the space, with training
        settings from `sample_train`."""
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
                for n in range(1, self.max_cells + 1):
                    for chain in itertools.product(cells, repeat=n):
                        yield ArchSpec("hybrid", chain)
            else:
                heads = self.trunks if stage == "early" else ((),)
                for cell in self._cells(stage):
                    for head in heads:
                        yield ArchSpec(stage, (cell,), head)

    def enumerate(self, limit: int = 100_000) -> Iterator[ArchSpec]:
        """Every spec of the space once; refuses (ValueError) a space of more than `limit` specs."""
        n = self.size()
        if n > limit:
            raise ValueError(
                f"the space has size() = {n} specs, more than limit={limit}: sample it, or pass a larger limit"
            )
        return self._all_specs()

    # ---- checking, neighbours, features ------------------------------------------
    def validate(self, spec: ArchSpec) -> None:
        """Raise ValueError saying what is wrong if `spec` is not in this space."""
        _validate.validate_spec(self, spec)

    def contains(self, spec: ArchSpec) -> bool:
        """Whether `spec` is one of this space's specs."""
        try:
            self.validate(spec)
        except ValueError:
            return False
        return True

    def mutate(self, spec: ArchSpec, rng: random.Random) -> ArchSpec:
        """A valid neighbour that differs from `spec` in one choice (see `spaces._mutate`)."""
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
        """A fixed-length float vector describing `spec`, for surrogate models."""
        return encode.encode(self, spec)
