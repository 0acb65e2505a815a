"""Search strategies: plain ask/tell objects, seeded, with no Ray import.

`make_strategy("mfas", space, seed=0, budget=60, cost_fn=costs)` builds one by name;
a thin Ray Tune `Searcher` adapter (in `search/`) wraps them for parallel trials.
Strategies live in the `STRATEGIES` registry: a plugin adds one with
`@STRATEGIES.register("name")` on a `Strategy` subclass (entry point group
`fusion_nas.strategies`); `search.options` in a config reaches its constructor.
"""
from __future__ import annotations

import inspect
from typing import Any

from search.strategies._base import CostFn, Result, SpaceExhausted, Strategy, StrategyContext
from search.strategies.grid import GridStrategy
from search.strategies.mfas import MFASStrategy
from search.strategies.nsga2 import NSGA2Strategy, spec_from_params, spec_to_params, suggest_spec
from search.strategies.oneshot import OneShotStrategy
from search.strategies.random import RandomStrategy
from spaces.registry import Registry
from spaces.space import SearchSpace

__all__ = [
    "STRATEGIES",
    "CostFn",
    "GridStrategy",
    "MFASStrategy",
    "NSGA2Strategy",
    "OneShotStrategy",
    "RandomStrategy",
    "Result",
    "SpaceExhausted",
    "Strategy",
    "StrategyContext",
    "list_strategies",
    "make_strategy",
    "spec_from_params",
    "spec_to_params",
    "suggest_spec",
]

STRATEGIES: Registry[type[Strategy]] = Registry("search strategy", "strategies")
for _cls in (RandomStrategy, GridStrategy, MFASStrategy, NSGA2Strategy, OneShotStrategy):
    STRATEGIES.add(_cls.name, _cls)


def list_strategies() -> list[str]:
    """Names of all registered search strategies, sorted."""
    return STRATEGIES.names()


def make_strategy(
    name: str,
    space: SearchSpace,
    *,
    seed: int,
    budget: int | None = None,
    cost_fn: CostFn | None = None,
    **kw: Any,
) -> Strategy:
    """The strategy registered as `name`; extra keywords go to its constructor. `objectives`
    is left out for a (plugin) strategy whose constructor does not take it: such a strategy
    works with the classic accuracy, params, FLOPs it is told. `context` (a `StrategyContext`: the
    run's data) likewise reaches only a strategy that takes it."""
    cls = STRATEGIES.get(name)
    for optional in ("objectives", "context"):
        if optional in kw and not _takes(cls, optional):
            kw.pop(optional)
    return cls(space, seed=seed, budget=budget, cost_fn=cost_fn, **kw)


def _takes(cls: Any, arg: str) -> bool:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == arg or p.kind is p.VAR_KEYWORD for p in params)
