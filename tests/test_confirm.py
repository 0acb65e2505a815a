"""Confirming the front over seeds: candidates as seed means, which seeds are still due,
and the searcher that proposes them after the strategy's trials (no Ray actors)."""
from __future__ import annotations

import json
import math
import random

import pytest

from search.engine.confirm import confirmation_todo
from search.engine.tune_searcher import StrategySearcher
from search.runstore.store import candidate_records, front_from_trials
from spaces.spec import ArchSpec, CellSpec


def spec(width: int, lr: float | None = None) -> ArchSpec:
    s = ArchSpec("late", (CellSpec(("a@1", "b@1"), "concat", width),))
    return s.with_train({"lr": lr}) if lr is not None else s


def rec(tid: str, sp: ArchSpec, val: float, *, seed: int = 0, confirm: bool = False, params: float = 100,
        status: str = "ok", test: float | None = None) -> dict:
    r = {"trial_id": tid, "spec": sp.to_dict(), "arch_id": sp.arch_id, "candidate_id": sp.candidate_id,
         "seed": seed, "status": status, "reason": None,
         "metrics": {"val_accuracy": val, "test_accuracy": val if test is None else test, "seed": seed,
                     "params_total": params, "flops_total": 10 * params}}
    if confirm:
        r["confirm"] = True
    return r


def test_a_candidate_is_the_mean_of_its_seeds_with_the_sample_std():
    a = spec(8)
    recs = [rec("t1", a, 0.9), rec("t2", spec(16), 0.5), rec("t3", a, 0.7, seed=1, confirm=True),
            rec("t4", a, 0.8, seed=2, confirm=True, test=0.5)]
    cands = candidate_records(recs)
    assert [c["trial_id"] for c in cands] == ["t1", "t2"]
    m = cands[0]["metrics"]
    assert m["val_accuracy"] == pytest.approx(0.8)
    assert m["val_std"] == pytest.approx(math.sqrt(((0.1) ** 2 + 0 + (0.1) ** 2) / 2))  # ddof = 1
    assert m["test_accuracy"] == pytest.approx((0.9 + 0.7 + 0.5) / 3)
    assert (m["n_seeds"], m["seeds"], m["seed_trials"]) == (3, [0, 1, 2], ["t1", "t3", "t4"])
    assert cands[1]["metrics"]["n_seeds"] == 1 and cands[1]["metrics"]["val_std"] == 0.0


def test_the_front_uses_the_means_not_a_lucky_seed():
    """A small candidate that won its first seed by luck falls off the front once its seeds'
    mean is below a bigger one's... and a bigger one that is dominated on the mean stays off."""
    lucky, steady = spec(8), spec(16)
    single = [rec("t1", lucky, 0.95, params=100), rec("t2", steady, 0.90, params=200)]
    assert front_from_trials(single)["trial_ids"] == ["t1"]  # t2 is dominated: costlier, less accurate
    confirmed = single + [rec("t3", lucky, 0.80, seed=1, confirm=True), rec("t4", lucky, 0.81, seed=2, confirm=True)]
    front = front_from_trials(confirmed)
    assert front["trial_ids"] == ["t1", "t2"]  # lucky's mean 0.853 < 0.90: both are on the front now
    assert front["best_val_accuracy"] == pytest.approx(0.90)


def test_a_seed_that_failed_keeps_its_candidate_off_the_front():
    a = spec(8)
    recs = [rec("t1", a, 0.9), rec("t2", a, math.nan, seed=1, confirm=True, status="diverged"), rec("t3", spec(16), 0.5)]
    cand = candidate_records(recs)[0]
    assert cand["status"] == "diverged" and cand["reason"].startswith("seed 1:")
    assert front_from_trials(recs)["trial_ids"] == ["t3"]


def test_a_strategys_repeat_of_a_candidate_stays_its_own_point():
    a = spec(8)
    cands = candidate_records([rec("t1", a, 0.9), rec("t2", a, 0.7)])
    assert [c["metrics"]["n_seeds"] for c in cands] == [1, 1]


