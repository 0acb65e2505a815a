"""Packed trials (`search.pack`): one Tune trial trains several candidates one after another,
each still its own record, told and shown as it finishes, and kept by resume."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from search.engine import packing
from search.engine.interrupt import Interrupts, SearchInterrupted
from search.engine.packing import AUTO, RollingSeconds, pack_size, replay_lookahead
from search.engine.tune import run_search
from search.engine.tune_searcher import CANDIDATE, FINAL, METRICS_JSON, StrategySearcher
from search.runstore.store import RunStore, front_from_trials
from search.strategies import make_strategy
from spaces import ConfigError
from spaces.spec import ArchSpec
from tests.test_tune import (
    ROOT,
    SPACE,
    _cluster_pids,
    _kill_all,
    evaluate_crashes_on_tensor,
    evaluate_ok,
    evaluate_per_epoch,
    evaluate_slowly,
    fake_metrics,
    late,
)

BONUS = {"bonus": 0.01, "sleep": 0.0}


def strategy(seed: int = 0, budget: int = 12) -> Any:
    """The real random strategy: seeded, and it never asks one spec twice."""
    return make_strategy("random", SPACE, seed=seed, budget=budget)


def first_asks(n: int, seed: int = 0) -> list[str]:
    s = strategy(seed, n)
    return [s.ask().candidate_id for _ in range(n)]


def lines(store: RunStore) -> list[dict]:
    return [json.loads(ln) for ln in store.trials_path.read_text().splitlines() if ln.endswith("}")]


def no_repeats(records: list[dict]) -> bool:
    pairs = [(r["candidate_id"], r["seed"]) for r in records]
    return len(set(pairs)) == len(pairs) and len({r["trial_id"] for r in records}) == len(records)


# ---- sizing: a pure function -------------------------------------------------------
def test_a_fixed_pack_is_n_but_never_more_than_what_is_left():
    assert [pack_size(3, left, 2, None) for left in (10, 3, 2, 1, 0)] == [3, 3, 2, 1, 0]
    assert pack_size(1, 50, 2, 0.01) == 1  # pack 1: one candidate a trial, whatever the seconds


def test_auto_fills_the_target_seconds_within_the_fair_share():
    t = packing.TARGET_S
    # unknown seconds: a small first pack
    assert pack_size(AUTO, 64, 2, None) == packing.FIRST
    assert pack_size(AUTO, 3, 2, None) == 1  # half the fair share, ceil(3 / 4)
    assert pack_size(AUTO, 13, 2, None) == 4  # the first pack, within ceil(13 / 4)
    # short candidates: enough for TARGET_S, unless the fair share of what is left is smaller
    assert pack_size(AUTO, 1000, 2, t / 10) == 10
    assert pack_size(AUTO, 1000, 2, t / 9.5) == 10  # ceil: a pack reaches the target
    assert pack_size(AUTO, 13, 2, t / 10) == 4  # ceil(13 / (2 * 2))
    assert pack_size(AUTO, 13, 4, t / 10) == 2
    assert pack_size(AUTO, 10**6, 1, 1e-9) == packing.CAP
    assert pack_size(AUTO, 8, 1, t / 10) == 8  # one slot: no share to halve
    # long candidates stay single
    assert pack_size(AUTO, 1000, 2, t) == 1 and pack_size(AUTO, 1000, 2, 10 * t) == 1
    assert pack_size(AUTO, 1, 8, 0.01) == 1 and pack_size(AUTO, 0, 2, 0.01) == 0
    assert pack_size(AUTO, 100, 2, math.nan) == packing.FIRST


def test_auto_packs_keep_workers_busy_to_the_end_of_the_budget():
    """Simulated: 2 workers take auto packs of equal candidates until the budget is handed out;
    they finish within one candidate's time of each other, and each pack meets the target or
    half the fair share."""
    for n, seconds in ((64, 0.5), (64, 3.0), (500, 0.2), (7, 0.1)):
        free, left, sizes = [0.0, 0.0], n, []
        while left:
            w = free.index(min(free))
            size = pack_size(AUTO, left, 2, seconds)
            assert size * seconds >= packing.TARGET_S or size == min(math.ceil(left / 4), packing.CAP)
            free[w] += size * seconds
            left -= size
            sizes.append(size)
        assert abs(free[0] - free[1]) <= seconds + 1e-9, (n, seconds, sizes)
        assert sum(sizes) == n and max(sizes) <= packing.CAP


def test_rolling_seconds_is_the_mean_of_the_last_window():
    r = RollingSeconds(window=3)
    assert r.mean is None
    for s in (10.0, 1.0, 2.0, 3.0, math.nan, -1.0, True, None, "x"):
        r.add(s)
    assert r.mean == pytest.approx(2.0)  # the last three valid ones


def test_replay_looks_ahead_as_far_as_packs_can_be_in_flight():
    recs = [{"pack": 5}, {"pack": 2}, {}, {"pack": True}]
    assert replay_lookahead(recs, 2, 3) == 10
    assert replay_lookahead([], 2, 3) == 6
    assert replay_lookahead([], 2, AUTO) == 2 * packing.FIRST


# ---- the setting -----------------------------------------------------------------------
def test_search_pack_is_checked_with_one_line_naming_the_file_and_key(tmp_path):
    from search.config import load_config
    from tests.test_resume import SMALL

    path = tmp_path / "p.yaml"
    for value, message in ((0, "search.pack: expected auto or an integer >= 1 (candidates per Ray trial), got 0"),
                           ("big", "got 'big'"), (2.5, "got 2.5"), (True, "got True")):
        path.write_text(json.dumps({**SMALL, "search": {**SMALL["search"], "pack": value}}))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value).startswith(f"{path}: search.pack: ") and message in str(err.value)
        assert "\n" not in str(err.value)
    path.write_text(json.dumps({**SMALL, "search": {**SMALL["search"], "pack": 4, "scheduler": "asha"}}))
    with pytest.raises(ConfigError, match=r"search\.pack: asha stops single trials by epoch"):
        load_config(path)
    path.write_text(json.dumps(SMALL))
    assert load_config(path).search.pack == "auto"  # the default
    path.write_text(json.dumps({**SMALL, "search": {**SMALL["search"], "pack": 6}}))
    assert load_config(path).to_dict()["search"]["pack"] == 6


# ---- the searcher alone (no Ray) -------------------------------------------------------
def result(spec: ArchSpec, k: int, last: bool, seconds: float = 0.1) -> dict:
    return {CANDIDATE: k, FINAL: last, METRICS_JSON: json.dumps(fake_metrics(spec, {"bonus": 0.0}) | {"seconds": seconds})}


def test_the_searcher_packs_asks_and_tells_each_candidate_as_it_finishes():
    strat = strategy(budget=7)
    s = StrategySearcher(strat, max_trials=7, pack=3, slots=2)
    a = s.suggest("A")
    specs = [ArchSpec.from_dict(m["spec"]) for m in a["pack"]]
    assert [x.candidate_id for x in specs] == first_asks(3)
    b = s.suggest("B")
    assert len(b["pack"]) == 3 and len(s.suggest("C")["spec"]) > 0  # the 7th alone: what is left
    assert s.suggest("D") == StrategySearcher.FINISHED
    assert strat.n_asked == 7  # asked only what the packs hold
    s.on_trial_result("A", result(specs[1], 1, False))  # finish order, not pack order
    s.on_trial_result("A", result(specs[0], 0, False))
    s.on_trial_result("A", result(specs[0], 0, False))  # the same report twice: told once
    assert [sp.candidate_id for sp, _ in strat.history] == [specs[1].candidate_id, specs[0].candidate_id]
    s.on_trial_complete("A", result(specs[2], 2, True))  # the last report arrives with the end
    assert len(strat.history) == 3 and s.live == 2
    assert s.seconds.mean == pytest.approx(0.1)


def test_a_pack_goes_with_what_a_waiting_strategy_has():
    class TwoThenWait:
        done, objectives = False, None

        def __init__(self) -> None:
            self.specs, self.told = [late("concat"), late("tensor"), late("low_rank")], []

        def ask(self):
            return self.specs.pop(0) if len(self.specs) > 1 or self.told else None

        def tell(self, spec, metrics):
            self.told.append(spec)

    strat = TwoThenWait()
    s = StrategySearcher(strat, max_trials=3, pack=5)
    first = s.suggest("A")
    assert [m["spec"]["cells"][0]["op"] for m in first["pack"]] == ["concat", "tensor"]
    assert s.suggest("B") is None  # it waits for results
    s.on_trial_result("A", result(late("concat"), 0, False))
    assert s.suggest("B")["spec"]["cells"][0]["op"] == "low_rank"


def test_a_dead_worker_errs_its_running_candidate_and_hands_back_the_rest():
    strat = strategy(budget=4)
    s = StrategySearcher(strat, max_trials=4, pack=4)
    specs = [ArchSpec.from_dict(m["spec"]) for m in s.suggest("A")["pack"]]
    s.on_trial_result("A", result(specs[0], 0, False))
    s.on_trial_complete("A", None, error=True)  # died training specs[1]
    assert [(sp.candidate_id, r is None) for sp, r in strat.history] == [(specs[0].candidate_id, False),
                                                                         (specs[1].candidate_id, True)]
    again = s.suggest("B")
    assert [m["spec"] for m in again["pack"]] == [sp.to_dict() for sp in specs[2:]]  # no new ask
    assert strat.n_asked == 4 and s.suggest("C") == StrategySearcher.FINISHED


def test_confirmation_seeds_are_packed_too_and_never_told():
    from tests.test_tune import ListStrategy

    specs = [late("tensor", 16), late("concat", 8)]  # both on the front: more accurate vs cheaper
    strat = ListStrategy(specs)
    s = StrategySearcher(strat, max_trials=2, confirm=1, base_seed=0, pack=AUTO, slots=1)
    assert [m["spec"] for m in s.suggest("A")["pack"]] == [sp.to_dict() for sp in specs]
    assert s.suggest("B") is None  # the front may still change
    s.on_trial_result("A", result(specs[0], 0, False))
    s.on_trial_complete("A", result(specs[1], 1, True))
    seeds = s.suggest("C")["pack"]
    assert [(m["spec"], m["seed"], m["confirm"]) for m in seeds] == [(sp.to_dict(), 1, True) for sp in specs]
    assert s.suggest("D") is None  # both seeds in flight
    s.on_trial_result("C", result(specs[0], 0, False))
    s.on_trial_complete("C", result(specs[1], 1, True))
    assert s.suggest("E") == StrategySearcher.FINISHED
    assert len(strat.told) == 2  # the seeds are never told to the strategy


# ---- searches on Ray -------------------------------------------------------------------------
@pytest.mark.usefixtures("ray_local")
def test_a_packed_search_keeps_one_record_per_candidate_told_and_shown_as_each_ends(tmp_path):
    strat, seen = strategy(budget=7), []
    store = RunStore.create(tmp_path, "p", {})
    out = run_search(evaluate=evaluate_slowly, shared={"bonus": 0.01, "sleep": 0.4}, strategy=strat,
                     num_samples=7, store=store, pack=3, max_concurrent=1,
                     progress=lambda *a: seen.append((time.monotonic(), a[:2])))
    assert len(lines(store)) == 7 and no_repeats(out)
    assert [r["candidate_id"] for r in out] == first_asks(7)  # one trial at a time: ask order
    tune_ids = [r["trial_id"].split("_")[0] for r in out]  # Tune's trial ids: 8 hex digits
    assert [r["trial_id"] for r in out] == [f"{t}_{k % 3}" for k, t in enumerate(tune_ids)][:6] + [tune_ids[6]]
    assert all(re.fullmatch(r"[0-9a-f]{8}", t) for t in tune_ids)
    assert len(set(tune_ids)) == 3 and [r.get("pack") for r in out] == [3] * 6 + [None]
    for r in out:
        spec = ArchSpec.from_dict(r["spec"])
        assert r["status"] == "ok" and r["seconds"] >= 0.4
        assert r["metrics"]["val_accuracy"] == pytest.approx(fake_metrics(spec, {"bonus": 0.01})["val_accuracy"])
    # told in the order they finished (= the record's order), each as it finished:
    assert [sp.candidate_id for sp, _ in strat.history] == [r["candidate_id"] for r in out]
    assert [a for _, a in seen] == [(i, 7) for i in range(1, 8)]
    gaps = [seen[i + 1][0] - seen[i][0] for i in (0, 1, 3, 4)]  # within a pack
    assert min(gaps) > 0.3, gaps  # a pack's candidates are not held back until its end
    assert store.read_json("pareto.json") == json.loads(json.dumps(front_from_trials(store.trials())))


@pytest.mark.usefixtures("ray_local")
def test_auto_packs_grow_from_measured_seconds_within_the_fair_share(tmp_path):
    store = RunStore.create(tmp_path, "a", {})
    out = run_search(evaluate=evaluate_ok, shared=BONUS, strategy=strategy(budget=12), num_samples=12,
                     store=store, pack=AUTO, max_concurrent=1)
    # first FIRST (seconds unknown), then all 8 left to the one slot (no other slot to balance)
    assert [r.get("pack") for r in out] == [packing.FIRST] * 4 + [8] * 8
    assert sorted(r["candidate_id"] for r in out) == sorted(first_asks(12)) and no_repeats(out)


@pytest.mark.usefixtures("ray_local")
def test_a_dead_worker_in_a_pack_costs_one_candidate_and_the_rest_run_later(tmp_path):
    specs = [late("concat"), late("tensor"), late("low_rank"), late("concat", 16), late("tensor", 16)]
    from tests.test_tune import ListStrategy

    store = RunStore.create(tmp_path, "d", {})
    out = run_search(evaluate=evaluate_crashes_on_tensor, shared=BONUS, strategy=ListStrategy(specs),
                     num_samples=5, store=store, pack=5, max_concurrent=1)
    by_arch = {r["arch_id"]: r for r in out}
    assert len(lines(store)) == 5 and sorted(by_arch) == sorted(s.arch_id for s in specs) and no_repeats(out)
    dead = by_arch[late("tensor").arch_id]  # the first tensor killed its worker mid-pack
    assert dead["status"] == "errored" and "died" in dead["reason"] and "\n" not in dead["reason"]
    assert [by_arch[s.arch_id]["status"] for s in (late("concat"), late("low_rank"), late("concat", 16))] == ["ok"] * 3
    assert by_arch[late("tensor", 16).arch_id]["status"] == "errored"  # it ran (in a later trial) and died too


@pytest.mark.usefixtures("ray_local")
def test_a_scheduler_keeps_single_trials(tmp_path):
    from tests.test_tune import ListStrategy

    specs = [late("tensor"), late("concat"), late("tensor", 16)]
    store = RunStore.create(tmp_path, "s", {})
    out = run_search(evaluate=evaluate_per_epoch, shared=BONUS, strategy=ListStrategy(specs), num_samples=3,
                     store=store, scheduler="asha", max_concurrent=1, max_epochs=4, pack=AUTO)
    assert [r.get("pack") for r in out] == [None] * 3 and all(re.fullmatch(r"[0-9a-f]{8}", r["trial_id"]) for r in out)
    assert {r["arch_id"]: r["status"] for r in out}[late("concat").arch_id] == "early_stopped"


# ---- interrupts and kills in the middle of a pack ----------------------------------------------
@pytest.mark.usefixtures("ray_local")
def test_an_interrupt_mid_pack_keeps_what_finished_and_resume_runs_only_the_rest(tmp_path):
    n, store = 9, RunStore.create(tmp_path, "i", {})
    shared = {"bonus": 0.0, "sleep": 0.3}

    def stop_after_two(done: int, *_: Any) -> None:
        if done == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the first packs

    interrupts = Interrupts(grace_s=30)
    with interrupts.installed(), pytest.raises(SearchInterrupted):
        run_search(evaluate=evaluate_slowly, shared=shared, strategy=strategy(budget=n), num_samples=n, store=store,
                   pack=4, max_concurrent=2, progress=stop_after_two, interrupts=interrupts)
    before = lines(store)
    assert 2 <= len(before) < 8 and all(r["status"] == "ok" for r in before), before  # each pack cut after one more
    kept = store.trials_path.read_bytes()
    out = run_search(evaluate=evaluate_slowly, shared={**shared, "sleep": 0.0}, strategy=strategy(budget=n),
                     num_samples=n, store=store, pack=4, max_concurrent=1, resume=True)  # the rest, by one worker
    assert store.trials_path.read_bytes().startswith(kept)
    assert len(lines(store)) == n and no_repeats(lines(store))
    assert sorted(r["candidate_id"] for r in out) == sorted(first_asks(n))  # none lost, none twice


def drive(run_dir: str, n: int, resume: bool) -> None:
    """The driver the subprocess runs: a slow packed search on its own embedded Ray."""
    run_search(evaluate=evaluate_slowly, shared={"bonus": 0.0, "sleep": 0.5}, strategy=strategy(budget=n),
               num_samples=n, store=RunStore.open(run_dir), pack=3, max_concurrent=2, num_cpus=2, resume=resume)


@pytest.mark.usefixtures("ray_local")
def test_a_driver_killed_mid_pack_loses_no_finished_candidate_and_resume_repeats_none(tmp_path):
    n, temp = 9, tempfile.mkdtemp(prefix="fnp", dir="/tmp")  # the killed driver's Ray: its own temp dir
    store = RunStore.create(tmp_path, "k", {"n": n})
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_TMPDIR": temp}
    code = f"from tests.test_pack import drive; drive({str(store.run_dir)!r}, {n}, False)"
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(store.trials()) < 2:  # both packs of 3 are running: one has finished a candidate or two
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no candidates recorded in time"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
        _kill_all(_cluster_pids(temp))
        shutil.rmtree(temp, ignore_errors=True)
    before = lines(store)
    assert 2 <= len(before) < 6, before  # killed in the middle of the first two packs
    kept = store.trials_path.read_bytes()
    out = run_search(evaluate=evaluate_slowly, shared={"bonus": 0.0, "sleep": 0.0}, strategy=strategy(budget=n),
                     num_samples=n, store=store, pack=3, max_concurrent=1, resume=True)  # one trial worker
    assert store.trials_path.read_bytes().startswith(kept)  # every finished candidate kept as recorded
    assert len(lines(store)) == n and no_repeats(lines(store))
    assert sorted(r["candidate_id"] for r in out) == sorted(first_asks(n))  # the lost ones ran, nothing twice
