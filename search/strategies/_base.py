"""What every search strategy shares: the ask/tell contract and its bookkeeping.

A strategy proposes one `ArchSpec` per `ask()` and learns from `tell(spec, objectives)`,
where `objectives` maps each of the strategy's objectives (`search.objectives`; default the
classic `{"accuracy", "params", "flops"}`) to its raw value, or is `None` for a failed trial.
A non-finite metric counts as a failure. The base class keeps track of what was asked and
told, so that no strategy proposes a spec twice until every spec of the space has been asked.

One model, one spec: `ask` hands out `space.canonical` of what a strategy proposes (the
built-in ones propose canonical specs already), and `tell` / `adopt` take a non-canonical
twin (a trial recorded before the space folded twins) as its canonical spec, so a model
trained once is never proposed again under its other name.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import objectives as _objectives
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

CostFn = Callable[[ArchSpec], "Mapping[str, float] | tuple[int, int]"]  # known-before costs by name
ENUMERATE_LIMIT = 100_000  # the spaces small enough to list what is left when draws keep repeating


class SpaceExhausted(RuntimeError):
    """Raised by `ask()` on a strategy that is `done` (e.g. a grid that has listed every spec)."""


@dataclass(frozen=True)
class StrategyContext:
    """The run's data, for a strategy that trains something itself (the one-shot supernet):
    `taps` (a `search.training.taps.TapCache`; only its train and val splits may be read),
    `train` (the run's `TrainConfig`), the run directory to keep files in (None: keep none),
    `say` for progress lines, and `cache`, a dict a caller may share between strategies of one
    process (benchmarks) so that equal work is done once. `make_strategy` passes it only to
    strategies whose constructor takes `context`."""

    taps: Any
    train: Any
    run_dir: Path | None = None
    say: Callable[[str], None] | None = None
    cache: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Result:
    """The objectives of one successful trial: raw `values` by objective name, and `score`,
    the run's metric made "higher is better" (what a surrogate learns)."""

    values: Mapping[str, float]
    score: float

    @property
    def accuracy(self) -> float:  # the classic name of the score
        return self.score


def parse_objectives(objectives: Mapping[str, float] | None,
                     objs: Sequence[_objectives.Objective] | None = None) -> Result | None:
    """The `Result` of a told trial, or None when it failed (None, or a non-finite metric).

    Costs of a trial that did not fail must be finite (and > 0 on a log scale): anything
    else is a bug upstream and raises ValueError rather than skewing the front.
    """
    if objectives is None:
        return None
    objs = objs or _objectives.get(_objectives.CLASSIC)
    missing = [o.name for o in objs if o.name not in objectives]
    if missing:
        raise ValueError(f"objectives: missing {', '.join(missing)}; got keys {sorted(objectives)}")
    metric = objs[0]
    value = float(objectives[metric.name])
    if not math.isfinite(value):
        return None
    values = {metric.name: value}
    for o in objs[1:]:
        v = float(objectives[o.name])
        if not (math.isfinite(v) and (v > 0 or o.scale != "log10")):
            raise ValueError(f"objectives.{o.name}: expected a finite number > 0, got {objectives[o.name]!r}")
        values[o.name] = v
    return Result(values, value if metric.mode == "max" else -value)


class Strategy:
    """Base of the search strategies: subclasses implement `_propose` and may override `_observe`.

    `budget` is the number of candidates the caller means to ask for (None: open-ended);
    strategies that plan ahead use it, asks beyond it still work. `cost_fn(spec)` gives a
    spec's exact costs before training (`{"params": .., "flops": ..}`, or that pair), for
    strategies that use them. `objectives` (`search.objectives`, the metric first) is what
    `tell` reports; default the classic accuracy, params, FLOPs.
    """

    name = "base"

    def __init__(
        self, space: SearchSpace, *, seed: int, budget: int | None = None, cost_fn: CostFn | None = None,
        objectives: Sequence[_objectives.Objective] | None = None,
    ) -> None:
        if budget is not None and budget < 1:
            raise ValueError(f"budget: expected a positive number of candidates, got {budget}")
        self.space = space
        self.seed = seed
        self.budget = budget
        self.cost_fn = cost_fn
        self.objectives: tuple[_objectives.Objective, ...] = tuple(objectives or _objectives.get(_objectives.CLASSIC))
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

    @property
    def fixed_asks(self) -> int:
        """How many of the next asks are fixed already: asked now or after results still to come,
        they give the same specs (a searcher may ask those ahead, and train them in another order).
        0 by default: every ask may learn from the latest results."""
        return 0

    def ask(self) -> ArchSpec:
        """The next spec to evaluate; raises SpaceExhausted when `done`."""
        if self.done:
            raise SpaceExhausted(f"{self.name}: nothing left to ask ({len(self._asked)} specs asked)")
        spec = self.space.canonical(self._propose())
        self._asked[spec.candidate_id] = spec
        self._pending[spec.candidate_id] += 1
        return spec

    def tell(self, spec: ArchSpec, objectives: Mapping[str, float] | None) -> None:
        """Report the objectives of an asked spec (None, or a NaN metric: the trial failed)."""
        spec = self.space.canonical(spec)
        aid = spec.candidate_id
        if self._pending[aid] < 1:
            what = "was already told" if aid in self._asked else "was never asked"
            raise ValueError(f"tell: {spec.describe()} {what}")
        result = parse_objectives(objectives, self.objectives)
        self._pending[aid] -= 1
        self.results[aid] = result
        self.history.append((spec, result))
        self._observe(spec, result)

    def adopt(self, spec: ArchSpec) -> None:
        """Count `spec` as asked, so that it can be told: a recorded trial, replayed on resume,
        that this strategy's own asks did not reach (see `search.runstore.replay`)."""
        spec = self.space.canonical(spec)
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