def test_todo_lists_the_missing_seeds_of_front_candidates_only():
    a, b, c = spec(8), spec(16), spec(32)
    recs = [rec("t1", a, 0.8, params=100), rec("t2", b, 0.9, params=200), rec("t3", c, 0.85, params=400)]
    todo = confirmation_todo(recs, None, k=2, base_seed=0)
    assert [(s.candidate_id, seed) for s, seed in todo] == [(b.candidate_id, 1), (b.candidate_id, 2),
                                                            (a.candidate_id, 1), (a.candidate_id, 2)]
    running = [(b.candidate_id, 1)]
    assert (b, 1) not in confirmation_todo(recs, None, 2, 0, in_flight=running)
    done = recs + [rec("t4", b, 0.9, seed=1, confirm=True), rec("t5", b, 0.9, seed=2, confirm=True),
                   rec("t6", a, 0.8, seed=1, confirm=True), rec("t7", a, 0.8, seed=2, confirm=True)]
    assert confirmation_todo(done, None, 2, 0) == []
    assert confirmation_todo(recs, None, 0, 0) == []
    assert [seed for _, seed in confirmation_todo([rec("t1", a, 0.8, seed=5)], None, 2, base_seed=5)] == [6, 7]


def test_training_settings_make_distinct_candidates():
    a1, a2 = spec(8, lr=0.01), spec(8, lr=0.001)
    assert a1.arch_id == a2.arch_id == spec(8).arch_id and a1.candidate_id != a2.candidate_id
    cands = candidate_records([rec("t1", a1, 0.9), rec("t2", a2, 0.8, seed=1, confirm=True)])
    assert len(cands) == 2


class ListStrategy:
    """Asks the given specs in order, then is done."""

    def __init__(self, specs):
        self.specs, self.told = list(specs), []

    @property
    def done(self):
        return not self.specs

    def ask(self):
        return self.specs.pop(0)

    def tell(self, spec, objectives):
        self.told.append((spec, objectives))


def result(val: float, params: float, seed: int = 0) -> dict:
    m = {"status": "ok", "val_accuracy": val, "test_accuracy": val, "params_total": params,
         "flops_total": 10 * params, "seed": seed}
    return {"_final": True, "_metrics_json": json.dumps(m)}


def test_the_searcher_confirms_the_front_after_the_strategys_trials():
    rng = random.Random(0)
    specs = [spec(w) for w in (8, 16, 32)]
    strat = ListStrategy(specs)
    s = StrategySearcher(strat, max_trials=3, confirm=2)
    asked = {f"t{i}": s.suggest(f"t{i}") for i in range(3)}
    assert s.suggest("t3") is None  # waits: the running trials decide the front
    vals = {"t0": 0.7, "t1": 0.9, "t2": 0.8}
    for tid, cfg in asked.items():
        assert "seed" not in cfg
        s.on_trial_complete(tid, result(vals[tid], params=100 * 2 ** int(tid[1])))
    assert len(strat.told) == 3
    confirm = {}
    n = 3
    while (cfg := s.suggest(f"t{n}")) not in (None, StrategySearcher.FINISHED):
        assert cfg["confirm"] is True and cfg["seed"] in (1, 2)
        confirm[f"t{n}"] = cfg
        n += 1
    # every candidate is on the front (each costlier one is more accurate... except t2)
    cids = {ArchSpec.from_dict(c["spec"]).candidate_id for c in confirm.values()}
    assert cids == {specs[0].candidate_id, specs[1].candidate_id}  # t2 (0.8, 400) is dominated by t1
    assert len(confirm) == 4
    assert s.suggest(f"t{n}") is None  # confirmation trials still running
    for tid, cfg in confirm.items():
        w = ArchSpec.from_dict(cfg["spec"]).cells[0].width
        s.on_trial_complete(tid, result(0.9 + rng.uniform(-0.01, 0.01) if w == 16 else 0.7, 100, cfg["seed"]))
    assert len(strat.told) == 3  # confirmation seeds are never told to the strategy
    assert s.suggest(f"t{n + 1}") == StrategySearcher.FINISHED


def test_without_confirm_the_searcher_finishes_with_the_strategy():
    strat = ListStrategy([spec(8)])
    s = StrategySearcher(strat, max_trials=1, confirm=0)
    s.suggest("t0")
    s.on_trial_complete("t0", result(0.9, 100))
    assert s.suggest("t1") == StrategySearcher.FINISHED
