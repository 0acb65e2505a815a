"""Balancing the end of a budget (`search.engine.balance`): candidate seconds predicted from
those finished, the longest planned candidate started while the rest can still balance it, and
the searcher that asks ahead only what a strategy has fixed."""
from __future__ import annotations

import heapq
import itertools
import json
import math
import os
from typing import Any

import numpy as np
import pytest

from search.engine.balance import Durations, features, fixed_asks, promote
from search.engine.packing import AUTO
from search.engine.tune import _pending_trials
from search.engine.tune_searcher import CANDIDATE, FINAL, METRICS_JSON, StrategySearcher, pack_members
from search.strategies import make_strategy
from spaces.spec import ArchSpec, CellSpec
from tests.test_tune import SPACE, fake_metrics

SECONDS = {"tensor": 6.0, "low_rank": 1.0, "concat": 0.3}  # a planted cost per cell, plus 0.2 a candidate


def spec_of(*ops: str, **train: float) -> ArchSpec:
    args = {"tensor": (("proj_dim", 8),), "low_rank": (("rank", 4),)}
    cells = tuple(CellSpec(("a@1", "b@1"), op, 8, "relu", args.get(op, ())) for op in ops)
    return ArchSpec("hybrid" if len(ops) > 1 else "late", cells, train=tuple(sorted(train.items())))


def planted(spec: ArchSpec) -> float:
    return 0.2 + sum(SECONDS[c.op] for c in spec.cells)


# ---- the predictor ----------------------------------------------------------------------
def test_features_count_the_cells_operators_and_take_the_training_settings_values():
    assert features(spec_of("tensor", "concat", "tensor", lr=0.01, batch_size=64)) == {
        "op:tensor": 2.0, "op:concat": 1.0, "train:batch_size": 64.0, "train:lr": 0.01}


def test_durations_learn_additive_seconds_per_operator_and_predict_an_unseen_chain():
    d = Durations()
    seen = [spec_of("concat"), spec_of("tensor"), spec_of("low_rank"), spec_of("concat", "low_rank")]
    assert d.predict(seen[0]) is None  # nothing finished yet
    for s in seen[:2]:
        d.add(s, planted(s))
    assert d.predict(seen[0]) is None and len(d) == 2  # fewer than MIN_FIT
    for s in seen[2:]:
        d.add(s, planted(s))
    for bad in (math.nan, -1.0, None, True, "1"):  # not seconds: ignored
        d.add(seen[0], bad)
    assert len(d) == len(seen)
    # seconds are additive per cell here (`planted`): four independent rows pin the model down
    for chain in (("tensor", "tensor"), ("tensor", "concat"), ("low_rank", "low_rank", "concat")):
        assert d.predict(spec_of(*chain)) == pytest.approx(planted(spec_of(*chain)), rel=1e-9)


def test_an_operator_never_seen_is_predicted_the_longest_seen():
    d = Durations()
    for s in (spec_of("concat"), spec_of("concat", "concat"), spec_of("low_rank")):
        d.add(s, planted(s))
    assert d.predict(spec_of("tensor")) == planted(spec_of("low_rank"))  # the longest so far: start it early
    assert d.predict(spec_of("concat", lr=0.1)) == pytest.approx(planted(spec_of("concat")))  # a setting: ignored


def test_a_numeric_setting_that_moves_the_seconds_is_learnt_from_its_value():
    def seconds(spec: ArchSpec) -> float:  # a step's time grows with the batch: 1 ms a sample per cell
        return 0.2 + 0.001 * dict(spec.train)["batch_size"] * len(spec.cells)

    d = Durations()
    for ops, batch in ((("concat",), 64), (("concat",), 256), (("concat", "concat"), 128), (("concat",), 32)):
        d.add(spec_of(*ops, batch_size=batch), seconds(spec_of(*ops, batch_size=batch)))
    one, two = d.predict(spec_of("concat", batch_size=512)), d.predict(spec_of("concat", "concat", batch_size=512))
    assert one is not None and two is not None and one < two  # more cells, longer
    small, big = d.predict(spec_of("concat", batch_size=16)), d.predict(spec_of("concat", batch_size=1024))
    assert small is not None and big is not None and big > small + 0.5  # a bigger batch, longer


