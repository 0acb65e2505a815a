"""The Ray Tune adapter on an embedded 2-CPU Ray, with fake strategies and a cheap fake evaluate."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.engine.tune import run_search  # noqa: E402
from search.engine.tune_searcher import StrategySearcher  # noqa: E402
from search.runstore.replay import replay  # noqa: E402
from search.runstore.store import RunStore, front_from_trials  # noqa: E402
from spaces.args import Arg  # noqa: E402
from spaces.space import SearchSpace  # noqa: E402
from spaces.spec import ArchSpec, CellSpec  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])
CATALOGUE = {"concat": (), "tensor": (Arg("proj_dim", "int", 8, low=1, high=64),),
             "low_rank": (Arg("rank", "int", 4, low=1, high=64),)}
SPACE = SearchSpace.from_dict({"widths": [8, 16], "max_cells": 2}, catalogue=CATALOGUE,
                              depths={"a": [0, 1], "b": [0, 1]})
ACC = {"concat": 0.6, "tensor": 0.8, "low_rank": 0.7}


class RandomStrategy:
    """A tiny stand-in for search/strategies: seeded `space.sample`, a budget, a log of tells."""

    def __init__(self, space: SearchSpace = SPACE, seed: int = 0, budget: int = 10**9) -> None:
        self.space, self.rng, self.budget = space, random.Random(seed), budget
        self.asked: list[ArchSpec] = []
        self.told: list[tuple[str, dict | None]] = []

    @property
    def done(self) -> bool:
        return len(self.asked) >= self.budget

    def ask(self) -> ArchSpec:
        self.asked.append(self.space.sample(self.rng))
        return self.asked[-1]

    def tell(self, spec: ArchSpec, metrics: dict | None) -> None:
        self.told.append((spec.arch_id, metrics))


class ListStrategy(RandomStrategy):
    def __init__(self, specs: list[ArchSpec]) -> None:
        super().__init__(budget=len(specs))
        self.specs = list(specs)

    def ask(self) -> ArchSpec:
        self.asked.append(self.specs[len(self.asked)])
        return self.asked[-1]


def late(op: str, width: int = 8) -> ArchSpec:
    args = {"tensor": (("proj_dim", 8),), "low_rank": (("rank", 4),)}.get(op, ())
    return ArchSpec("late", (CellSpec(("a@1", "b@1"), op, width, "relu", args),))


def fake_metrics(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    """Accuracy from the first op (plus `shared["bonus"]`), costs from widths and cell count."""
    params = 100 * sum(c.width for c in spec.cells)
    return {"status": "ok", "reason": None, "val_accuracy": ACC[spec.ops[0]] + shared["bonus"] - 0.01 * len(spec.cells),
            "test_accuracy": 0.5, "params_total": params, "flops_total": 20 * params, "epochs": 3,
            "arch_id": spec.arch_id}


def evaluate_ok(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    return fake_metrics(spec, shared)


def evaluate_raises_on_tensor(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    if "tensor" in spec.ops:
        raise ValueError("tensor is broken")
    return fake_metrics(spec, shared)


def evaluate_low_rank_diverges(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    metrics = fake_metrics(spec, shared)
    if spec.ops[0] == "low_rank":  # a diverged run claiming a great score must not reach the front
        metrics.update(status="failed", reason="loss is NaN", val_accuracy=0.99, params_total=1, flops_total=1)
    return metrics


def evaluate_per_epoch(spec: ArchSpec, shared: Any, report=None) -> dict[str, Any]:
    metrics = fake_metrics(spec, shared)
    for epoch in range(1, 5):
        assert report(epoch, metrics["val_accuracy"]) is False  # search.training.train's Report: (epoch, val_accuracy)
    return metrics | {"epochs": 4}


def evaluate_crashes_on_tensor(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    if "tensor" in spec.ops:
        os._exit(3)  # the worker dies: Tune itself sees the trial fail
    return fake_metrics(spec, shared)


def evaluate_slowly(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    time.sleep(shared["sleep"])
    return fake_metrics(spec, shared)


def lines(store: RunStore) -> list[dict]:
    return [json.loads(ln) for ln in store.trials_path.read_text().splitlines()]


def search(tmp_path, evaluate, strategy, n: int, **kw) -> tuple[RunStore, list[dict]]:
    store = RunStore.create(tmp_path, "t", {"n": n})
    out = run_search(evaluate=evaluate, shared={"bonus": 0.01, "sleep": 0.0}, strategy=strategy,
                     num_samples=n, store=store, **kw)
    return store, out


# ---- the searcher alone (no Ray actors) ---------------------------------------------
def ok_result(spec: ArchSpec) -> dict[str, Any]:
    return {"_final": True, "_metrics_json": json.dumps(fake_metrics(spec, {"bonus": 0.0}))}


def test_searcher_asks_tells_and_finishes() -> None:
    strat = RandomStrategy(budget=2)
    s = StrategySearcher(strat, max_trials=5)
    a, b = s.suggest("t1"), s.suggest("t2")
    assert ArchSpec.from_dict(a["spec"]) == strat.asked[0] and ArchSpec.from_dict(b["spec"]) == strat.asked[1]
    assert s.suggest("t3") == StrategySearcher.FINISHED  # the strategy's budget
    s.on_trial_complete("t1", ok_result(strat.asked[0]))
    s.on_trial_complete("t2", None, error=True)
    s.on_trial_complete("t2", None, error=True)  # told once only
    m = fake_metrics(strat.asked[0], {"bonus": 0.0})
    assert strat.told == [(strat.asked[0].arch_id, {"accuracy": m["val_accuracy"], "params": m["params_total"],
                                                    "flops": m["flops_total"]}),
                          (strat.asked[1].arch_id, None)]


def test_searcher_drives_a_real_strategy() -> None:
    from search import strategies
    strat = strategies.make_strategy("random", SPACE, seed=0, budget=4)
    s = StrategySearcher(strat, max_trials=4)
    specs = {f"t{i}": ArchSpec.from_dict(s.suggest(f"t{i}")["spec"]) for i in range(4)}
    assert s.suggest("t4") == StrategySearcher.FINISHED
    s.on_trial_complete("t0", ok_result(specs["t0"]))
    s.on_trial_complete("t1", {"_final": True, "_metrics_json": json.dumps({"status": "failed", "val_accuracy": 0.9})})
    s.on_trial_complete("t2", {"val_accuracy": 0.9, "training_iteration": 1})  # stopped by ASHA
    s.on_trial_complete("t3", None, error=True)
    assert [r is None for _, r in strat.history] == [False, True, True, True]


def test_the_searcher_keeps_no_state_to_restore(tmp_path) -> None:
    s = StrategySearcher(RandomStrategy(seed=3), max_trials=3, store=RunStore.create(tmp_path, "s", {}))
    s.suggest("t1")
    s.save(str(tmp_path / "state"))  # Tune calls it: nothing is written
    assert not (tmp_path / "state").exists() and not list(s._run_dir and Path(s._run_dir).glob("*.pkl"))
    with pytest.raises(NotImplementedError, match="trials.jsonl"):
        s.restore(str(tmp_path / "state"))
    assert set(s.__getstate__()) == {"max_trials", "confirm", "base_seed"}  # tuner.pkl: no strategy, no data


def test_replay_tells_the_record_in_order_and_returns_the_lost_asks() -> None:
    first = RandomStrategy(seed=7)
    specs = [first.ask() for _ in range(4)]  # t0..t3 asked; t2 and t0 finished, t1 and t3 were lost
    records = [{"trial_id": "t2", "spec": specs[2].to_dict(), "status": "ok",
                "metrics": fake_metrics(specs[2], {"bonus": 0.0})},
               {"trial_id": "t0", "spec": specs[0].to_dict(), "status": "failed", "metrics": {}},
               {"trial_id": "c0", "spec": specs[2].to_dict(), "status": "ok", "confirm": True, "seed": 1,
                "metrics": {}}]
    fresh = RandomStrategy(seed=7)
    lost = replay(fresh, records, lookahead=4)
    assert [s.arch_id for s in lost] == [specs[1].arch_id]  # asked before t2, never recorded: run first
    assert [a for a, _ in fresh.told] == [specs[2].arch_id, specs[0].arch_id]  # finish order; confirm untold
    assert fresh.told[0][1]["accuracy"] == fake_metrics(specs[2], {"bonus": 0.0})["val_accuracy"]
    assert fresh.told[1][1] is None and len(fresh.asked) == 3  # t3 is simply asked again, later


def test_replay_adopts_a_recorded_candidate_the_strategy_does_not_ask() -> None:
    from search import strategies
    foreign = RandomStrategy(seed=99).ask()
    for name in ("random", "nsga2"):
        strat = strategies.make_strategy(name, SPACE, seed=0, budget=6)
        record = {"trial_id": "x", "spec": foreign.to_dict(), "status": "ok",
                  "metrics": fake_metrics(foreign, {"bonus": 0.0})}
        lost = replay(strat, [record], lookahead=2)
        assert len(lost) == 2 and foreign.candidate_id in strat.results  # told all the same
        if name == "nsga2":
            assert len(strat.study.get_trials(states=[optuna_complete()])) == 1


def optuna_complete():
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def test_bad_arguments_fail_before_ray_starts(tmp_path) -> None:
    store = RunStore.create(tmp_path, "m", {})
    kw = {"evaluate": evaluate_ok, "shared": None, "strategy": RandomStrategy(), "num_samples": 2}
    with pytest.raises(ValueError, match="unknown scheduler 'hyperband'; known: asha"):
        run_search(store=store, scheduler="hyperband", **kw)


# ---- searches on Ray ----------------------------------------------------------------
def test_a_search_records_every_trial_and_its_front(tmp_path, ray_local) -> None:
    strat, seen = RandomStrategy(seed=1), []
    store = RunStore.create(tmp_path, "t", {})
    out = run_search(evaluate=evaluate_ok, shared={"bonus": 0.01}, strategy=strat, num_samples=6, store=store,
                     progress=lambda *a: seen.append(a))
    assert len(lines(store)) == 6 and len({r["trial_id"] for r in out}) == 6
    assert all(r["status"] == "ok" and r["reason"] is None for r in out)
    for r in out:
        spec = ArchSpec.from_dict(r["spec"])
        assert r["arch_id"] == spec.arch_id
        assert r["metrics"]["val_accuracy"] == pytest.approx(fake_metrics(spec, {"bonus": 0.01})["val_accuracy"])
    assert sorted(r["arch_id"] for r in out) == sorted(s.arch_id for s in strat.asked)
    assert store.read_json("pareto.json") == json.loads(json.dumps(front_from_trials(store.trials())))
    assert [a[:2] for a in seen] == [(i, 6) for i in range(1, 7)]
    assert sorted(t[0] for t in strat.told) == sorted(r["arch_id"] for r in out)  # the strategy heard of each
    final = front_from_trials(out)
    assert seen[-1][2:] == (final["best_val_accuracy"], len(final["front"]), final["hypervolume"])


def test_a_candidate_that_raises_is_one_errored_trial(tmp_path, ray_local) -> None:
    specs = [late("concat"), late("tensor"), late("low_rank"), late("concat", 16)]
    store, out = search(tmp_path, evaluate_raises_on_tensor, ListStrategy(specs), 4, max_concurrent=1)
    status = {r["arch_id"]: r for r in out}
    bad = status[late("tensor").arch_id]
    assert bad["status"] == "errored" and bad["reason"] == "ValueError: tensor is broken"
    assert "raise ValueError" in bad["metrics"]["traceback"]
    assert sum(r["status"] == "ok" for r in out) == 3 and len(lines(store)) == 4
    assert bad["trial_id"] not in store.read_json("pareto.json")["trial_ids"]


def test_failed_trials_stay_out_of_the_front(tmp_path, ray_local) -> None:
    specs = [late("concat"), late("low_rank"), late("tensor")]
    store, out = search(tmp_path, evaluate_low_rank_diverges, ListStrategy(specs), 3, max_concurrent=1)
    failed = [r for r in out if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "loss is NaN"
    front = store.read_json("pareto.json")
    assert failed[0]["trial_id"] not in front["trial_ids"] and front["n_ok"] == 2
    assert front["best_val_accuracy"] == pytest.approx(0.8 + 0.01 - 0.01)


def test_asha_early_stopped_trials_are_recorded_and_kept_out_of_the_front(tmp_path, ray_local) -> None:
    specs = [late("tensor"), late("concat"), late("tensor", 16)]
    strat = ListStrategy(specs)
    store, out = search(tmp_path, evaluate_per_epoch, strat, 3, scheduler="asha", max_concurrent=1, max_epochs=4)
    by_arch = {r["arch_id"]: r for r in out}
    stopped = by_arch[late("concat").arch_id]  # worse than the first trial at the first rung
    assert stopped["status"] == "early_stopped" and stopped["metrics"]["epochs"] == 1
    assert by_arch[late("tensor").arch_id]["status"] == by_arch[late("tensor", 16).arch_id]["status"] == "ok"
    assert stopped["trial_id"] not in store.read_json("pareto.json")["trial_ids"]
    assert len(lines(store)) == 3
    assert dict(strat.told)[late("concat").arch_id] is None  # the strategy never sees a partial result



def test_a_dead_worker_is_one_errored_trial(tmp_path, ray_local) -> None:
    specs = [late("concat"), late("tensor"), late("low_rank")]
    store, out = search(tmp_path, evaluate_crashes_on_tensor, ListStrategy(specs), 3, max_concurrent=1)
    by_arch = {r["arch_id"]: r for r in out}
    dead = by_arch[late("tensor").arch_id]
    assert dead["status"] == "errored" and dead["metrics"] == {}
    assert "lost_node" not in dead  # its node lives on: the candidate's own failure, counted, not rerun
    assert "died" in dead["reason"] and len(dead["reason"]) < 300 and "\n" not in dead["reason"]
    assert [by_arch[late(op).arch_id]["status"] for op in ("concat", "low_rank")] == ["ok", "ok"]
    assert len(lines(store)) == 3


def test_resume_replays_the_record_into_a_fresh_strategy(tmp_path, ray_local) -> None:
    store, first = search(tmp_path, evaluate_ok, RandomStrategy(seed=2), 2, max_concurrent=1)
    moved = RunStore.open(shutil.move(store.run_dir, tmp_path / "elsewhere"))  # a run dir can move
    fresh = RandomStrategy(seed=2)
    out = run_search(evaluate=evaluate_ok, shared={"bonus": 0.01}, strategy=fresh,
                     num_samples=4, store=moved, resume=True, max_concurrent=1)
    assert len(out) == 4 and out[:2] == first and len(lines(moved)) == 4
    seed2 = RandomStrategy(seed=2)  # nothing asked twice, nothing skipped: the first 4 asks
    assert [r["arch_id"] for r in out] == [seed2.ask().arch_id for _ in range(4)]
    assert [a for a, _ in fresh.told] == [r["arch_id"] for r in out]  # the replay told the first two
    assert sorted(p.name for p in moved.ray_dir.iterdir()) == ["tune", "tune-1"]  # a new experiment
    again = run_search(evaluate=evaluate_ok, shared={"bonus": 0.01}, strategy=RandomStrategy(seed=2),
                       num_samples=4, store=moved, resume=True)  # nothing left: no Tune at all
    assert again == out and len(list(moved.ray_dir.iterdir())) == 2


# ---- what a run writes per trial ---------------------------------------------------
def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_bytes_per_trial_do_not_grow_with_the_data(tmp_path, ray_local):
    from search.config import load_config
    from search.engine import run
    from tests.test_resume import SMALL

    per_trial, cache = {}, {}
    for n_train in (500, 5000):
        raw = {**SMALL, "data": {**SMALL["data"], "n_train": n_train},
               "backbones": {**SMALL["backbones"], "cache_dir": str(tmp_path / "cache"),
                             "pretrain": {"epochs": 1}},
               "train": {"epochs": 2, "min_steps": 2, "max_steps": 4},
               "search": {**SMALL["search"], "num_samples": 3, "runs_dir": str(tmp_path / "runs"), "max_concurrent": 1}}
        path = tmp_path / f"n{n_train}.yaml"
        path.write_text(yaml.safe_dump(raw))
        cfg = load_config(path)
        store = run.start_run(cfg)
        said: list[str] = []
        trials = run.search(cfg, store, say=said.append)
        assert len(trials) == 3 and all(t["status"] == "ok" for t in trials)
        per_trial[n_train] = _bytes(store.run_dir) / len(trials)
        sizes = [re.search(r"([\d.]+) MiB", m) for m in said if m.startswith("tap cache")]
        cache[n_train] = float(next(r.group(1) for r in sizes if r))  # the size line ("reusing ..." has none)
    assert cache[5000] > 5 * cache[500], cache  # the data that must not reach the run directory
    # 10x the data and tap cache add nothing per trial (measured 20.3 vs 20.6 kB; before
    # this change 175 kB vs 1066 kB: searcher.pkl, its Tune copy and tuner.pkl held the tap cache)
    assert per_trial[5000] < 1.25 * per_trial[500], per_trial
    assert per_trial[5000] < 64 * 1024, per_trial


# ---- helpers for the tests that run their own processes (test_cluster, test_pack) ---------
def _descendants(roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _cluster_pids(temp_dir: str) -> set[int]:
    """The processes of the cluster started with `--temp-dir=temp_dir` and all their children."""
    roots = set()
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if temp_dir.encode() in cmd.read_bytes():
                roots.add(int(cmd.parent.name))
        except OSError:
            continue
    return _descendants(roots - {os.getpid()})


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
