"""`StrategySearcher`: a plain search strategy as a Ray Tune `Searcher`.

A strategy is a plain object (`ask() -> ArchSpec | None`, `tell(spec, metrics | None)`,
`done`) that never imports Ray; this adapter maps Tune trial ids to packs of its specs
(`search.pack`: a trial trains one or more candidates one after another).
Its state is never saved: `trials.jsonl` is the record of a run, and a resume replays
it into a freshly seeded strategy (`search.runstore.replay`) and starts a new Tune experiment.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from search.baselines import counts_to_budget
from search.engine.balance import PLAN, Durations, fixed_asks, promote
from search.engine.confirm import confirmation_todo
from search.engine.packing import TARGET_S, Pack, RollingSeconds, pack_size
from search.runstore.store import RunStore
from search.runstore.trial_metrics import (
    CANDIDATE,
    FINAL,
    METRIC,
    METRICS_JSON,
    objectives_of,
    result_metrics,
)
from spaces.spec import ArchSpec

__all__ = ["CANDIDATE", "FINAL", "METRIC", "METRICS_JSON", "Member", "StrategySearcher", "objectives_of",
           "pack_config", "pack_members", "record_id", "result_metrics"]


@dataclass(frozen=True)
class Member:
    """One candidate of a trial's pack: a spec, and its confirmation seed (None: the strategy's)."""

    spec: ArchSpec
    seed: int | None = None

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec.to_dict()}
        if self.seed is not None:
            out.update(seed=self.seed, confirm=True)
        return out


def pack_config(members: Sequence[Member]) -> dict[str, Any]:
    """A trial's Tune config: one candidate as before (`spec`, `seed`, `confirm`), a pack as `pack: [...]`."""
    return members[0].to_config() if len(members) == 1 else {"pack": [m.to_config() for m in members]}


