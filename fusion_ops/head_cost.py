"""Exact costs of many `FusionHead`s on one set of taps, cell by cell, counted once per kind of cell.

A search strategy costs hundreds of candidates per batch. Building each `FusionHead` and
running the FLOP counter over it took ~17 ms a spec; but a head's parameters and FLOPs
are the sums of its cells' and of its MLP head's (cells share no parameters, and the
counter counts each op of the forward once), and a cell's costs are decided by its
operator, arguments, width and activation, the shapes of the taps it reads (and whether
they are read flattened), and the width of the previous cell's output it is fed. So each
distinct cell and each distinct head is built and counted once, by the same
`count_params` / `count_flops` as the whole head, and a spec's cost is a sum of cached
counts: exact by construction, and checked against the whole head in tests/test_head_cost.py.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from fusion_ops.cost import count_flops, count_params
from fusion_ops.model import FusionCell, flat_taps, head_mlp, prev_widths, required_taps
from spaces.spec import ArchSpec, CellSpec, parse_tap

Cost = tuple[int, int]  # (params, FLOPs of one sample)


class HeadCosts:
    """`costs(spec)` = `(count_params(head), count_flops(head, head.example_taps(1)))` of
    `FusionHead(spec, tap_shapes, num_classes, flat=flat)`, from per-cell and per-head counts."""

    def __init__(self, tap_shapes: Mapping[str, tuple[int, ...]], num_classes: int,
                 flat: Collection[str] | None = None) -> None:
        self.tap_shapes = {t: tuple(s) for t, s in tap_shapes.items()}
        self.num_classes = num_classes
        self.flat = flat_taps(self.tap_shapes) if flat is None else frozenset(flat)
        self._cells: dict[tuple[Any, ...], Cost] = {}
        self._heads: dict[tuple[int, tuple[int, ...]], Cost] = {}

    def __call__(self, spec: ArchSpec) -> Cost:
        missing = [t for t in required_taps(spec) if t not in self.tap_shapes]
        if missing:  # as FusionHead says it
            raise ValueError(f"spec reads taps with no known shape: {', '.join(missing)}")
        params, flops = self.head(spec.cells[-1].width, spec.head)
        for cell, prev in zip(spec.cells, prev_widths(spec), strict=True):
            p, f = self.cell(cell, prev)
            params, flops = params + p, flops + f
        return params, flops

    def cell(self, cell: CellSpec, prev_width: int | None) -> Cost:
        """Parameters and FLOPs of one `FusionCell` fed `prev_width` (None: not chained)."""
        inputs = tuple((parse_tap(t)[0], self.tap_shapes[t], t in self.flat) for t in cell.taps)
        args = tuple((k, type(v).__name__, v) for k, v in cell.args)  # 4 and 4.0 (True and 1) hash alike
        key = (cell.op, args, cell.width, cell.activation, inputs, prev_width)
        if key not in self._cells:
            module = FusionCell(cell, self.tap_shapes, prev_width, self.flat)
            taps = {t: torch.zeros(1, *self.tap_shapes[t]) for t in cell.taps}
            prev = None if prev_width is None else torch.zeros(1, prev_width)
            self._cells[key] = count_params(module), count_flops(module, taps, prev)
        return self._cells[key]

    def head(self, in_width: int, hidden: tuple[int, ...]) -> Cost:
        """Parameters and FLOPs of the MLP head (trunk `hidden`, then the classifier)."""
        key = (in_width, tuple(hidden))
        if key not in self._heads:
            module = head_mlp(in_width, tuple(hidden), self.num_classes)
            self._heads[key] = count_params(module), count_flops(module, torch.zeros(1, in_width))
        return self._heads[key]

    @property
    def counted(self) -> int:
        """How many distinct cells and heads have been built and counted so far."""
        return len(self._cells) + len(self._heads)
