"""MFAS (Pérez-Rúa et al., CVPR 2019) made multi-objective: progressive, surrogate-guided search.

As in MFAS, the search runs rounds over progression levels. Level 0 is every one-cell
spec (early with each trunk, late, one-cell hybrid; each model once, see
`SearchSpace.canonical`). MFAS trains all of it first; here the first batch is the one-cell
models a user writes by hand (`handmade_specs`: each operator at its default arguments, on
the raw inputs and on the embeddings; `handmade=False` leaves them out), then a part of
level 0 drawn stage by stage, so the few early and late specs are covered as fully as the
many one-cell hybrids (drawn uniformly over specs, they were mostly hybrids: on the bench
spaces that missed the cheap end of the front; experiments/RESULTS.md, "Search"). The
second batch refines: the neighbours of the best one-cell spec so far (another width,
argument or trunk; `refine` best specs, 0: none), what a user tries next with a model that works.
Level l >= 1 takes the top-K observed chains of at least l cells (hybrid specs, and the
one-cell specs without a trunk: a late spec is the one-cell chain on the last taps) and
sets their cell l to every possible cell (an append for an l-cell chain, MFAS's re-choice
of layer l for a longer one); later rounds' level 0 re-chooses the first cell of the best
chains. A surrogate fitted on the observed accuracies rates the
candidates, and K of them are drawn with MFAS's cooling temperature.

The multi-objective part: costs known before training (params, FLOPs) are exact
(`cost_fn`), so the surrogate predicts the run's metric only, and a candidate's score is the
hypervolume it would add to the observed front with an optimistic metric (ensemble mean +
`explore` x spread) and, for a cost measured only by training (latency), the best value
observed so far (as optimistic), plus a tiny floor so that no candidate has zero odds.
Without `cost_fn` the score is the predicted metric itself, as in MFAS. `ask()` serves a queue; an empty queue builds
the next batch from whatever has been told so far.

Training settings (when the space searches them) are part of a candidate: level-0 specs
get sampled settings, unfolded chains inherit their parent's and half of them change one
setting, and level 0 also offers the top-K specs of every stage with one setting changed.
The surrogate sees the settings through `SearchSpace.encode`.
"""
from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

import numpy as np

from search import objectives as _objectives
from search.objectives import Objective
from search.pareto import non_dominated_sort
from search.strategies._base import CostFn, Strategy
from search.strategies._pools import (
    handmade_specs,
    in_turn,
    one_cell_neighbours,
    one_cell_pool,
    position_pool,
    sampled_train,
    varied_train,
)
from search.strategies._sampling import SIGMA, T0, TF, hypervolume_gains, sample_k, temperature
from search.strategies.surrogate import Surrogate
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

TOP_K = 5  # the chains a level unfolds (5 and 8 beat the batch size, 15, on both bench spaces: RESULTS.md)
REFINED = 1  # the best one-cell specs whose neighbours the refinement batch tries (3 cost hypervolume: experiments/RESULTS.md)