def pack_members(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidates' configs of a trial's config, in training order."""
    return list(config["pack"]) if "pack" in config else [dict(config)]


def record_id(trial_id: str, k: int, size: int) -> str:
    """The `trials.jsonl` id of candidate `k` of a trial's pack: the trial's id when it trains one."""
    return trial_id if size == 1 else f"{trial_id}_{k}"


class StrategySearcher(Searcher):
    """A Tune `Searcher` that asks a plain strategy for specs and tells it the results.

    Each Tune trial trains a pack of candidates (`pack`: N or auto, sized by
    `search.engine.packing.pack_size` over `slots` concurrent trials): `suggest` asks the
    strategy for up to that many specs (a strategy that answers None waits for results: the
    pack goes with what it has). `strategy.tell` gets `objectives_of` each candidate's metrics
    as soon as its report arrives: None for a candidate that failed, errored or was stopped
    early. A trial whose worker died errs its running candidate; the pack's candidates that
    never started go back to be handed out again. `max_trials` caps the strategy's
    candidates, counting the `recorded` ones (the run's records so far, already replayed into
    the strategy); `rerun` specs (asked in the replay, never recorded) are run before new asks.

    The end of the budget is balanced (`search.engine.balance`): the specs a strategy has fixed
    already (`fixed_asks`) are asked ahead into a plan (at most `PLAN`), handed out in ask order,
    except that a pack starts with the longest planned one (predicted from the candidates
    finished so far) once the rest would no longer balance it; alone, when it fills half a pack.
    `max_live` (None: no cap) caps the trials suggested and not complete: `run_search` lets Tune
    start a trial per slot at once and keeps `slots` + 1 live, the running ones and the next.

    Confirmation (`confirm=K`): once the strategy's trials are all asked, the searcher
    proposes the seeds `base_seed + 1 .. + K` of every candidate on the front (decided on
    the mean over seeds, see `search.engine.confirm`), packed like the others, until the front
    is fully confirmed; it waits while running trials may still change the front. Those
    candidates carry `seed` and `confirm: True` and are never told to the strategy.

    `stopping` (set by an interrupt) ends new suggestions; the running trials finish.
    """

    def __init__(self, strategy: Any, *, max_trials: int | None = None, store: RunStore | None = None,
                 confirm: int = 0, base_seed: int = 0, recorded: Iterable[Mapping[str, Any]] = (),
                 rerun: Sequence[ArchSpec] = (), pack: Pack = 1, slots: int = 1,
                 max_live: int | None = None) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.strategy, self.max_trials = strategy, max_trials
        self.confirm, self.base_seed = confirm, base_seed
        self.pack, self.slots, self.max_live = pack, slots, max_live
        self._run_dir = None if store is None else str(store.run_dir)
        self._n_recorded = sum(counts_to_budget(r) for r in recorded)
        room = len(rerun) if max_trials is None else max(0, max_trials - self._n_recorded)
        self._plan = list(rerun)[:room]  # asked, not handed out yet: the replay's leftovers, then asks ahead
        self._live: dict[str, dict[int, Member]] = {}  # trial id -> its pack's candidates not yet finished
        self._configs: dict[str, dict[str, Any]] = {}  # trial id -> its config, while live
        self._n_main = len(self._plan)  # the strategy's candidates taken here: planned or handed out
        self._finished: dict[str, dict[str, Any]] = {}  # record id -> record, until the store has it
        self.seconds = RollingSeconds()
        self.durations = Durations()
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
            if self.max_live is not None and len(self._live) >= self.max_live:  # slots busy, the next waiting
                return Searcher.FINISHED if self.confirm <= 0 and self._handed_out() else None
            members = self._strategy_pack()
            if not isinstance(members, list):
                return members  # None: it waits for results; or FINISHED
            self._live[trial_id] = dict(enumerate(members))
            self._configs[trial_id] = pack_config(members)
        return self._configs[trial_id]

    def _left(self) -> int:
        """The strategy's candidates still to take (10**9 without a cap)."""
        return 10**9 if self.max_trials is None else self.max_trials - self._n_recorded - self._n_main

    def _handed_out(self) -> bool:
        """Nothing of the strategy's left to hand out: no plan, and the budget taken or the strategy done."""
        return not self._plan and (self._left() <= 0 or self.strategy.done)

    def _ask(self) -> ArchSpec | None:
        """The strategy's next spec (counted), or None: done, the budget taken, or it waits for results."""
        if self._left() <= 0 or self.strategy.done or (spec := self.strategy.ask()) is None:
            return None
        self._n_main += 1
        return spec

    def _plan_ahead(self) -> None:
        """Ask ahead what the strategy has fixed already, within the budget and `PLAN`."""
        for _ in range(min(PLAN - len(self._plan), fixed_asks(self.strategy))):  # read once: each ask uses one
            if (spec := self._ask()) is None:
                break
            self._plan.append(spec)

    def _strategy_pack(self) -> list[Member] | str | None:
        """The next pack of the strategy's candidates, or of confirmation seeds once those are asked."""
        self._plan_ahead()
        if self._handed_out():
            return self._confirmation_pack()
        size = pack_size(self.pack, len(self._plan) + max(self._left(), 0), self.slots, self.seconds.mean)
        members: list[Member] = []
        while len(members) < size:
            if self._plan:
                predicted = [self.durations.predict(s) for s in self._plan] if not members else []
                first = promote(predicted, self.slots)
                members.append(Member(self._plan.pop(first or 0)))
                if first is not None and (predicted[first] or 0.0) >= TARGET_S / 2:
                    break  # a long one that fills half a pack goes alone
            elif (spec := self._ask()) is not None:
                members.append(Member(spec))
                self._plan_ahead()  # an ask may fix more (a strategy's next batch)
            else:
                break  # done, or it waits for results before proposing more
        if not members and self.strategy.done:
            return self._confirmation_pack()
        return members or None

    def _confirmation_pack(self) -> list[Member] | str | None:
        """Next seeds of front candidates; None (wait) while running trials may change the front."""
        if self.confirm <= 0:
            return Searcher.FINISHED
        in_flight = [(m.spec.candidate_id, m.seed) for ms in self._live.values() for m in ms.values()
                     if m.seed is not None]
        todo = confirmation_todo(self._records(), self._reference(), self.confirm, self.base_seed, in_flight,
                                 getattr(self.strategy, "objectives", None))
        if not todo:
            return None if self._live else Searcher.FINISHED
        size = pack_size(self.pack, len(todo), self.slots, self.seconds.mean)
        return [Member(spec, seed) for spec, seed in todo[:size]]

    def _records(self) -> list[dict[str, Any]]:
        """The run's finished trials: the store's, and those finished here that it lacks yet."""
        stored = RunStore(Path(self._run_dir)).trials() if self._run_dir is not None else []
        ids = {str(r["trial_id"]) for r in stored}
        return stored + [r for t, r in self._finished.items() if t not in ids]

    def _reference(self) -> list[float] | None:
        return RunStore(Path(self._run_dir)).reference if self._run_dir is not None else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A candidate of the trial's pack finished: tell the strategy now, not at the trial's end."""
        self._take(trial_id, result)

    def _take(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        members = self._live.get(trial_id)
        k = (result or {}).get(CANDIDATE)
        if members is None or result is None or not isinstance(k, int) or k not in members:
            return
        metrics = result_metrics(result)
        self.seconds.add((metrics or {}).get("seconds"))
        self.durations.add(members[k].spec, (metrics or {}).get("seconds"))
        self._finish(record_id(trial_id, k, len(pack_members(self._configs[trial_id]))), members.pop(k), metrics)

    def _finish(self, rid: str, member: Member, metrics: dict[str, Any] | None, status: str | None = None) -> None:
        """Note candidate `rid` as finished (for confirmation) and tell the strategy (unless a seed)."""
        self._finished[rid] = {"trial_id": rid, "spec": member.spec.to_dict(),
                               "status": status or str((metrics or {}).get("status", "early_stopped")),
                               "metrics": metrics or {}, "seed": self.base_seed if member.seed is None else member.seed}
        if member.seed is not None:
            self._finished[rid]["confirm"] = True
        else:
            self.strategy.tell(member.spec, objectives_of(metrics, getattr(self.strategy, "objectives", None)))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not error:
            self._take(trial_id, result)  # the report a stopper ended the trial on
        members, config = self._live.pop(trial_id, None), self._configs.pop(trial_id, None)
        if not members or config is None:
            return
        size, ks = len(pack_members(config)), sorted(members)
        if error:  # the running candidate errs; those that never started go back to be asked again
            self._finish(record_id(trial_id, ks[0], size), members[ks[0]], None, "errored")
            self._plan[:0] = [members[k].spec for k in ks[1:] if members[k].seed is None]
        elif size == 1:  # its last result decides (none with metrics: stopped early by the scheduler)
            self._finish(trial_id, members[ks[0]], result_metrics(result or {}))
        # else a pack stopped by an interrupt: what did not finish is neither told nor recorded

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the run's record is `trials.jsonl` (Tune skips a searcher that writes no file)."""

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("a fusion-nas search resumes from trials.jsonl, never from Tune's state")
