"""Random search: the baseline every other strategy has to beat."""
from __future__ import annotations

import random
import sys
from collections.abc import Sequence

from search.objectives import Objective
from search.strategies._base import CostFn, Strategy
from spaces.space import SearchSpace
from spaces.spec import ArchSpec


class RandomStrategy(Strategy):
    """Independent random specs, never a repeat until the space is exhausted.

    By default `space.sample` (stage, then chain length, then each choice uniformly), so
    small stages are tried as often as big ones; `uniform=True` draws uniformly over all
    specs instead, which in practice means almost only the longest hybrid chains.
    """

    name = "random"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        cost_fn: CostFn | None = None,
        objectives: Sequence[Objective] | None = None,
        uniform: bool = False,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, cost_fn=cost_fn, objectives=objectives)
        self._rng = random.Random(seed)
        self._draw = space.sample_uniform if uniform else space.sample

    @property
    def fixed_asks(self) -> int:
        return sys.maxsize  # its draws never look at results

    def _propose(self) -> ArchSpec:
        return self._fresh_random(self._rng, self._draw)
