"""Search strategies: plain ask/tell objects, seeded, with no Ray import.

`make_strategy("mfas", space, seed=0, budget=60, cost_fn=costs)` builds one by name;
a thin Ray Tune `Searcher` adapter (in `search/`) wraps them for parallel trials.
"""
from __future__ import annotations

from typing import Any

from search.strategies._base import CostFn, Result, SpaceExhausted, Strategy
from search.strategies.grid import GridStrategy
from search.strategies.mfas import MFASStrategy
from search.strategies.nsga2 import NSGA2Strategy, spec_from_params, spec_to_params, suggest_spec
from search.strategies.random import RandomStrategy
from spaces.space import SearchSpace

__all__ = [
    "STRATEGIES",
    "CostFn",
    "GridStrategy",
    "MFASStrategy",
    "NSGA2Strategy",
    "RandomStrategy",
    "Result",
    "SpaceExhausted",
    "Strategy",
    "make_strategy",
    "spec_from_params",
    "spec_to_params",
    "suggest_spec",
]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RandomStrategy, GridStrategy, MFASStrategy, NSGA2Strategy)
}


def make_strategy(
    name: str,
    space: SearchSpace,
    *,
    seed: int,
    budget: int | None = None,
    cost_fn: CostFn | None = None,
    **kw: Any,
) -> Strategy:
    """The strategy registered as `name`; extra keywords go to its constructor."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](space, seed=seed, budget=budget, cost_fn=cost_fn, **kw)
