"""What every search strategy shares: the ask/tell contract and its bookkeeping.

A strategy proposes one `ArchSpec` per `ask()` and learns from `tell(spec, objectives)`,
where `objectives` is `{"accuracy": float, "params": int, "flops": int}` (accuracy is
maximised and may be NaN) or `None` for a failed trial. A NaN accuracy counts as a
failure. The base class keeps track of what was asked and told, so that no strategy
proposes a spec twice until every spec of the space has been asked.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from spaces.space import SearchSpace
from spaces.spec import ArchSpec

CostFn = Callable[[ArchSpec], tuple[int, int]]
ENUMERATE_LIMIT = 100_000  # the spaces small enough to list what is left when draws keep repeating


class SpaceExhausted(RuntimeError):
    """Raised by `ask()` on a strategy that is `done` (e.g. a grid that has listed every spec)."""


@dataclass(frozen=True)
class Result:
    """The objectives of one successful trial."""

    accuracy: float
    params: float
    flops: float


def parse_objectives(objectives: Mapping[str, float] | None) -> Result | None:
    """The `Result` of a told trial, or None when it failed (None, or a non-finite accuracy).

    Costs of a trial that did not fail must be finite and > 0 (they go through log10):
    anything else is a bug upstream and raises ValueError rather than skewing the front.
    """
    if objectives is None:
        return None
    missing = [k for k in ("accuracy", "params", "flops") if k not in objectives]
    if missing:
        raise ValueError(f"objectives: missing {', '.join(missing)}; got keys {sorted(objectives)}")
    accuracy = float(objectives["accuracy"])
    if not math.isfinite(accuracy):
        return None
    costs = {k: float(objectives[k]) for k in ("params", "flops")}
    for k, v in costs.items():
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"objectives.{k}: expected a finite number > 0, got {objectives[k]!r}")
    return Result(accuracy, costs["params"], costs["flops"])


class Strategy:
    """Base of the search strategies: subclasses implement `_propose` and may override `_observe`.

    `budget` is the number of candidates the caller means to ask for (None: open-ended);
    strategies that plan ahead use it, asks beyond it still work. `cost_fn(spec) ->
    (params, flops)` gives a spec's exact costs before training, for strategies that use them.
    """

    name = "base"

    def __init__(
        self, space: SearchSpace, *, seed: int, budget: int | None = None, cost_fn: CostFn | None = None
    ) -> None:
        if budget is not None and budget < 1:
            raise ValueError(f"budget: expected a positive number of candidates, got {budget}")
        self.space = space
        self.seed = seed
        self.budget = budget
        self.cost_fn = cost_fn
        self._size = space.size()
        self._asked: dict[str, ArchSpec] = {}
        self._pending: Counter[str] = Counter()
        self.results: dict[str, Result | None] = {}  # candidate_id -> latest told result (None: failed)
        self.history: list[tuple[ArchSpec, Result | None]] = []  # in tell order

    # ---- the contract -------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the strategy has nothing left to propose (only finite strategies)."""
        return False

    def ask(self) -> ArchSpec:
        """The next spec to evaluate; raises SpaceExhausted when `done`."""
        if self.done:
            raise SpaceExhausted(f"{self.name}: nothing left to ask ({len(self._asked)} specs asked)")
        spec = self._propose()
        self._asked[spec.candidate_id] = spec
        self._pending[spec.candidate_id] += 1
        return spec

    def tell(self, spec: ArchSpec, objectives: Mapping[str, float] | None) -> None:
        """Report the objectives of an asked spec (None, or NaN accuracy: the trial failed)."""
        aid = spec.candidate_id
        if self._pending[aid] < 1:
            what = "was already told" if aid in self._asked else "was never asked"
            raise ValueError(f"tell: {spec.describe()} {what}")
        result = parse_objectives(objectives)
        self._pending[aid] -= 1
        self.results[aid] = result
        self.history.append((spec, result))
        self._observe(spec, result)

    def adopt(self, spec: ArchSpec) -> None:
        """Count `spec` as asked, so that it can be told: a recorded trial, replayed on resume,
        that this strategy's own asks did not reach (see `search.replay`)."""
        self._asked[spec.candidate_id] = spec
        self._pending[spec.candidate_id] += 1
        self._adopted(spec)

    def _adopted(self, spec: ArchSpec) -> None:
        """Hook for strategies that keep their own record of asks."""

    # ---- bookkeeping for subclasses -------------------------------------------------
    @property
    def n_asked(self) -> int:
        """Number of distinct specs asked so far."""
        return len(self._asked)

    @property
    def exhausted(self) -> bool:
        """True once every spec of the space has been asked: repeats are allowed from then on."""
        return len(self._asked) >= self._size

    def is_new(self, spec: ArchSpec) -> bool:
        return spec.candidate_id not in self._asked

    def _propose(self) -> ArchSpec:
        raise NotImplementedError

    def _observe(self, spec: ArchSpec, result: Result | None) -> None:
        """Learn from a told result; the base keeps only the records above."""

    def _fresh_random(self, rng: random.Random, draw: Callable[[random.Random], ArchSpec], tries: int = 200) -> ArchSpec:
        """A spec not asked yet, drawn with `draw(rng)`; a repeat only once the space is exhausted.

        After `tries` repeats, a space small enough to enumerate gives one of the specs left
        (so small spaces never repeat early); a huge one accepts the repeat.
        """
        spec = draw(rng)
        for _ in range(tries):
            if self.exhausted or self.is_new(spec):
                return spec
            spec = draw(rng)
        if self._size <= ENUMERATE_LIMIT:
            left = [s for s in self.space.enumerate(ENUMERATE_LIMIT) if self.is_new(s)]
            return rng.choice(left)
        return spec
