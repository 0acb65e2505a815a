"""Whether an `ArchSpec` belongs to a `SearchSpace`, and if not, what is wrong with it."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from spaces.spec import ArchSpec, CellSpec

if TYPE_CHECKING:
    from spaces.space import SearchSpace


def _listing(values: Iterable[Any]) -> str:
    return ", ".join(map(str, values))


def validate_spec(space: SearchSpace, spec: ArchSpec) -> None:
    """Raise ValueError naming the first part of `spec` that this space cannot produce."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"expected an ArchSpec, got {type(spec).__name__}")
    if spec.stage not in space.stages:
        raise ValueError(f"stage: {spec.stage!r} is not in this space; stages: {_listing(space.stages)}")
    most = space.max_cells if spec.stage == "hybrid" else 1
    if not 1 <= len(spec.cells) <= most:
        allowed = f"1..{most}" if most > 1 else "exactly 1"
        raise ValueError(f"cells: a {spec.stage} spec here has {allowed} cells, got {len(spec.cells)}")
    if spec.stage == "early":
        if spec.head not in space.trunks:
            trunks = "; ".join(str(list(t)) for t in space.trunks)
            raise ValueError(f"head: {list(spec.head)} is not a trunk of this space; trunks: {trunks}")
    elif spec.head:
        raise ValueError(f"head: a {spec.stage} spec has no trunk (head []), got {list(spec.head)}")
    for i, cell in enumerate(spec.cells):
        _check_cell(space, spec.stage, cell, f"cells[{i}]")
    _check_train(space, spec)


def _check_train(space: SearchSpace, spec: ArchSpec) -> None:
    given, searched = spec.train_settings, {c.name: c for c in space.train}
    for name in given:
        if name not in searched:
            raise ValueError(f"train.{name}: not searched by this space; searched: {_listing(searched) or 'none'}")
    for name, choice in searched.items():
        if name not in given:
            raise ValueError(f"train.{name}: missing (every searched training setting is written out)")
        choice.check(given[name], f"train.{name}")


def _check_taps(space: SearchSpace, stage: str, cell: CellSpec, where: str) -> None:
    depths = cell.depths  # CellSpec already refused taps that are not `modality@depth`
    if len(depths) != len(cell.taps) or sorted(depths) != list(space.modalities):
        raise ValueError(
            f"{where}.taps: expected one tap per modality ({_listing(space.modalities)}),"
            f" got {_listing(cell.taps) or 'none'}"
        )
    offered, fixed = space.depth_map, space.stage_depths(stage)
    for m, d in depths.items():
        if d not in offered[m]:
            raise ValueError(f"{where}.taps: depth {d} of {m} is not offered; offered: {_listing(offered[m])}")
        if fixed is not None and d != fixed[m]:
            which = "lowest" if stage == "early" else "last"
            raise ValueError(f"{where}.taps: a {stage} cell taps the {which} depth {m}@{fixed[m]}, got {m}@{d}")


def _check_args(space: SearchSpace, cell: CellSpec, where: str) -> None:
    op = space.op_map.get(cell.op)
    if op is None:
        raise ValueError(f"{where}.op: {cell.op!r} is not in this space; ops: {_listing(space.op_map)}")
    given = cell.op_args
    for name in given:
        if name not in op.values():
            raise ValueError(
                f"{where}.args.{name}: unknown argument of {op.name}; known: {_listing(op.values()) or 'none'}"
            )
    for arg, values in op.args:
        if arg.name not in given:
            raise ValueError(f"{where}.args.{arg.name}: missing (every argument of {op.name} is written out)")
        value = arg.check(given[arg.name], f"{where}.args")
        if value not in values:
            raise ValueError(f"{where}.args.{arg.name}: {value!r} is not searched; values: {_listing(values)}")
        if type(value) is not type(given[arg.name]):  # 4 for 4.0 would give the same net another arch_id
            raise ValueError(f"{where}.args.{arg.name}: write {value!r}, not {given[arg.name]!r}")


def _check_cell(space: SearchSpace, stage: str, cell: CellSpec, where: str) -> None:
    _check_taps(space, stage, cell, where)
    _check_args(space, cell, where)
    if cell.width not in space.widths or isinstance(cell.width, bool):
        raise ValueError(f"{where}.width: {cell.width!r} is not offered; widths: {_listing(space.widths)}")
    if cell.activation not in space.activations:
        raise ValueError(
            f"{where}.activation: {cell.activation!r} is not offered; activations: {_listing(space.activations)}"
        )
