"""`StrategySearcher`: a plain search strategy as a Ray Tune `Searcher`.

A strategy is a plain object (`ask() -> ArchSpec | None`, `tell(spec, metrics | None)`,
`done`) that never imports Ray; this adapter maps Tune trial ids to its specs.
Its state is never saved: `trials.jsonl` is the record of a run, and a resume replays
it into a freshly seeded strategy (`search.runstore.replay`) and starts a new Tune experiment.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from search.baselines import counts_to_budget
from search.engine.confirm import confirmation_todo
from search.runstore.store import RunStore
from search.runstore.trial_metrics import FINAL, METRIC, METRICS_JSON, objectives_of, result_metrics
from spaces.spec import ArchSpec

__all__ = ["FINAL", "METRIC", "METRICS_JSON", "StrategySearcher", "objectives_of", "result_metrics"]


class StrategySearcher(Searcher):
    """A Tune `Searcher` that asks a plain strategy for specs and tells it the results.

    `strategy.tell` gets `objectives_of` the evaluate metrics: None for a trial that
    failed, errored or was stopped early. `max_trials` caps the strategy's trials, counting
    the `recorded` ones (the run's records so far, already replayed into the strategy);
    `rerun` specs (asked in the replay, never recorded) are run before new asks.

    Confirmation (`confirm=K`): once the strategy's trials are all asked, the searcher
    proposes the seeds `base_seed + 1 .. + K` of every candidate on the front (decided on
    the mean over seeds, see `search.engine.confirm`) until the front is fully confirmed; it waits
    while running trials may still change the front. Those trials carry `seed` and
    `confirm: True` in their config and are never told to the strategy.

    `stopping` (set by an interrupt) ends new suggestions; the running trials finish.
    """

    def __init__(self, strategy: Any, *, max_trials: int | None = None, store: RunStore | None = None,
                 confirm: int = 0, base_seed: int = 0, recorded: Iterable[Mapping[str, Any]] = (),
                 rerun: Sequence[ArchSpec] = ()) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.strategy, self.max_trials = strategy, max_trials
        self.confirm, self.base_seed = confirm, base_seed
        self._run_dir = None if store is None else str(store.run_dir)
        self._n_recorded = sum(counts_to_budget(r) for r in recorded)
        self._rerun = list(rerun)
        self._live: dict[str, ArchSpec] = {}  # suggested, not yet complete
        self._main: set[str] = set()  # the strategy's trials suggested here
        self._seeds: dict[str, int] = {}  # confirmation trials suggested here: trial id -> seed
        self._finished: dict[str, dict[str, Any]] = {}  # trial id -> record, until the store has it
        self.stopping = False

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its search algorithm into `tuner.pkl`: only the settings go there, never
        the strategy (its cost function holds the run's data) nor anything to resume from."""
        return {"max_trials": self.max_trials, "confirm": self.confirm, "base_seed": self.base_seed}

    @property
    def live(self) -> int:
        """How many suggested trials have not completed."""
        return len(self._live)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stopping:
            return None
        if trial_id not in self._live:
            n_main = self._n_recorded + len(self._main)
            if self.max_trials is not None and n_main >= self.max_trials:
                return self._suggest_confirmation(trial_id)
            if self._rerun:
                spec = self._rerun.pop(0)
            elif self.strategy.done:
                return self._suggest_confirmation(trial_id)
            elif (spec := self.strategy.ask()) is None:  # it waits for results before proposing more
                return None
            self._live[trial_id] = spec
            self._main.add(trial_id)
        config: dict[str, Any] = {"spec": self._live[trial_id].to_dict()}
        if trial_id in self._seeds:
            config.update(seed=self._seeds[trial_id], confirm=True)
        return config

    def _suggest_confirmation(self, trial_id: str) -> dict[str, Any] | None:
        """The next seed of a front candidate; None (wait) while running trials may change the front."""
        if self.confirm <= 0:
            return Searcher.FINISHED
        known = {str(r["trial_id"]): r for r in self._records()}
        in_flight = [(s.candidate_id, self._seeds[t]) for t, s in self._live.items() if t in self._seeds]
        todo = confirmation_todo(list(known.values()), self._reference(), self.confirm, self.base_seed, in_flight,
                                 getattr(self.strategy, "objectives", None))
        if not todo:
            return None if self._live else Searcher.FINISHED
        spec, seed = todo[0]
        self._live[trial_id], self._seeds[trial_id] = spec, seed
        return {"spec": spec.to_dict(), "seed": seed, "confirm": True}

    def _records(self) -> list[dict[str, Any]]:
        """The run's finished trials: the store's, and those finished here that it lacks yet."""
        stored = RunStore(Path(self._run_dir)).trials() if self._run_dir is not None else []
        ids = {str(r["trial_id"]) for r in stored}
        return stored + [r for t, r in self._finished.items() if t not in ids]

    def _reference(self) -> list[float] | None:
        return RunStore(Path(self._run_dir)).reference if self._run_dir is not None else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        spec = self._live.pop(trial_id, None)
        if spec is None:
            return
        metrics = None if error or not result else result_metrics(result)
        self._finished[trial_id] = {"trial_id": trial_id, "spec": spec.to_dict(),
                                    "status": "errored" if error else str((metrics or {}).get("status", "early_stopped")),
                                    "metrics": metrics or {}, "seed": self._seeds.get(trial_id, self.base_seed)}
        if trial_id in self._seeds:
            self._finished[trial_id]["confirm"] = True
        else:
            self.strategy.tell(spec, objectives_of(metrics, getattr(self.strategy, "objectives", None)))

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the run's record is `trials.jsonl` (Tune skips a searcher that writes no file)."""

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("a fusion-nas search resumes from trials.jsonl, never from Tune's state")
