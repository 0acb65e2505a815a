"""`StrategySearcher`: a plain search strategy as a Ray Tune `Searcher`, resumable.

A strategy is a plain object (`ask() -> ArchSpec | None`, `tell(spec, metrics | None)`,
`done`) that never imports Ray; this adapter maps Tune trial ids to its specs.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray.cloudpickle as cloudpickle
from ray.tune.search import Searcher

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


def objectives_of(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    """What a strategy is told: `{"accuracy", "params", "flops"}` of an ok trial, else None."""
    keys = {"accuracy": METRIC, "params": "params_total", "flops": "flops_total"}
    if not metrics or metrics.get("status", "ok") != "ok":
        return None
    if any(metrics.get(k) is None for k in keys.values()):
        log.warning("an ok trial without %s: told as failed", ", ".join(keys.values()))
        return None
    return {name: float(metrics[k]) for name, k in keys.items()}


class StrategySearcher(Searcher):
    """A Tune `Searcher` that asks a plain strategy for specs and tells it the results.

    `strategy.tell` gets `objectives_of` the evaluate metrics: None for a trial that
    failed, errored or was stopped early. `max_trials` caps the trials started, counting those
    already recorded in `store`.

    Resuming: Tune saves its searcher state at most every ~10 s, so with a `store` the
    searcher also snapshots itself there after every ask and tell and, on its first
    call after a load, carries on from the newer of the two. Specs asked for trials
    Tune no longer knows are run again first; recorded trials the strategy never
    heard of are told to it.
    """

    def __init__(self, strategy: Any, *, max_trials: int | None = None, store: RunStore | None = None) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.strategy, self.max_trials = strategy, max_trials
        self._run_dir = None if store is None else str(store.run_dir)
        self._live: dict[str, ArchSpec] = {}  # suggested, not yet complete
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
            if self.max_trials is not None and len(self._told | self._recorded | set(self._live)) >= self.max_trials:
                return Searcher.FINISHED
            if self._orphans:
                spec = self._orphans.pop(0)
            elif self.strategy.done:
                return Searcher.FINISHED
            elif (spec := self.strategy.ask()) is None:  # it waits for results before proposing more
                return None
            self._live[trial_id] = spec
            self._snapshot()
        return {"spec": self._live[trial_id].to_dict()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._get_ready()
        spec = self._live.pop(trial_id, None)
        if spec is None or trial_id in self._told:
            return
        self._told.add(trial_id)
        self.strategy.tell(spec, None if error or not result else objectives_of(result_metrics(result)))
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
        self._orphans += [s for t, s in self._live.items() if t not in rerun]
        self._live = {t: s for t, s in rerun.items() if t not in self._told}
        records = RunStore(Path(self._run_dir)).trials()
        self._recorded = {str(r["trial_id"]) for r in records}
        self._told &= self._recorded | set(rerun)  # a tell whose record was lost does not count
        for r in records:
            if r["trial_id"] not in self._told and r["trial_id"] not in self._live:
                self._told.add(r["trial_id"])
                try:
                    self.strategy.tell(ArchSpec.from_dict(r["spec"]), objectives_of(r["metrics"] | {"status": r["status"]}))
                except Exception as exc:  # a strategy may refuse a spec its restored state never asked
                    log.warning("the strategy did not take recorded trial %s: %s", r["trial_id"], exc)
