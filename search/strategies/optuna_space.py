"""A `SearchSpace` as an Optuna define-by-run function, and back.

`suggest_spec(trial, space)` asks the trial for every choice of a spec, with conditional
parameters named by cell slot: `stage`, `n_cells` (hybrid), `trunk` (early), and per cell
`c0.depth.<modality>` (hybrid), `c0.op`, `c0.<op>.<arg>`, `c0.width`, `c0.activation`,
then `train.<setting>` for each searched training setting: a categorical over its choices,
or `suggest_float` / `suggest_int` over its range (`log` as the space says), the value
rounded as `SearchSpace.sample` rounds it. A choice with a single option is not asked. Every spec it returns is in
the space. `spec_to_params` gives the parameters that make a trial choose a given spec,
`spec_from_params` the spec a finished trial's parameters describe. For Ray's
`OptunaSearch(space=fn)`, `fn(trial)` calls `suggest_spec(trial, space)` and returns None
(Tune puts the parameters in the trial config; `spec_from_params` reads them back).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import optuna

from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec, make_tap


class _Suggests(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


def _choose(trial: _Suggests, name: str, options: Sequence[Any]) -> Any:
    return options[0] if len(options) == 1 else trial.suggest_categorical(name, list(options))


def trunk_label(trunk: tuple[int, ...]) -> str:
    """How a trunk appears as a categorical value: `[64, 32]`."""
    return str(list(trunk))


def _suggest_cell(trial: _Suggests, space: SearchSpace, stage: str, slot: str) -> CellSpec:
    fixed = space.stage_depths(stage)
    depths = fixed or {m: _choose(trial, f"{slot}.depth.{m}", ds) for m, ds in space.depths}
    op = space.op_map[_choose(trial, f"{slot}.op", [o.name for o in space.ops])]
    args = tuple((a.name, _choose(trial, f"{slot}.{op.name}.{a.name}", values)) for a, values in op.args)
    return CellSpec(
        taps=tuple(make_tap(m, d) for m, d in depths.items()),
        op=op.name,
        width=_choose(trial, f"{slot}.width", space.widths),
        activation=_choose(trial, f"{slot}.activation", space.activations),
        args=args,
    )


def _suggest_train(trial: _Suggests, space: SearchSpace) -> dict[str, Any]:
    out = {}
    for c in space.train:
        name = f"train.{c.name}"
        if not c.is_range:
            out[c.name] = _choose(trial, name, c.choices)
        elif c.is_int:
            out[c.name] = c.settle(trial.suggest_int(name, int(c.low), int(c.high), log=c.log))
        else:
            out[c.name] = c.settle(trial.suggest_float(name, c.low, c.high, log=c.log))
    return out


def suggest_spec(trial: _Suggests, space: SearchSpace) -> ArchSpec:
    """The spec an Optuna trial (or any object with the `suggest_*` methods above) chooses."""
    stage = _choose(trial, "stage", space.stages)
    n_cells = _choose(trial, "n_cells", range(1, space.max_cells + 1)) if stage == "hybrid" else 1
    cells = tuple(_suggest_cell(trial, space, stage, f"c{i}") for i in range(n_cells))
    head: tuple[int, ...] = ()
    if stage == "early":
        labels = {trunk_label(t): t for t in space.trunks}
        head = labels[_choose(trial, "trunk", list(labels))]
    return ArchSpec(stage, cells, head, tuple(_suggest_train(trial, space).items()))


def spec_to_params(spec: ArchSpec, space: SearchSpace) -> dict[str, Any]:
    """The trial parameters under which `suggest_spec` returns `spec` (validated first)."""
    space.validate(spec)
    params: dict[str, Any] = {}

    def put(name: str, options: Sequence[Any], value: Any) -> None:
        if len(options) > 1:
            params[name] = value

    put("stage", space.stages, spec.stage)
    if spec.stage == "hybrid":
        put("n_cells", range(1, space.max_cells + 1), len(spec.cells))
    if spec.stage == "early":
        put("trunk", space.trunks, trunk_label(spec.head))
    for i, cell in enumerate(spec.cells):
        if spec.stage == "hybrid":
            for m, d in cell.depths.items():
                put(f"c{i}.depth.{m}", space.depth_map[m], d)
        put(f"c{i}.op", space.ops, cell.op)
        for name, values in space.op_map[cell.op].values().items():
            put(f"c{i}.{cell.op}.{name}", values, cell.op_args[name])
        put(f"c{i}.width", space.widths, cell.width)
        put(f"c{i}.activation", space.activations, cell.activation)
    settings = spec.train_settings
    for c in space.train:
        if c.searched:
            params[f"train.{c.name}"] = settings[c.name]
    return params


def spec_from_params(params: Mapping[str, Any], space: SearchSpace) -> ArchSpec:
    """The spec that trial parameters (e.g. a finished trial's `params`) describe."""
    with quiet_optuna():
        return suggest_spec(optuna.trial.FixedTrial(dict(params)), space)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Within the block only: Optuna logs warnings and up, and no ExperimentalWarning."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.setLevel(level)