class MFASStrategy(Strategy):
    """Sequential model-based progressive search (see the module docstring)."""

    name = "mfas"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        cost_fn: CostFn | None = None,
        objectives: Sequence[Objective] | None = None,
        batch_size: int = 15,
        top_k: int | None = None,
        initial: int | None = None,
        max_candidates: int = 512,
        explore: float = 0.5,
        floor: float = 1e-6,
        t0: float = T0,
        tf: float = TF,
        sigma: float = SIGMA,
        surrogate_steps: int = 200,
        handmade: bool = True,
        refine: int = REFINED,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, cost_fn=cost_fn, objectives=objectives)
        if batch_size < 1 or max_candidates < 1:
            raise ValueError("mfas: batch_size and max_candidates must be >= 1")
        self.batch_size, self.top_k = batch_size, top_k or min(batch_size, TOP_K)
        default_initial = max(batch_size, budget // 4) if budget else 2 * batch_size
        self.initial = initial or default_initial
        self.max_candidates, self.explore, self.floor = max_candidates, explore, floor
        self.schedule = (t0, tf, sigma)
        self._rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self._queue: deque[ArchSpec] = deque()
        self._levels = space.max_cells if "hybrid" in space.stages else 1
        self._round = self._level = self._step = 0
        self._pool0 = one_cell_pool(space)
        self._handmade = handmade_specs(space) if handmade else []
        self.refine = refine
        self.surrogate = Surrogate(space.encode_length, seed=seed, steps=surrogate_steps)
        self._fitted_on = -1
        self.fit_losses: list[float] = []
        self._costs: dict[str, dict[str, float]] = {}
        self._ref: np.ndarray | None = None
        self.batches: list[dict[str, float]] = []  # one record per batch built: round, level, size, temperature

    # ---- the queue --------------------------------------------------------------------
    @property
    def fixed_asks(self) -> int:
        """The new specs left in the batch being asked (the next batch learns from the results)."""
        return len(self._queue) if self.exhausted else len({s.candidate_id for s in self._queue if self.is_new(s)})

    def _propose(self) -> ArchSpec:
        if not self._queue:
            self._queue.extend(self._next_batch())
        while self._queue:
            spec = self._queue.popleft()
            if self.exhausted or self.is_new(spec):
                return spec
        return self._fresh_random(self._rng, self.space.sample)  # nothing left to expand

    def _room(self, k: int) -> int:
        """`k`, cut to what is left of the budget (while any is left)."""
        if self.budget is not None and self.n_asked < self.budget:
            return min(k, self.budget - self.n_asked)
        return k

    def _next_batch(self) -> list[ArchSpec]:
        if self._step == 0:  # the hand-made models, then level 0 drawn stage by stage
            k = self._room(max(self.initial, len(self._handmade)))
            first = self._handmade[:k]
            taken = {s.candidate_id for s in first}
            rest = [s for s in self._pool0.draw_by_segment(self._rng, k) if s.candidate_id not in taken]
            drawn = sampled_train(self.space, (first + rest)[:k], self._rng)
            batch = list({s.candidate_id: s for s in drawn if self.is_new(s)}.values())
            return self._record(batch, temp=float("inf"))
        if self._step == 1 and self._handmade and self.refine and (batch := self._refine(self._room(self.batch_size))):
            return self._record(batch, temp=float("inf"), level=0)
        for _ in range(self._levels):  # a level with nothing to expand yet is skipped
            candidates = self._candidates(self._level)
            if candidates:
                temp = temperature(self._step - 1, *self.schedule)
                return self._record(self._select(candidates, self._room(self.batch_size), temp), temp)
            self._advance()
        return []

    def _record(self, batch: list[ArchSpec], temp: float, level: int | None = None) -> list[ArchSpec]:
        """Log a batch; a level-`level` batch outside the rounds (the refinement) leaves the round where it is."""
        self.batches.append({"round": self._round, "level": self._level if level is None else level,
                             "size": len(batch), "temperature": temp})
        self._step += 1
        if level is None:
            self._advance()
        return batch

    def _refine(self, k: int) -> list[ArchSpec]:
        """Up to `k` neighbours (`one_cell_neighbours`: another width, argument or trunk) of the
        `refine` best one-cell specs told so far, taken in turn: the hand-made model that
        works, at the widths and settings the user would try next (on planted shift, the
        hand-made circulant scored 0.983 val at width 32 and 0.995 at 16 or 64)."""
        tops = sorted((r for r in self._successes() if len(r[0].cells) == 1), key=lambda r: -r[1])[: self.refine]
        return in_turn([[s for s in varied_train(self.space, one_cell_neighbours(self.space, spec), self._rng)
                         if self.is_new(s)] for spec, _, _ in tops], k)

    def _advance(self) -> None:
        self._level += 1
        if self._level >= self._levels:
            self._level, self._round = 0, self._round + 1

    # ---- candidates -------------------------------------------------------------------
    def _successes(self) -> list[tuple[ArchSpec, float, dict[str, float]]]:
        """(spec, score, raw objective values) of every spec whose latest result succeeded, in ask order."""
        return [
            (spec, r.score, dict(r.values))
            for aid, spec in self._asked.items()
            if (r := self.results.get(aid)) is not None
        ]

    def _matrix(self, rows: list[dict[str, float]]) -> np.ndarray:
        cols = {o.name: [r[o.name] for r in rows] for o in self.objectives}
        return _objectives.minimised(cols, self.objectives).reshape(len(rows), len(self.objectives))

    def _top(self, min_cells: int, stages: tuple[str, ...] | None = None) -> list[ArchSpec]:
        """The top-K observed specs with at least `min_cells` cells, by front rank, then score:
        of `stages`, or (None) the chains (hybrid specs, and the one-cell specs without a
        trunk, each a one-cell chain: `SearchSpace.as_chain`)."""
        def keep(spec: ArchSpec) -> bool:
            ok = self.space.as_chain(spec) is not None if stages is None else spec.stage in stages
            return ok and len(spec.cells) >= min_cells

        rows = [row for row in self._successes() if keep(row[0])]
        if not rows:
            return []
        ranks = non_dominated_sort(self._matrix([r[2] for r in rows]))
        order = sorted(range(len(rows)), key=lambda i: (ranks[i], -rows[i][1], rows[i][0].candidate_id))
        return [rows[i][0] for i in order[: self.top_k]]

    def _candidates(self, level: int) -> list[ArchSpec]:
        """New specs of progression level `level`, at most `max_candidates`, drawn uniformly.

        Level 0 draws half from the one-cell specs and half from the best chains with their
        first cell re-chosen, so the cheap end of the front is searched again every round.
        """
        unfold = position_pool(self.space, self._top(2 if level == 0 else level), level)
        if level > 0:
            drawn = varied_train(self.space, unfold.draw(self._rng, self.max_candidates), self._rng)
        else:
            drawn = varied_train(self.space, unfold.draw(self._rng, self.max_candidates // 2), self._rng)
            fresh = self._pool0.draw(self._rng, self.max_candidates - len(drawn))
            drawn += sampled_train(self.space, fresh, self._rng)
            if self.space.train:  # the best specs of every stage, trained another way
                drawn += [self.space.mutate_train(s, self._rng) for s in self._top(1, self.space.stages)]
        return list({s.candidate_id: s for s in drawn if self.is_new(s)}.values())

    # ---- scoring and sampling -----------------------------------------------------------
    def _select(self, candidates: list[ArchSpec], k: int, temp: float) -> list[ArchSpec]:
        rows = self._successes()
        if len(rows) < 2:  # nothing to fit a surrogate on yet (all failed or pending)
            return self._rng.sample(candidates, min(k, len(candidates)))
        if len(rows) != self._fitted_on:
            x = np.stack([self.space.encode(r[0]) for r in rows])
            self.fit_losses = self.surrogate.fit(x, np.array([r[1] for r in rows]))
            self._fitted_on = len(rows)
        mean, std = self.surrogate.predict(np.stack([self.space.encode(s) for s in candidates]))
        scores = self._scores(candidates, mean + self.explore * std, rows)
        return [candidates[i] for i in sample_k(scores, k, temp, self._np_rng)]

    def _scores(self, candidates: list[ArchSpec], score: np.ndarray, rows: list[tuple]) -> np.ndarray:
        """Sampling scores (>= 0) of candidates with predicted `score` (the metric, higher is
        better), given observed `rows`."""
        if self.cost_fn is None:
            raw = np.maximum(score, 0.0)
        else:
            seen = [r[2] for r in rows]
            metric = self.objectives[0]
            guesses = []
            for spec, sc in zip(candidates, score, strict=True):
                guess = {metric.name: sc if metric.mode == "max" else -sc, **self._cost(spec)}
                for o in self.objectives[1:]:  # measured only by training: the best seen, optimistically
                    if o.name not in guess:
                        guess[o.name] = min(r[o.name] for r in seen)
                guesses.append(guess)
            front, points = self._matrix(seen), self._matrix(guesses)
            raw = hypervolume_gains(front, points, self._reference(seen + guesses))
            if not raw.any():  # the surrogate sees nothing beating the front: fall back to the metric
                raw = score - score.min()
        return raw + self.floor * max(float(raw.max()), 1e-12)

    def _cost(self, spec: ArchSpec) -> dict[str, float]:
        aid = spec.arch_id  # costs are the architecture's: training settings do not change them
        if aid not in self._costs:
            assert self.cost_fn is not None
            self._costs[aid] = _objectives.costs_of(self.cost_fn(spec))
        return self._costs[aid]

    def _reference(self, rows: list[dict[str, float]]) -> np.ndarray:
        """Fixed hypervolume reference: raised (never lowered) when bigger costs appear."""
        ref = _objectives.reference({o.name: [r[o.name] for r in rows] for o in self.objectives}, self.objectives)
        self._ref = ref if self._ref is None else np.maximum(self._ref, ref)
        return self._ref
