"""A weight-sharing supernet over a search space: every choice a cell position can take owns
its own weights, and every spec of the space is a path through them.

A cell module is keyed by everything that decides its weights and their shapes: its
position in the chain, its taps, operator and arguments, width, activation, and the width
of the previous cell it is fed (hybrid; None at position 0). Early, late and one-cell
hybrid specs on the same taps share their position-0 cells. A head (the MLP trunk and the
classifier) is keyed by the cell it reads and the spec's trunk. Each module is built
exactly as `FusionHead` builds it, so `path_head(spec)` is a `FusionHead` whose cells and
head *are* the shared modules: a sub-network with inherited weights computes what the
stand-alone `FusionHead(spec)` computes with those weights loaded.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from fusion_ops.model import FusionCell, FusionHead, flat_taps
from spaces.spec import ArchSpec, CellSpec

# (position, taps, op, args, width, activation, width of the cell fed in or None)
CellKey = tuple[int, tuple[str, ...], str, tuple[tuple[str, Any], ...], int, str, "int | None"]
HeadKey = tuple[CellKey, tuple[int, ...]]  # (the last cell's key, the trunk's hidden widths)


def cell_key(spec: ArchSpec, position: int) -> CellKey:
    """The key of the module that computes cell `position` of `spec`."""
    c = spec.cells[position]
    prev = spec.cells[position - 1].width if spec.stage == "hybrid" and position > 0 else None
    return (position, c.taps, c.op, c.args, c.width, c.activation, prev)


def path_keys(spec: ArchSpec) -> tuple[list[CellKey], HeadKey]:
    """The cell keys of `spec`, in chain order, and its head's key."""
    cells = [cell_key(spec, i) for i in range(len(spec.cells))]
    return cells, (cells[-1], tuple(spec.head))


def key_cell(key: CellKey) -> CellSpec:
    """The cell a key describes."""
    _, taps, op, args, width, act, _ = key
    return CellSpec(taps=taps, op=op, width=width, activation=act, args=args)


class Supernet(nn.Module):
    """Shared modules for every spec of `specs` (an iterable covering the space, or a
    representative set: see `search.training.supernet`), built in a fixed order so that the
    initial weights depend only on the torch RNG state. `forward(spec, taps)` runs one path;
    `prefix_outputs` runs a chain once and returns every head's logits along it."""

    def __init__(self, specs: Iterable[ArchSpec], tap_shapes: Mapping[str, tuple[int, ...]], num_classes: int,
                 flat: Collection[str] | None = None) -> None:
        super().__init__()
        self.tap_shapes = {t: tuple(s) for t, s in tap_shapes.items()}
        self.flat = frozenset(flat) if flat is not None else None
        self.num_classes = num_classes
        cells: set[CellKey] = set()
        heads: set[HeadKey] = set()
        for spec in specs:
            ckeys, hkey = path_keys(spec)
            cells.update(ckeys)
            heads.add(hkey)
        # FusionHead's rule, tap by tap: the small fixed-length token taps are read flattened
        self._flat_all = flat_taps(self.tap_shapes) if flat is None else frozenset(flat)
        self.cell_keys: list[CellKey] = sorted(cells, key=repr)
        self.head_keys: list[HeadKey] = sorted(heads, key=repr)
        self._cell_index = {k: i for i, k in enumerate(self.cell_keys)}
        self._head_index = {k: i for i, k in enumerate(self.head_keys)}
        self.cells = nn.ModuleList(FusionCell(key_cell(k), self.tap_shapes, k[6], self._flat_all)
                                   for k in self.cell_keys)
        self.heads = nn.ModuleList(self._build_head(k) for k in self.head_keys)

    # ---- building, exactly as FusionHead does --------------------------------------------------
    def _template(self, spec: ArchSpec) -> FusionHead:
        return FusionHead(spec, self.tap_shapes, self.num_classes, flat=self.flat)

    def _build_head(self, key: HeadKey) -> nn.Sequential:
        width = key[0][4]
        dims = (width, *key[1])
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(dims[-1], self.num_classes))

    # ---- paths -----------------------------------------------------------------------------------
    def has(self, spec: ArchSpec) -> bool:
        """Whether every module of `spec`'s path is in this supernet."""
        ckeys, hkey = path_keys(spec)
        return hkey in self._head_index and all(k in self._cell_index for k in ckeys)

    def cell(self, key: CellKey) -> nn.Module:
        return self.cells[self._cell_index[key]]

    def head(self, key: HeadKey) -> nn.Sequential:
        head = self.heads[self._head_index[key]]
        assert isinstance(head, nn.Sequential)  # built by _build_head
        return head

    def path_modules(self, spec: ArchSpec) -> tuple[list[nn.Module], nn.Sequential]:
        """The shared cell modules of `spec` (chain order) and its head; KeyError if not in the supernet."""
        ckeys, hkey = path_keys(spec)
        return [self.cell(k) for k in ckeys], self.head(hkey)

    def path_head(self, spec: ArchSpec) -> FusionHead:
        """`FusionHead(spec)` whose cells and head are this supernet's modules (shared, not copied)."""
        cells, head = self.path_modules(spec)
        model = self._template(spec)
        model.cells = nn.ModuleList(cells)
        model.head = head
        return model

    def forward(self, spec: ArchSpec, taps: Mapping[str, Tensor]) -> Tensor:
        """Logits `(B, num_classes)` of `spec`'s path, as `FusionHead.forward` computes them (eval: no dropout)."""
        cells, head = self.path_modules(spec)
        h: Tensor | None = None
        for cell in cells:
            h = cell(taps, h)
        return head(h)

    def prefix_outputs(self, chain: ArchSpec, heads: Mapping[int, Iterable[HeadKey]],
                       taps: Mapping[str, Tensor]) -> list[Tensor]:
        """Run `chain`'s cells once; after cell `i`, the logits of every head in `heads[i]`."""
        out: list[Tensor] = []
        h: Tensor | None = None
        for i, key in enumerate(path_keys(chain)[0]):
            h = self.cell(key)(taps, h)
            out += [self.head(k)(h) for k in heads.get(i, ())]
        return out
