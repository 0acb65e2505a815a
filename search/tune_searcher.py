"""`StrategySearcher`: a plain search strategy as a Ray Tune `Searcher`, resumable.

A strategy is a plain object (`ask() -> ArchSpec | None`, `tell(spec, metrics | None)`,
`done`) that never imports Ray; this adapter maps Tune trial ids to its specs.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray.cloudpickle as cloudpickle
from ray.tune.search import Searcher

from search import objectives as _objectives
from search.confirm import confirmation_todo
from search.objectives import Objective
from search.store import RunStore
from spaces.spec import ArchSpec

log = logging.getLogger(__name__)

METRIC = "val_accuracy"
FINAL = "_final"  # set in a trial's last report only
METRICS_JSON = "_metrics_json"  # the evaluate metrics, exact (Tune adds keys, flattens dicts)
SNAPSHOT = "searcher.pkl"  # the searcher's own state in the run dir, newer than Tune's


def result_metrics(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The evaluate metrics in a trial's final result (None if it never reported one)."""
    return json.loads(result[METRICS_JSON]) if result.get(FINAL) else None


def objectives_of(metrics: Mapping[str, Any] | None, objs: Sequence[Objective] | None = None) -> dict[str, float] | None:
    """What a strategy is told: `{objective name: value}` of an ok trial (`objs`: the strategy's
    objectives, default the classic accuracy, params, FLOPs), else None."""
    objs = objs or _objectives.get(_objectives.CLASSIC)
    out = _objectives.told(metrics, objs)
    if out is None and metrics and metrics.get("status", "ok") == "ok":
        log.warning("an ok trial without %s: told as failed", ", ".join(o.key for o in objs))
    return out


class StrategySearcher(Searcher):
    """A Tune `Searcher` that asks a plain strategy for specs and tells it the results.

    `strategy.tell` gets `objectives_of` the evaluate metrics: None for a trial that
    failed, errored or was stopped early. `max_trials` caps the trials started, counting those
    already recorded in `store`.

    Confirmation (`confirm=K`): once the strategy's trials are all asked, the searcher
    proposes the seeds `base_seed + 1 .. + K` of every candidate on the front (decided on
    the mean over seeds, see `search.confirm`) until the front is fully confirmed; it waits
    while running trials may still change the front. Those trials carry `seed` and
    `confirm: True` in their config and are never told to the strategy.

    Resuming: Tune saves its searcher state at most every ~10 s, so with a `store` the
    searcher also snapshots itself there after every ask and tell and, on its first
    call after a load, carries on from the newer of the two. Specs asked for trials
    Tune no longer knows are run again first; recorded trials the strategy never
    heard of are told to it.
    """

    def __init__(self, strategy: Any, *, max_trials: int | None = None, store: RunStore | None = None,
                 confirm: int = 0, base_seed: int = 0) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.strategy, self.max_trials = strategy, max_trials
        self.confirm, self.base_seed = confirm, base_seed
        self._run_dir = None if store is None else str(store.run_dir)
        self._live: dict[str, ArchSpec] = {}  # suggested, not yet complete
        self._seeds: dict[str, int] = {}  # confirmation trials (live or finished): trial id -> seed
        self._finished: dict[str, dict[str, Any]] = {}  # trial id -> record, until the store has it
        self._told: set[str] = set()
        self._recorded: set[str] = set()
        self._orphans: list[ArchSpec] = []  # asked, but their trials were lost with a killed driver
        self._version = 0  # one more per ask or tell: which saved state is newer
        self._ready = False  # False after every load: check the run dir first

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ready": False}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._get_ready()
        if trial_id not in self._live:
            main = (self._told | self._recorded | set(self._live)) - set(self._seeds)
            if self._orphans:
                spec = self._orphans.pop(0)
            elif (self.max_trials is not None and len(main) >= self.max_trials) or self.strategy.done:
                return self._suggest_confirmation(trial_id)
            elif (spec := self.strategy.ask()) is None:  # it waits for results before proposing more
                return None
            self._live[trial_id] = spec
            self._snapshot()
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
        self._snapshot()
        return {"spec": spec.to_dict(), "seed": seed, "confirm": True}

    def _records(self) -> list[dict[str, Any]]:
        """The run's finished trials: the store's, and those finished here that it lacks yet."""
        stored = RunStore(Path(self._run_dir)).trials() if self._run_dir is not None else []
        ids = {str(r["trial_id"]) for r in stored}
        return stored + [r for t, r in self._finished.items() if t not in ids]

    def _reference(self) -> list[float] | None:
        return RunStore(Path(self._run_dir)).reference if self._run_dir is not None else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._get_ready()
        spec = self._live.pop(trial_id, None)
        if spec is None or trial_id in self._told:
            return
        self._told.add(trial_id)
        metrics = None if error or not result else result_metrics(result)
        self._finished[trial_id] = {"trial_id": trial_id, "spec": spec.to_dict(),
                                    "status": "errored" if error else str((metrics or {}).get("status", "early_stopped")),
                                    "metrics": metrics or {}, "seed": self._seeds.get(trial_id, self.base_seed)}
        if trial_id in self._seeds:
            self._finished[trial_id]["confirm"] = True
        else:
            self.strategy.tell(spec, objectives_of(metrics, getattr(self.strategy, "objectives", None)))
        self._snapshot()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(cloudpickle.load(f))

    def _snapshot(self) -> None:
        self._version += 1
        if self._run_dir is not None:
            RunStore(Path(self._run_dir)).write_bytes(SNAPSHOT, cloudpickle.dumps(self.__getstate__()))

    def _get_ready(self) -> None:
        """Once per load, before anything else: adopt the run dir's snapshot if newer
        and reconcile it with the trials Tune will rerun and the trials recorded."""
        if self._ready or self._run_dir is None:
            self._ready = True
            return
        self._ready = True
        rerun = dict(self._live)  # unfinished in the state Tune loaded: Tune runs them again
        path = Path(self._run_dir) / SNAPSHOT
        if path.exists() and (newer := cloudpickle.loads(path.read_bytes()))["_version"] >= self._version:
            keep = {"max_trials": self.max_trials, "_run_dir": self._run_dir, "_ready": True}  # the caller's
            self.__dict__.update(newer, **keep)
        # lost with a killed driver: a strategy's spec is asked again; a lost seed is planned anew
        self._orphans += [s for t, s in self._live.items() if t not in rerun and t not in self._seeds]
        self._live = {t: s for t, s in rerun.items() if t not in self._told}
        records = RunStore(Path(self._run_dir)).trials()
        self._recorded = {str(r["trial_id"]) for r in records}
        self._told &= self._recorded | set(rerun)  # a tell whose record was lost does not count
        self._seeds = {t: s for t, s in self._seeds.items() if t in rerun}
        self._seeds.update({str(r["trial_id"]): int(r.get("seed") or 0) for r in records if r.get("confirm")})
        for r in records:
            if r.get("confirm"):
                continue
            if r["trial_id"] not in self._told and r["trial_id"] not in self._live:
                self._told.add(r["trial_id"])
                try:
                    self.strategy.tell(ArchSpec.from_dict(r["spec"]), objectives_of(
                        r["metrics"] | {"status": r["status"]}, getattr(self.strategy, "objectives", None)))
                except Exception as exc:  # a strategy may refuse a spec its restored state never asked
                    log.warning("the strategy did not take recorded trial %s: %s", r["trial_id"], exc)