def test_promote_starts_the_longest_once_the_rest_cannot_balance_it():
    def slow(predicted: list[float], slots: int, kappa: float) -> int | None:
        longest = predicted.index(max(predicted))
        rest = sum(predicted) - predicted[longest]
        return longest if rest < kappa * slots * predicted[longest] else None

    rng = np.random.default_rng(0)
    for _ in range(300):
        predicted = list(rng.exponential(2.0, size=int(rng.integers(1, 12))))
        for slots, kappa in ((2, 3.0), (4, 1.0), (8, 3.0)):
            assert promote(predicted, slots, kappa) == slow(predicted, slots, kappa)
    assert promote([1.0, 1.0, 20.0, 1.0], 2) == 2  # 3 s of rest < 3 x 2 x 20 s
    assert promote([1.0] * 30 + [5.0], 2) is None  # 30 s of rest still balances a 5 s one
    assert promote([1.0, None, 20.0], 2) is None  # an unknown one: no promotion
    assert promote([1.0, 20.0], 1) is None and promote([], 2) is None  # one slot: nobody to wait for


def test_fixed_asks_reads_a_strategy_that_has_none_as_zero():
    class Plain:
        pass

    class Odd:
        fixed_asks = True

    assert fixed_asks(Plain()) == 0 and fixed_asks(Odd()) == 0
    assert fixed_asks(make_strategy("random", SPACE, seed=0, budget=5)) > 10**9


