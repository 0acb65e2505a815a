"""Grid search: every spec of a small space once, in a seeded random order.

The order is shuffled so that a search stopped early has still seen a spread of
the space, not only its first stage and operator.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from search.objectives import Objective
from search.strategies._base import CostFn, Strategy
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

GRID_LIMIT = 100_000


class GridStrategy(Strategy):
    """Exhaustive search; `done` once all `space.size()` specs have been asked."""

    name = "grid"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        cost_fn: CostFn | None = None,
        objectives: Sequence[Objective] | None = None,
        limit: int = GRID_LIMIT,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, cost_fn=cost_fn, objectives=objectives)
        size = space.size()
        if size > limit:
            raise ValueError(
                f"grid: the space has {size} specs, more than the grid limit of {limit}; "
                "use the random, mfas or nsga2 strategy, or narrow the space"
            )
        self._order = list(space.enumerate(limit))
        random.Random(seed).shuffle(self._order)
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._order)

    @property
    def fixed_asks(self) -> int:
        return len(self._order) - self._next

    def _propose(self) -> ArchSpec:
        spec = self._order[self._next]
        self._next += 1
        return spec
