"""Fixed-length numeric features of a spec, for surrogate models.

Layout (one vector length per space; `feature_names(space)` names every entry):

1. `stage=<s>`: one-hot over the space's stages.
2. For each cell slot `c0 .. c{K-1}` (K = `max_cells` if hybrid is searched, else 1;
   early and late specs fill slot 0), an absent slot being all zeros:
   - `c<i>.present`: 1;
   - `c<i>.depth.<modality>`: tap depth scaled to [0, 1] over that modality's
     offered depths (0 = lowest, 1 = last);
   - `c<i>.op=<op>`: one-hot over the space's operators;
   - `c<i>.<op>.<arg>`: for each argument searched over two or more values, its
     value scaled to [0, 1] over those values (log scale for positive numbers, the
     value's index for choices); 0 unless the cell uses that operator;
   - `c<i>.width`: log width scaled to [0, 1] over the offered widths;
   - `c<i>.act=<a>`: one-hot over the space's activations.
3. If early is searched: `trunk=<i>` one-hot over the trunks, and `trunk.layers`,
   the trunk's depth over the deepest trunk's; all 0 for late and hybrid specs.
4. `train.<setting>`: for each training setting searched over two or more values, its
   value scaled to [0, 1]: over the range (log scale when `log`), or over the choices
   as for arguments. A space that searches none has no such entries.

A quantity offered with a single value is encoded as 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spaces.args import Arg
from spaces.spec import ArchSpec, CellSpec

if TYPE_CHECKING:
    from spaces.space import SearchSpace


def scale(value: Any, values: Sequence[Any], arg: Arg | None = None) -> float:
    """`value` mapped to [0, 1] over the sorted `values` it was chosen from."""
    if len(values) < 2:
        return 0.0
    if (arg is not None and arg.kind in ("choice", "bool")) or not all(isinstance(v, (int, float)) for v in values):
        return values.index(value) / (len(values) - 1)
    f = math.log if all(v > 0 for v in values) else float
    lo, hi = f(min(values)), f(max(values))
    return (f(value) - lo) / (hi - lo)


def _searched_args(space: SearchSpace) -> list[tuple[str, Arg, tuple[Any, ...]]]:
    return [(o.name, a, values) for o in space.ops for a, values in o.args if len(values) > 1]


def _slots(space: SearchSpace) -> int:
    return space.max_cells if "hybrid" in space.stages else 1


def feature_names(space: SearchSpace) -> tuple[str, ...]:
    """The name of every entry of `encode(space, spec)`, in order."""
    names = [f"stage={s}" for s in space.stages]
    for i in range(_slots(space)):
        names += _slot_names(space, i)
    if "early" in space.stages:
        names += [f"trunk={list(t)}" for t in space.trunks] + ["trunk.layers"]
    names += [f"train.{c.name}" for c in space.train if c.searched]
    return tuple(names)


def _slot_names(space: SearchSpace, i: int) -> list[str]:
    return [
        f"c{i}.present",
        *(f"c{i}.depth.{m}" for m in space.modalities),
        *(f"c{i}.op={o.name}" for o in space.ops),
        *(f"c{i}.{op}.{a.name}" for op, a, _ in _searched_args(space)),
        f"c{i}.width",
        *(f"c{i}.act={a}" for a in space.activations),
    ]


def _one_hot(options: Sequence[Any], value: Any) -> list[float]:
    return [float(o == value) for o in options]


def _cell_features(space: SearchSpace, cell: CellSpec) -> list[float]:
    offered, depths, args = space.depth_map, cell.depths, cell.op_args
    out = [1.0]
    out += [scale(depths[m], offered[m]) for m in space.modalities]
    out += _one_hot([o.name for o in space.ops], cell.op)
    out += [scale(args[a.name], values, a) if op == cell.op else 0.0 for op, a, values in _searched_args(space)]
    out.append(scale(cell.width, space.widths))
    out += _one_hot(space.activations, cell.activation)
    return out


def encode(space: SearchSpace, spec: ArchSpec) -> np.ndarray:
    """The features of `spec` (validated first), as a float64 vector of length `space.encode_length`."""
    space.validate(spec)
    slot_len = len(_slot_names(space, 0))
    out = _one_hot(space.stages, spec.stage)
    for i in range(_slots(space)):
        out += _cell_features(space, spec.cells[i]) if i < len(spec.cells) else [0.0] * slot_len
    if "early" in space.stages:
        early = spec.stage == "early"
        out += _one_hot(space.trunks, spec.head) if early else [0.0] * len(space.trunks)
        deepest = max(len(t) for t in space.trunks)
        out.append(len(spec.head) / deepest if early and deepest else 0.0)
    settings = spec.train_settings
    for c in space.train:
        if c.searched:
            value = settings[c.name]
            out.append(c.unit(value) if c.is_range else scale(value, c.choices))
    return np.asarray(out, dtype=np.float64)