# ---- the searcher, on a simulated clock -------------------------------------------------
class Hidden:
    """A strategy seen without its `fixed_asks`: the searcher asks it one pack at a time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "fixed_asks":
            raise AttributeError(name)
        return getattr(self.inner, name)


def simulate(strategy: Any, budget: int, slots: int = 2, pending: int = 1) -> tuple[list[float], list[str]]:
    """Run `budget` candidates through a `StrategySearcher` (pack auto) on `slots` simulated
    workers, each candidate taking `planted` seconds: what Tune does, with a clock instead of Ray
    (`pending` trials are suggested ahead and wait, ready, for a free slot). Returns each slot's
    last finish time and the candidates in the order they started."""
    s = StrategySearcher(strategy, max_trials=budget, pack=AUTO, slots=slots, max_live=slots + pending)
    ids = (f"t{i}" for i in itertools.count())
    ready: list[tuple[str, list[ArchSpec]]] = []
    idle = list(range(slots))
    events: list[tuple[float, int, Any]] = []  # (time, tie-break, what happens)
    tie = itertools.count()
    started: list[str] = []
    ends = [0.0] * slots
    now = 0.0
    while True:
        while len(ready) < pending and isinstance(config := s.suggest(tid := next(ids)), dict):
            ready.append((tid, [ArchSpec.from_dict(m["spec"]) for m in pack_members(config)]))
        while idle and ready:
            w, (tid, specs) = idle.pop(0), ready.pop(0)
            t = now
            for k, spec in enumerate(specs):
                started.append(spec.candidate_id)
                t += planted(spec)
                heapq.heappush(events, (t, next(tie), ("done", tid, k, spec, k == len(specs) - 1)))
            heapq.heappush(events, (t, next(tie), ("free", w)))
            ends[w] = t
        if not events:
            break
        now, _, what = heapq.heappop(events)
        if what[0] == "free":
            idle.append(what[1])
            continue
        _, tid, k, spec, last = what
        metrics = fake_metrics(spec, {"bonus": 0.0}) | {"seconds": planted(spec)}
        result = {CANDIDATE: k, FINAL: last, METRICS_JSON: json.dumps(metrics)}
        (s.on_trial_complete if last else s.on_trial_result)(tid, result)
    assert len(started) == budget
    return ends, started


class Scripted:
    """A strategy that asks a fixed list of specs (all fixed: `fixed_asks` is what is left)."""

    done = False
    objectives = None

    def __init__(self, specs: list[ArchSpec]) -> None:
        self.specs, self.told = list(specs), []

    @property
    def fixed_asks(self) -> int:
        return len(self.specs)

    def ask(self) -> ArchSpec:
        return self.specs.pop(0)

    def tell(self, spec: ArchSpec, metrics: Any) -> None:
        self.told.append(spec)


def test_a_long_candidate_asked_last_is_started_early_and_the_workers_end_together():
    """40 candidates of 0.5-2.2 s, one tensor of 6.2 s asked third (so its operator is known),
    and a chain of two tensors (12.2 s) asked last. In ask order the last one trains alone for
    seconds at the end; balanced, the two workers end within one short candidate of each other."""
    short = [x for x in SPACE.enumerate() if "tensor" not in x.ops][:38]
    specs = [*short[:2], spec_of("tensor"), *short[2:], spec_of("tensor", "tensor")]
    assert len({x.candidate_id for x in specs}) == 40
    longest_short = max(planted(x) for x in short)
    ends, started = simulate(Scripted(specs), 40)
    in_order, asked_order = simulate(Hidden(Scripted(specs)), 40)
    assert asked_order == [x.candidate_id for x in specs]  # one pack at a time: ask order
    assert abs(in_order[0] - in_order[1]) > 3 * longest_short  # the tensor chain alone at the end
    assert abs(ends[0] - ends[1]) <= longest_short, ends
    assert started.index(specs[-1].candidate_id) < 30  # started while others could balance it
    assert max(ends) < max(in_order) - longest_short  # and the search ends sooner


def test_the_plan_asks_ahead_only_within_the_budget_and_only_what_is_fixed():
    strat = make_strategy("random", SPACE, seed=0, budget=9)
    s = StrategySearcher(strat, max_trials=9, pack=2, slots=2)
    first = s.suggest("A")
    assert strat.n_asked == 9  # the whole budget planned: random's asks never depend on results
    again = make_strategy("random", SPACE, seed=0, budget=9)
    asks = [again.ask().to_dict() for _ in range(9)]
    assert [m["spec"] for m in first["pack"]] == asks[:2]  # nothing finished: ask order
    assert s.suggest("B")["pack"][0]["spec"] == asks[2]
    nsga = make_strategy("nsga2", SPACE, seed=0, budget=9)
    s = StrategySearcher(nsga, max_trials=9, pack=2, slots=2)
    s.suggest("A")
    assert nsga.n_asked == 2  # nothing fixed: asked one pack at a time, as results may change the next


def test_a_resume_hands_out_the_lost_asks_first_and_never_beyond_the_budget():
    strat = make_strategy("random", SPACE, seed=0, budget=5)
    lost = [strat.ask() for _ in range(7)]  # a replay can ask past the budget: never run beyond it
    s = StrategySearcher(strat, max_trials=5, pack=10, slots=1, recorded=[{"status": "ok"}], rerun=lost)
    handed = [m["spec"] for m in s.suggest("A")["pack"]]
    assert handed == [x.to_dict() for x in lost[:4]] and s.suggest("B") == StrategySearcher.FINISHED


def test_at_most_max_live_trials_and_the_end_is_still_said():
    strat = make_strategy("random", SPACE, seed=0, budget=4)
    s = StrategySearcher(strat, max_trials=4, pack=1, slots=2, max_live=3)
    assert all(isinstance(s.suggest(t), dict) for t in "ABC")
    assert s.suggest("D") is None  # two running, one ready: the fourth waits
    s.on_trial_complete("A", {CANDIDATE: 0, FINAL: True, METRICS_JSON: json.dumps({"status": "ok"})})
    assert isinstance(s.suggest("D"), dict)
    assert s.suggest("E") == StrategySearcher.FINISHED  # at the cap, but nothing is left: finished


def test_tune_may_start_a_trial_per_slot_and_a_users_setting_wins(monkeypatch):
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    monkeypatch.delenv(key, raising=False)
    with _pending_trials(3):
        assert os.environ[key] == "3"
    assert key not in os.environ
    monkeypatch.setenv(key, "7")
    with _pending_trials(3):
        assert os.environ[key] == "7"
    assert os.environ[key] == "7"
