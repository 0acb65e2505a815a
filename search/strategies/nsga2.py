"""NSGA-II through Optuna over the run's objectives (by default accuracy up, log10 params and
log10 FLOPs down), each on its comparison scale (`search.objectives`).

The strategy drives an Optuna study with `ask`/`tell` and the define-by-run mapping of
`optuna_space.suggest_spec`. A genetic algorithm proposes repeats as the population
converges; a repeat is not asked again but answered with its twin's result (at once if
known, else when it arrives), and after `retries` repeats in a row a fresh random spec is
enqueued instead, so that no spec is asked twice before the space is exhausted. Optuna's
parameters can describe a twin of a spec (a one-cell hybrid on the last taps is the late
spec): it is asked as its canonical spec (`SearchSpace.canonical`), a repeat if that was.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from search.objectives import Objective
from search.strategies._base import CostFn, Result, Strategy
from search.strategies.optuna_space import quiet_optuna, spec_from_params, spec_to_params, suggest_spec
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

__all__ = ["NSGA2Strategy", "spec_from_params", "spec_to_params", "suggest_spec"]

DIRECTIONS = {"max": "maximize", "min": "minimize"}


def default_population(budget: int | None) -> int:
    """Optuna's 50, cut to a quarter of a small budget (but >= 8) so that several generations run."""
    return 50 if budget is None else min(50, max(8, budget // 4))


class NSGA2Strategy(Strategy):
    """Optuna's NSGAIISampler over the space, seeded."""

    name = "nsga2"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        cost_fn: CostFn | None = None,
        objectives: Sequence[Objective] | None = None,
        population_size: int | None = None,
        retries: int = 20,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, cost_fn=cost_fn, objectives=objectives)
        self.retries = retries
        self._rng = random.Random(seed)
        self._open: defaultdict[str, list[optuna.Trial]] = defaultdict(list)  # candidate_id -> trials awaiting it
        with quiet_optuna():
            sampler = optuna.samplers.NSGAIISampler(
                seed=seed, population_size=population_size or default_population(budget)
            )
            self.study = optuna.create_study(directions=[DIRECTIONS[o.mode] for o in self.objectives],
                                             sampler=sampler)

    def _propose(self) -> ArchSpec:
        with quiet_optuna():
            for _ in range(self.retries):
                trial = self.study.ask()
                spec = self.space.canonical(suggest_spec(trial, self.space))
                self._open[spec.candidate_id].append(trial)
                if self.exhausted or self.is_new(spec):
                    return spec
                if self._pending[spec.candidate_id] == 0:  # a repeat of a finished spec: answer it now
                    self._close(spec.candidate_id, self.results[spec.candidate_id])
            spec = self._fresh_random(self._rng, self.space.sample)
            self.study.enqueue_trial(spec_to_params(spec, self.space))
            trial = self.study.ask()
            if suggest_spec(trial, self.space) != spec:
                raise AssertionError(f"nsga2: the enqueued trial did not reproduce {spec.describe()}")
            self._open[spec.candidate_id].append(trial)
            return spec

    def _adopted(self, spec: ArchSpec) -> None:
        """An Optuna trial for a spec it did not propose, so that its result reaches the study."""
        with quiet_optuna():
            self.study.enqueue_trial(spec_to_params(spec, self.space))
            trial = self.study.ask()
            suggest_spec(trial, self.space)  # define-by-run: the enqueued params become the trial's
            self._open[spec.candidate_id].append(trial)

    def _observe(self, spec: ArchSpec, result: Result | None) -> None:
        self._close(spec.candidate_id, result)

    def _close(self, aid: str, result: Result | None) -> None:
        """Tell every open trial of `aid` (the asked one and its parked repeats)."""
        with quiet_optuna():
            for trial in self._open.pop(aid, []):
                if result is None:
                    self.study.tell(trial, state=TrialState.FAIL)
                else:
                    self.study.tell(trial, [float(o.values([result.values[o.name]])[0]) for o in self.objectives])

    def spec_of(self, trial: optuna.trial.FrozenTrial) -> ArchSpec:
        """The (canonical) spec a trial of this study chose."""
        return self.space.canonical(spec_from_params(trial.params, self.space))
